"""Fixtures for the cluster-in-a-box tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def workdir():
    """A cluster's work directory: on tmpfs when the machine has one (each node's host tree is ~500 small files)."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    d = Path(tempfile.mkdtemp(prefix="ccgpu-cluster-", dir=base))
    yield d
    shutil.rmtree(d, ignore_errors=True)

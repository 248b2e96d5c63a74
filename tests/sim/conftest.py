"""Fixtures for the simulated-host tests: fresh host trees built from the real captures in shared/."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from ccgpu.sim.host import SimulatedHost


@pytest.fixture
def host_dir(tmp_path):
    """A scratch directory for host trees: on tmpfs when the machine has one (a host tree is ~500 small files,
    which ext4 creates ~20x slower), else pytest's tmp_path."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        d = Path(tempfile.mkdtemp(prefix="ccgpu-simhost-", dir="/dev/shm"))
        yield d
        shutil.rmtree(d, ignore_errors=True)
    else:
        yield tmp_path


@pytest.fixture
def make_host(host_dir, shared):
    """Build a simulated host: `make_host("8xh100-snp", iommu=False)`."""
    count = 0

    def make(profile: str = "8xh100-snp", **overrides) -> SimulatedHost:
        nonlocal count
        count += 1
        return SimulatedHost.create(
            host_dir / f"host{count}", profile, fixtures=shared / "fixtures", **overrides
        )

    return make


@pytest.fixture
def host(make_host) -> SimulatedHost:
    return make_host("8xh100-snp")

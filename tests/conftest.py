"""Shared test fixtures: where ../shared lives (CI has it beside the checkout, read-only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """The project's shared/ folder: $CCGPU_SHARED, else ../shared beside the checkout."""
    env = os.environ.get("CCGPU_SHARED")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared")
    for c in candidates:
        if (c / "DESIGN.md").exists():
            return c
    raise RuntimeError(f"shared/ not found (looked at {', '.join(map(str, candidates))}); set CCGPU_SHARED")


@pytest.fixture(scope="session")
def shared() -> Path:
    return shared_dir()

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


def require_fuse() -> None:
    """Skip a test that mounts a simulated host where FUSE is missing; in CI (`CI` set), where .ci/run installs
    it, fail instead, so such tests never stop running unnoticed."""
    from ccgpu.sim.host_mount import unavailable

    reason = unavailable()
    if reason and os.environ.get("CI"):
        pytest.fail(f"FUSE is required in CI: {reason}")
    if reason:
        pytest.skip(f"needs FUSE: {reason}")


def ccgpu_command(*args: str) -> list[str]:
    """argv that runs this checkout's `ccgpu` CLI in a subprocess (use with `ccgpu_env()`)."""
    import sys

    return [sys.executable, "-m", "ccgpu", *args]


def ccgpu_env(**extra: str) -> dict[str, str]:
    """Environment for a `ccgpu` subprocess: this checkout's src first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env

"""The device captures vendored in the package (for an installed `ccgpu simulate`) equal shared/fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

import ccgpu.sim.profiles as profiles

VENDORED = Path(profiles.__file__).parent / "captures"


@pytest.mark.parametrize("name", ["h100-sxm5-80gb", "h200-sxm-141gb"])
def test_vendored_capture_is_byte_identical_to_shared(shared, name):
    src = shared / "fixtures" / name / "sysfs"
    copy = VENDORED / name / "sysfs"
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in src.iterdir())
    for p in src.iterdir():
        assert (copy / p.name).read_bytes() == p.read_bytes(), p.name


def test_without_shared_the_vendored_captures_are_found(monkeypatch, tmp_path):
    """An installed package has no shared/ above it: fixtures_dir() falls back to the copy beside profiles.py."""
    pkg = tmp_path / "site-packages" / "ccgpu" / "sim"
    pkg.mkdir(parents=True)
    (pkg / "captures").symlink_to(VENDORED)
    monkeypatch.delenv("CCGPU_SHARED", raising=False)
    monkeypatch.setattr(profiles, "__file__", str(pkg / "profiles.py"))
    assert profiles.fixtures_dir() == (pkg / "captures").resolve() or profiles.fixtures_dir() == pkg / "captures"
    assert profiles.load_capture(pkg / "captures" / "h200-sxm-141gb", "h200-sxm-141gb").device == 0x2335

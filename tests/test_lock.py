"""The lock CI installs from (requirements/dev.txt, made by scripts/lock.sh) matches pyproject.toml: every
declared dependency is pinned, at a version its minimum allows, with hashes; and the build requirements are
the same in both places. A dependency added to pyproject.toml without regenerating the lock fails here."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _pins(path: Path) -> dict[str, tuple[Version, int]]:
    """name -> (pinned version, number of hashes) of a uv/pip-tools lock."""
    pins: dict[str, tuple[Version, int]] = {}
    for block in re.split(r"\n(?=\S)", path.read_text()):
        match = re.match(r"([A-Za-z0-9._-]+)==(\S+)", block)
        if match:
            pins[canonicalize_name(match.group(1))] = (Version(match.group(2)), block.count("--hash=sha256:"))
    return pins


LOCK = _pins(REPO / "requirements" / "dev.txt")
DECLARED = [
    *PYPROJECT["project"]["dependencies"],
    *PYPROJECT["project"]["optional-dependencies"]["dev"],
    *PYPROJECT["build-system"]["requires"],
]


def test_the_lock_was_parsed() -> None:
    assert len(LOCK) >= len(DECLARED)


@pytest.mark.parametrize("spec", DECLARED)
def test_every_declared_dependency_is_pinned_within_its_range_with_hashes(spec: str) -> None:
    requirement = Requirement(spec)
    name = canonicalize_name(requirement.name)
    assert name in LOCK, f"{name} is declared in pyproject.toml but not locked: run scripts/lock.sh"
    version, hashes = LOCK[name]
    assert requirement.specifier.contains(version, prereleases=True), (
        f"{name}=={version} in the lock is outside pyproject.toml's {requirement.specifier}: run scripts/lock.sh"
    )
    assert hashes >= 1


def test_build_requirements_are_the_same_in_pyproject_and_the_lock_input() -> None:
    lines = (REPO / "requirements" / "build.in").read_text().splitlines()
    listed = [line for line in lines if line.strip() and not line.startswith("#")]
    assert listed == PYPROJECT["build-system"]["requires"]


def test_the_oldest_tomlkit_lock_pins_pyprojects_minimum() -> None:
    (spec,) = [d for d in PYPROJECT["project"]["dependencies"] if Requirement(d).name == "tomlkit"]
    (minimum,) = [s.version for s in Requirement(spec).specifier if s.operator == ">="]
    oldest = _pins(REPO / "requirements" / "tomlkit-oldest.txt")
    assert set(oldest) == {"tomlkit"}
    assert oldest["tomlkit"][0] == Version(minimum)

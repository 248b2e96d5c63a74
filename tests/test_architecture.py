"""Production code knows nothing of the simulator, not even by name in a string (an import grep would miss
`importlib.import_module("ccgpu.sim...")`). The import layers themselves are import-linter contracts in
pyproject.toml, run by `lint-imports` in .ci/run."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "ccgpu"
ALLOWED = {SRC / "cli.py"}  # the CLI wires `ccgpu simulate` and `ccgpu sim ...`
NAMES_THE_SIMULATOR = re.compile(r"ccgpu[./]sim\b")


def _production_files() -> list[Path]:
    return [p for p in SRC.rglob("*.py") if (SRC / "sim") not in p.parents and p not in ALLOWED]


def test_there_are_production_files_to_check() -> None:
    assert len(_production_files()) > 50


def test_no_production_file_names_the_simulator() -> None:
    offenders = [
        f"{p.relative_to(SRC)}:{n}: {line.strip()}"
        for p in _production_files()
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if NAMES_THE_SIMULATOR.search(line)
    ]
    assert offenders == []

"""docs/design.md stays true: every module its layout table names exists, and every package and top-level
module of src/ccgpu has a row (a new room needs its line in the design)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "ccgpu"
DESIGN = (REPO / "docs" / "design.md").read_text()


def _layout_rows() -> list[tuple[str, str]]:
    section = DESIGN.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows.append((cells[0].strip("`"), cells[1]))
    return rows


def test_the_layout_table_was_found() -> None:
    assert len(_layout_rows()) >= 7


def test_every_module_the_layout_names_exists() -> None:
    missing = []
    for package, room in _layout_rows():
        assert (SRC / package).exists(), f"layout row {package} is not in src/ccgpu"
        if not package.endswith("/"):
            continue
        for name in re.findall(r"`([\w*]+(?:\.py|/))`", room):
            if not list((SRC / package).glob(name.rstrip("/"))):
                missing.append(f"{package}{name}")
    assert missing == []


def test_every_package_and_top_level_module_has_a_row() -> None:
    rows = {package for package, _ in _layout_rows()}
    present = {f"{p.name}/" for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    present |= {p.name for p in SRC.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    assert present - rows == set()

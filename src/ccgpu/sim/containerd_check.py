"""Read back what a simulated node's containerd would load: the runtimes that ccgpu's drop-in declares.

The cluster-in-a-box runs no containerd, so `ccgpu simulate`'s outcomes read the drop-in the kata-manager wrote
(and check that the main config imports it) the way containerd would, through tomllib.
"""

from __future__ import annotations

import fnmatch
import posixpath
import tomllib
from pathlib import Path
from typing import Any

from ccgpu.agents.containerd import DEFAULT_DROPIN, DEFAULT_MAIN_CONFIG


def _runtimes(table: Any) -> list[str]:
    """Every `...containerd.runtimes.<name>` table's name, wherever the CRI plugin id puts it."""
    if not isinstance(table, dict):
        return []
    out = []
    for key, value in table.items():
        if key == "runtimes" and isinstance(value, dict):
            out += [n for n, v in value.items() if isinstance(v, dict)]
        else:
            out += _runtimes(value)
    return out


def imports(entries: list[str], path: str) -> bool:
    """Whether a main config's `imports` load `path` (relative entries are from the main file's directory, and
    may be globs, as containerd reads them)."""
    base = posixpath.dirname(DEFAULT_MAIN_CONFIG)
    return any(fnmatch.fnmatchcase(path, posixpath.normpath(posixpath.join(base, e))) for e in entries)


def dropin_runtimes(host_root: str) -> tuple[list[str], int | None, str]:
    """(runtime names in the drop-in, main config version, why it would not load: "" when it would)."""
    root = Path(host_root)
    main_path, dropin_path = root / DEFAULT_MAIN_CONFIG.lstrip("/"), root / DEFAULT_DROPIN.lstrip("/")
    try:
        main = tomllib.loads(main_path.read_text())
        dropin = tomllib.loads(dropin_path.read_text())
    except FileNotFoundError as e:
        return [], None, f"{e.filename} missing"
    except tomllib.TOMLDecodeError as e:
        return [], None, f"not valid TOML: {e}"
    version = main.get("version")
    if not imports(main.get("imports") or [], DEFAULT_DROPIN):
        return [], version, f"{DEFAULT_MAIN_CONFIG} does not import {DEFAULT_DROPIN}"
    if dropin.get("version") != version:
        return [], version, f"drop-in version {dropin.get('version')} differs from the main config's {version}"
    return sorted(set(_runtimes(dropin.get("plugins")))), version, ""

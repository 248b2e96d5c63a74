"""Atomic on-disk storage for the KBS: write to a temporary file in the same directory, fsync, rename."""

from __future__ import annotations

import re
from pathlib import Path

from ccgpu.hw.sysfs import atomic_write as _atomic_write

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_segment(kind: str, value: str) -> str:
    """A path segment safe to join under a data directory (no separators, no dot-dot, no hidden files)."""
    if not isinstance(value, str) or not _SEGMENT.match(value) or ".." in value:
        raise ValueError(
            f"{kind} {value!r} is not accepted; use 1-128 characters of letters, digits, '.', '_', '-', "
            "starting with a letter or digit, without '..'"
        )
    return value


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """`hw.sysfs.atomic_write`, private (0600) by default: what the KBS stores is secret until shown otherwise."""
    _atomic_write(path, data, mode)

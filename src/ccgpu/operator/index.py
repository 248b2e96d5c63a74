"""The controller's in-memory view: what watches delivered, overlaid with writes they have not delivered yet.

Without the overlay, a reconcile that runs between the operator's own write and the watch event for it would
see the old object and write again; with it, every write is made once (the benchmark's writes/minimal ≈ 1).
An overlay entry lasts until the watch shows that version or a newer one, or until it expires (so an
object deleted by someone else before the watch ever showed our write is not believed to exist forever).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

Versioned = tuple[str, Any]  # (resourceVersion, value)


def _rv(value: str | None) -> int:
    """resourceVersions are opaque, but every real server (etcd revisions) and the simulator use integers."""
    try:
        return int(value or 0)
    except ValueError:
        return -1


class Overlay:
    """Per category ("nodes", "owned", "policies"): key → (resourceVersion, value or None for deleted)."""

    def __init__(self, ttl_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: dict[str, dict[Hashable, tuple[str, Any, float]]] = {}
        self._ttl = ttl_s
        self._clock = clock

    def record(self, category: str, key: Hashable, rv: str | None, value: Any) -> None:
        """Remember what a write left (value None: deleted; rv is then the deleted object's version)."""
        self._entries.setdefault(category, {})[key] = (rv or "0", value, self._clock() + self._ttl)

    def pending(self, category: str) -> int:
        return len(self._entries.get(category, {}))

    def merge(self, category: str, base: Mapping[Hashable, Versioned]) -> dict[Hashable, Any]:
        """The watch's view with this category's newer writes applied; drops entries the watch caught up with."""
        out = {k: v for k, (_, v) in base.items()}
        entries = self._entries.get(category, {})
        now = self._clock()
        for key in list(entries):
            rv, value, expires = entries[key]
            seen = base.get(key)
            if now > expires:
                del entries[key]
            elif value is None:  # we deleted it
                if seen is None or _rv(seen[0]) > _rv(rv):
                    del entries[key]  # gone from the watch too, or recreated since
                else:
                    out.pop(key, None)
            elif seen is not None and _rv(seen[0]) >= _rv(rv):
                del entries[key]
            else:
                out[key] = value
        return out

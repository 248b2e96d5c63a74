"""A small Reference Value Provider Service: `sample` provenance in, named lists of accepted values out.

Trustee's RVPS ingests `{"version", "type", "payload"}` messages; the `sample` extractor's payload is base64 of
JSON `{name: [values]}`. Values expire (12 months by default). Policies read the live values as `data.reference`.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ccgpu.attest.storage import atomic_write

DEFAULT_EXPIRY_S = 365 * 24 * 3600
SUPPORTED_TYPES = ("sample",)


class ReferenceValueError(ValueError):
    """A provenance message that cannot be ingested; says what is accepted."""


class ReferenceValueStore:
    """Reference values by name, each `{"value", "expires"}`; persisted as one JSON file when a path is given."""

    def __init__(self, path: Path | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._values: dict[str, list[dict[str, Any]]] = {}
        if path is not None and path.exists():
            self._values = json.loads(path.read_text())

    def ingest(self, message: Any, *, expiry_s: int = DEFAULT_EXPIRY_S) -> list[str]:
        """Ingest one provenance message; returns the names it set (replacing earlier values of those names)."""
        if not isinstance(message, dict) or not {"type", "payload"} <= set(message):
            raise ReferenceValueError('provenance must be a JSON object {"version", "type", "payload"}')
        if message["type"] not in SUPPORTED_TYPES:
            raise ReferenceValueError(
                f"provenance type {message['type']!r} is not supported; accepted: {', '.join(SUPPORTED_TYPES)}"
            )
        try:
            decoded = json.loads(base64.b64decode(message["payload"], validate=True))
        except (binascii.Error, ValueError, TypeError) as e:
            raise ReferenceValueError("sample payload must be base64 of JSON {name: [values]}") from e
        if not isinstance(decoded, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(x, (str, int, bool)) for x in v)
            for k, v in decoded.items()
        ):
            raise ReferenceValueError("sample payload must map names to lists of strings, integers or booleans")
        expires = self.clock() + expiry_s
        for name, values in decoded.items():
            self._values[name] = [{"value": v, "expires": expires} for v in values]
        self._save()
        return sorted(decoded)

    def set(self, name: str, values: list[Any], *, expiry_s: int = DEFAULT_EXPIRY_S) -> None:
        payload = base64.b64encode(json.dumps({name: values}).encode()).decode()
        self.ingest({"version": "0.1.0", "type": "sample", "payload": payload}, expiry_s=expiry_s)

    def query(self, name: str) -> list[Any]:
        """The unexpired values of `name` (empty when unknown)."""
        now = self.clock()
        return [e["value"] for e in self._values.get(name, []) if e["expires"] > now]

    def snapshot(self) -> dict[str, list[Any]]:
        """Every name with its unexpired values: what policies see as `data.reference`."""
        return {name: self.query(name) for name in self._values}

    def _save(self) -> None:
        if self.path is not None:
            atomic_write(self.path, json.dumps(self._values, sort_keys=True).encode())

"""Object metadata as lightkube types it (optional) and as the API server sends it (always there)."""

from __future__ import annotations

from typing import Protocol

from lightkube.models.meta_v1 import ObjectMeta


class HasMetadata(Protocol):
    @property
    def metadata(self) -> ObjectMeta | None: ...


def meta_of(obj: HasMetadata) -> ObjectMeta:
    """`obj.metadata`; a ValueError when it is missing, which no object read from the API server is."""
    if obj.metadata is None:
        raise ValueError(f"{type(obj).__name__} object has no metadata; the API server always sends it")
    return obj.metadata


def name_of(obj: HasMetadata) -> str:
    """`obj.metadata.name`; a ValueError when it is missing, which no object read from the API server is."""
    name = meta_of(obj).name
    if name is None:
        raise ValueError(f"{type(obj).__name__} object has no metadata.name; the API server always sends it")
    return name

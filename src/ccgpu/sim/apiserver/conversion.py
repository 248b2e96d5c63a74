"""Kinds served in two shapes from one storage: `events.k8s.io/v1` Events are core `v1` Events seen through
renamed fields, as in Kubernetes, so an Event posted either way is listed by both APIs (and by kubectl)."""

from __future__ import annotations

from typing import Any

EVENTS_V1 = "events.k8s.io/v1"
# events.k8s.io/v1 field -> core/v1 field (same meaning, different name).
EVENT_FIELDS = {
    "regarding": "involvedObject",
    "note": "message",
    "reportingController": "reportingComponent",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
}
_SAME = ("eventTime", "series", "reportingInstance", "action", "reason", "related", "type")
_CORE_TO_V1 = {v: k for k, v in EVENT_FIELDS.items()}


def event_to_core(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"apiVersion": "v1", "kind": "Event", "metadata": obj.get("metadata", {})}
    for k, v in obj.items():
        if k in EVENT_FIELDS:
            out[EVENT_FIELDS[k]] = v
        elif k in _SAME:
            out[k] = v
    return out


def event_from_core(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"apiVersion": EVENTS_V1, "kind": "Event", "metadata": obj.get("metadata", {})}
    for k, v in obj.items():
        if k in _CORE_TO_V1:
            out[_CORE_TO_V1[k]] = v
        elif k in _SAME:
            out[k] = v
    return out


def field_path_to_core(path: str) -> str:
    """A field selector path of events.k8s.io/v1 as the stored core object names it."""
    head, dot, rest = path.partition(".")
    return EVENT_FIELDS.get(head, head) + dot + rest

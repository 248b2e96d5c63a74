"""Per-type rules the real apiserver's "strategies" apply: what a create resets or defaults, and which
fields an update may not change."""

from __future__ import annotations

import json
from typing import Any

from .errors import field_cause
from .resources import GENERATION_KINDS, ResourceType

CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
NS_KEY = ("", "namespaces")
POD_KEY = ("", "pods")
POD_MUTABLE_MESSAGE = (
    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
    "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously "
    "negative)"
)


def prepare_create(rt: ResourceType, obj: dict[str, Any], now: str) -> None:
    """What each type's create strategy resets (status is written only through /status) and defaults."""
    if rt.custom and rt.status:
        obj.pop("status", None)
    elif rt.key == ("apps", "daemonsets"):
        obj["status"] = {"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0,
                         "numberReady": 0}
        spec = obj.setdefault("spec", {})
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("updateStrategy", {"type": "RollingUpdate",
                                           "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    elif rt.key == ("apps", "deployments"):
        obj["status"] = {}
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
    elif rt.key == POD_KEY:
        obj["status"] = {"phase": "Pending"}
        obj.setdefault("spec", {})
    elif rt.key == NS_KEY:
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj["status"] = {"phase": "Active"}
    elif rt.key == CRD_KEY:
        spec = obj.get("spec") or {}
        names = spec.get("names") or {}
        accepted = dict(names)
        accepted.setdefault("singular", names.get("kind", "").lower())
        accepted.setdefault("listKind", names.get("kind", "") + "List")
        obj["status"] = {
            "acceptedNames": accepted,
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
            "storedVersions": [v["name"] for v in spec.get("versions", []) if v.get("storage")],
        }
    if rt.kind in GENERATION_KINDS and not rt.custom and rt.key != CRD_KEY:
        obj.setdefault("spec", {})


def update_causes(rt: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, str]]:
    """Causes for a 422 when an update changes a field the type makes immutable."""
    if rt.key == POD_KEY:
        return _pod_causes(old.get("spec") or {}, new.get("spec") or {})
    if rt.key in (("apps", "daemonsets"), ("apps", "deployments")):
        before, after = (old.get("spec") or {}).get("selector"), (new.get("spec") or {}).get("selector")
        if before != after:
            return [field_cause("spec.selector", f"Invalid value: {json.dumps(after)}: field is immutable")]
    if rt.key == CRD_KEY:
        before, after = (old.get("spec") or {}).get("scope"), (new.get("spec") or {}).get("scope")
        if before != after:
            return [field_cause("spec.scope", f"Invalid value: {json.dumps(after)}: field is immutable")]
    return []


def _pod_causes(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, str]]:
    """A pod's spec is immutable but for images, activeDeadlineSeconds, added tolerations and
    terminationGracePeriodSeconds (spec.nodeName is set through pods/binding)."""
    def normalized(spec: dict[str, Any], like: dict[str, Any]) -> dict[str, Any]:
        out = dict(spec)
        for key in ("containers", "initContainers"):
            if isinstance(out.get(key), list) and isinstance(like.get(key), list) \
                    and len(out[key]) == len(like[key]):
                out[key] = [{**c, "image": ref.get("image")} if isinstance(c, dict) and isinstance(ref, dict)
                            else c for c, ref in zip(out[key], like[key], strict=True)]
        for key in ("activeDeadlineSeconds", "terminationGracePeriodSeconds", "schedulingGates"):
            out.pop(key, None)
        out.pop("tolerations", None)
        return out

    causes = []
    if normalized(new, old) != normalized(old, old):
        causes.append(field_cause("spec", POD_MUTABLE_MESSAGE, "FieldValueForbidden"))
    removed = [t for t in old.get("tolerations") or [] if t not in (new.get("tolerations") or [])]
    if removed:
        causes.append(field_cause("spec.tolerations", "Forbidden: existing toleration can not be modified except "
                                  "its tolerationSeconds", "FieldValueForbidden"))
    return causes

"""Label and field selectors, parsed once per request and matched against stored objects.

Grammar as the apiserver accepts it: comma-separated requirements `k=v`, `k==v`, `k!=v`, `k in (a,b)`,
`k notin (a,b)`, `k` (exists) and `!k` (does not exist). Field selectors accept `=`, `==` and `!=` only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .conversion import field_path_to_core
from .errors import bad_request
from .validation import label_key_errors, label_value_errors


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!":
            return self.key not in labels
        if self.op in ("=", "in"):
            return self.key in labels and labels[self.key] in self.values
        # "!=" and "notin" match objects without the key, as in Kubernetes.
        return self.key not in labels or labels[self.key] not in self.values


_SET_RE = re.compile(r"^\s*(!?)\s*([^\s!=,()]+)\s+(in|notin)\s*\(([^)]*)\)\s*$")
_EQ_RE = re.compile(r"^\s*([^\s!=,()]+)\s*(==|=|!=)\s*([^\s!=,()]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([^\s!=,()]+)\s*$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse_label_selector(text: str | None) -> tuple[Requirement, ...]:
    """Parse a labelSelector query value; raises a 400 ApiError naming the bad part."""
    if not text or not text.strip():
        return ()
    reqs = []
    for part in _split_top_level(text):
        if not part.strip():
            raise bad_request(f"unable to parse requirement: found '', expected: identifier in selector {text!r}")
        reqs.append(_parse_label_requirement(part, text))
    return tuple(reqs)


def _parse_label_requirement(part: str, whole: str) -> Requirement:
    if m := _SET_RE.match(part):
        if m.group(1):
            raise bad_request(f"unable to parse requirement: '!' cannot be combined with {m.group(3)} in {whole!r}")
        key, op = m.group(2), m.group(3)
        values = frozenset(v.strip() for v in m.group(4).split(",") if v.strip())
        if not values:
            raise bad_request(f"unable to parse requirement: for '{op}' operator, values set can't be empty")
        _check_label(key, values)
        return Requirement(key, op, values)
    if m := _EQ_RE.match(part):
        key, op, value = m.group(1), m.group(2), m.group(3)
        _check_label(key, frozenset([value]))
        return Requirement(key, "!=" if op == "!=" else "=", frozenset([value]))
    if m := _EXISTS_RE.match(part):
        _check_label(m.group(2), frozenset())
        return Requirement(m.group(2), "!" if m.group(1) else "exists")
    raise bad_request(
        f"unable to parse requirement: {part.strip()!r} in selector {whole!r}; accepted forms: "
        "k=v, k==v, k!=v, 'k in (a,b)', 'k notin (a,b)', k, !k"
    )


def _check_label(key: str, values: frozenset[str]) -> None:
    errs = label_key_errors(key)
    for v in values:
        errs += label_value_errors(v)
    if errs:
        raise bad_request(f"unable to parse requirement: invalid label key or value {key!r}: {'; '.join(errs)}")


def labels_match(reqs: tuple[Requirement, ...], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in reqs)


# --- field selectors ---------------------------------------------------------------------------------

_COMMON_FIELDS = ("metadata.name", "metadata.namespace")
# Fields the real apiserver allows per (group, plural), beyond metadata.name/namespace.
SUPPORTED_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "pods"): ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                   "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"),
    ("", "nodes"): ("spec.unschedulable",),
    ("", "secrets"): ("type",),
    ("", "namespaces"): ("status.phase",),
    ("", "events"): ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                     "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                     "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"),
    ("events.k8s.io", "events"): ("regarding.kind", "regarding.namespace", "regarding.name", "regarding.uid",
                                  "reason", "type", "reportingController"),
}


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    negate: bool
    value: str

    def matches(self, obj: Mapping[str, Any]) -> bool:
        actual = field_value(obj, self.path)
        return (actual != self.value) if self.negate else (actual == self.value)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string form of a dotted field, as the apiserver compares it ("" when absent)."""
    if path == "source":  # events: source is the component name
        return str((obj.get("source") or {}).get("component", ""))
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def parse_field_selector(text: str | None, group: str, plural: str, custom: bool) -> tuple[FieldRequirement, ...]:
    """Parse a fieldSelector; unknown fields get the 400 the real server gives, naming what is supported."""
    if not text or not text.strip():
        return ()
    allowed = _COMMON_FIELDS + SUPPORTED_FIELDS.get((group, plural), ())
    reqs = []
    for part in text.split(","):
        m = re.match(r"^\s*([^\s!=]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m:
            raise bad_request(f"invalid selector: {part!r}; expected 'field=value', 'field==value' or 'field!=value'")
        path, op, value = m.groups()
        if path not in allowed:
            raise bad_request(f'field label not supported: {path} (supported: {", ".join(allowed)})')
        if (group, plural) == ("events.k8s.io", "events"):
            path = field_path_to_core(path)  # stored as core/v1 Events
        reqs.append(FieldRequirement(path, op == "!=", value))
    return tuple(reqs)


def fields_match(reqs: tuple[FieldRequirement, ...], obj: Mapping[str, Any]) -> bool:
    return all(r.matches(obj) for r in reqs)


def make_filter(label_sel: str | None, field_sel: str | None, group: str, plural: str,
                custom: bool = False) -> Callable[[Mapping[str, Any]], bool]:
    """One predicate over whole objects for a request's labelSelector and fieldSelector."""
    lreqs = parse_label_selector(label_sel)
    freqs = parse_field_selector(field_sel, group, plural, custom)
    if not lreqs and not freqs:
        return lambda obj: True

    def pred(obj: Mapping[str, Any]) -> bool:
        return labels_match(lreqs, obj.get("metadata", {}).get("labels")) and fields_match(freqs, obj)

    return pred

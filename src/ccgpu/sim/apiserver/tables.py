"""Server-side printing: the `meta.k8s.io/v1 Table` that kubectl asks for, with the columns a real server
gives for the kinds ccgpu uses, and a CRD's additionalPrinterColumns."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from .resources import ResourceType

Col = tuple[str, str, str, int]  # name, type, format, priority


def age(ts: str | None, now: dt.datetime | None = None) -> str:
    """kubectl's short duration: 45s, 5m, 3h, 2d (with a second unit when small, as in 2m30s)."""
    if not ts:
        return "<unknown>"
    try:
        t = dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return "<invalid>"
    secs = int(((now or dt.datetime.now(dt.UTC)) - t).total_seconds())
    if secs < 0:
        secs = 0
    if secs < 120:
        return f"{secs}s"
    m = secs // 60
    if m < 10:
        return f"{m}m{secs % 60}s" if secs % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y{d % 365}d"


def _node_status(o: dict) -> str:
    conds = {c.get("type"): c.get("status") for c in (o.get("status") or {}).get("conditions") or []}
    ready = {"True": "Ready", "False": "NotReady"}.get(conds.get("Ready", ""), "Unknown")
    if (o.get("spec") or {}).get("unschedulable"):
        ready += ",SchedulingDisabled"
    return ready


def _node_roles(o: dict) -> str:
    roles = sorted(k.split("/", 1)[1] for k in (o["metadata"].get("labels") or {})
                   if k.startswith("node-role.kubernetes.io/") and k.split("/", 1)[1])
    return ",".join(roles) or "<none>"


def _node_ip(o: dict, kind: str) -> str:
    for a in (o.get("status") or {}).get("addresses") or []:
        if a.get("type") == kind:
            return a.get("address", "<none>")
    return "<none>"


def _pod_ready(o: dict) -> str:
    statuses = (o.get("status") or {}).get("containerStatuses") or []
    total = len((o.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _pod_status(o: dict) -> str:
    if o["metadata"].get("deletionTimestamp"):
        return "Terminating"
    st = o.get("status") or {}
    return st.get("reason") or st.get("phase") or "Unknown"


def _restarts(o: dict) -> int:
    return sum(int(s.get("restartCount", 0)) for s in (o.get("status") or {}).get("containerStatuses") or [])


def _st(o: dict, k: str, default: Any = 0) -> Any:
    return (o.get("status") or {}).get(k, default)


def _selector(sel: dict | None) -> str:
    return ",".join(f"{k}={v}" for k, v in (sel or {}).items()) or "<none>"


NAME: Col = ("Name", "string", "name", 0)
AGE: Col = ("Age", "string", "", 0)

COLUMNS: dict[tuple[str, str], list[tuple[Col, Any]]] = {
    ("", "nodes"): [
        (NAME, lambda o: o["metadata"]["name"]), (("Status", "string", "", 0), _node_status),
        (("Roles", "string", "", 0), _node_roles), (AGE, None),
        (("Version", "string", "", 0), lambda o: (_st(o, "nodeInfo", {}) or {}).get("kubeletVersion", "")),
        (("Internal-IP", "string", "", 1), lambda o: _node_ip(o, "InternalIP")),
        (("External-IP", "string", "", 1), lambda o: _node_ip(o, "ExternalIP")),
        (("OS-Image", "string", "", 1), lambda o: (_st(o, "nodeInfo", {}) or {}).get("osImage", "<unknown>")),
        (("Kernel-Version", "string", "", 1),
         lambda o: (_st(o, "nodeInfo", {}) or {}).get("kernelVersion", "<unknown>")),
        (("Container-Runtime", "string", "", 1),
         lambda o: (_st(o, "nodeInfo", {}) or {}).get("containerRuntimeVersion", "<unknown>")),
    ],
    ("", "pods"): [
        (NAME, lambda o: o["metadata"]["name"]), (("Ready", "string", "", 0), _pod_ready),
        (("Status", "string", "", 0), _pod_status), (("Restarts", "string", "", 0), _restarts), (AGE, None),
        (("IP", "string", "", 1), lambda o: _st(o, "podIP", "<none>")),
        (("Node", "string", "", 1), lambda o: (o.get("spec") or {}).get("nodeName", "<none>")),
    ],
    ("", "namespaces"): [(NAME, lambda o: o["metadata"]["name"]),
                         (("Status", "string", "", 0), lambda o: _st(o, "phase", "")), (AGE, None)],
    ("", "configmaps"): [(NAME, lambda o: o["metadata"]["name"]),
                         (("Data", "integer", "", 0), lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
                         (AGE, None)],
    ("", "secrets"): [(NAME, lambda o: o["metadata"]["name"]),
                      (("Type", "string", "", 0), lambda o: o.get("type", "Opaque")),
                      (("Data", "integer", "", 0), lambda o: len(o.get("data") or {})), (AGE, None)],
    ("", "events"): [(("Last Seen", "string", "", 0), lambda o: age(o.get("lastTimestamp") or o.get("eventTime")
                                                                     or o["metadata"].get("creationTimestamp"))),
                     (("Type", "string", "", 0), lambda o: o.get("type", "")),
                     (("Reason", "string", "", 0), lambda o: o.get("reason", "")),
                     (("Object", "string", "", 0), lambda o: "{}/{}".format(
                         (o.get("involvedObject") or {}).get("kind", "").lower(),
                         (o.get("involvedObject") or {}).get("name", ""))),
                     (("Message", "string", "", 0), lambda o: o.get("message", "")),
                     (NAME, lambda o: o["metadata"]["name"])],
    ("apps", "daemonsets"): [
        (NAME, lambda o: o["metadata"]["name"]),
        (("Desired", "integer", "", 0), lambda o: _st(o, "desiredNumberScheduled")),
        (("Current", "integer", "", 0), lambda o: _st(o, "currentNumberScheduled")),
        (("Ready", "integer", "", 0), lambda o: _st(o, "numberReady")),
        (("Up-to-date", "integer", "", 0), lambda o: _st(o, "updatedNumberScheduled")),
        (("Available", "integer", "", 0), lambda o: _st(o, "numberAvailable")),
        (("Node Selector", "string", "", 0),
         lambda o: _selector(((o.get("spec") or {}).get("template") or {}).get("spec", {}).get("nodeSelector"))),
        (AGE, None)],
    ("apps", "deployments"): [
        (NAME, lambda o: o["metadata"]["name"]),
        (("Ready", "string", "", 0), lambda o: f"{_st(o, 'readyReplicas')}/{(o.get('spec') or {}).get('replicas', 1)}"),
        (("Up-to-date", "integer", "", 0), lambda o: _st(o, "updatedReplicas")),
        (("Available", "integer", "", 0), lambda o: _st(o, "availableReplicas")), (AGE, None)],
    ("node.k8s.io", "runtimeclasses"): [(NAME, lambda o: o["metadata"]["name"]),
                                        (("Handler", "string", "", 0), lambda o: o.get("handler", "")),
                                        (AGE, None)],
    ("coordination.k8s.io", "leases"): [(NAME, lambda o: o["metadata"]["name"]),
                                        (("Holder", "string", "", 0),
                                         lambda o: (o.get("spec") or {}).get("holderIdentity", "")),
                                        (AGE, None)],
    ("apiextensions.k8s.io", "customresourcedefinitions"): [
        (NAME, lambda o: o["metadata"]["name"]),
        (("Created At", "date", "", 0), lambda o: o["metadata"].get("creationTimestamp", ""))],
}


def json_path(obj: Any, expr: str) -> Any:
    """The subset of JSONPath used in printer columns: .a.b, [n], [?(@.k=="v")].x"""
    expr = expr.strip()
    if expr.startswith("{") and expr.endswith("}"):
        expr = expr[1:-1]
    tokens = re.findall(r'\.([A-Za-z0-9_\-]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_\-]+)\s*==\s*["\']([^"\']*)["\']\)\]',
                        expr)
    cur = obj
    for name, idx, fkey, fval in tokens:
        if name:
            cur = cur.get(name) if isinstance(cur, dict) else None
        elif idx:
            cur = cur[int(idx)] if isinstance(cur, list) and int(idx) < len(cur) else None
        else:
            cur = next((x for x in cur if isinstance(x, dict) and str(x.get(fkey)) == fval), None) \
                if isinstance(cur, list) else None
        if cur is None:
            return None
    return cur


def _columns(rt: ResourceType) -> list[tuple[Col, Any]]:
    if rt.custom:
        cols: list[tuple[Col, Any]] = [(NAME, lambda o: o["metadata"]["name"])]
        for pc in rt.printer_columns:
            typ = pc.get("type", "string")
            path = pc.get("jsonPath", "")

            def cell(o: dict, path: str = path, typ: str = typ) -> Any:
                v = json_path(o, path)
                if v is None:
                    return None
                if typ == "date":
                    return age(v)
                return v if isinstance(v, str | int | float | bool) else json.dumps(v)

            cols.append(((pc.get("name", ""), "string" if typ == "date" else typ, "", int(pc.get("priority", 0))),
                         cell))
        if not any(pc.get("name", "").lower() == "age" for pc in rt.printer_columns):
            cols.append((AGE, None))
        return cols
    return COLUMNS.get(rt.key, [(NAME, lambda o: o["metadata"]["name"]), (AGE, None)])


def to_table(rt: ResourceType, objs: list[dict[str, Any]], meta: dict[str, Any],
             include_object: str = "Metadata") -> dict[str, Any]:
    cols = _columns(rt)
    rows = []
    for o in objs:
        cells = [age(o["metadata"].get("creationTimestamp")) if fn is None else fn(o) for _, fn in cols]
        row: dict[str, Any] = {"cells": cells}
        if include_object == "Object":
            row["object"] = o
        elif include_object != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": o["metadata"]}
        rows.append(row)
    return {
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
        "columnDefinitions": [{"name": n, "type": t, "format": f, "description": "", "priority": p}
                              for (n, t, f, p), _ in cols],
        "rows": rows,
    }

"""A minimal OpenAPI v3 surface: the `/openapi/v3` index and one document per group-version listing each
resource's operations with their query parameters. kubectl reads it to learn that the server validates
fields itself (`fieldValidation`), so it sends objects without needing full schemas."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .resources import Registry, ResourceType

_PARAMS = ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")


def gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def index(registry: Registry) -> dict[str, Any]:
    gvs = {(t.group, t.version) for t in registry}
    paths = {}
    for group, version in sorted(gvs):
        doc = document(registry, group, version)
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()
        paths[gv_path(group, version)] = {"serverRelativeURL": f"/openapi/v3/{gv_path(group, version)}?hash={digest}"}
    return {"paths": paths}


def _ops(rt: ResourceType) -> dict[str, Any]:
    gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
    params = [{"name": p, "in": "query", "schema": {"type": "string"}} for p in _PARAMS]

    def op(action: str, verb: str) -> dict[str, Any]:
        return {"operationId": f"{verb}{rt.kind}", "parameters": params, "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk}

    return {"get": op("get", "read"), "put": op("put", "replace"), "patch": op("patch", "patch"),
            "delete": op("delete", "delete")}


def document(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    types = registry.in_group_version(group, version)
    if not types:
        return None
    prefix = "/" + gv_path(group, version)
    paths: dict[str, Any] = {}
    for rt in types:
        base = f"{prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{prefix}/{rt.plural}"
        paths[f"{base}/{{name}}"] = _ops(rt)
        if rt.status:
            paths[f"{base}/{{name}}/status"] = _ops(rt)
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"}, "paths": paths,
            "components": {"schemas": {}}}

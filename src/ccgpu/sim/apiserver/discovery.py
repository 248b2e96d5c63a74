"""Discovery documents: the legacy ones (APIVersions, APIGroupList, APIResourceList) and the aggregated
`apidiscovery.k8s.io/v2` APIGroupDiscoveryList that kubectl 1.30+ asks for first (one request for all)."""

from __future__ import annotations

from typing import Any

from .resources import ALL_VERBS, Registry, ResourceType

AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def wants_aggregated(accept: str) -> bool:
    """True when the Accept header lists v2 aggregated discovery (clients list it before plain JSON)."""
    for part in accept.split(","):
        params = {p.strip() for p in part.split(";")[1:]}
        if {"g=apidiscovery.k8s.io", "v=v2", "as=APIGroupDiscoveryList"} <= params:
            return True
    return False


def group_list(registry: Registry) -> dict[str, Any]:
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [group(g, vs) for g, vs in registry.groups().items()]}


def group(name: str, versions: list[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}


def resource_list(registry: Registry, group_name: str, version: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for t in registry.in_group_version(group_name, version):
        resources += t.discovery()
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group_name}/{version}" if group_name else version, "resources": resources}


def _aggregated_resource(t: ResourceType) -> dict[str, Any]:
    kind = {"group": t.group, "version": t.version, "kind": t.kind}
    res: dict[str, Any] = {"resource": t.plural, "responseKind": kind,
                           "scope": "Namespaced" if t.namespaced else "Cluster",
                           "singularResource": t.singular or t.kind.lower(), "verbs": list(ALL_VERBS)}
    if t.short_names:
        res["shortNames"] = list(t.short_names)
    if t.categories:
        res["categories"] = list(t.categories)
    subs = []
    if t.status:
        subs.append({"subresource": "status", "responseKind": kind, "verbs": ["get", "patch", "update"]})
    if t.key == ("", "pods"):
        subs.append({"subresource": "binding", "responseKind": {"group": "", "version": "v1", "kind": "Binding"},
                     "verbs": ["create"]})
        subs.append({"subresource": "eviction",
                     "responseKind": {"group": "policy", "version": "v1", "kind": "Eviction"}, "verbs": ["create"]})
    if subs:
        res["subresources"] = subs
    return res


def aggregated(registry: Registry, core: bool) -> dict[str, Any]:
    """The APIGroupDiscoveryList for /api (core=True) or /apis."""
    items = []
    groups = {"": ["v1"]} if core else registry.groups()
    for name, versions in groups.items():
        items.append({
            "metadata": {"name": name} if name else {},
            "versions": [{"version": v, "freshness": "Current",
                          "resources": [_aggregated_resource(t) for t in registry.in_group_version(name, v)]}
                         for v in versions],
        })
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {},
            "items": items}

"""The resource types the simulator serves: Kubernetes built-ins plus the kinds that CRDs declare."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    status: bool = False  # has a /status subresource isolated from the rest
    custom: bool = False  # served from a CRD
    categories: tuple[str, ...] = ()
    schema: Mapping[str, Any] | None = None  # openAPIV3Schema for custom kinds
    printer_columns: tuple[Mapping[str, Any], ...] = ()
    name_rule: str = "subdomain"  # "label" for namespaces
    storage: tuple[str, str] | None = None  # another type's storage, served through a conversion

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """Storage key: all served versions of one group/plural share their objects."""
        return self.storage or (self.group, self.plural)

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    def discovery(self) -> list[dict[str, Any]]:
        """APIResource entries for /api/v1 and /apis/<group>/<version>."""
        main: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular or self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(ALL_VERBS),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        out = [main]
        if self.status:
            out.append({"name": f"{self.plural}/status", "singularName": "", "namespaced": self.namespaced,
                        "kind": self.kind, "verbs": ["get", "patch", "update"]})
        if self.key == ("", "pods"):
            out.append({"name": "pods/binding", "singularName": "", "namespaced": True, "kind": "Binding",
                        "verbs": ["create"]})
            out.append({"name": "pods/eviction", "singularName": "", "namespaced": True, "group": "policy",
                        "version": "v1", "kind": "Eviction", "verbs": ["create"]})
        return out


def _t(group: str, version: str, plural: str, kind: str, namespaced: bool, **kw: Any) -> ResourceType:
    return ResourceType(group, version, plural, kind, namespaced, **kw)


BUILTINS: tuple[ResourceType, ...] = (
    _t("", "v1", "namespaces", "Namespace", False, short_names=("ns",), status=True, name_rule="label"),
    _t("", "v1", "nodes", "Node", False, short_names=("no",), status=True),
    _t("", "v1", "pods", "Pod", True, short_names=("po",), status=True, categories=("all",)),
    _t("", "v1", "events", "Event", True, short_names=("ev",)),
    _t("", "v1", "configmaps", "ConfigMap", True, short_names=("cm",)),
    _t("", "v1", "secrets", "Secret", True),
    _t("", "v1", "serviceaccounts", "ServiceAccount", True, short_names=("sa",)),
    _t("", "v1", "services", "Service", True, short_names=("svc",), status=True, categories=("all",)),
    _t("apps", "v1", "daemonsets", "DaemonSet", True, short_names=("ds",), status=True, categories=("all",)),
    _t("apps", "v1", "deployments", "Deployment", True, short_names=("deploy",), status=True,
       categories=("all",)),
    _t("events.k8s.io", "v1", "events", "Event", True, short_names=("ev",), storage=("", "events")),
    _t("node.k8s.io", "v1", "runtimeclasses", "RuntimeClass", False),
    _t("coordination.k8s.io", "v1", "leases", "Lease", True),
    _t("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _t("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _t("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    _t("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    _t("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
       short_names=("crd", "crds"), status=True),
)

# Kinds whose objects carry a spec (so their writes bump metadata.generation).
GENERATION_KINDS = {"DaemonSet", "Deployment", "CustomResourceDefinition"}


class Registry:
    """Lookup of served types by (group, version, plural), in discovery order."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._crd_types: dict[str, list[ResourceType]] = {}  # CRD name -> its served types
        for t in BUILTINS:
            self._types[(t.group, t.version, t.plural)] = t

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(list(self._types.values()))

    def groups(self) -> dict[str, list[str]]:
        """group -> served versions (preferred first), excluding the core group."""
        out: dict[str, list[str]] = {}
        for t in self._types.values():
            if t.group and t.version not in out.setdefault(t.group, []):
                out[t.group].append(t.version)
        return out

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [t for t in self._types.values() if t.group == group and t.version == version]

    def by_key(self, key: tuple[str, str]) -> list[ResourceType]:
        return [t for t in self._types.values() if t.key == key]

    def crd_types(self, crd: Mapping[str, Any]) -> list[ResourceType]:
        """The types a CRD object declares (one per served version; storage version first)."""
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        group = spec.get("group", "")
        versions = [v for v in spec.get("versions") or [] if v.get("served", True)]
        versions.sort(key=lambda v: not v.get("storage", False))
        out = []
        for v in versions:
            subresources = v.get("subresources") or {}
            out.append(ResourceType(
                group=group, version=v["name"], plural=names.get("plural", ""), kind=names.get("kind", ""),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular") or names.get("kind", "").lower(),
                short_names=tuple(names.get("shortNames") or ()), status="status" in subresources,
                custom=True, categories=tuple(names.get("categories") or ()),
                schema=(v.get("schema") or {}).get("openAPIV3Schema"),
                printer_columns=tuple(v.get("additionalPrinterColumns") or ()),
            ))
        return out

    def serve_crd(self, crd: Mapping[str, Any]) -> None:
        name = crd["metadata"]["name"]
        self.unserve_crd(name)
        types = self.crd_types(crd)
        self._crd_types[name] = types
        for t in types:
            self._types[(t.group, t.version, t.plural)] = t

    def unserve_crd(self, name: str) -> None:
        for t in self._crd_types.pop(name, []):
            self._types.pop((t.group, t.version, t.plural), None)

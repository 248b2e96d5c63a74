"""Applies a plan's writes through lightkube (async), and posts Events. The only place the operator writes.

Each method returns what the server answered (resourceVersion and the value the index should now hold), so
the controller's overlay reflects the write before the watch delivers it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import (
    GenericGlobalResource,
    GenericNamespacedResource,
    create_api_info,
    create_global_resource,
)
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event as CoreEvent
from lightkube.types import CascadeType, PatchType

from ccgpu.kube.meta import meta_of
from ccgpu.operator import policy
from ccgpu.operator.desired import NFR_API_VERSION
from ccgpu.operator.plan import Event, Write

log = logging.getLogger(__name__)
FIELD_MANAGER = "ccgpu-operator"
EVENTS_NAMESPACE = "default"  # where Events about cluster-scoped objects (nodes, the policy) live



def _untyped(namespaced: bool, group: str, version: str, kind: str, plural: str) -> Any:
    """A dict-backed lightkube resource class that is *not* put in lightkube's global registry, so other code
    that decodes built-in kinds still gets lightkube's typed models; the operator round-trips plain dicts."""
    base = GenericNamespacedResource if namespaced else GenericGlobalResource
    return type(kind, (base,), {"_api_info": create_api_info(group, version, kind, plural)})


ClusterPolicy = create_global_resource(policy.GROUP, policy.VERSION, policy.KIND, policy.PLURAL)
NodeFeatureRule = _untyped(False, "nfd.k8s-sigs.io", "v1alpha1", "NodeFeatureRule", "nodefeaturerules")
DaemonSet = _untyped(True, "apps", "v1", "DaemonSet", "daemonsets")
RuntimeClass = _untyped(False, "node.k8s.io", "v1", "RuntimeClass", "runtimeclasses")
Node = _untyped(False, "", "v1", "Node", "nodes")

RESOURCES: dict[tuple[str, str], Any] = {
    ("apps/v1", "DaemonSet"): DaemonSet,
    ("node.k8s.io/v1", "RuntimeClass"): RuntimeClass,
    (NFR_API_VERSION, "NodeFeatureRule"): NodeFeatureRule,
    (policy.API_VERSION, policy.KIND): ClusterPolicy,
    ("v1", "Node"): Node,
}


class NotServed(Exception):
    """The API server does not serve this kind (e.g. NodeFeatureRule without NFD's CRD installed)."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"the API server does not serve {kind}")
        self.kind = kind


def merge_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """An RFC 7386 merge patch that turns `old` into `new` (keys only in `old` become null)."""
    out: dict[str, Any] = {}
    old = old or {}
    for key in old:
        if key not in new:
            out[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_patch(before, value)
            if sub:
                out[key] = sub
        elif before != value:
            out[key] = value
    return out


def _body(write: Write) -> Mapping[str, Any]:
    """The body a create, replace, patch-node or status write carries (only a delete has none)."""
    if write.body is None:
        raise ValueError(f"a {write.verb} write of {write.key} needs a body; the plan gave none")
    return write.body


def _to_dict(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


class KubeWriter:
    """Writes through one lightkube AsyncClient; counts nothing itself (the controller's metrics do)."""

    def __init__(self, client: AsyncClient, component: str = FIELD_MANAGER) -> None:
        self.client = client
        self.component = component

    async def apply(self, write: Write, actual: Mapping[str, Any] | None) -> tuple[str | None, Any]:
        """Perform one write. `actual` is the object as the index knows it (for resourceVersion / old status)."""
        key = write.key
        res = RESOURCES[(key.api_version, key.kind)]
        ns = key.namespace or None
        if write.verb == "create":
            try:
                made = await self.client.create(res.from_dict(dict(_body(write))), field_manager=FIELD_MANAGER)
            except ApiError as e:
                if e.status.code == 404:
                    raise NotServed(key.kind) from None
                if e.status.code != 409:
                    raise
                made = await self.client.get(res, key.name, namespace=ns)  # someone (or our past self) made it
            return made.metadata.resourceVersion, _to_dict(made)
        if write.verb == "replace":
            obj = _body(write)
            body = {**obj, "metadata": {**obj["metadata"],
                                               "resourceVersion": (actual or {}).get("metadata", {}).get(
                                                   "resourceVersion")}}
            made = await self.client.replace(res.from_dict(body), field_manager=FIELD_MANAGER)
            return made.metadata.resourceVersion, _to_dict(made)
        if write.verb == "delete":
            try:
                await self.client.delete(res, key.name, namespace=ns, cascade=CascadeType.BACKGROUND)
            except ApiError as e:
                if e.status.code != 404:
                    raise
            return (actual or {}).get("metadata", {}).get("resourceVersion"), None
        if write.verb == "patch-node":
            node = await self.client.patch(Node, key.name, {"metadata": {"labels": dict(_body(write))}},
                                           patch_type=PatchType.MERGE, field_manager=FIELD_MANAGER)
            meta = meta_of(node)
            return meta.resourceVersion, dict(meta.labels or {})
        if write.verb == "status":
            old = (actual or {}).get("status")
            patched = await self.client.patch(ClusterPolicy.Status, key.name,
                                              {"status": merge_patch(old, dict(_body(write)))},
                                              patch_type=PatchType.MERGE, field_manager=FIELD_MANAGER)
            return meta_of(patched).resourceVersion, _to_dict(patched)
        raise ValueError(f"unknown write verb {write.verb!r}")

    async def post_event(self, event: Event, uid: str | None = None) -> None:
        """A core/v1 Event on the node or the ClusterPolicy, as `kubectl describe` shows them."""
        now = dt.datetime.now(dt.UTC)
        api_version = "v1" if event.kind == "Node" else policy.API_VERSION
        ev = CoreEvent(
            metadata=ObjectMeta(generateName=f"{event.name}.", namespace=EVENTS_NAMESPACE),
            involvedObject=ObjectReference(apiVersion=api_version, kind=event.kind, name=event.name, uid=uid),
            reason=event.reason,
            message=event.message,
            type=event.type,
            source=EventSource(component=self.component),
            firstTimestamp=now,
            lastTimestamp=now,
            count=1,
            reportingComponent=self.component,
        )
        try:
            await self.client.create(ev)  # into its metadata.namespace
        except ApiError as e:  # an Event is best effort: never fail a reconcile for it
            log.warning("could not post event %s on %s %s: %s", event.reason, event.kind, event.name, e)

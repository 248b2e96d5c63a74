"""One node as an agent sees it: read it, patch its labels and annotations, find operand pods on it, emit
Events about it, watch it.

A `NodeHandle` is bound to a single node name at construction, and no method takes another name: an agent
can only ever patch its own node (RBAC cannot scope `patch nodes` to one object, so the code does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.operators import in_
from lightkube.resources.core_v1 import Event, Node, Pod
from lightkube.types import PatchType

from ccgpu.kube.meta import meta_of, name_of

log = logging.getLogger(__name__)

EVENT_NAMESPACE = "default"  # where Events about cluster-scoped objects live (kubectl describe node finds them)


@dataclass(frozen=True)
class NodeView:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    resource_version: str | None = None


def _view(node: Node) -> NodeView:
    meta = meta_of(node)
    return NodeView(
        name=name_of(node),
        labels=dict(meta.labels or {}),
        annotations=dict(meta.annotations or {}),
        resource_version=meta.resourceVersion,
    )


class NodeHandle:
    """The agent's own node. `component` names the agent in Events (source.component)."""

    def __init__(self, client: AsyncClient, node_name: str, *, component: str) -> None:
        if not node_name:
            raise ValueError("node name is empty; set NODE_NAME (the downward API's spec.nodeName)")
        self.client = client
        self.name = node_name
        self.component = component

    async def get(self) -> NodeView:
        return _view(await self.client.get(Node, self.name))

    async def patch(
        self,
        labels: Mapping[str, str | None] | None = None,
        annotations: Mapping[str, str | None] | None = None,
    ) -> NodeView:
        """One merge patch of labels and annotations (None deletes a key): applied atomically by the server."""
        metadata: dict[str, object] = {}
        if labels:
            metadata["labels"] = labels
        if annotations:
            metadata["annotations"] = annotations
        if not metadata:
            return await self.get()
        node = await self.client.patch(Node, self.name, {"metadata": metadata}, patch_type=PatchType.MERGE)
        return _view(node)

    async def pods(self, app_names: list[str]) -> list[str]:
        """`namespace/name` of pods on this node whose `app` label is one of `app_names`."""
        found = []
        async for pod in self.client.list(
            Pod, namespace="*", fields={"spec.nodeName": self.name}, labels={"app": in_(app_names)}
        ):
            meta = meta_of(pod)
            found.append(f"{meta.namespace}/{meta.name}")
        return found

    async def event(self, type_: str, reason: str, message: str) -> None:
        """Record a Kubernetes Event on this node; failures are logged, never fatal (Events are best effort)."""
        now = datetime.now(UTC)
        ev = Event(
            metadata=ObjectMeta(generateName=f"{self.name}.", namespace=EVENT_NAMESPACE),
            involvedObject=ObjectReference(kind="Node", name=self.name, apiVersion="v1"),
            reason=reason,
            message=message,
            type=type_,
            source=EventSource(component=self.component, host=self.name),
            firstTimestamp=now,
            lastTimestamp=now,
            count=1,
        )
        try:
            await self.client.create(ev)  # into its metadata.namespace
        except (ApiError, OSError) as e:
            log.warning("could not record event %s on node %s: %s", reason, self.name, e)

    async def watch(self, resource_version: str | None) -> AsyncIterator[tuple[str, NodeView]]:
        """Watch this node only (field selector), from `resource_version`. Raises ApiError(410) when too old."""
        async for kind, node in self.client.watch(
            Node, fields={"metadata.name": self.name}, resource_version=resource_version
        ):
            yield kind, _view(node)


async def wait_until(predicate, *, timeout_s: float, interval_s: float = 0.05, max_interval_s: float = 1.0) -> bool:
    """Poll an async predicate until it is true or the deadline passes; returns its last value. The period
    doubles from `interval_s` up to `max_interval_s`: a quick answer is seen quickly, and a long wait (pods
    terminating on hundreds of nodes at once) does not turn into a flood of LIST requests."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        if await predicate():
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(min(interval_s, max(deadline - loop.time(), 0)))
        interval_s = min(interval_s * 2, max_interval_s)

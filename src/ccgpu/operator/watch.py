"""Watches that fill the thread-safe store the reconcile loop reads: kopf for ClusterPolicies and the operator's
own objects (it writes nothing), and a plain lightkube list+watch for nodes.

Nodes are not given to kopf: kopf's index start-up keeps one toggle per object in one set and re-checks the whole
set on every change, which is quadratic (measured: 500 nodes synced in 3 s, 2,500 in 44 s, 5,000 in minutes).

kopf runs in its own thread and event loop, because an in-process kopf cancels every task of its loop that
appeared after it started when it stops (kopf's `run_tasks`), which would take the controller down with it.
kopf calls non-index handlers only once every `@kopf.index` has finished its initial listing, so the first
call of the handler on the operator's namespace marks the store complete: the loop never reconciles from a
partial cache (which would delete what it cannot see yet, e.g. on a restart).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from ccgpu.operator import policy
from ccgpu.operator.desired import MANAGED_BY, MANAGED_BY_KEY, ObjectKey
from ccgpu.operator.index import Versioned

log = logging.getLogger(__name__)
OWNED = {MANAGED_BY_KEY: MANAGED_BY}
# (group, version, plural, store category, label filter)
WATCHED = (
    (policy.GROUP, policy.VERSION, policy.PLURAL, "policies", None),
    ("apps", "v1", "daemonsets", "owned", OWNED),
    ("node.k8s.io", "v1", "runtimeclasses", "owned", OWNED),
    ("nfd.k8s-sigs.io", "v1alpha1", "nodefeaturerules", "owned", OWNED),
)


class WatchStore:
    """category → key → (resourceVersion, value); written by the kopf thread, read by the controller."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._lock = threading.Lock()
        self._data: dict[str, dict[Hashable, Versioned]] = {"nodes": {}, "policies": {}, "owned": {}}

    def put(self, category: str, key: Hashable, rv: str | None, value: Any) -> None:
        with self._lock:
            self._data[category][key] = (rv or "0", value)

    def remove(self, category: str, key: Hashable) -> None:
        with self._lock:
            self._data[category].pop(key, None)

    def _copy(self, category: str) -> dict[Hashable, Versioned]:
        with self._lock:
            return dict(self._data[category])

    def policies(self) -> Mapping[Hashable, Versioned]:
        return self._copy("policies")

    def nodes(self) -> Mapping[Hashable, Versioned]:
        return self._copy("nodes")

    def replace_nodes(self, nodes: dict[Hashable, Versioned]) -> None:
        """A fresh list (start-up, or after the watch fell too far behind: 410 Gone)."""
        with self._lock:
            self._data["nodes"] = nodes

    def owned(self) -> Mapping[Hashable, Versioned]:
        return self._copy("owned")

    def record(self, category: str, raw_type: str | None, body: Mapping[str, Any]) -> None:
        """Apply one watch event (kopf's raw type: None for the initial listing, ADDED, MODIFIED, DELETED)."""
        obj = {k: body[k] for k in body}
        meta = obj.get("metadata") or {}
        if category == "owned" and meta.get("namespace", self.namespace) != self.namespace:
            return
        if category == "nodes":
            key: Hashable = meta["name"]
            value: Any = dict(meta.get("labels") or {})
        elif category == "policies":
            key, value = meta["name"], obj
        else:
            key, value = ObjectKey.of(obj), obj
        if raw_type == "DELETED":
            self.remove(category, key)
        else:
            self.put(category, key, meta.get("resourceVersion"), value)


def build_registry(store: WatchStore, on_synced: Callable[[], None], on_change: Callable[[], None],
                   connection: Callable[[], Any] | None) -> Any:
    """kopf handlers. Every kind has an index handler (fills the store; kopf's sync gate waits for them all)
    and an event handler (deletions, wake-ups). A handler on the operator's own namespace, which always exists
    and which kopf calls only once every index is populated, marks the store synced."""
    import kopf

    reg = kopf.OperatorRegistry()

    for group, version, plural, category, labels in WATCHED:
        def make(category: str = category) -> tuple[Callable[..., Any], Callable[..., Any]]:
            def on_index(body: Mapping[str, Any], **_: Any) -> dict:
                store.record(category, "ADDED", body)
                on_change()
                return {}

            async def on_event(event: Mapping[str, Any], **_: Any) -> None:
                store.record(category, event.get("type"), event["object"])
                on_change()

            return on_index, on_event

        index_handler, event_handler = make()
        kopf.index(group, version, plural, labels=labels, registry=reg, id=f"ccgpu_{category}_{plural}")(
            index_handler)
        kopf.on.event(group, version, plural, labels=labels, registry=reg, id=f"event-{plural}")(event_handler)

    @kopf.on.event("", "v1", "namespaces", field="metadata.name", value=store.namespace, registry=reg,
                   id="synced")
    async def synced(**_: Any) -> None:
        on_synced()
        on_change()

    @kopf.on.startup(registry=reg)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # Events are the controller's, posted through lightkube
        settings.watching.server_timeout = 300

    if connection is not None:
        @kopf.on.login(registry=reg)
        def login(**_: Any) -> Any:
            return connection()

    return reg


class NodeWatcher:
    """List nodes, then watch from the list's resourceVersion; relist when the server says 410 Gone or the
    stream fails. Only names, labels and resourceVersions are kept (5,000 nodes fit in a few MB)."""

    def __init__(self, client: Any, store: WatchStore, on_change: Callable[[], None]) -> None:
        self.client, self.store, self.on_change = client, store, on_change
        self.listed = asyncio.Event()

    async def _list(self) -> str:
        from ccgpu.operator.writer import Node

        nodes: dict[Hashable, Versioned] = {}
        listing = self.client.list(Node, chunk_size=500)
        async for node in listing:
            meta = node.metadata
            nodes[meta.name] = (meta.resourceVersion or "0", dict(meta.labels or {}))
        self.store.replace_nodes(nodes)
        self.listed.set()
        self.on_change()
        return listing.resourceVersion

    async def run(self, stop: asyncio.Event) -> None:
        from lightkube.core.exceptions import ApiError

        from ccgpu.operator.writer import Node

        backoff = 0.5
        while not stop.is_set():
            try:
                rv = await self._list()
                async for kind, node in self.client.watch(Node, resource_version=rv, server_timeout=300):
                    meta = node.metadata
                    if kind == "DELETED":
                        self.store.remove("nodes", meta.name)
                    elif kind in ("ADDED", "MODIFIED"):
                        self.store.put("nodes", meta.name, meta.resourceVersion, dict(meta.labels or {}))
                    else:
                        continue
                    self.on_change()
                    backoff = 0.5
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                if e.status.code != 410:
                    log.warning("node watch: %s", e)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
            except Exception as e:  # connection lost: relist after a pause
                log.warning("node watch: %s", e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)


def connection_from_kubeconfig(kc: Mapping[str, Any]) -> Any:
    """kopf ConnectionInfo for a kubeconfig dict's current context (server, token, CA or insecure)."""
    import kopf

    ctx_name = kc.get("current-context") or kc["contexts"][0]["name"]
    ctx = next(c["context"] for c in kc["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in kc["clusters"] if c["name"] == ctx["cluster"])
    user: Mapping[str, Any] = next((u["user"] for u in kc.get("users", []) if u["name"] == ctx.get("user")), {})
    ca = cluster.get("certificate-authority-data")
    return kopf.ConnectionInfo(
        server=cluster["server"],
        ca_data=base64.b64decode(ca) if ca else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        token=user.get("token"),
        default_namespace=ctx.get("namespace"),
    )


class KopfThread:
    """Runs kopf in a daemon thread with its own loop; `stop()` asks it to finish and waits."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="ccgpu-kopf", daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        import kopf

        try:
            asyncio.run(kopf.operator(registry=self.registry, standalone=True, clusterwide=True,
                                      stop_flag=self._stop))
        except BaseException as e:  # surfaced through .error / .alive for the controller to exit on
            self.error = e
            log.error("kopf stopped: %s", e)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    async def stop(self, timeout: float = 20.0) -> None:
        self._stop.set()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, timeout)

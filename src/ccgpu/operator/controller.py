"""`ccgpu operator`: kopf watches feed in-memory indexes; one level-triggered loop reconciles from them.

kopf is the event machinery only: `@kopf.index` handlers keep nodes (labels), ClusterPolicies and the objects
the operator owns in memory, and `@kopf.on.event` handlers wake the loop. kopf calls those only after every
index has finished its initial listing, so a restarted operator never reconciles from a partial cache (which
would delete what it cannot see yet). kopf handlers write nothing; the loop writes through lightkube, only
while this replica holds the leader Lease, and only the differences `plan.reconcile` computes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ccgpu.operator import policy
from ccgpu.operator.desired import MANAGED_BY, MANAGED_BY_KEY, Images, ObjectKey
from ccgpu.operator.index import Overlay, Versioned
from ccgpu.operator.metrics import OperatorMetrics
from ccgpu.operator.plan import Event, Plan, Snapshot, Write, reconcile
from ccgpu.operator.writer import NotServed

log = logging.getLogger(__name__)
LEASE_NAME = "ccgpu-operator-leader"


@dataclass
class OperatorConfig:
    namespace: str = "ccgpu"
    image: str = "ccgpu:latest"
    nvidia_repository: str = ""
    metrics_port: int = 8080
    kubeconfig: Path | None = None
    kubeconfig_dict: dict[str, Any] | None = None  # tests and the simulator pass one directly
    standalone: bool = False
    identity: str = field(default_factory=lambda: os.environ.get("POD_NAME") or socket.gethostname())
    resync_s: float = 300.0
    debounce_s: float = 0.05
    write_concurrency: int = 16


class Sources(Protocol):
    """Where the watched state comes from: name/key → (resourceVersion, value)."""

    def policies(self) -> Mapping[Hashable, Versioned]: ...
    def nodes(self) -> Mapping[Hashable, Versioned]: ...
    def owned(self) -> Mapping[Hashable, Versioned]: ...


class Writer(Protocol):
    async def apply(self, write: Write, actual: Mapping[str, Any] | None) -> tuple[str | None, Any]: ...
    async def post_event(self, event: Event, uid: str | None = None) -> None: ...


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_CATEGORY = {"patch-node": "nodes", "status": "policies", "create": "owned", "replace": "owned", "delete": "owned"}


class Controller:
    """The reconcile loop. Pure decisions live in `plan`; this applies them and keeps the overlay."""

    def __init__(self, cfg: OperatorConfig, sources: Sources, writer: Writer,
                 metrics: OperatorMetrics | None = None, now: Callable[[], str] = utc_now) -> None:
        self.cfg, self.sources, self.writer = cfg, sources, writer
        self.metrics = metrics or OperatorMetrics()
        self.now = now
        self.images = Images(ccgpu=cfg.image, nvidia_repository=cfg.nvidia_repository)
        self.overlay = Overlay()
        self.wake = asyncio.Event()
        self.synced = asyncio.Event()  # set once the indexes are fully populated
        self._posted: OrderedDict[tuple[str, str, str, str], None] = OrderedDict()
        self.reconciles = 0
        self.last_plan: Plan | None = None
        self.not_served: dict[str, float] = {}  # kind → when to try creating it again
        self.not_served_retry_s = 600.0

    def trigger(self) -> None:
        self.wake.set()

    def snapshot(self) -> Snapshot:
        policies = self.overlay.merge("policies", self.sources.policies())
        nodes = self.overlay.merge("nodes", self.sources.nodes())
        owned = self.overlay.merge("owned", self.sources.owned())
        return Snapshot(policies=list(policies.values()), nodes=nodes, owned=owned)  # type: ignore[arg-type]

    async def reconcile_once(self) -> Plan:
        started = time.perf_counter()
        snap = self.snapshot()
        plan = reconcile(snap, namespace=self.cfg.namespace, images=self.images, now=self.now())
        clock = time.monotonic()
        plan.writes = [w for w in plan.writes if self.not_served.get(w.key.kind, 0) <= clock]
        policies = {p["metadata"]["name"]: p for p in snap.policies}
        sem = asyncio.Semaphore(self.cfg.write_concurrency)

        async def one(w: Write) -> None:
            actual = policies.get(w.key.name) if w.verb == "status" else snap.owned.get(w.key)
            async with sem:
                rv, value = await self.writer.apply(w, actual)
            self.metrics.writes.labels(w.verb, w.key.kind).inc()
            category = _CATEGORY[w.verb]
            key: Hashable = w.key.name if category in ("nodes", "policies") else w.key
            self.overlay.record(category, key, rv, value)

        results = await asyncio.gather(*(one(w) for w in plan.writes), return_exceptions=True)
        self.metrics.reconcile_seconds.observe(time.perf_counter() - started)
        for r in results:
            if isinstance(r, NotServed):
                self.not_served[r.kind] = clock + self.not_served_retry_s
                if plan.policy:
                    plan.events.append(Event(policy.KIND, plan.policy, "Warning", "KindNotServed",
                                             f"{r}: install its CRD (NodeFeatureRule: Node Feature Discovery) or "
                                             "turn off the ClusterPolicy field that asks for it"))
        failures = [r for r in results if isinstance(r, BaseException) and not isinstance(r, NotServed)]
        if failures:  # what did land is in the overlay; the next reconcile redoes only the rest
            raise failures[0]
        await self._post_events(plan.events, policies)
        self.reconciles += 1
        self.last_plan = plan
        if plan.policy and plan.policy in policies:
            status = next((w.body for w in plan.writes if w.verb == "status" and w.key.name == plan.policy), None)
            self.metrics.observe_status(status or policies[plan.policy].get("status"))
        return plan

    async def _post_events(self, events: list[Event], policies: Mapping[str, Mapping[str, Any]]) -> None:
        for ev in events:
            fingerprint = (ev.kind, ev.name, ev.reason, ev.message)
            if fingerprint in self._posted:
                continue
            self._posted[fingerprint] = None
            if len(self._posted) > 10_000:
                self._posted.popitem(last=False)
            level = logging.WARNING if ev.type == "Warning" else logging.INFO
            log.log(level, "%s %s: %s: %s", ev.kind, ev.name, ev.reason, ev.message)
            uid = (policies.get(ev.name, {}).get("metadata") or {}).get("uid") if ev.kind == policy.KIND else None
            await self.writer.post_event(ev, uid)

    async def run(self, stop: asyncio.Event, leading: Callable[[], bool] = lambda: True) -> None:
        """Reconcile whenever woken (or every resync_s) once synced, while leading; back off on errors."""
        await _wait_any(self.synced, stop)
        backoff = 0.5
        while not stop.is_set():
            await _wait_any(self.wake, stop, timeout=self.cfg.resync_s)
            if stop.is_set():
                break
            if self.cfg.debounce_s:
                await asyncio.sleep(self.cfg.debounce_s)  # let a burst of watch events land in one reconcile
            self.wake.clear()
            if not leading():
                continue
            try:
                await self.reconcile_once()
                backoff = 0.5
            except Exception as e:
                self.metrics.errors.inc()
                log.error("reconcile failed: %s", e)
                await _wait_any(stop, timeout=backoff)
                backoff = min(backoff * 2, 30.0)
                self.wake.set()


async def _wait_any(*events: asyncio.Event, timeout: float | None = None) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


# --- kopf wiring -----------------------------------------------------------------------------------------


INDEXES = ("ccgpu_nodes", "ccgpu_policies", "ccgpu_daemonsets", "ccgpu_runtimeclasses", "ccgpu_nfrs")


class KopfSources:
    """Reads the live kopf indexes (bound on the first handler call, i.e. once they are populated)."""

    def __init__(self) -> None:
        self.indexes: dict[str, Mapping[Any, Any]] = {}

    def _flat(self, name: str) -> dict[Hashable, Versioned]:
        out: dict[Hashable, Versioned] = {}
        for key, store in (self.indexes.get(name) or {}).items():
            for value in store:
                out[key] = value
        return out

    def policies(self) -> Mapping[Hashable, Versioned]:
        return self._flat("ccgpu_policies")

    def nodes(self) -> Mapping[Hashable, Versioned]:
        return self._flat("ccgpu_nodes")

    def owned(self) -> Mapping[Hashable, Versioned]:
        out: dict[Hashable, Versioned] = {}
        for name in ("ccgpu_daemonsets", "ccgpu_runtimeclasses", "ccgpu_nfrs"):
            out.update(self._flat(name))
        return out


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: body[k] for k in body}


def build_registry(controller: Controller, sources: KopfSources, cfg: OperatorConfig) -> Any:
    """kopf handlers: indexes for the state, event handlers that bind the indexes and wake the loop."""
    import kopf

    reg = kopf.OperatorRegistry()
    owned = {MANAGED_BY_KEY: MANAGED_BY}

    def _versioned(body: Mapping[str, Any]) -> tuple[Any, Versioned]:
        obj = _plain(body)
        return ObjectKey.of(obj), (obj["metadata"].get("resourceVersion"), obj)

    @kopf.index("", "v1", "nodes", registry=reg, id="ccgpu_nodes")
    def ccgpu_nodes(name: str, meta: Mapping[str, Any], labels: Mapping[str, str], **_: Any) -> dict:
        return {name: (meta.get("resourceVersion"), dict(labels))}

    @kopf.index(policy.GROUP, policy.VERSION, policy.PLURAL, registry=reg, id="ccgpu_policies")
    def ccgpu_policies(name: str, body: Mapping[str, Any], **_: Any) -> dict:
        obj = _plain(body)
        return {name: (obj["metadata"].get("resourceVersion"), obj)}

    @kopf.index("apps", "v1", "daemonsets", labels=owned, registry=reg, id="ccgpu_daemonsets")
    def ccgpu_daemonsets(body: Mapping[str, Any], namespace: str, **_: Any) -> dict:
        if namespace != cfg.namespace:
            return {}
        return dict([_versioned(body)])

    @kopf.index("node.k8s.io", "v1", "runtimeclasses", labels=owned, registry=reg, id="ccgpu_runtimeclasses")
    def ccgpu_runtimeclasses(body: Mapping[str, Any], **_: Any) -> dict:
        return dict([_versioned(body)])

    @kopf.index("nfd.k8s-sigs.io", "v1alpha1", "nodefeaturerules", labels=owned, registry=reg, id="ccgpu_nfrs")
    def ccgpu_nfrs(body: Mapping[str, Any], **_: Any) -> dict:
        return dict([_versioned(body)])

    def _bind(kwargs: Mapping[str, Any]) -> None:
        missing = [name for name in INDEXES if name not in kwargs]
        if missing:  # never reconcile from a cache that cannot see everything: it would delete what it misses
            raise RuntimeError(f"kopf did not pass the indexes {', '.join(missing)}")
        for name in INDEXES:
            sources.indexes[name] = kwargs[name]
        controller.synced.set()
        controller.trigger()

    for group, version, plural, labels in (
        ("", "v1", "nodes", None),
        (policy.GROUP, policy.VERSION, policy.PLURAL, None),
        ("apps", "v1", "daemonsets", owned),
        ("node.k8s.io", "v1", "runtimeclasses", owned),
        ("nfd.k8s-sigs.io", "v1alpha1", "nodefeaturerules", owned),
    ):
        @kopf.on.event(group, version, plural, labels=labels, registry=reg, id=f"wake-{plural}")
        async def wake(**kwargs: Any) -> None:
            _bind(kwargs)

    @kopf.on.startup(registry=reg)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # Events are the controller's, not kopf's
        settings.watching.server_timeout = 300
        settings.persistence.finalizer = "ccgpu.dev/operator"  # unused: no change handlers, nothing to block

    @kopf.on.login(registry=reg)
    def login(**kwargs: Any) -> Any:
        if cfg.kubeconfig_dict is not None:
            return _connection_from_kubeconfig(cfg.kubeconfig_dict)
        if cfg.kubeconfig is not None:
            import yaml

            return _connection_from_kubeconfig(yaml.safe_load(cfg.kubeconfig.read_text()))
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    return reg


def _connection_from_kubeconfig(kc: Mapping[str, Any]) -> Any:
    """kopf ConnectionInfo for the current context of a kubeconfig dict (server, token, CA or insecure)."""
    import base64

    import kopf

    ctx_name = kc.get("current-context") or kc["contexts"][0]["name"]
    ctx = next(c["context"] for c in kc["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in kc["clusters"] if c["name"] == ctx["cluster"])
    user = next((u["user"] for u in kc.get("users", []) if u["name"] == ctx.get("user")), {})
    ca = cluster.get("certificate-authority-data")
    return kopf.ConnectionInfo(
        server=cluster["server"],
        ca_data=base64.b64decode(ca) if ca else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        token=user.get("token"),
        default_namespace=ctx.get("namespace"),
    )


def make_client(cfg: OperatorConfig) -> Any:
    from lightkube import AsyncClient
    from lightkube.config.kubeconfig import KubeConfig

    if cfg.kubeconfig_dict is not None:
        return AsyncClient(config=KubeConfig.from_dict(cfg.kubeconfig_dict))
    if cfg.kubeconfig is not None:
        return AsyncClient(config=KubeConfig.from_file(cfg.kubeconfig))
    return AsyncClient()


async def serve_metrics(metrics: OperatorMetrics, port: int, healthy: Callable[[], bool]) -> Any:
    """/metrics (Prometheus) and /healthz on `port`; returns the aiohttp runner to clean up."""
    from aiohttp import web

    async def metrics_handler(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), content_type="text/plain")

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok" if healthy() else "syncing", status=200 if healthy() else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # noqa: S104 - a pod's metrics port
    return runner


async def run(cfg: OperatorConfig, stop: asyncio.Event | None = None) -> Controller:
    """Run the operator until `stop` is set (or forever): kopf watches, the leader Lease, the reconcile loop."""
    import kopf

    from ccgpu.operator.leader import LeaseElector
    from ccgpu.operator.writer import KubeWriter

    stop = stop or asyncio.Event()
    client = make_client(cfg)
    sources = KopfSources()
    controller = Controller(cfg, sources, KubeWriter(client))
    registry = build_registry(controller, sources, cfg)
    tasks = [asyncio.create_task(kopf.operator(registry=registry, standalone=True, clusterwide=True,
                                               stop_flag=stop), name="kopf")]
    if cfg.standalone:
        def leading() -> bool:
            return True
        controller.metrics.leader.set(1)
    else:
        def lead_changed(held: bool) -> None:
            controller.metrics.leader.set(1 if held else 0)
            if held:
                controller.trigger()  # a new leader reconciles at once

        elector = LeaseElector(client, cfg.namespace, LEASE_NAME, cfg.identity, on_change=lead_changed)
        tasks.append(asyncio.create_task(elector.run(stop), name="lease"))
        leading = elector.leader.is_set
    tasks.append(asyncio.create_task(controller.run(stop, leading), name="reconcile"))
    runner = await serve_metrics(controller.metrics, cfg.metrics_port, controller.synced.is_set) \
        if cfg.metrics_port else None
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is not stopper and t.exception() is not None:
                raise t.exception()  # kopf or the loop died: exit non-zero so the pod restarts
    finally:
        stopper.cancel()
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        if runner is not None:
            await runner.cleanup()
        await client.close()
    return controller

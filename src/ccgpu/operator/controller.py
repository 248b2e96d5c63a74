"""`ccgpu operator`: watches fill a store; one level-triggered loop reconciles from it.

`watch.py` runs kopf (event machinery only, it writes nothing) and the node list+watch. The loop here waits until the store holds every
watched object (a partial cache would make it delete what it cannot see yet), then on every change computes the
whole desired state (`plan.reconcile`) and writes only the differences through lightkube, and only while this
replica holds the leader Lease.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import re
import signal
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ccgpu.operator import policy
from ccgpu.operator.desired import Images
from ccgpu.operator.index import Overlay, Versioned
from ccgpu.operator.metrics import OperatorMetrics
from ccgpu.operator.plan import Event, Plan, Snapshot, Write, reconcile
from ccgpu.operator.writer import NotServed

log = logging.getLogger(__name__)
LEASE_NAME = "ccgpu-operator-leader"


class ConfigError(ValueError):
    """An operator setting that cannot work; the message says which and what is accepted."""


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
    lease_duration_s: int = 15
    lease_renew_s: float = 5.0
    debounce_s: float = 0.05
    write_concurrency: int = 16

    def check(self) -> None:
        """Refuse settings that cannot work, before anything starts."""
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", self.namespace) or len(self.namespace) > 63:
            raise ConfigError(f"namespace {self.namespace!r} is not a DNS-1123 label (lowercase letters, digits, "
                              "'-', at most 63)")
        if not self.image:
            raise ConfigError("--image must name the ccgpu image the sandbox operands run, e.g. ccgpu:0.1.0")
        if self.kubeconfig is not None and not self.kubeconfig.is_file():
            raise ConfigError(f"kubeconfig {str(self.kubeconfig)!r} is not a file; omit --kubeconfig in a pod")


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
        self.elector: Any = None  # the LeaseElector when not standalone

    def trigger(self) -> None:
        self.wake.set()

    def snapshot(self) -> Snapshot:
        policies = self.overlay.merge("policies", self.sources.policies())
        nodes = self.overlay.merge("nodes", self.sources.nodes())
        owned = self.overlay.merge("owned", self.sources.owned())
        # The watch store and overlay key every category by Hashable: names for policies and nodes, ObjectKey for
        # owned objects. Typing each category separately would split both classes; until then mypy sees Hashable.
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
        fresh: list[Event] = []
        for ev in events:
            fingerprint = (ev.kind, ev.name, ev.reason, ev.message)
            if fingerprint in self._posted:
                continue
            self._posted[fingerprint] = None
            if len(self._posted) > 10_000:
                self._posted.popitem(last=False)
            level = logging.WARNING if ev.type == "Warning" else logging.INFO
            log.log(level, "%s %s: %s: %s", ev.kind, ev.name, ev.reason, ev.message)
            fresh.append(ev)
        sem = asyncio.Semaphore(self.cfg.write_concurrency)

        async def post(ev: Event) -> None:
            uid = (policies.get(ev.name, {}).get("metadata") or {}).get("uid") if ev.kind == policy.KIND else None
            async with sem:
                await self.writer.post_event(ev, uid)

        await asyncio.gather(*(post(ev) for ev in fresh))

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


# --- wiring ------------------------------------------------------------------------------------------


def make_client(cfg: OperatorConfig) -> Any:
    from ccgpu.kube.client import make_async_client

    return make_async_client(cfg.kubeconfig_dict if cfg.kubeconfig_dict is not None else cfg.kubeconfig,
                             field_manager="ccgpu-operator")


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


async def run(cfg: OperatorConfig, stop: asyncio.Event | None = None,
              started: Callable[[Controller], None] | None = None) -> Controller:
    """Run the operator until `stop` is set (or forever): kopf watches (own thread), the leader Lease, the
    reconcile loop. `started` receives the controller once it exists (tests and the benchmark watch it)."""
    import yaml

    from ccgpu.operator.leader import LeaseElector
    from ccgpu.operator.watch import (
        KopfThread,
        NodeWatcher,
        WatchStore,
        build_registry,
        connection_from_kubeconfig,
    )
    from ccgpu.operator.writer import KubeWriter

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    client = make_client(cfg)
    store = WatchStore(cfg.namespace)
    controller = Controller(cfg, store, KubeWriter(client))
    kc = cfg.kubeconfig_dict
    if kc is None and cfg.kubeconfig is not None:
        kc = yaml.safe_load(cfg.kubeconfig.read_text())
    node_watcher = NodeWatcher(client, store, controller.trigger)
    kopf_synced = asyncio.Event()

    async def both_synced() -> None:  # the loop starts only once nodes are listed and kopf's indexes are full
        await node_watcher.listed.wait()
        await kopf_synced.wait()
        controller.synced.set()

    def kopf_listed() -> None:  # both run on kopf's thread
        loop.call_soon_threadsafe(kopf_synced.set)

    def kopf_changed() -> None:
        loop.call_soon_threadsafe(controller.trigger)

    registry = build_registry(
        store,
        on_synced=kopf_listed,
        on_change=kopf_changed,
        connection=(lambda: connection_from_kubeconfig(kc)) if kc is not None else None,
    )
    kopf_thread = KopfThread(registry)
    if started is not None:
        started(controller)
    tasks = [asyncio.create_task(node_watcher.run(stop), name="nodes"),
             asyncio.create_task(both_synced(), name="synced")]
    if cfg.standalone:
        def leading() -> bool:
            return True
        controller.metrics.leader.set(1)
    else:
        def lead_changed(held: bool) -> None:
            controller.metrics.leader.set(1 if held else 0)
            if held:
                controller.trigger()  # a new leader reconciles at once

        elector = LeaseElector(client, cfg.namespace, LEASE_NAME, cfg.identity, duration_s=cfg.lease_duration_s,
                               renew_s=cfg.lease_renew_s, on_change=lead_changed)
        controller.elector = elector
        tasks.append(asyncio.create_task(elector.run(stop), name="lease"))
        leading = elector.leader.is_set
    kopf_thread.start()
    tasks.append(asyncio.create_task(controller.run(stop, leading), name="reconcile"))
    runner = await serve_metrics(controller.metrics, cfg.metrics_port, controller.synced.is_set) \
        if cfg.metrics_port else None
    try:
        while not stop.is_set():
            await _wait_any(stop, timeout=1.0)
            if not kopf_thread.alive:
                raise RuntimeError(f"kopf stopped: {kopf_thread.error}")  # exit non-zero: the pod restarts
            for t in tasks:
                if t.done() and not t.cancelled():
                    error = t.exception()
                    if error is not None:
                        raise error
    finally:
        stop.set()
        tasks[0].cancel()  # the node watch blocks on its stream
        tasks[1].cancel()  # and the sync gate, if the operator stops before it synced
        await asyncio.gather(*tasks, return_exceptions=True)
        await kopf_thread.stop()
        if runner is not None:
            await runner.cleanup()
        await client.close()
    return controller


def run_until_signalled(cfg: OperatorConfig) -> None:
    """`ccgpu operator`: run until SIGTERM/SIGINT, then stop cleanly (watches closed, Lease kept to expire)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(cfg, stop)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kopf").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(main())

"""The DaemonSet controller of the simulated cluster, with the container runtime for operand pods folded in.

For each DaemonSet and each node that matches its pod template's nodeSelector and tolerates its taints, it
creates the Pod (label `app` etc. from the template, `spec.nodeName`, an ownerReference to the DaemonSet) and
runs that operand: a ccgpu agent (`ccgpu agent <name>`) runs in-process for that node (see `sim.agents`); an
NVIDIA image has no behaviour here and is simply Running; a ccgpu agent this build lacks leaves the pod Pending
with that reason. When the node stops matching (a deploy label removed or paused by the cc-manager) the agent is
stopped and the Pod deleted. An agent that crashes is restarted (restartCount counts it, as CrashLoopBackOff
would). DaemonSet status counts are kept equal to what runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ccgpu.agents.pacing import sleep_or_stop
from ccgpu.sim.agents import RUNNERS, AgentContext, Runner, agent_name
from ccgpu.sim.resources import SIM_OWNER
from ccgpu.sim.scheduler import selector_matches, tolerates

log = logging.getLogger(__name__)


def should_run(ds: dict[str, Any], node: dict[str, Any]) -> bool:
    """Whether a DaemonSet's pod belongs on a node: nodeSelector matches and every NoSchedule/NoExecute taint is
    tolerated (the DaemonSet controller adds no tolerations for these)."""
    pod_spec = ds["spec"]["template"].get("spec") or {}
    node_labels = (node.get("metadata") or {}).get("labels") or {}
    if not selector_matches(pod_spec.get("nodeSelector") or {}, node_labels):
        return False
    tolerations = pod_spec.get("tolerations") or []
    return all(tolerates(t, tolerations) for t in (node.get("spec") or {}).get("taints") or []
               if t.get("effect") in ("NoSchedule", "NoExecute"))


def pod_name(ds_name: str, node: str) -> str:
    return f"{ds_name}-{hashlib.sha256(node.encode()).hexdigest()[:5]}"


def resolve_env(container: dict[str, Any], pod: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the pod sees it (downward API fieldRefs resolved)."""
    env = {}
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
        ref = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if ref == "spec.nodeName":
            env[e["name"]] = pod["spec"]["nodeName"]
        elif ref == "metadata.namespace":
            env[e["name"]] = pod["metadata"]["namespace"]
        elif ref == "metadata.name":
            env[e["name"]] = pod["metadata"]["name"]
    return env


def _counts(scheduled: int, ready: int) -> dict[str, int]:
    return {"desiredNumberScheduled": scheduled, "currentNumberScheduled": scheduled, "numberReady": ready,
            "numberAvailable": ready, "updatedNumberScheduled": scheduled, "numberMisscheduled": 0}


@dataclass
class Running:
    """One operand pod's agent."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    restarts: int = 0
    runnable: bool = True
    reason: str = ""


class DaemonSetController:
    """`hosts`: node → host root; `plugin_dirs`: node → the kubelet's device-plugin directory. Reads nodes,
    pods and DaemonSets from the cluster's shared `informers` and looks again only at the nodes whose labels,
    taints or operand pods changed (every node when a DaemonSet changed): a pass at 500 nodes then costs what
    the changes cost, not nodes × DaemonSets."""

    def __init__(self, client: Any, informers: Any, hosts: dict[str, str], plugin_dirs: dict[str, str],
                 runners: dict[str, Runner] | None = None, interval_s: float = 0.1,
                 agent_interval_s: float = 0.2, signals: Any = None,
                 on_agent_exit: Callable[[str, str, BaseException | None], None] | None = None) -> None:
        self.client = client
        self.informers = informers
        self.hosts = hosts
        self.plugin_dirs = plugin_dirs
        self.runners = RUNNERS if runners is None else runners
        self.interval_s = interval_s
        self.agent_interval_s = agent_interval_s
        self.signals = signals
        self.running: dict[tuple[str, str, str], Running] = {}  # (namespace, ds, node)
        self.on_agent_exit = on_agent_exit
        self._dirty: set[str] = set()
        self._workers: dict[str, asyncio.Task] = {}
        self._last_error: dict[str, str] = {}
        self._stopping: asyncio.Event | None = None  # run()'s stop event while it runs
        self._wake = asyncio.Event()
        self._gate = asyncio.Semaphore(32)  # nodes reconciled at once: a burst of 500 must not flood the client
        informers.nodes.on_change(self._node_changed)
        informers.pods.on_change(self._pod_changed)
        informers.daemonsets.on_change(lambda old, new: self._mark(*self.hosts))

    # --- what to look at again ------------------------------------------------------------------------
    def _mark(self, *nodes: str) -> None:
        """Reconcile these nodes soon: each node has its own worker, so a slow node (an agent that takes its
        time to stop) never holds up the others."""
        for n in nodes:
            if n not in self.hosts:
                continue
            self._dirty.add(n)
            worker = self._workers.get(n)
            if (worker is None or worker.done()) and self._stopping is not None and not self._stopping.is_set():
                self._workers[n] = asyncio.create_task(self._node_worker(n), name=f"daemonsets@{n}")
        self._wake.set()

    def _node_changed(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        def scheduling(o: dict[str, Any] | None) -> tuple[Any, Any]:
            o = o or {}
            return (o.get("metadata") or {}).get("labels"), (o.get("spec") or {}).get("taints")

        if scheduling(old) != scheduling(new):
            self._mark(((new or old or {}).get("metadata") or {}).get("name", ""))

    def _pod_changed(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        pod = new or old or {}
        if ((pod.get("metadata") or {}).get("annotations") or {}).get(SIM_OWNER):
            self._mark((pod.get("spec") or {}).get("nodeName", ""))

    async def _node_worker(self, node: str) -> None:
        """Reconcile `node` until nothing new was marked for it; a failed pass is retried shortly."""
        while node in self._dirty and self._stopping is not None and not self._stopping.is_set():
            self._dirty.discard(node)
            try:
                async with self._gate:
                    await self.sync_node(node)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - level-triggered: the node is looked at again
                msg = f"{type(e).__name__}: {e}"
                if msg != self._last_error.get(node):
                    log.warning("daemonset-controller: node %s failed (will retry): %s", node, msg)
                self._last_error[node] = msg
                self._dirty.add(node)
                await sleep_or_stop(self._stopping, 0.05)
            else:
                self._last_error.pop(node, None)

    # --- one node --------------------------------------------------------------------------------------
    async def sync_node(self, nname: str) -> None:
        """Make the node's operand pods and agents what the DaemonSets say: create, start, restart, stop,
        delete; the DaemonSets' own work runs concurrently (each is a few API round trips)."""
        node = self.informers.nodes.get(nname)
        daemonsets = self.informers.daemonsets.items()
        wanted = {(ds["metadata"]["namespace"], ds["metadata"]["name"], nname): ds for ds in daemonsets
                  if node is not None and should_run(ds, node)}
        results = await asyncio.gather(*(self._sync_one(key, ds) for key, ds in wanted.items()),
                                       *(self._stop(k) for k in list(self.running)
                                         if k[2] == nname and k not in wanted),
                                       return_exceptions=True)
        stray = [p for p in self.informers.pods.indexed(nname)
                 if ((p.get("metadata") or {}).get("annotations") or {}).get(SIM_OWNER)
                 and (p["metadata"]["namespace"], p["metadata"]["annotations"][SIM_OWNER], nname) not in wanted]
        results += await asyncio.gather(*(self._delete_pod(p["metadata"]["namespace"], p["metadata"]["name"],
                                                           (p["metadata"].get("labels") or {}).get("app"))
                                          for p in stray), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def _sync_one(self, key: tuple[str, str, str], ds: dict[str, Any]) -> None:
        ns, name, nname = key
        pod = self.informers.pods.get(pod_name(name, nname), ns)
        if pod is None:
            pod = await self._create_pod(ds, nname)
        run = self.running.get(key)
        if run is None:
            run = self._start(key, ds, pod)
        elif run.task is not None and run.task.done():
            run = self._restart(key, ds, pod, run)
        await self._set_pod_status(pod, run)

    async def sync_status(self) -> None:
        """DaemonSet status counts, equal to the agents running."""
        scheduled: dict[tuple[str, str], int] = {}
        ready: dict[tuple[str, str], int] = {}
        for (ns, name, _node), run in self.running.items():
            scheduled[(ns, name)] = scheduled.get((ns, name), 0) + 1
            ready[(ns, name)] = ready.get((ns, name), 0) + run.runnable
        for ds in self.informers.daemonsets.items():
            key = (ds["metadata"]["namespace"], ds["metadata"]["name"])
            await self._set_ds_status(ds, _counts(scheduled.get(key, 0), ready.get(key, 0)))

    # --- pods --------------------------------------------------------------------------------------------
    async def _create_pod(self, ds: dict[str, Any], node: str) -> dict[str, Any]:
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import Pod

        meta = ds["metadata"]
        template = ds["spec"]["template"]
        body: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": pod_name(meta["name"], node), "namespace": meta["namespace"],
                "labels": dict((template.get("metadata") or {}).get("labels") or {}),
                "annotations": {**((template.get("metadata") or {}).get("annotations") or {}),
                                SIM_OWNER: meta["name"]},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": meta["name"],
                                     "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": {**(template.get("spec") or {}), "nodeName": node},
        }
        try:
            pod = (await self.client.create(Pod.from_dict(body), namespace=meta["namespace"])).to_dict()
        except ApiError as e:
            if e.status.code != 409:
                raise
            pod = (await self.client.get(Pod, body["metadata"]["name"], namespace=meta["namespace"])).to_dict()
        self.informers.pods.apply(pod)
        return pod

    async def _delete_pod(self, ns: str, name: str, app: str | None) -> None:
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import Pod

        try:
            await self.client.delete(Pod, name, namespace=ns, grace_period=0)
        except ApiError as e:
            if e.status.code != 404:
                raise
        gone = self.informers.pods.get(name, ns)
        if gone is not None:
            self.informers.pods.apply(gone, deleted=True)
        log.info("daemonset: deleted pod %s/%s (%s)", ns, name, app)

    async def _set_pod_status(self, pod: dict[str, Any], run: Running) -> None:
        from lightkube.resources.core_v1 import Pod
        from lightkube.types import PatchType

        phase = "Running" if run.runnable else "Pending"
        status = pod.get("status") or {}
        restarts = [c.get("restartCount", 0) for c in status.get("containerStatuses") or []]
        if status.get("phase") == phase and status.get("message") == (run.reason or None) and \
                restarts == [run.restarts] * len(restarts) and restarts:
            return
        ready = "True" if run.runnable else "False"
        state = {"running": {}} if run.runnable else {"waiting": {"reason": "AgentNotInThisBuild",
                                                                  "message": run.reason}}
        containers = [{"name": c["name"], "ready": run.runnable, "restartCount": run.restarts,
                       "image": c.get("image", ""), "imageID": "", "state": state}
                      for c in pod["spec"].get("containers") or []]
        body = {"status": {"phase": phase, "message": run.reason or None, "containerStatuses": containers,
                           "conditions": [{"type": "PodScheduled", "status": "True"},
                                          {"type": "Ready", "status": ready}]}}
        done = await self.client.patch(Pod.Status, pod["metadata"]["name"], body,
                                       namespace=pod["metadata"]["namespace"], patch_type=PatchType.MERGE)
        self.informers.pods.apply(done.to_dict())

    async def _set_ds_status(self, ds: dict[str, Any], counts: dict[str, int]) -> None:
        from lightkube.resources.apps_v1 import DaemonSet
        from lightkube.types import PatchType

        counts = {**counts, "observedGeneration": ds["metadata"].get("generation", 1)}
        have = ds.get("status") or {}
        if all(have.get(k, 0) == v for k, v in counts.items()):
            return
        done = await self.client.patch(DaemonSet.Status, ds["metadata"]["name"], {"status": counts},
                                       namespace=ds["metadata"]["namespace"], patch_type=PatchType.MERGE)
        self.informers.daemonsets.apply(done.to_dict())

    # --- agents ------------------------------------------------------------------------------------------
    def _start(self, key: tuple[str, str, str], ds: dict[str, Any], pod: dict[str, Any],
               restarts: int = 0) -> Running:
        ns, name, node = key
        containers = (ds["spec"]["template"].get("spec") or {}).get("containers") or []
        container = containers[0] if containers else {}
        agent = agent_name(container)
        run = Running(restarts=restarts)
        self.running[key] = run
        if agent is None:
            return run  # NVIDIA's image: nothing of ours to run; the pod is Running
        runner = self.runners.get(agent)
        if runner is None:
            run.runnable = False
            run.reason = f"agent {agent!r} is not in this build (runnable: {', '.join(sorted(self.runners))})"
            return run
        ctx = AgentContext(node=node, host_root=self.hosts[node], client=self.client,
                           env=resolve_env(container, pod), plugin_dir=self.plugin_dirs.get(node, ""),
                           interval_s=self.agent_interval_s, informers=self.informers, signals=self.signals)
        run.task = asyncio.create_task(self._supervise(key, agent, runner, ctx, run.stop), name=f"{name}@{node}")
        return run

    async def _supervise(self, key, agent: str, runner: Runner, ctx: AgentContext, stop: asyncio.Event) -> None:
        error: BaseException | None = None
        try:
            await runner(ctx, stop)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a crashed agent is restarted, as a container would be
            error = e
            log.warning("agent %s on %s crashed: %s: %s", agent, ctx.node, type(e).__name__, e)
            await asyncio.sleep(0.2)  # CrashLoopBackOff, shortened
        if self.on_agent_exit:
            self.on_agent_exit(agent, ctx.node, error)
        if not stop.is_set():
            self._mark(ctx.node)  # restart it

    def _restart(self, key, ds, pod, run: Running) -> Running:
        if run.stop.is_set():
            return run
        return self._start(key, ds, pod, restarts=run.restarts + 1)

    async def _stop(self, key: tuple[str, str, str]) -> None:
        run = self.running.pop(key)
        run.stop.set()
        if run.task is not None and not run.task.done():
            try:
                await asyncio.wait_for(asyncio.shield(run.task), timeout=1.0)
            except (TimeoutError, Exception):  # noqa: BLE001 - a pod's container gets killed after its grace
                run.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await run.task

    async def kill_agent(self, agent_ds: str, node: str) -> bool:
        """Kill one operand's agent (as its container crashing); the next pass restarts it."""
        for (_ns, name, n), run in self.running.items():
            if name == agent_ds and n == node and run.task is not None:
                run.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await run.task
                return True
        return False

    async def stop_all(self) -> None:
        for key in list(self.running):
            await self._stop(key)

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile every node once, then each node whenever it is marked (its labels, taints or operand
        pods changed; every node when a DaemonSet changed); keep DaemonSet status true every `interval_s`."""
        from ccgpu.sim.loop import wait_event_or_stop

        self._stopping = stop
        self._mark(*self.hosts)
        last_error = None
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    await self.sync_status()
                    last_error = None
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - retried on the next pass
                    msg = f"{type(e).__name__}: {e}"
                    if msg != last_error:
                        log.warning("daemonset-controller status pass failed (will retry): %s", msg)
                    last_error = msg
                await wait_event_or_stop(self._wake, stop, self.interval_s)
                await sleep_or_stop(stop, 0.1)  # counts move in bursts: one status pass per burst
        finally:
            self._stopping = None
            for w in self._workers.values():
                w.cancel()
            await asyncio.gather(*self._workers.values(), return_exceptions=True)
            await self.stop_all()

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


@dataclass
class Running:
    """One operand pod's agent."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    restarts: int = 0
    runnable: bool = True
    reason: str = ""


class DaemonSetController:
    """`hosts`: node → host root; `plugin_dirs`: node → the kubelet's device-plugin directory."""

    def __init__(self, client: Any, hosts: dict[str, str], plugin_dirs: dict[str, str],
                 runners: dict[str, Runner] | None = None, interval_s: float = 0.1,
                 agent_interval_s: float = 0.2, on_agent_exit: Callable[[str, str, BaseException | None], None]
                 | None = None) -> None:
        self.client = client
        self.hosts = hosts
        self.plugin_dirs = plugin_dirs
        self.runners = RUNNERS if runners is None else runners
        self.interval_s = interval_s
        self.agent_interval_s = agent_interval_s
        self.running: dict[tuple[str, str, str], Running] = {}  # (namespace, ds, node)
        self.on_agent_exit = on_agent_exit
        self._last_status: dict[tuple[str, str], dict[str, int]] = {}

    async def sync_once(self) -> None:
        from lightkube.resources.apps_v1 import DaemonSet
        from lightkube.resources.core_v1 import Node, Pod

        daemonsets = [d.to_dict() async for d in self.client.list(DaemonSet, namespace="*")]
        nodes = [n.to_dict() async for n in self.client.list(Node)]
        pods = {(p.metadata.namespace, p.metadata.name): p.to_dict()
                async for p in self.client.list(Pod, namespace="*")
                if (p.metadata.annotations or {}).get(SIM_OWNER)}
        wanted: set[tuple[str, str, str]] = set()
        for ds in daemonsets:
            ns, name = ds["metadata"]["namespace"], ds["metadata"]["name"]
            counts = {"desiredNumberScheduled": 0, "currentNumberScheduled": 0, "numberReady": 0,
                      "numberAvailable": 0, "updatedNumberScheduled": 0, "numberMisscheduled": 0}
            for node in nodes:
                nname = node["metadata"]["name"]
                if nname not in self.hosts or not should_run(ds, node):
                    continue
                key = (ns, name, nname)
                wanted.add(key)
                counts["desiredNumberScheduled"] += 1
                pod = pods.get((ns, pod_name(name, nname)))
                if pod is None:
                    pod = await self._create_pod(ds, nname)
                run = self.running.get(key)
                if run is None:
                    run = self._start(key, ds, pod)
                elif run.task is not None and run.task.done():
                    run = self._restart(key, ds, pod, run)
                counts["currentNumberScheduled"] += 1
                counts["updatedNumberScheduled"] += 1
                if run.runnable:
                    counts["numberReady"] += 1
                    counts["numberAvailable"] += 1
                await self._set_pod_status(pod, run)
            await self._set_ds_status(ds, counts)
        for key in [k for k in self.running if k not in wanted]:
            await self._stop(key)
        for (ns, pname), pod in pods.items():
            owner = (pod["metadata"].get("labels") or {}).get("app")
            node = pod["spec"].get("nodeName", "")
            ds_name = (pod["metadata"].get("annotations") or {}).get(SIM_OWNER, "")
            if (ns, ds_name, node) not in wanted:
                await self._delete_pod(ns, pname, owner)

    # --- pods --------------------------------------------------------------------------------------------
    async def _create_pod(self, ds: dict[str, Any], node: str) -> dict[str, Any]:
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import Pod

        meta = ds["metadata"]
        template = ds["spec"]["template"]
        body = {
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
            return (await self.client.create(Pod.from_dict(body), namespace=meta["namespace"])).to_dict()
        except ApiError as e:
            if e.status.code != 409:
                raise
            return (await self.client.get(Pod, body["metadata"]["name"], namespace=meta["namespace"])).to_dict()

    async def _delete_pod(self, ns: str, name: str, app: str | None) -> None:
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import Pod

        try:
            await self.client.delete(Pod, name, namespace=ns, grace_period=0)
        except ApiError as e:
            if e.status.code != 404:
                raise
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
        await self.client.patch(Pod.Status, pod["metadata"]["name"], body, namespace=pod["metadata"]["namespace"],
                                patch_type=PatchType.MERGE)

    async def _set_ds_status(self, ds: dict[str, Any], counts: dict[str, int]) -> None:
        from lightkube.resources.apps_v1 import DaemonSet
        from lightkube.types import PatchType

        counts = {**counts, "observedGeneration": ds["metadata"].get("generation", 1)}
        have = ds.get("status") or {}
        if all(have.get(k, 0) == v for k, v in counts.items()):
            return
        await self.client.patch(DaemonSet.Status, ds["metadata"]["name"], {"status": counts},
                                namespace=ds["metadata"]["namespace"], patch_type=PatchType.MERGE)

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
                           interval_s=self.agent_interval_s)
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
        from ccgpu.sim.loop import every

        try:
            await every(self.interval_s, stop, self.sync_once, "daemonset-controller")
        finally:
            await self.stop_all()

"""One simulated node's kubelet: registers the Node, meets device plugins over the real gRPC socket protocol
(`FakeKubelet`), keeps `status.capacity/allocatable` equal to the plugins' devices, and starts the pods bound
to the node: devices chosen (GetPreferredAllocation when offered) and allocated with a real `Allocate`, then a
Kata pod handed to the node's `KataRuntime`, other pods simply marked Running.

As the real kubelet: a resource whose plugin is gone (kubelet restart, plugin stopped) reports 0 allocatable
until it registers again; allocations survive a kubelet restart (the real one checkpoints them); a pod whose
devices are not available fails admission with the kubelet's `UnexpectedAdmissionError` text. DaemonSet pods of
the simulated operands are created Running by the DaemonSet controller and are not touched here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ccgpu.sim.kata_runtime import KataRuntime, PodStartError, is_kata
from ccgpu.sim.kubelet import FakeKubelet
from ccgpu.sim.resources import CDI_DEVICES_ANNOTATION, GPU_BDFS_ANNOTATION, SIM_OWNER

log = logging.getLogger(__name__)

BASE_CAPACITY = {"cpu": "128", "memory": "1024Gi", "pods": "110"}


def now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def extended_requests(pod: dict[str, Any]) -> dict[str, int]:
    """Device-plugin resources a pod asks for (`vendor/name`, not the kubernetes.io ones), per the limits."""
    need: dict[str, int] = {}
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        for k, v in {**(res.get("requests") or {}), **(res.get("limits") or {})}.items():
            if "/" in k and not k.startswith(("kubernetes.io/", "requests.")):
                need[k] = need.get(k, 0) + int(str(v))
    return need


class NodeKubelet:
    def __init__(self, client: Any, node_name: str, host_root: str, plugin_dir: str,
                 runtime: KataRuntime | None = None, node_labels: dict[str, str] | None = None,
                 interval_s: float = 0.1, informers: Any = None,
                 on_restart: Any = None) -> None:
        self.client = client
        self.informers = informers  # the cluster's shared informers: our own writes are recorded there at once
        self.on_restart = on_restart  # called after a restart (the cluster wakes the node's agents with it)
        self.name = node_name
        self.host_root = host_root
        self.kubelet = FakeKubelet(plugin_dir)
        self.runtime = runtime or KataRuntime(host_root)
        self.initial_labels = node_labels or {}
        self.interval_s = interval_s
        self.allocated: dict[str, dict[str, list[str]]] = {}  # pod uid → resource → device IDs
        self.started: set[str] = set()
        self.seen_resources: set[str] = set()
        self._tasks: dict[str, asyncio.Task] = {}

    async def register(self) -> None:
        """Create the Node object (as a kubelet registering itself), Ready, with base capacity."""
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import Node

        node = Node.from_dict({"apiVersion": "v1", "kind": "Node",
                               "metadata": {"name": self.name, "labels": {"kubernetes.io/hostname": self.name,
                                                                           **self.initial_labels}}})
        try:
            await self.client.create(node)
        except ApiError as e:
            if e.status.code != 409:
                raise
        await self._patch_status({"capacity": dict(BASE_CAPACITY), "allocatable": dict(BASE_CAPACITY),
                                  "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                                  "message": "kubelet is posting ready status",
                                                  "lastHeartbeatTime": now(), "lastTransitionTime": now()}]})

    async def _patch_status(self, status: dict[str, Any]) -> None:
        from lightkube.resources.core_v1 import Node
        from lightkube.types import PatchType

        node = await self.client.patch(Node.Status, self.name, {"status": status}, patch_type=PatchType.MERGE)
        if self.informers is not None:
            self.informers.nodes.apply(node.to_dict())

    async def start(self) -> None:
        await self.kubelet.start()
        await self.register()

    async def stop(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self.kubelet.stop()

    async def restart(self) -> None:
        """A kubelet restart: every plugin socket is removed and must re-register; allocations are kept."""
        await self.kubelet.restart()
        if self.on_restart is not None:
            self.on_restart()

    # --- capacity ---------------------------------------------------------------------------------------
    def _live(self) -> dict[str, Any]:
        """Registered plugins whose ListAndWatch stream is still open (a closed one's devices count as
        unhealthy, as the real kubelet marks them when a plugin goes away)."""
        return {r: p for r, p in self.kubelet.plugins.items() if p.watcher is not None and not p.watcher.done()}

    def device_capacity(self) -> tuple[dict[str, str], dict[str, str]]:
        capacity, allocatable = {}, {}
        live = self._live()
        for res, plugin in self.kubelet.plugins.items():
            self.seen_resources.add(res)
            capacity[res] = str(len(plugin.devices))
            healthy = sum(1 for d in plugin.devices if d.health == "Healthy")
            allocatable[res] = str(healthy if res in live else 0)
        for res in self.seen_resources - capacity.keys():
            capacity[res] = allocatable[res] = "0"
        return capacity, allocatable

    async def sync_once(self, node: dict[str, Any] | None = None, pods: list[dict[str, Any]] | None = None) -> None:
        """One pass; `node` and `pods` (those bound here) come from a shared listing when a `KubeletFleet` runs
        many kubelets, else they are read here."""
        from lightkube.resources.core_v1 import Node, Pod

        if node is None:
            node = (await self.client.get(Node, self.name)).to_dict()
        status = node.get("status") or {}
        capacity, allocatable = self.device_capacity()
        have_cap = status.get("capacity") or {}
        have_alloc = status.get("allocatable") or {}
        if any(have_cap.get(k) != v for k, v in capacity.items()) or \
                any(have_alloc.get(k) != v for k, v in allocatable.items()):
            await self._patch_status({"capacity": {**BASE_CAPACITY, **capacity},
                                      "allocatable": {**BASE_CAPACITY, **allocatable}})
        if pods is None:
            pods = [p.to_dict() async for p in self.client.list(Pod, namespace="*",
                                                                fields={"spec.nodeName": self.name})]
        live = set()
        for pod in pods:
            meta = pod["metadata"]
            if (meta.get("annotations") or {}).get(SIM_OWNER):
                continue
            uid = meta["uid"]
            live.add(uid)
            if uid in self.started or uid in self._tasks:
                continue
            if (pod.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed"):
                self.started.add(uid)
                continue
            self._tasks[uid] = asyncio.create_task(self._start_pod(pod, node), name=f"pod-{meta['name']}")
        for uid in list(self.allocated):
            if uid not in live:
                self.allocated.pop(uid, None)
                self.started.discard(uid)
                self.runtime.stop(uid)
                task = self._tasks.pop(uid, None)
                if task:
                    task.cancel()

    # --- pods ---------------------------------------------------------------------------------------------
    def _free(self, res: str) -> list[str]:
        plugin = self._live().get(res)
        taken = {d for alloc in self.allocated.values() for d in alloc.get(res, [])}
        return [d.ID for d in (plugin.devices if plugin else []) if d.health == "Healthy" and d.ID not in taken]

    async def _allocate(self, uid: str, need: dict[str, int]) -> list[str]:
        names: list[str] = []
        chosen: dict[str, list[str]] = {}
        for res, n in sorted(need.items()):
            free = self._free(res)
            if len(free) < n:
                raise PodStartError("UnexpectedAdmissionError",
                                    f"Allocate failed due to requested number of devices unavailable for {res}. "
                                    f"Requested: {n}, Available: {len(free)}")
            plugin = self.kubelet.plugins[res]
            if plugin.options.get_preferred_allocation_available:
                ids = await self.kubelet.preferred_allocation(res, free, [], n)
            else:
                ids = free[:n]
            chosen[res] = ids
        self.allocated[uid] = chosen
        for res, ids in chosen.items():
            resp = await self.kubelet.allocate(res, ids)
            for c in resp.container_responses:
                names += [d.name for d in c.cdi_devices]
        return names

    async def _start_pod(self, pod: dict[str, Any], node: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        rc = (pod.get("spec") or {}).get("runtimeClassName")
        try:
            names = await self._allocate(uid, extended_requests(pod))
            bdfs: list[str] = []
            if is_kata(rc):
                from lightkube.resources.core_v1 import Node

                labels_now = (await self.client.get(Node, self.name)).metadata.labels or {}
                from ccgpu.sim.vm_attestation import FAULT_ANNOTATION

                fault = (meta.get("annotations") or {}).get(FAULT_ANNOTATION)
                bdfs = await self.runtime.start(uid, rc or "", labels_now, names, guest_fault=fault)
            await self._set_running(pod, names, bdfs)
            self.started.add(uid)
        except PodStartError as e:
            self.allocated.pop(uid, None)
            await self._set_waiting(pod, e.reason, e.message)
            self.started.add(uid)  # like a real kubelet's backoff, retried only when the pod is recreated
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - retried on the next pass
            self.allocated.pop(uid, None)
            log.warning("kubelet %s: starting pod %s failed, will retry: %s", self.name, meta["name"], e)
        finally:
            self._tasks.pop(uid, None)

    async def _set_running(self, pod: dict[str, Any], cdi_names: list[str], bdfs: list[str]) -> None:
        from lightkube.resources.core_v1 import Pod
        from lightkube.types import PatchType

        from ccgpu.sim.scheduler import post_event

        meta = pod["metadata"]
        attested = self.runtime.attestations.get(meta["uid"])
        if cdi_names or bdfs:
            ann = {CDI_DEVICES_ANNOTATION: ",".join(cdi_names), GPU_BDFS_ANNOTATION: ",".join(bdfs)}
            ann.update(attested.annotations() if attested else {})
            await self.client.patch(Pod, meta["name"], {"metadata": {"annotations": ann}},
                                    namespace=meta["namespace"], patch_type=PatchType.MERGE)
        containers = [{"name": c["name"], "ready": True, "restartCount": 0, "image": c.get("image", ""),
                       "imageID": "", "state": {"running": {"startedAt": now()}}}
                      for c in pod["spec"].get("containers") or []]
        status = {"phase": "Running", "startTime": now(), "hostIP": "10.0.0.1",
                  "message": f"GPUs {', '.join(bdfs)}" if bdfs else None,
                  "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]
                  + ([attested.condition()] if attested else []),
                  "containerStatuses": containers}
        await self.client.patch(Pod.Status, meta["name"], {"status": status}, namespace=meta["namespace"],
                                patch_type=PatchType.MERGE)
        await post_event(self.client, pod, "Normal", "Started",
                         f"Started on {self.name}" + (f" with {', '.join(cdi_names)}" if cdi_names else ""), "kubelet")

    async def _set_waiting(self, pod: dict[str, Any], reason: str, message: str) -> None:
        from lightkube.resources.core_v1 import Pod
        from lightkube.types import PatchType

        from ccgpu.sim.scheduler import post_event

        meta = pod["metadata"]
        log.warning("kubelet %s: pod %s/%s: %s: %s", self.name, meta["namespace"], meta["name"], reason, message)
        attested = self.runtime.attestations.get(meta["uid"])
        if attested:
            await self.client.patch(Pod, meta["name"], {"metadata": {"annotations": attested.annotations()}},
                                    namespace=meta["namespace"], patch_type=PatchType.MERGE)
        containers = [{"name": c["name"], "ready": False, "restartCount": 0, "image": c.get("image", ""),
                       "imageID": "", "state": {"waiting": {"reason": reason, "message": message}}}
                      for c in pod["spec"].get("containers") or []]
        phase = "Failed" if reason in ("UnexpectedAdmissionError", "AttestationFailed") else "Pending"
        status = {"phase": phase, "reason": reason if phase == "Failed" else None, "message": message,
                  "containerStatuses": containers}
        if attested:
            status["conditions"] = [attested.condition()]
        await self.client.patch(Pod.Status, meta["name"], {"status": status}, namespace=meta["namespace"],
                                patch_type=PatchType.MERGE)
        await post_event(self.client, pod, "Warning", "Failed", message, "kubelet")

    async def run(self, stop: Any) -> None:
        from ccgpu.sim.loop import every

        await every(self.interval_s, stop, self.sync_once, f"kubelet {self.name}")


class KubeletFleet:
    """Runs many nodes' kubelet passes off the cluster's shared node and pod informers (hundreds of simulated
    nodes would otherwise each GET their node and LIST their pods several times a second)."""

    def __init__(self, kubelets: dict[str, NodeKubelet], informers: Any, interval_s: float = 0.1) -> None:
        self.kubelets = kubelets
        self.informers = informers
        self.interval_s = interval_s

    async def sync_once(self) -> None:
        work = []
        for name, k in self.kubelets.items():
            node = self.informers.nodes.get(name)
            if node is not None:
                work.append(k.sync_once(node, self.informers.pods.indexed(name)))
        results = await asyncio.gather(*work, return_exceptions=True)
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            raise errors[0]

    async def run(self, stop: Any) -> None:
        from ccgpu.sim.loop import every

        await every(self.interval_s, stop, self.sync_once, "kubelets")

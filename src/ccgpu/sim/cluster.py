"""The cluster-in-a-box: the API simulator, N simulated nodes, NFD, the DaemonSet controller, a kubelet and a Kata
runtime per node, a scheduler, and the real operator, all in one process.

    async with Cluster(parse_nodes("1x8xh100-snp,1x4xh100-notee:container"), workdir) as c:
        await c.apply_policy()
        report = await c.wait_converged(timeout_s=60)

Each node is a `SimulatedHost` tree under `<workdir>/nodes/<name>`; its kubelet's device-plugin sockets live in
that tree (or in a short temporary directory when the path would exceed the unix socket limit). `outcomes()`
states what a converged cluster must show and checks each item, so `ccgpu simulate` exits 0 only when all hold.

Hundreds of nodes share one event loop, so nothing polls the API or the host trees on a timer: the kubelets,
NFD, the scheduler, the DaemonSet controller and the checks read shared informers (`sim.informer`), and a
node's agents wake when its labels or its host tree change (`sim.signals`); timers remain only as backstops.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccgpu import labels as L
from ccgpu.sim.agents import host_key, node_key, state_key
from ccgpu.sim.informer import Informers
from ccgpu.sim.resources import GPU_BDFS_ANNOTATION, NFR_CRD
from ccgpu.sim.signals import Signals, unwatch_host, watch_host

log = logging.getLogger(__name__)

NAMESPACE = "ccgpu"
DEFAULT_NODES = "1x8xh100-snp,1x1xh200-snp,1x4xh100-notee,1x4xh100-notee:container"
WORKLOADS = ("vm-passthrough", "container")
SAMPLE_POD = "cc-sample"
_SOCKET_LIMIT = 100  # sun_path is 108 bytes; leave room for the socket's own name
POOL_SIZE = 64  # connections of the shared API client (see Cluster._make_client)


class NodeSpecError(ValueError):
    """A --profile/--nodes value that names no host profile or workload."""


@dataclass(frozen=True)
class NodeSpec:
    name: str
    profile: str
    workload: str  # vm-passthrough or container


def parse_nodes(text: str, total: int | None = None) -> list[NodeSpec]:
    """`[COUNTx]PROFILE[:WORKLOAD]` items, comma-separated (e.g. `2x8xh100-snp,1x4xh100-notee:container`).
    With `total`, the items are repeated in turn (each once per round) until there are `total` nodes."""
    from ccgpu.sim.profiles import ProfileError, get_profile, list_profiles

    names = [p.name for p in list_profiles()]
    items: list[tuple[str, str]] = []
    for raw in (t.strip() for t in text.split(",")):
        if not raw:
            continue
        spec, _, workload = raw.partition(":")
        workload = workload or "vm-passthrough"
        if workload not in WORKLOADS:
            raise NodeSpecError(f"{raw!r}: workload {workload!r} is not valid; accepted: {', '.join(WORKLOADS)}")
        count = 1
        if spec not in names:
            head, sep, rest = spec.partition("x")
            if not (sep and head.isdigit() and int(head) > 0):
                raise NodeSpecError(f"{raw!r}: unknown host profile {spec!r}; accepted: [COUNTx]PROFILE[:WORKLOAD] "
                                    f"with PROFILE one of {', '.join(names)}")
            count, spec = int(head), rest
        try:
            get_profile(spec)
        except ProfileError as e:
            raise NodeSpecError(f"{raw!r}: {e}") from None
        items += [(spec, workload)] * count
    if not items:
        raise NodeSpecError(f"no nodes in {text!r}; accepted: [COUNTx]PROFILE[:WORKLOAD],... e.g. {DEFAULT_NODES}")
    if total is not None:
        if total < 1:
            raise NodeSpecError(f"--nodes must be at least 1, got {total}")
        items = [items[i % len(items)] for i in range(total)]
    return [NodeSpec(f"{p}-{'ctr' if w == 'container' else 'vm'}-{i}", p, w) for i, (p, w) in enumerate(items)]


def default_policy_spec() -> dict[str, Any]:
    """The default ClusterPolicy, with the three Kata RuntimeClasses (the sample pod needs the SNP one)."""
    from ccgpu.operator.policy import default_policy

    spec = copy.deepcopy(default_policy()["spec"])
    spec["kataManager"]["runtimeClasses"] = [{"name": n} for n in L.RUNTIME_CLASSES]
    return spec


@dataclass
class Outcome:
    what: str
    ok: bool
    detail: str = ""


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.outcomes) and all(o.ok for o in self.outcomes)

    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


class Cluster:
    def __init__(self, nodes: list[NodeSpec], workdir: str | Path, *, seed: int = 0, boot_s: float = 0.0,
                 interval_s: float | None = None) -> None:
        self.specs = nodes
        self.workdir = Path(workdir)
        self.seed = seed
        self.boot_s = boot_s
        # Everything reacts to changes: the controllers and kubelets read shared informers, and a node's agents
        # run a pass when its labels or host tree change (`signals`). The periods below are backstops and the
        # pace of whole-cluster passes, which cost O(nodes) of dict work each, so they grow gently with n.
        n = len(nodes)
        self.interval_s = interval_s if interval_s is not None else max(0.1, 0.001 * n)
        self.agent_interval_s = max(1.0, 0.05 * n)  # backstop only: agents wake on their node's changes
        self.nfd_interval_s = max(0.3, 0.002 * n)
        self.check_interval_s = max(0.2, 0.004 * n)
        self.signals: Any = None
        self.informers: Any = None
        self._http: Any = None
        self._host_views: dict[str, tuple[int, list[dict[str, Any]], Outcome]] = {}
        self._tees: dict[str, str | None] = {}
        self.api: Any = None
        self.client: Any = None
        self.kubelets: dict[str, Any] = {}
        self.hosts: dict[str, str] = {}
        self.plugin_dirs: dict[str, str] = {}
        self.nfd: Any = None
        self.scheduler: Any = None
        self.daemonsets: Any = None
        self.kbs: Any = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._operator: tuple[asyncio.Event, asyncio.Task] | None = None
        self._short_dirs: list[tempfile.TemporaryDirectory] = []

    # --- lifecycle -------------------------------------------------------------------------------------
    async def __aenter__(self) -> Cluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _plugin_dir(self, root: Path) -> str:
        d = root / "var/lib/kubelet/device-plugins"
        if len(str(d)) > _SOCKET_LIMIT - 30:
            tmp = tempfile.TemporaryDirectory(prefix="ccgpu-dp-")
            self._short_dirs.append(tmp)
            return tmp.name
        return str(d)

    async def start(self) -> None:
        from lightkube import codecs
        from lightkube.resources.core_v1 import Namespace

        from ccgpu.kube.client import make_async_client
        from ccgpu.operator import policy
        from ccgpu.sim.apiserver import ApiServer
        from ccgpu.sim.daemonset_controller import DaemonSetController
        from ccgpu.sim.host import SimulatedHost
        from ccgpu.sim.kata_runtime import KataRuntime
        from ccgpu.sim.nfd import NfdEmulator
        from ccgpu.sim.node_kubelet import KubeletFleet, NodeKubelet
        from ccgpu.sim.scheduler import Scheduler
        from ccgpu.sim.vm_attestation import SimKbs

        self.signals = Signals()
        self.signals.bind()
        self.kbs = SimKbs(self.workdir / "attestation")
        await self.kbs.start()
        self.api = await asyncio.to_thread(lambda: ApiServer(seed=self.seed).start_in_thread())
        self.client = self._make_client(make_async_client)
        self._http = self._make_http()
        self.informers = Informers(self._http)
        self.informers.nodes.on_change(self._node_changed)
        await self.informers.start(self._stop)
        for crd in (policy.crd(), NFR_CRD):
            await self.client.create(codecs.from_dict(crd))
        await self.client.create(Namespace.from_dict({"metadata": {"name": NAMESPACE}}))
        nodes_dir = self.workdir / "nodes"
        for i, spec in enumerate(self.specs):
            root = nodes_dir / spec.name
            # containerd config version 2 and 3 in turn, so both drop-in layouts are exercised
            await asyncio.to_thread(SimulatedHost.create, root, spec.profile, containerd_config_version=2 + i % 2)
            self.hosts[spec.name] = str(root)
            self.plugin_dirs[spec.name] = self._plugin_dir(root)
            watch_host(root, self._host_change_callback(spec.name))
        for spec in self.specs:
            node_labels = {L.WORKLOAD_CONFIG: spec.workload} if spec.workload != "container" else {}
            k = NodeKubelet(self.client, spec.name, self.hosts[spec.name], self.plugin_dirs[spec.name],
                            KataRuntime(self.hosts[spec.name], boot_s=self.boot_s, kbs=self.kbs, node=spec.name),
                            node_labels, interval_s=self.interval_s, informers=self.informers,
                            on_restart=lambda name=spec.name: self.signals.bump(host_key(name)))
            await k.start()
            self.kubelets[spec.name] = k
        self.nfd = NfdEmulator(self.client, self.hosts, self.informers, interval_s=self.nfd_interval_s,
                               state_generation=lambda name: self.signals.generation(state_key(name)))
        self.scheduler = Scheduler(self.client, self.informers, interval_s=self.interval_s)
        self.daemonsets = DaemonSetController(self.client, self.informers, self.hosts, self.plugin_dirs,
                                              interval_s=1.0, agent_interval_s=self.agent_interval_s,
                                              signals=self.signals)
        for name, comp in (("nfd", self.nfd), ("scheduler", self.scheduler), ("daemonsets", self.daemonsets)):
            self._tasks.append(asyncio.create_task(comp.run(self._stop), name=name))
        fleet = KubeletFleet(self.kubelets, self.informers, interval_s=self.interval_s)
        self._tasks.append(asyncio.create_task(fleet.run(self._stop), name="kubelets"))
        self.start_operator()

    def _make_client(self, make_async_client: Any) -> Any:
        """The one API client every in-process kubelet, controller and agent shares. No agent holds a watch
        on it (node watches are served from the shared informer), so a fixed pool serves any node count; it
        must stay small, because httpx probes every idle pooled connection's socket on every request (a pool
        sized to the cluster made each request cost O(nodes) system calls)."""
        import httpx2

        kubeconfig = self.api.kubeconfig_dict()
        server = kubeconfig["clusters"][0]["cluster"]["server"]
        if not server.startswith("http://"):  # a custom transport would bypass the client's TLS settings
            return make_async_client(kubeconfig, field_manager="ccgpu-sim")
        from lightkube import AsyncClient

        from ccgpu.kube.client import load_kubeconfig

        transport = httpx2.AsyncHTTPTransport(limits=httpx2.Limits(max_connections=POOL_SIZE,
                                                                   max_keepalive_connections=POOL_SIZE))
        return AsyncClient(config=load_kubeconfig(kubeconfig), field_manager="ccgpu-sim", transport=transport)

    def _make_http(self) -> Any:
        """A plain HTTP client for the informers: they read the API's JSON as it is (see sim.informer)."""
        import httpx2

        kubeconfig = self.api.kubeconfig_dict()
        server = kubeconfig["clusters"][0]["cluster"]["server"]
        token = kubeconfig["users"][0]["user"].get("token")
        return httpx2.AsyncClient(base_url=server, headers={"Authorization": f"Bearer {token}"} if token else {},
                                  timeout=httpx2.Timeout(30.0))

    def _host_change_callback(self, node: str) -> Any:
        def changed(what: str) -> None:
            self.signals.bump(host_key(node))
            if what == "state":
                self.signals.bump(state_key(node))

        return changed

    def _node_changed(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """Wake the node's agents when its labels or annotations changed (status updates wake nobody)."""
        def meta(o: dict[str, Any] | None) -> tuple[Any, Any]:
            m = (o or {}).get("metadata") or {}
            return m.get("labels"), m.get("annotations")

        if meta(old) != meta(new):
            self.signals.bump(node_key(((new or old or {}).get("metadata") or {}).get("name", "")))

    def start_operator(self) -> None:
        """Run the real operator (kopf watches in its own thread, the reconcile loop on this one)."""
        from ccgpu.operator.controller import OperatorConfig, run

        stop = asyncio.Event()
        cfg = OperatorConfig(namespace=NAMESPACE, image="ccgpu:sim", nvidia_repository="nvidia.example/nvidia",
                             metrics_port=0, kubeconfig_dict=self.api.kubeconfig_dict(), standalone=True,
                             debounce_s=0.05)
        self._operator = (stop, asyncio.create_task(run(cfg, stop), name="operator"))

    async def stop_operator(self) -> None:
        if self._operator is None:
            return
        stop, task = self._operator
        self._operator = None
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 20)

    async def stop(self) -> None:
        self._stop.set()
        await self.stop_operator()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for k in self.kubelets.values():
            with contextlib.suppress(Exception):
                await k.stop()
        for k in self.kubelets.values():
            for uid in list(k.runtime.running):
                k.runtime.stop(uid)
        for root in self.hosts.values():
            unwatch_host(root)
        if self.informers is not None:
            await self.informers.stop()
        if self._http is not None:
            await self._http.aclose()
        if self.client is not None:
            await self.client.close()
        if self.api is not None:
            await asyncio.to_thread(self.api.stop_thread)
        if self.kbs is not None:
            await self.kbs.stop()
        for d in self._short_dirs:
            d.cleanup()

    # --- actions ---------------------------------------------------------------------------------------
    async def apply_policy(self, spec: dict[str, Any] | None = None) -> None:
        from lightkube import codecs

        from ccgpu.operator import policy

        body = {"apiVersion": policy.API_VERSION, "kind": policy.KIND, "metadata": {"name": policy.SINGLETON_NAME},
                "spec": spec if spec is not None else default_policy_spec()}
        await self.client.create(codecs.from_dict(body))

    async def label_node(self, node: str, changes: dict[str, str | None]) -> None:
        from lightkube.resources.core_v1 import Node
        from lightkube.types import PatchType

        await self.client.patch(Node, node, {"metadata": {"labels": changes}}, patch_type=PatchType.MERGE)

    async def create_pod(self, name: str = SAMPLE_POD, runtime_class: str | None = L.RUNTIME_CLASS_KATA_GPU_SNP,
                         gpus: int = 1, namespace: str = "default", resource: str = "nvidia.com/pgpu",
                         annotations: dict[str, str] | None = None) -> None:
        from lightkube.resources.core_v1 import Pod

        spec: dict[str, Any] = {"containers": [{"name": "cuda", "image": "cuda-vectoradd:sim",
                                                "resources": {"limits": {resource: str(gpus)}}}]}
        if runtime_class:
            spec["runtimeClassName"] = runtime_class
        await self.client.create(Pod.from_dict({"apiVersion": "v1", "kind": "Pod",
                                                "metadata": {"name": name, "namespace": namespace,
                                                             "annotations": annotations or {}}, "spec": spec}))

    async def delete_pod(self, name: str, namespace: str = "default") -> None:
        from lightkube.resources.core_v1 import Pod

        await self.client.delete(Pod, name, namespace=namespace, grace_period=0)

    async def pod(self, name: str, namespace: str = "default") -> dict[str, Any]:
        from lightkube.resources.core_v1 import Pod

        return (await self.client.get(Pod, name, namespace=namespace)).to_dict()

    async def wait_pod(self, name: str, timeout_s: float = 30.0, namespace: str = "default",
                       until: tuple[str, ...] = ("Running", "Failed")) -> dict[str, Any]:
        """Wait until the pod is in one of `until` or reports a container waiting reason; returns it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            pod = await self.pod(name, namespace)
            status = pod.get("status") or {}
            waiting = [c for c in status.get("containerStatuses") or [] if (c.get("state") or {}).get("waiting")]
            if status.get("phase") in until or waiting or loop.time() > deadline:
                return pod
            await asyncio.sleep(0.05)

    # --- what the cluster looks like -------------------------------------------------------------------
    async def nodes(self) -> dict[str, dict[str, Any]]:
        from lightkube.resources.core_v1 import Node

        return {n.metadata.name: n.to_dict() async for n in self.client.list(Node)}

    async def node_events(self, reason: str) -> dict[str, list[str]]:
        from lightkube.resources.core_v1 import Event

        out: dict[str, list[str]] = {}
        async for e in self.client.list(Event, namespace="*", fields={"reason": reason,
                                                                       "involvedObject.kind": "Node"}):
            if e.involvedObject.kind == "Node" and e.reason == reason:
                out.setdefault(e.involvedObject.name, []).append(e.message or "")
        return out

    def host_gpus(self, node: str) -> list[dict[str, Any]]:
        """Each GPU's driver and CC mode, read from the simulated host."""
        from ccgpu.sim.host import SimulatedHost

        host = SimulatedHost.open(self.hosts[node])
        out = []
        for bdf in host.gpus():
            dev = host.gpu(bdf)
            out.append({"bdf": bdf, "driver": dev.driver, "cc": dev.query_cc().current})
        return out

    def _host_view(self, node: str) -> tuple[list[dict[str, Any]], Outcome]:
        """The node's GPUs and drop-in outcome, read again only after its host tree changed (a look at 500
        nodes must not parse 500 state files and 500 containerd configs)."""
        generation = self.signals.generation(host_key(node))
        cached = self._host_views.get(node)
        if cached is not None and cached[0] == generation:
            return cached[1], cached[2]
        gpus = self.host_gpus(node)
        dropin = self._dropin_outcome(node)
        self._host_views[node] = (generation, gpus, dropin)
        return gpus, dropin

    async def view(self) -> list[dict[str, Any]]:
        """One row per node: workload, CC desired/state/ready, operands running, GPUs allocatable (from the
        shared informers and the host trees)."""
        from ccgpu.sim.resources import SIM_OWNER

        operands: dict[str, list[str]] = {}
        for p in self.informers.pods.items():
            meta, status = p.get("metadata") or {}, p.get("status") or {}
            if meta.get("namespace") == NAMESPACE and (meta.get("annotations") or {}).get(SIM_OWNER) \
                    and status.get("phase") == "Running":
                operands.setdefault(p["spec"].get("nodeName", ""), []).append((meta.get("labels") or {}).get("app",
                                                                                                              "?"))
        rows = []
        for spec in self.specs:
            n = self.informers.nodes.get(spec.name) or {}
            lab = (n.get("metadata") or {}).get("labels") or {}
            alloc = (n.get("status") or {}).get("allocatable") or {}
            gpus, _ = self._host_view(spec.name)
            rows.append({
                "node": spec.name, "profile": spec.profile,
                "workload": lab.get(L.WORKLOAD_CONFIG, "container"),
                "cc_mode": lab.get(L.CC_MODE, ""), "cc_mode_state": lab.get(L.CC_MODE_STATE, ""),
                "cc_ready_state": lab.get(L.CC_READY_STATE, ""),
                "operands": sorted(operands.get(spec.name, [])),
                "gpus": len(gpus), "gpus_on_vfio": sum(1 for g in gpus if g["driver"] == "vfio-pci"),
                "pgpu_allocatable": int(alloc.get("nvidia.com/pgpu", "0")),
                "deploy": sorted(k.removeprefix(L.DEPLOY_PREFIX) for k, v in lab.items()
                                 if k.startswith(L.DEPLOY_PREFIX) and v == "true"),
            })
        return rows

    async def outcomes(self, sample_pod: bool = False, rows: list[dict[str, Any]] | None = None) -> Report:
        """Check what a converged cluster must show (README: `ccgpu simulate`); `rows` is a `view()` taken
        just before, if the caller has one."""
        from ccgpu.operator.operands import deploy_operands

        rows_by_node = {r["node"]: r for r in (rows if rows is not None else await self.view())}
        forced_off = await self.node_events("CCModeDefaultForcedOff")
        dsets = {d["metadata"]["name"]: d for d in self.informers.daemonsets.items()
                 if d["metadata"].get("namespace") == NAMESPACE}
        rep = Report()
        container_ops = sorted(o.value for o in deploy_operands(L.WorkloadConfig.CONTAINER, "kata", True))
        for spec in self.specs:
            r = rows_by_node[spec.name]
            if spec.workload == "container":
                missing = [o for o in container_ops if o not in r["deploy"] and o != "mig-manager"]
                rep.outcomes.append(Outcome(f"{spec.name}: NVIDIA's container operand labels", not missing,
                                            f"missing {missing}" if missing else ", ".join(r["deploy"])))
                ds = dsets.get("nvidia-driver-daemonset")
                ok = ds is not None and ((ds.get("status") or {}).get("desiredNumberScheduled") or 0) >= 1
                rep.outcomes.append(Outcome(f"{spec.name}: NVIDIA driver DaemonSet scheduled", ok))
                continue
            rep.outcomes.append(self._host_view(spec.name)[1])
            tee = self._tee(spec.name)
            if tee:
                ok = (r["cc_mode_state"] == "on" and r["cc_ready_state"] == "true"
                      and r["gpus_on_vfio"] == r["gpus"] and r["pgpu_allocatable"] == r["gpus"])
                rep.outcomes.append(Outcome(
                    f"{spec.name}: CC on, ready, GPUs on vfio-pci, nvidia.com/pgpu allocatable", ok,
                    f"cc.mode.state={r['cc_mode_state']!r} cc.ready.state={r['cc_ready_state']!r} "
                    f"vfio {r['gpus_on_vfio']}/{r['gpus']} allocatable {r['pgpu_allocatable']}"))
            else:
                ok = r["cc_mode_state"] == "off" and bool(forced_off.get(spec.name))
                rep.outcomes.append(Outcome(f"{spec.name}: no TEE → CC off with a Warning Event", ok,
                                            f"cc.mode.state={r['cc_mode_state']!r}, "
                                            f"{len(forced_off.get(spec.name, []))} CCModeDefaultForcedOff event(s)"))
        if sample_pod:
            rep.outcomes.append(await self._sample_outcome())
            rep.outcomes.append(await self._sample_attestation_outcome())
        return rep

    async def _sample_attestation_outcome(self) -> Outcome:
        from lightkube.core.exceptions import ApiError

        from ccgpu.sim.vm_attestation import attestation_summary

        what = "sample pod's VM attested (EAR affirming) before its GPU was set ready"
        try:
            at = attestation_summary(await self.pod(SAMPLE_POD))
        except ApiError:
            return Outcome(what, False, "no sample pod")
        ok = at["status"] == "affirming" and at["gpu_ready"] and bool(at["gpus"])
        return Outcome(what, ok, f"{at['status']}, GPU ready {at['gpu_ready']}, GPUs {','.join(at['gpus'])}: "
                                 f"{at['reason']}")

    async def _sample_outcome(self) -> Outcome:
        from lightkube.core.exceptions import ApiError

        try:
            pod = await self.pod(SAMPLE_POD)
        except ApiError:
            return Outcome("sample confidential pod Running with a GPU", False, "no sample pod")
        status = pod.get("status") or {}
        ann = (pod["metadata"].get("annotations") or {})
        node = pod["spec"].get("nodeName") or ""
        ok = status.get("phase") == "Running" and bool(ann.get(GPU_BDFS_ANNOTATION)) and bool(node) \
            and bool(self._tee(node))
        detail = (f"on {node} with {ann.get('ccgpu.dev/cdi-devices', '')} ({ann.get(GPU_BDFS_ANNOTATION, '')})"
                  if ok else f"phase {status.get('phase')!r}: {status.get('message') or _waiting(status)}")
        return Outcome("sample confidential pod Running with a GPU", ok, detail)

    def _dropin_outcome(self, node: str) -> Outcome:
        from ccgpu.sim.containerd_check import dropin_runtimes

        what = f"{node}: containerd drop-in names the Kata runtime classes"
        found, version, why = dropin_runtimes(self.hosts[node])
        missing = [rc for rc in L.RUNTIME_CLASSES if rc not in found]
        return Outcome(what, not missing and not why,
                       why or (f"missing {missing}" if missing else f"config version {version}: {', '.join(found)}"))

    def _tee(self, node: str) -> str | None:
        """The node's TEE, read once: a host's platform does not change while the cluster runs."""
        from ccgpu.hw.platform import read_platform
        from ccgpu.hw.sysfs import Sysfs

        if node not in self._tees:
            self._tees[node] = read_platform(Sysfs(self.hosts[node])).tee
        return self._tees[node]

    async def wait_converged(self, timeout_s: float = 60.0, sample_pod: bool = False,
                             progress: Any = None) -> Report:
        """Re-check the outcomes until all hold or the deadline passes; `progress(rows, report)` sees each look."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            try:
                rows = await self.view()
                report = await self.outcomes(sample_pod, rows)
                if progress is not None:
                    progress(rows, report)
            except Exception as e:  # noqa: BLE001 - an injected API fault: look again
                report = Report([Outcome("the cluster could be read", False, f"{type(e).__name__}: {e}")])
            if report.ok or loop.time() > deadline:
                return report
            await asyncio.sleep(self.check_interval_s)

    def metrics(self) -> dict[str, Any]:
        m = self.api.metrics
        return {"api_requests": m.count(), "api_writes": m.writes()}


def _waiting(status: dict[str, Any]) -> str:
    for c in status.get("containerStatuses") or []:
        w = (c.get("state") or {}).get("waiting")
        if w:
            return f"{w.get('reason')}: {w.get('message')}"
    for c in status.get("conditions") or []:
        if c.get("status") == "False" and c.get("message"):
            return c["message"]
    return ""

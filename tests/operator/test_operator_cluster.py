"""The operator against the Kubernetes API simulator: the issue's "must show" scenarios, end to end.

kopf watches, lightkube writes, the simulator counts every request, so "zero writes" is measured at the server.
"""

from __future__ import annotations

import asyncio
import copy
import logging

import pytest
from lightkube.core.exceptions import ApiError

from ccgpu import labels as L
from ccgpu.kube.client import make_async_client
from ccgpu.operator import policy
from ccgpu.operator.controller import Controller, OperatorConfig, run
from ccgpu.operator.writer import ClusterPolicy, DaemonSet, Node, NodeFeatureRule, RuntimeClass
from ccgpu.sim import apiserver

NS = "ccgpu"
GPU = {"feature.node.kubernetes.io/pci-10de.present": "true"}
NFR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "nodefeaturerules.nfd.k8s-sigs.io"},
    "spec": {
        "group": "nfd.k8s-sigs.io",
        "scope": "Cluster",
        "names": {"kind": "NodeFeatureRule", "plural": "nodefeaturerules", "singular": "nodefeaturerule",
                  "listKind": "NodeFeatureRuleList"},
        "versions": [{"name": "v1alpha1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
            "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
    },
}
MIXED = {
    "ctr-1": dict(GPU),
    "vm-1": {**GPU, L.WORKLOAD_CONFIG: "vm-passthrough", L.NFD_SNP: "true"},
    "vm-2": {**GPU, L.WORKLOAD_CONFIG: "vm-passthrough"},
    "out-1": {**GPU, L.DEPLOY_OPERANDS: "false"},
    "cpu-1": {"feature.node.kubernetes.io/cpu-model.vendor_id": "AMD"},
}
CONTAINER_OPS = ["client", "container-toolkit", "dcgm", "dcgm-exporter", "device-plugin", "driver",
                 "gpu-feature-discovery", "node-status-exporter", "operator-validator"]
VM_OPS = ["cc-manager", "client", "kata-manager", "kata-sandbox-device-plugin", "sandbox-validator", "vfio-manager"]


def _spec(**over):
    spec = copy.deepcopy(policy.default_policy()["spec"])
    spec["kataManager"]["runtimeClasses"] = [{"name": "kata-qemu-nvidia-gpu-snp"}, {"name": "kata-qemu-nvidia-gpu-tdx"}]
    spec.update(over)
    return spec


def _policy_obj(spec, name=policy.SINGLETON_NAME):
    return ClusterPolicy.from_dict({"apiVersion": policy.API_VERSION, "kind": policy.KIND,
                                    "metadata": {"name": name}, "spec": spec})


class Env:
    def __init__(self, api):
        self.api = api
        self.kc = api.kubeconfig_dict()
        self.client = make_async_client(self.kc)
        self.running: list[tuple[asyncio.Event, asyncio.Task, list[Controller]]] = []

    async def setup(self, nodes=MIXED, nfd=True):
        from lightkube import codecs
        from lightkube.resources.core_v1 import Namespace

        await self.client.create(codecs.from_dict(policy.crd()))
        if nfd:
            await self.client.create(codecs.from_dict(NFR_CRD))
        await self.client.create(Namespace.from_dict({"metadata": {"name": NS}}))
        for name, lab in nodes.items():
            await self.client.create(Node.from_dict({"apiVersion": "v1", "kind": "Node",
                                                     "metadata": {"name": name, "labels": lab}}))

    def start(self, standalone=True, identity="op-a") -> list[Controller]:
        stop = asyncio.Event()
        holder: list[Controller] = []
        cfg = OperatorConfig(namespace=NS, image="ccgpu:test", nvidia_repository="nvidia.example", metrics_port=0,
                             kubeconfig_dict=self.kc, standalone=standalone, identity=identity, debounce_s=0.02,
                             lease_duration_s=15, lease_renew_s=0.3)
        task = asyncio.create_task(run(cfg, stop, started=holder.append))
        self.running.append((stop, task, holder))
        return holder

    async def stop(self, index=-1):
        stop, task, _ = self.running.pop(index)
        stop.set()
        t0 = asyncio.get_running_loop().time()
        await asyncio.wait_for(task, 20)
        self.stop_seconds = asyncio.get_running_loop().time() - t0

    async def close(self):
        while self.running:
            await self.stop()
        await self.client.close()

    async def labels(self, name):
        return dict((await self.client.get(Node, name)).metadata.labels or {})

    async def deploy(self, name):
        return sorted(k.removeprefix(L.DEPLOY_PREFIX) for k, v in (await self.labels(name)).items()
                      if k.startswith(L.DEPLOY_PREFIX) and k != L.DEPLOY_OPERANDS)

    async def status(self, name=policy.SINGLETON_NAME):
        return (await self.client.get(ClusterPolicy, name)).to_dict().get("status") or {}

    async def names(self, res, namespace=None):
        return sorted([o.metadata.name async for o in self.client.list(res, namespace=namespace)])

    def writes(self):
        m = self.api.metrics
        return {r: m.writes(r) for r in ("nodes", "daemonsets", "runtimeclasses", "nodefeaturerules",
                                         "clusterpolicies/status", "events")}


async def until(cond, timeout=20.0, what="condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = cond()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def env():
    logging.getLogger("kopf").setLevel(logging.WARNING)
    async with apiserver.ApiServer() as api:
        e = Env(api)
        try:
            yield e
        finally:
            await e.close()


async def _converged(env: Env, ctl: list[Controller]):
    """Wait until a reconcile made no writes (the operator's own definition of converged)."""
    async def done():
        return ctl and ctl[0].last_plan is not None and ctl[0].last_plan.writes == [] and ctl[0].overlay.pending(
            "nodes") == 0
    await until(done, what="a reconcile with zero writes")


async def _resync_writes(env: Env, ctl: Controller) -> dict[str, int]:
    before = env.writes()
    n = ctl.reconciles
    ctl.trigger()
    await until(lambda: ctl.reconciles > n, what="a resync")
    after = env.writes()
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


async def test_mixed_cluster_gets_exactly_the_right_labels_daemonsets_and_status(env):
    await env.setup()
    await env.client.create(_policy_obj(_spec()))
    ctl = env.start()
    await _converged(env, ctl)
    assert await env.deploy("ctr-1") == CONTAINER_OPS
    assert await env.deploy("vm-1") == VM_OPS and await env.deploy("vm-2") == VM_OPS
    assert await env.deploy("out-1") == [] and (await env.labels("out-1"))[L.GPU_PRESENT] == "true"
    assert await env.labels("cpu-1") == MIXED["cpu-1"]
    dss = await env.names(DaemonSet, NS)
    assert dss == sorted(["gpu-feature-discovery", "nvidia-cc-manager", "nvidia-container-toolkit-daemonset",
                          "nvidia-dcgm", "nvidia-dcgm-exporter", "nvidia-device-plugin-daemonset",
                          "nvidia-driver-daemonset", "nvidia-kata-manager",
                          "nvidia-kata-sandbox-device-plugin-daemonset", "nvidia-mig-manager",
                          "nvidia-sandbox-validator", "nvidia-vfio-manager"])
    ds = (await env.client.get(DaemonSet, "nvidia-vfio-manager", namespace=NS)).to_dict()
    assert ds["spec"]["template"]["spec"]["nodeSelector"] == {L.deploy_label("vfio-manager"): "true"}
    assert ds["metadata"]["ownerReferences"][0]["kind"] == "ClusterPolicy"
    assert await env.names(RuntimeClass) == ["kata-qemu-nvidia-gpu-snp", "kata-qemu-nvidia-gpu-tdx"]
    assert await env.names(NodeFeatureRule) == ["nvidia-nfd-nodefeaturerules"]
    status = await env.status()
    assert status["state"] == "notReady"  # no DaemonSet controller here: no pod is ready
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Ready"] == "OperandNotReady"
    assert status["nodes"]["gpuNodes"] == 4 and status["nodes"]["optedOut"] == 1
    assert status["nodes"]["workloadConfigs"] == {"container": 1, "vm-passthrough": 2}
    assert set(status["operands"]) == {"cc-manager", "container-toolkit", "dcgm", "dcgm-exporter", "device-plugin",
                                       "driver", "gpu-feature-discovery", "kata-manager",
                                       "kata-sandbox-device-plugin", "mig-manager", "sandbox-validator",
                                       "vfio-manager"}


async def test_status_turns_ready_when_daemonsets_report_ready_pods(env):
    await env.setup()
    await env.client.create(_policy_obj(_spec()))
    ctl = env.start()
    await _converged(env, ctl)
    from lightkube.resources.apps_v1 import DaemonSet as TypedDaemonSet
    from lightkube.types import PatchType

    async for ds in env.client.list(DaemonSet, namespace=NS):  # what the DaemonSet controller would report
        st = {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 2, "numberMisscheduled": 0,
              "updatedNumberScheduled": 2, "numberAvailable": 2, "observedGeneration": ds.metadata.generation or 0}
        await env.client.patch(TypedDaemonSet.Status, ds.metadata.name, {"status": st}, namespace=NS,
                               patch_type=PatchType.MERGE)

    async def ready():
        return (await env.status()).get("state") == "ready"
    await until(ready, what="state ready")
    status = await env.status()
    assert {c["type"]: c["reason"] for c in status["conditions"]} == {"Ready": "Reconciled", "Error": "Reconciled"}
    assert status["operands"]["vfio-manager"] == {"desired": 2, "ready": 2}


async def test_switching_a_node_workload_config_swaps_its_operand_labels_and_nothing_else(env):
    await env.setup()
    await env.client.create(_policy_obj(_spec()))
    ctl = env.start()
    await _converged(env, ctl)
    others = {n: (await env.client.get(Node, n)).metadata.resourceVersion for n in MIXED if n != "ctr-1"}
    dss = {o.metadata.name: o.metadata.resourceVersion async for o in env.client.list(DaemonSet, namespace=NS)}
    before = env.writes()
    from lightkube.types import PatchType

    await env.client.patch(Node, "ctr-1", {"metadata": {"labels": {L.WORKLOAD_CONFIG: "vm-passthrough"}}},
                           patch_type=PatchType.MERGE)

    async def swapped():
        return await env.deploy("ctr-1") == VM_OPS
    await until(swapped, what="ctr-1 to carry the vm-passthrough operand labels")
    await _converged(env, ctl)
    assert {n: (await env.client.get(Node, n)).metadata.resourceVersion for n in others} == others
    assert {o.metadata.name: o.metadata.resourceVersion async for o in env.client.list(DaemonSet, namespace=NS)} == dss
    after = env.writes()
    assert after["nodes"] - before["nodes"] == 2  # the user's patch + the operator's one
    assert after["daemonsets"] == before["daemonsets"]


async def test_deleting_the_cluster_policy_garbage_collects_everything_it_made(env):
    await env.setup()
    await env.client.create(_policy_obj(_spec()))
    ctl = env.start()
    await _converged(env, ctl)
    await env.client.delete(ClusterPolicy, policy.SINGLETON_NAME)

    async def gone():
        return not (await env.names(DaemonSet, NS) or await env.names(RuntimeClass)
                    or await env.names(NodeFeatureRule))
    await until(gone, what="owned objects to be deleted")

    async def unlabelled():
        for name, lab in MIXED.items():
            if await env.labels(name) != lab:
                return False
        return True
    await until(unlabelled, what="operator labels removed")


async def test_a_converged_cluster_resync_makes_zero_writes(env):
    await env.setup()
    await env.client.create(_policy_obj(_spec()))
    ctl = env.start()
    await _converged(env, ctl)
    assert await _resync_writes(env, ctl[0]) == {}


@pytest.mark.parametrize("stop_after_writes", [1, 17])
async def test_restarting_the_operator_at_any_point_converges_with_no_duplicates(env, stop_after_writes):
    await env.setup()
    await env.client.create(_policy_obj(_spec()))
    env.start()
    await until(lambda: sum(env.writes().values()) >= stop_after_writes, what="some writes")
    await env.stop()
    ctl = env.start()
    await _converged(env, ctl)
    assert env.api.metrics.count("create", "daemonsets", 201) == 12
    assert env.api.metrics.count("create", "daemonsets", 409) == 0
    assert await env.deploy("vm-2") == VM_OPS and await env.deploy("ctr-1") == CONTAINER_OPS
    assert await _resync_writes(env, ctl[0]) == {}


async def test_a_restarted_operator_on_a_converged_cluster_writes_nothing(env):
    await env.setup()
    await env.client.create(_policy_obj(_spec()))
    ctl = env.start()
    await _converged(env, ctl)
    await env.stop()
    before = env.writes()
    ctl = env.start()
    await until(lambda: ctl and ctl[0].reconciles >= 1, what="the first reconcile after restart")
    assert env.writes() == before


async def test_schema_violating_policy_is_rejected_by_the_api_with_422(env):
    await env.setup()
    with pytest.raises(ApiError) as e:
        await env.client.create(_policy_obj(_spec(sandboxWorkloads={"enabled": True, "defaultWorkload": "kata"})))
    assert e.value.status.code == 422
    assert "defaultWorkload" in e.value.status.message


async def test_inconsistent_policy_gets_error_and_nothing_is_applied(env):
    await env.setup()
    await env.client.create(_policy_obj({"sandboxWorkloads": {"enabled": False}, "ccManager": {"enabled": True}}))
    before = env.writes()
    env.start()

    async def errored():
        return (await env.status()).get("state") == "notReady"
    await until(errored, what="status notReady")
    conds = {c["type"]: c for c in (await env.status())["conditions"]}
    assert conds["Error"]["status"] == "True" and conds["Error"]["reason"] == "ReconcileFailed"
    assert "sandboxWorkloads.enabled is false" in conds["Error"]["message"]
    assert await env.names(DaemonSet, NS) == []
    assert env.writes()["nodes"] == before["nodes"]


async def test_two_replicas_exactly_one_writes_and_the_other_takes_over(env):
    await env.setup()
    await env.client.create(_policy_obj(_spec()))
    a = env.start(standalone=False, identity="op-a")
    b = env.start(standalone=False, identity="op-b")
    await until(lambda: a and b and (a[0].elector.leader.is_set() or b[0].elector.leader.is_set()),
                what="a leader")
    leader, follower = (0, b) if a[0].elector.leader.is_set() else (1, a)
    ctl = a if leader == 0 else b
    await _converged(env, ctl)
    assert not follower[0].elector.leader.is_set()
    assert follower[0].reconciles == 0
    assert env.api.metrics.count("create", "daemonsets", 409) == 0
    await env.stop(leader)  # a clean stop hands the Lease back: no wait for it to expire
    await until(lambda: follower[0].elector.leader.is_set(), timeout=1.5, what="the follower to take over")
    from lightkube.types import PatchType

    await env.client.patch(Node, "vm-1", {"metadata": {"labels": {L.WORKLOAD_CONFIG: "container"}}},
                           patch_type=PatchType.MERGE)

    async def relabelled():
        return await env.deploy("vm-1") == CONTAINER_OPS
    await until(relabelled, what="the new leader to reconcile")


async def test_a_daemonset_deleted_by_hand_is_recreated_and_kopf_leaves_no_marks(env):
    await env.setup()
    await env.client.create(_policy_obj(_spec()))
    ctl = env.start()
    await _converged(env, ctl)
    await env.client.delete(DaemonSet, "nvidia-cc-manager", namespace=NS)

    async def back():
        return "nvidia-cc-manager" in await env.names(DaemonSet, NS)
    await until(back, what="the DaemonSet to be recreated")
    node = (await env.client.get(Node, "vm-1")).to_dict()["metadata"]
    cp = (await env.client.get(ClusterPolicy, policy.SINGLETON_NAME)).to_dict()["metadata"]
    for meta in (node, cp):
        assert not [k for k in (meta.get("annotations") or {}) if "kopf" in k]
        assert not meta.get("finalizers")


async def test_node_watch_recovers_from_dropped_streams_and_410_gone(env):
    from lightkube.types import PatchType

    await env.setup()
    await env.client.create(_policy_obj(_spec()))
    ctl = env.start()
    await _converged(env, ctl)
    env.api.drop_watches()
    env.api.compact()  # resuming from the last seen version now gets 410 Gone: the operator must relist
    await env.client.patch(Node, "vm-2", {"metadata": {"labels": {L.WORKLOAD_CONFIG: "container"}}},
                           patch_type=PatchType.MERGE)

    async def relabelled():
        return await env.deploy("vm-2") == CONTAINER_OPS
    await until(relabelled, what="the change made after the 410 to be reconciled")


async def test_deleting_a_gpu_node_updates_the_status_counts(env):
    await env.setup()
    await env.client.create(_policy_obj(_spec()))
    ctl = env.start()
    await _converged(env, ctl)
    await env.client.delete(Node, "vm-2")

    async def counted():
        return (await env.status())["nodes"]["workloadConfigs"] == {"container": 1, "vm-passthrough": 1}
    await until(counted, what="the status to count one vm-passthrough node")


async def test_a_second_cluster_policy_is_ignored_and_the_first_stays_in_effect(env):
    await env.setup()
    await env.client.create(_policy_obj(_spec()))
    await env.client.create(_policy_obj({"driver": {"enabled": False}}, name="another"))
    ctl = env.start()
    await _converged(env, ctl)
    assert (await env.status("another"))["state"] == "ignored"
    assert "cluster-policy" in (await env.status("another"))["conditions"][0]["message"]
    assert "nvidia-driver-daemonset" in await env.names(DaemonSet, NS)


async def test_lease_passes_to_another_replica_only_after_the_holder_stops_renewing(env):
    """A crashed leader never releases its Lease; the other replica takes it once it has expired."""
    import datetime as dt

    from lightkube.resources.core_v1 import Namespace

    from ccgpu.operator.leader import LeaseElector

    await env.client.create(Namespace.from_dict({"metadata": {"name": NS}}))
    now = [dt.datetime(2026, 11, 26, 15, 0, tzinfo=dt.UTC)]
    a = LeaseElector(env.client, NS, "lease", "op-a", duration_s=15, clock=lambda: now[0])
    b = LeaseElector(env.client, NS, "lease", "op-b", duration_s=15, clock=lambda: now[0])
    assert await a.try_once() and not await b.try_once()
    now[0] += dt.timedelta(seconds=10)
    assert await a.try_once() and not await b.try_once()  # renewed: still a's
    now[0] += dt.timedelta(seconds=16)  # a crashed: no renewals
    assert await b.try_once()
    assert not await a.try_once()  # a comes back and finds b holding it


async def test_invalid_workload_config_gets_a_warning_event_on_the_node_and_the_default_operands(env):
    """gpu-operator#1871: `kata` is not a workload config; NVIDIA only logged it and deployed `container`."""
    from lightkube.resources.core_v1 import Event as CoreEvent

    await env.setup(nodes={"bad-1": {**GPU, L.WORKLOAD_CONFIG: "kata"}})
    await env.client.create(_policy_obj(_spec(sandboxWorkloads={"enabled": True, "mode": "kata",
                                                                "defaultWorkload": "vm-passthrough"})))
    ctl = env.start()
    await _converged(env, ctl)
    assert await env.deploy("bad-1") == VM_OPS
    events = [e async for e in env.client.list(CoreEvent, namespace="default")
              if e.involvedObject.name == "bad-1" and e.reason == "InvalidWorkloadConfig"]
    assert len(events) == 1 and events[0].type == "Warning"
    assert "container, vm-passthrough, vm-vgpu" in events[0].message

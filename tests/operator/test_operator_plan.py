"""One reconcile as a pure function: writes, Events and status for a mixed cluster, converged → zero writes."""

from __future__ import annotations

import copy

from ccgpu import labels as L
from ccgpu.operator import plan as P
from ccgpu.operator.desired import Images
from ccgpu.operator.policy import default_policy

IMAGES = Images(ccgpu="ccgpu:test", nvidia_repository="nvidia")
GPU = {"feature.node.kubernetes.io/pci-10de.present": "true"}
CPU = {"feature.node.kubernetes.io/cpu-model.vendor_id": "AMD"}


def _policy(name="cluster-policy", created="2026-11-01T00:00:00Z", spec=None, uid="uid-1"):
    return {"apiVersion": "ccgpu.dev/v1alpha1", "kind": "ClusterPolicy",
            "metadata": {"name": name, "uid": uid, "creationTimestamp": created, "generation": 1},
            "spec": copy.deepcopy(default_policy()["spec"] if spec is None else spec)}


def _mixed_nodes():
    return {
        "ctr-1": dict(GPU),
        "vm-1": {**GPU, L.WORKLOAD_CONFIG: "vm-passthrough"},
        "vm-2": {**GPU, L.WORKLOAD_CONFIG: "vm-passthrough", L.CC_MODE: "on"},
        "out-1": {**GPU, L.DEPLOY_OPERANDS: "false"},
        "cpu-1": dict(CPU),
    }


def apply(snap: P.Snapshot, plan: P.Plan) -> None:
    """What the API server would do with the writes (the controller's tests do it for real)."""
    for w in plan.writes:
        if w.verb == "patch-node":
            lab = dict(snap.nodes[w.key.name])
            for k, v in w.body.items():
                if v is None:
                    lab.pop(k, None)
                else:
                    lab[k] = v
            snap.nodes[w.key.name] = lab
        elif w.verb in ("create", "replace"):
            snap.owned[w.key] = copy.deepcopy(dict(w.body))
        elif w.verb == "delete":
            snap.owned.pop(w.key, None)
        elif w.verb == "status":
            for p in snap.policies:
                if p["metadata"]["name"] == w.key.name:
                    p["status"] = copy.deepcopy(dict(w.body))


def _run(snap, now="2026-11-26T15:00:00Z"):
    plan = P.reconcile(snap, namespace="ccgpu", images=IMAGES, now=now)
    apply(snap, plan)
    return plan


def _deploy(lab):
    return sorted(k.removeprefix(L.DEPLOY_PREFIX) for k in lab if k.startswith(L.DEPLOY_PREFIX)
                  and k != L.DEPLOY_OPERANDS)


def test_mixed_cluster_gets_exactly_the_right_labels_daemonsets_and_status():
    snap = P.Snapshot(policies=[_policy()], nodes=_mixed_nodes())
    _run(snap)
    assert _deploy(snap.nodes["ctr-1"]) == ["client", "container-toolkit", "dcgm", "dcgm-exporter", "device-plugin",
                                           "driver", "gpu-feature-discovery", "node-status-exporter",
                                           "operator-validator"]
    assert _deploy(snap.nodes["vm-1"]) == ["cc-manager", "client", "kata-manager", "kata-sandbox-device-plugin",
                                          "sandbox-validator", "vfio-manager"]
    assert _deploy(snap.nodes["out-1"]) == [] and snap.nodes["out-1"][L.GPU_PRESENT] == "true"
    assert snap.nodes["cpu-1"] == CPU
    kinds = sorted((k.kind, k.name) for k in snap.owned)
    assert ("NodeFeatureRule", "nvidia-nfd-nodefeaturerules") in kinds
    assert len([k for k in kinds if k[0] == "DaemonSet"]) == 12
    status = snap.policies[0]["status"]
    assert status["state"] == "notReady"
    assert status["nodes"]["gpuNodes"] == 4 and status["nodes"]["optedOut"] == 1
    assert status["nodes"]["workloadConfigs"] == {"container": 1, "vm-passthrough": 2}
    assert status["nodes"]["ccModes"] == {"on": 1}
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "OperandNotReady"


def test_converged_cluster_resync_makes_zero_writes():
    snap = P.Snapshot(policies=[_policy()], nodes=_mixed_nodes())
    _run(snap)
    again = P.reconcile(snap, namespace="ccgpu", images=IMAGES, now="2026-11-26T16:00:00Z")
    assert again.writes == [] and again.events == []


def test_ready_when_every_daemonset_reports_ready_pods():
    snap = P.Snapshot(policies=[_policy()], nodes=_mixed_nodes())
    _run(snap)
    for key, obj in snap.owned.items():
        if key.kind == "DaemonSet":
            obj["status"] = {"desiredNumberScheduled": 2, "numberReady": 2, "updatedNumberScheduled": 2,
                             "numberUnavailable": 0, "observedGeneration": 0}
    plan = _run(snap)
    assert [w.verb for w in plan.writes] == ["status"]
    status = snap.policies[0]["status"]
    assert status["state"] == "ready"
    assert status["operands"]["cc-manager"] == {"desired": 2, "ready": 2}
    assert {c["type"]: c["reason"] for c in status["conditions"]} == {"Ready": "Reconciled", "Error": "Reconciled"}
    assert any(e.reason == "Reconciled" for e in plan.events)


def test_switching_one_node_workload_config_writes_only_that_node():
    snap = P.Snapshot(policies=[_policy()], nodes=_mixed_nodes())
    _run(snap)
    snap.nodes["ctr-1"] = {**snap.nodes["ctr-1"], L.WORKLOAD_CONFIG: "vm-passthrough"}
    plan = _run(snap)
    node_writes = [w for w in plan.writes if w.verb == "patch-node"]
    assert [w.key.name for w in node_writes] == ["ctr-1"]
    assert {w.verb for w in plan.writes} <= {"patch-node", "status"}
    assert _deploy(snap.nodes["ctr-1"]) == _deploy(snap.nodes["vm-1"])


def test_inconsistent_policy_gets_error_with_message_and_nothing_is_applied():
    spec = {"sandboxWorkloads": {"enabled": False}, "ccManager": {"enabled": True}}
    snap = P.Snapshot(policies=[_policy(spec=spec)], nodes=_mixed_nodes())
    plan = _run(snap)
    assert [w.verb for w in plan.writes] == ["status"]
    error = {c["type"]: c for c in snap.policies[0]["status"]["conditions"]}["Error"]
    assert error["status"] == "True" and error["reason"] == "ReconcileFailed"
    assert "sandboxWorkloads.enabled is false" in error["message"]
    assert any(e.type == "Warning" and e.kind == "ClusterPolicy" for e in plan.events)


def test_newer_policy_is_ignored_and_the_oldest_wins():
    old = _policy("cluster-policy", "2026-11-01T00:00:00Z")
    new = _policy("another", "2026-11-02T00:00:00Z", spec={}, uid="uid-2")
    snap = P.Snapshot(policies=[new, old], nodes=_mixed_nodes())
    plan = _run(snap)
    assert plan.policy == "cluster-policy"
    assert new["status"]["state"] == "ignored"
    assert "cluster-policy" in new["status"]["conditions"][0]["message"]


def test_disabling_an_operand_deletes_its_daemonset_only():
    snap = P.Snapshot(policies=[_policy()], nodes=_mixed_nodes())
    _run(snap)
    snap.policies[0]["spec"]["driver"] = {"enabled": False}
    plan = _run(snap)
    assert [(w.verb, w.key.name) for w in plan.writes if w.verb != "status"] == [
        ("delete", "nvidia-driver-daemonset")]


def test_changed_image_replaces_only_the_daemonsets_that_render_differently():
    snap = P.Snapshot(policies=[_policy()], nodes=_mixed_nodes())
    _run(snap)
    snap.policies[0]["spec"]["ccManager"]["defaultMode"] = "devtools"
    plan = _run(snap)
    assert [(w.verb, w.key.name) for w in plan.writes if w.verb != "status"] == [("replace", "nvidia-cc-manager")]


def test_deleting_the_policy_takes_back_labels_and_objects():
    snap = P.Snapshot(policies=[_policy()], nodes=_mixed_nodes())
    _run(snap)
    snap.policies.clear()
    _run(snap)
    assert snap.owned == {}
    assert snap.nodes == {**_mixed_nodes()}


def test_no_nfd_labels_anywhere_reports_nfd_labels_missing():
    snap = P.Snapshot(policies=[_policy()], nodes={"bare": {}})
    _run(snap)
    ready = {c["type"]: c for c in snap.policies[0]["status"]["conditions"]}["Ready"]
    assert ready["reason"] == "NFDLabelsMissing" and "NFD" in ready["message"]


def test_no_gpu_nodes_is_ready_with_reason_no_gpu_nodes():
    snap = P.Snapshot(policies=[_policy()], nodes={"cpu-1": dict(CPU)})
    _run(snap)
    status = snap.policies[0]["status"]
    assert status["state"] == "ready"
    assert status["conditions"][0]["reason"] == "NoGPUNodes"
    assert not [k for k in snap.owned if k.kind == "DaemonSet"]


def test_condition_transition_time_is_kept_while_its_status_is_unchanged():
    snap = P.Snapshot(policies=[_policy()], nodes=_mixed_nodes())
    _run(snap, now="2026-11-26T15:00:00Z")
    snap.nodes["ctr-1"] = {**snap.nodes["ctr-1"], L.CC_MODE: "off"}
    _run(snap, now="2026-11-26T15:05:00Z")
    ready = snap.policies[0]["status"]["conditions"][0]
    assert ready["lastTransitionTime"] == "2026-11-26T15:00:00Z"


def test_relabelling_many_nodes_posts_one_summary_event_instead_of_one_per_node():
    nodes = {f"n{i}": dict(GPU) for i in range(P.MAX_NODE_EVENTS + 1)}
    plan = P.reconcile(P.Snapshot(policies=[_policy()], nodes=nodes), namespace="ccgpu", images=IMAGES, now="t")
    labelled = [e for e in plan.events if e.reason == "GPULabelsUpdated"]
    assert len(labelled) == 1 and labelled[0].kind == "ClusterPolicy"
    assert f"{P.MAX_NODE_EVENTS + 1} nodes" in labelled[0].message
    few = P.reconcile(P.Snapshot(policies=[_policy()], nodes={"n1": dict(GPU)}), namespace="ccgpu", images=IMAGES,
                      now="t")
    assert [e.name for e in few.events if e.reason == "GPULabelsUpdated"] == ["n1"]


def test_on_a_creation_time_tie_the_policy_named_cluster_policy_wins():
    a = _policy("another", "2026-11-01T00:00:00Z", uid="uid-2")
    b = _policy("cluster-policy", "2026-11-01T00:00:00Z")
    assert P.in_effect([a, b]) is b


def _foreign(name="someone-elses", labels=None):
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": "ccgpu", "labels": labels or {"app": name}}}


def test_an_object_without_the_managed_by_label_is_never_deleted():
    """The owned set can hold objects someone else made in our namespace; only ours may be deleted."""
    foreign = _foreign()
    key = P.ObjectKey.of(foreign)
    assert P.diff_objects({}, {key: foreign}) == []
    snap = P.Snapshot(policies=[_policy()], nodes=_mixed_nodes(), owned={key: foreign})
    assert ("delete", key) not in [(w.verb, w.key) for w in _run(snap).writes]
    snap.policies.clear()  # no policy: everything ours is taken back, still not theirs
    assert ("delete", key) not in [(w.verb, w.key) for w in _run(snap).writes]
    assert snap.owned == {key: foreign}


def test_a_policy_being_deleted_is_not_in_effect_and_its_labels_are_taken_back():
    snap = P.Snapshot(policies=[_policy()], nodes=_mixed_nodes())
    _run(snap)
    snap.policies[0]["metadata"]["deletionTimestamp"] = "2026-11-26T15:01:00Z"
    assert P.in_effect(snap.policies) is None
    plan = _run(snap)
    assert plan.policy is None
    assert snap.nodes == _mixed_nodes() and snap.owned == {}


def test_exactly_max_node_events_relabelled_nodes_still_get_one_event_each():
    nodes = {f"n{i}": dict(GPU) for i in range(P.MAX_NODE_EVENTS)}
    plan = P.reconcile(P.Snapshot(policies=[_policy()], nodes=nodes), namespace="ccgpu", images=IMAGES, now="t")
    labelled = [e for e in plan.events if e.reason == "GPULabelsUpdated"]
    assert sorted(e.name for e in labelled) == sorted(nodes)

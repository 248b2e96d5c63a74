"""Desired node labels per workload config (reference/gpu-operator.md §2), table-driven."""

from __future__ import annotations

import pytest

from ccgpu import labels as L
from ccgpu.operator.nodelabels import plan_node
from ccgpu.operator.policy import parse_spec

GPU = {"feature.node.kubernetes.io/pci-10de.present": "true"}
SANDBOX = parse_spec({"sandboxWorkloads": {"enabled": True, "mode": "kata"}})
KUBEVIRT = parse_spec({"sandboxWorkloads": {"enabled": True, "mode": "kubevirt"}})
NO_SANDBOX = parse_spec({})
D = L.deploy_label

CONTAINER_KEYS = {D(o) for o in ("driver", "gpu-feature-discovery", "container-toolkit", "device-plugin", "dcgm",
                                 "dcgm-exporter", "node-status-exporter", "operator-validator", "client")}
PASSTHROUGH_KEYS = {D(o) for o in ("kata-sandbox-device-plugin", "sandbox-validator", "vfio-manager",
                                   "kata-manager", "cc-manager", "client")}


def _apply(lab, changes):
    out = dict(lab)
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def _deploy(lab):
    return {k for k, v in lab.items() if k.startswith(L.DEPLOY_PREFIX) and k != L.DEPLOY_OPERANDS and v}


@pytest.mark.parametrize(
    "spec, node_labels, expected_deploy",
    [
        (SANDBOX, GPU, CONTAINER_KEYS),
        (SANDBOX, {**GPU, L.WORKLOAD_CONFIG: "vm-passthrough"}, PASSTHROUGH_KEYS),
        (KUBEVIRT, {**GPU, L.WORKLOAD_CONFIG: "vm-passthrough"},
         PASSTHROUGH_KEYS - {D("kata-sandbox-device-plugin")} | {D("sandbox-device-plugin")}),
        (SANDBOX, {**GPU, L.WORKLOAD_CONFIG: "vm-vgpu"},
         {D(o) for o in ("sandbox-device-plugin", "vgpu-manager", "vgpu-device-manager", "sandbox-validator",
                         "cc-manager", "client")}),
        (NO_SANDBOX, {**GPU, L.WORKLOAD_CONFIG: "vm-passthrough"}, CONTAINER_KEYS),
        (SANDBOX, {**GPU, "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, CONTAINER_KEYS | {D("mig-manager")}),
        (SANDBOX, {**GPU, L.DEPLOY_OPERANDS: "false"}, set()),
        (SANDBOX, {"feature.node.kubernetes.io/cpu-model.vendor_id": "AMD"}, set()),
    ],
    ids=["container-default", "vm-passthrough-kata", "vm-passthrough-kubevirt", "vm-vgpu",
         "sandbox-disabled-means-container", "mig-capable-product", "opted-out", "no-gpu"],
)
def test_deploy_labels_per_workload_config(spec, node_labels, expected_deploy):
    plan = plan_node(spec, "n1", node_labels)
    assert _deploy(_apply(node_labels, plan.changes)) == expected_deploy


def test_gpu_present_follows_nfd_pci_labels_and_turns_false_when_they_vanish():
    plan = plan_node(SANDBOX, "n1", GPU)
    assert plan.changes[L.GPU_PRESENT] == "true"
    was_gpu = _apply(GPU, plan.changes)
    gone = {k: v for k, v in was_gpu.items() if k not in GPU}
    after = _apply(gone, plan_node(SANDBOX, "n1", gone).changes)
    assert after == {L.GPU_PRESENT: "false"}


def test_node_without_gpu_that_never_had_one_gets_no_writes():
    assert plan_node(SANDBOX, "n1", {"feature.node.kubernetes.io/x": "1"}).changes == {}


@pytest.mark.parametrize("value", [L.PAUSED_FOR_CC, "false"])
def test_existing_non_empty_deploy_value_is_honoured(value):
    """cc-manager's `paused-for-cc-mode-change` and a user's `false` must survive reconcile (NVIDIA semantics)."""
    lab = {**GPU, L.GPU_PRESENT: "true", L.WORKLOAD_CONFIG: "vm-passthrough",
           **{k: "true" for k in PASSTHROUGH_KEYS}, D("vfio-manager"): value}
    assert plan_node(SANDBOX, "n1", lab).changes == {}


def test_empty_deploy_value_is_replaced_with_true():
    lab = {**GPU, L.GPU_PRESENT: "true", **{k: "true" for k in CONTAINER_KEYS}, D("driver"): ""}
    assert plan_node(SANDBOX, "n1", lab).changes == {D("driver"): "true"}


def test_switching_workload_config_swaps_operand_labels_and_nothing_else():
    before = {**GPU, L.GPU_PRESENT: "true", "unrelated": "x", L.CC_MODE: "on", **{k: "true" for k in CONTAINER_KEYS}}
    switched = {**before, L.WORKLOAD_CONFIG: "vm-passthrough"}
    changes = plan_node(SANDBOX, "n1", switched).changes
    assert set(changes) == CONTAINER_KEYS ^ PASSTHROUGH_KEYS  # `client` is in both, so it stays
    after = _apply(switched, changes)
    assert _deploy(after) == PASSTHROUGH_KEYS
    assert after["unrelated"] == "x" and after[L.CC_MODE] == "on"


def test_invalid_workload_config_falls_back_to_default_with_a_warning_naming_node_and_values():
    """gpu-operator#1871: `kata` is not a workload config; NVIDIA silently used `container`."""
    spec = parse_spec({"sandboxWorkloads": {"enabled": True, "defaultWorkload": "vm-passthrough"}})
    plan = plan_node(spec, "gpu-7", {**GPU, L.WORKLOAD_CONFIG: "kata"})
    assert plan.workload == L.WorkloadConfig.VM_PASSTHROUGH
    assert "gpu-7" in plan.warning and "'kata'" in plan.warning
    assert "container, vm-passthrough, vm-vgpu" in plan.warning


def test_vm_config_with_sandbox_disabled_warns_and_uses_container():
    plan = plan_node(NO_SANDBOX, "n1", {**GPU, L.WORKLOAD_CONFIG: "vm-passthrough"})
    assert plan.workload == L.WorkloadConfig.CONTAINER
    assert "sandboxWorkloads.enabled=true" in plan.warning


def test_no_policy_removes_operator_labels_but_keeps_user_labels():
    lab = {**GPU, L.GPU_PRESENT: "true", L.WORKLOAD_CONFIG: "vm-passthrough", L.DEPLOY_OPERANDS: "true",
           **{k: "true" for k in PASSTHROUGH_KEYS}}
    after = _apply(lab, plan_node(None, "n1", lab).changes)
    assert after == {**GPU, L.WORKLOAD_CONFIG: "vm-passthrough", L.DEPLOY_OPERANDS: "true"}

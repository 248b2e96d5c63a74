"""Desired node labels (pure): gpu.present, workload config, and the deploy labels that place operands.

Semantics are NVIDIA's (reference/gpu-operator.md §2) so nodes migrated from the GPU Operator keep working:
labels a config needs are added only if absent or empty (a non-empty value such as `paused-for-cc-mode-change`
written by cc-manager, or a user's `false`, is honoured); other configs' labels are removed;
`nvidia.com/gpu.deploy.operands=false` opts a node out of every operand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ccgpu import labels
from ccgpu.labels import WorkloadConfig
from ccgpu.operator.operands import deploy_operands
from ccgpu.operator.policy import ClusterPolicySpec

_MIG_PRODUCTS = ("h100", "a100", "a30")
_PRODUCT_LABEL = "nvidia.com/gpu.product"


@dataclass(frozen=True)
class NodePlan:
    """What the operator wants to change on one node. `changes` maps key → new value, None = delete."""

    changes: dict[str, str | None] = field(default_factory=dict)
    workload: WorkloadConfig | None = None  # None: not a GPU node, or opted out
    warning: str | None = None  # for a Warning Event on the node (invalid workload config)


def has_gpu(node_labels: Mapping[str, str]) -> bool:
    """NFD found an NVIDIA PCI device (any of the classes the bundled NFD whitelists)."""
    return any(node_labels.get(k) == "true" for k in labels.NFD_PCI_NVIDIA)


def has_nfd_labels(node_labels: Mapping[str, str]) -> bool:
    return any(k.startswith("feature.node.kubernetes.io/") for k in node_labels)


def _operand_deploy_keys(node_labels: Mapping[str, str]) -> list[str]:
    return [k for k in node_labels if k.startswith(labels.DEPLOY_PREFIX) and k != labels.DEPLOY_OPERANDS]


def _mig_capable(node_labels: Mapping[str, str]) -> bool:
    if node_labels.get(labels.MIG_CAPABLE) == "true":
        return True
    product = node_labels.get(_PRODUCT_LABEL, "").lower()
    return any(p in product for p in _MIG_PRODUCTS)


def workload_config(spec: ClusterPolicySpec, node_name: str, node_labels: Mapping[str, str]) -> tuple[
    WorkloadConfig, str | None
]:
    """The node's workload config and, when its label had to be overridden, a warning saying why."""
    sandbox = spec.sandbox_workloads
    default = WorkloadConfig(sandbox.default_workload) if sandbox.enabled else WorkloadConfig.CONTAINER
    raw = node_labels.get(labels.WORKLOAD_CONFIG)
    if raw is None:
        return default, None
    try:
        asked = labels.parse_workload_config(raw)
    except labels.LabelValueError as e:
        return default, f"node {node_name}: {e}; using {default.value} (gpu-operator#1871)"
    if not sandbox.enabled and asked is not WorkloadConfig.CONTAINER:
        return default, (
            f"node {node_name}: label {labels.WORKLOAD_CONFIG}={raw} needs sandboxWorkloads.enabled=true in the "
            f"ClusterPolicy; using {default.value}"
        )
    return asked, None


def plan_node(spec: ClusterPolicySpec | None, node_name: str, node_labels: Mapping[str, str]) -> NodePlan:
    """Label changes for one node. `spec` None means no ClusterPolicy: remove what the operator made."""
    changes: dict[str, str | None] = {}
    if spec is None:
        for key in _operand_deploy_keys(node_labels):
            changes[key] = None
        if labels.GPU_PRESENT in node_labels:
            changes[labels.GPU_PRESENT] = None
        return NodePlan(changes)

    if not has_gpu(node_labels):
        if node_labels.get(labels.GPU_PRESENT) == "true":
            changes[labels.GPU_PRESENT] = "false"
        for key in _operand_deploy_keys(node_labels):
            changes[key] = None
        return NodePlan(changes)

    if node_labels.get(labels.GPU_PRESENT) != "true":
        changes[labels.GPU_PRESENT] = "true"
    if node_labels.get(labels.DEPLOY_OPERANDS) == "false":
        for key in _operand_deploy_keys(node_labels):
            changes[key] = None
        return NodePlan(changes)

    config, warning = workload_config(spec, node_name, node_labels)
    wanted = {
        labels.deploy_label(op)
        for op in deploy_operands(config, spec.sandbox_workloads.mode, _mig_capable(node_labels))
    }
    for key in sorted(wanted):
        if not node_labels.get(key):
            changes[key] = "true"
    for key in _operand_deploy_keys(node_labels):
        if key not in wanted:
            changes[key] = None
    return NodePlan(changes, config, warning)

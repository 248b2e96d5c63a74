"""ClusterPolicy `.status` (pure): state, Ready/Error conditions with NVIDIA's reasons, operand and node counts.

Conditions keep their `lastTransitionTime` while their status is unchanged, so recomputing the status of a
converged cluster yields the identical object and the controller writes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ccgpu import labels
from ccgpu.operator.nodelabels import has_gpu, has_nfd_labels

READY = "Ready"
ERROR = "Error"
REASON_RECONCILED = "Reconciled"
REASON_OPERAND_NOT_READY = "OperandNotReady"
REASON_NO_GPU_NODES = "NoGPUNodes"
REASON_NFD_LABELS_MISSING = "NFDLabelsMissing"
REASON_RECONCILE_FAILED = "ReconcileFailed"
REASON_IGNORED = "Ignored"


def daemonset_ready(ds: Mapping[str, Any]) -> bool:
    """NVIDIA's isDaemonSetReady: nothing scheduled is ready; any unavailable pod, or an unfinished
    rolling update, is not. A DaemonSet the DaemonSet controller has not yet observed is not ready."""
    st = ds.get("status") or {}
    if st.get("observedGeneration", 0) < ds.get("metadata", {}).get("generation", 0):
        return False
    if "desiredNumberScheduled" not in st:
        return False
    desired = st.get("desiredNumberScheduled", 0)
    if desired == 0:
        return True
    if st.get("numberUnavailable", 0):
        return False
    if ds.get("spec", {}).get("updateStrategy", {}).get("type", "RollingUpdate") == "RollingUpdate":
        if st.get("updatedNumberScheduled", 0) < desired:
            return False
    return st.get("numberReady", 0) >= desired


@dataclass(frozen=True)
class NodeSummary:
    gpu_nodes: int
    nfd_nodes: int
    opted_out: int
    workload_configs: dict[str, int]
    cc_modes: dict[str, int]
    cc_mode_states: dict[str, int]
    cc_ready_states: dict[str, int]

    def as_status(self) -> dict[str, Any]:
        return {
            "gpuNodes": self.gpu_nodes,
            "optedOut": self.opted_out,
            "workloadConfigs": self.workload_configs,
            "ccModes": self.cc_modes,
            "ccModeStates": self.cc_mode_states,
            "ccReadyStates": self.cc_ready_states,
        }


def summarize_nodes(nodes: Iterable[Mapping[str, str]], workloads: Mapping[str, int]) -> NodeSummary:
    """Counts over nodes' labels; `workloads` is the effective workload config count the planner computed."""
    gpu = nfd = opted = 0
    modes: Counter[str] = Counter()
    states: Counter[str] = Counter()
    ready: Counter[str] = Counter()
    for lab in nodes:
        nfd += has_nfd_labels(lab)
        if not has_gpu(lab):
            continue
        gpu += 1
        opted += lab.get(labels.DEPLOY_OPERANDS) == "false"
        for counter, key in ((modes, labels.CC_MODE), (states, labels.CC_MODE_STATE), (ready, labels.CC_READY_STATE)):
            if key in lab:
                counter[lab[key]] += 1
    return NodeSummary(gpu, nfd, opted, dict(sorted(workloads.items())), dict(sorted(modes.items())),
                       dict(sorted(states.items())), dict(sorted(ready.items())))


def _condition(ctype: str, status: bool, reason: str, message: str, previous: Mapping[str, Mapping[str, Any]],
               now: str, generation: int) -> dict[str, Any]:
    value = "True" if status else "False"
    old = previous.get(ctype)
    since = old["lastTransitionTime"] if old and old.get("status") == value and "lastTransitionTime" in old else now
    return {"type": ctype, "status": value, "reason": reason, "message": message, "lastTransitionTime": since,
            "observedGeneration": generation}


def policy_status(
    *,
    namespace: str,
    generation: int,
    problems: list[str],
    summary: NodeSummary,
    operands: Mapping[str, Mapping[str, Any] | None],
    previous: Mapping[str, Any] | None,
    now: str,
) -> dict[str, Any]:
    """The status of the ClusterPolicy in effect. `operands` maps operand name → its DaemonSet (None if not yet
    created); `problems` are spec inconsistencies, which make the policy not applied at all."""
    prev_conditions = {c["type"]: c for c in (previous or {}).get("conditions", []) if "type" in c}
    counts: dict[str, dict[str, int]] = {}
    not_ready: list[str] = []
    for name, ds in sorted(operands.items()):
        st = (ds or {}).get("status") or {}
        counts[name] = {"desired": st.get("desiredNumberScheduled", 0), "ready": st.get("numberReady", 0)}
        if ds is None or not daemonset_ready(ds):
            not_ready.append(name)

    if problems:
        state, ready, reason, message = "notReady", False, REASON_RECONCILE_FAILED, "; ".join(problems)
    elif summary.nfd_nodes == 0:
        state, ready, reason = "notReady", False, REASON_NFD_LABELS_MISSING
        message = "no node carries Node Feature Discovery labels; install NFD (nfd.enabled) so GPU nodes are found"
    elif summary.gpu_nodes == 0:
        state, ready, reason, message = "ready", True, REASON_NO_GPU_NODES, "no node has an NVIDIA GPU"
    elif not_ready:
        state, ready, reason = "notReady", False, REASON_OPERAND_NOT_READY
        message = f"operands not ready: {', '.join(not_ready)}"
    else:
        state, ready, reason, message = "ready", True, REASON_RECONCILED, "all operands are ready"
    conditions = [
        _condition(READY, ready, reason, message, prev_conditions, now, generation),
        _condition(ERROR, not ready, reason, "" if ready else message, prev_conditions, now, generation),
    ]
    return {
        "state": state,
        "namespace": namespace,
        "observedGeneration": generation,
        "conditions": conditions,
        "operands": counts,
        "nodes": summary.as_status(),
    }


def ignored_status(winner: str, previous: Mapping[str, Any] | None, now: str, generation: int) -> dict[str, Any]:
    """Status of a ClusterPolicy that is not the singleton in effect."""
    prev_conditions = {c["type"]: c for c in (previous or {}).get("conditions", []) if "type" in c}
    message = f"ClusterPolicy {winner} is older and in effect; this one is ignored"
    return {
        "state": "ignored",
        "observedGeneration": generation,
        "conditions": [
            _condition(READY, False, REASON_IGNORED, message, prev_conditions, now, generation),
            _condition(ERROR, True, REASON_IGNORED, message, prev_conditions, now, generation),
        ],
    }

"""One reconcile, as a pure function: (cluster snapshot) → the writes that make it match the policy, and Events.

The controller keeps the snapshot in memory from watches and applies the writes; computing the whole desired
state every time and writing only differences is what makes a restart at any point converge, and a resync of
a converged cluster make zero writes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ccgpu.operator import nodelabels
from ccgpu.operator.desired import (
    MANAGED_BY,
    MANAGED_BY_KEY,
    SPEC_HASH,
    Images,
    ObjectKey,
    Owner,
    desired_objects,
)
from ccgpu.operator.operands import enabled_operands
from ccgpu.operator.policy import API_VERSION, KIND, SINGLETON_NAME, PolicyError, inconsistencies, parse_spec
from ccgpu.operator.status import ignored_status, policy_status, summarize_nodes

MAX_NODE_EVENTS = 20  # above this many relabelled nodes in one reconcile, one summary Event on the policy
Verb = Literal["create", "replace", "delete", "patch-node", "status"]


@dataclass(frozen=True)
class Write:
    """One API write. `body`: the object (create/replace), label changes (patch-node), `.status` (status)."""

    verb: Verb
    key: ObjectKey
    body: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event the controller should emit (it deduplicates repeats)."""

    kind: str  # Node or ClusterPolicy
    name: str
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Snapshot:
    """What the controller's index knows. Objects are plain dicts as the API returns them."""

    policies: list[Mapping[str, Any]] = field(default_factory=list)
    nodes: dict[str, Mapping[str, str]] = field(default_factory=dict)  # node name → labels
    owned: dict[ObjectKey, Mapping[str, Any]] = field(default_factory=dict)  # objects labelled managed-by us


@dataclass
class Plan:
    writes: list[Write] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    policy: str | None = None  # the policy in effect
    state: str | None = None


def node_key(name: str) -> ObjectKey:
    return ObjectKey("v1", "Node", "", name)


def policy_key(name: str) -> ObjectKey:
    return ObjectKey(API_VERSION, KIND, "", name)


def is_managed(obj: Mapping[str, Any]) -> bool:
    return (obj.get("metadata", {}).get("labels") or {}).get(MANAGED_BY_KEY) == MANAGED_BY


def in_effect(policies: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The singleton: the oldest ClusterPolicy, ignoring ones being deleted. Timestamps have one-second
    resolution, so on a tie `cluster-policy` wins, then the first name."""
    live = [p for p in policies if not p["metadata"].get("deletionTimestamp")]
    if not live:
        return None
    return min(live, key=lambda p: (p["metadata"].get("creationTimestamp", ""),
                                    p["metadata"]["name"] != SINGLETON_NAME, p["metadata"]["name"]))


def diff_objects(
    desired: Mapping[ObjectKey, Mapping[str, Any]], actual: Mapping[ObjectKey, Mapping[str, Any]]
) -> list[Write]:
    """Create what is missing, replace what renders differently (by spec hash), delete what is ours and unwanted."""
    writes: list[Write] = []
    for key, obj in desired.items():
        have = actual.get(key)
        if have is None:
            writes.append(Write("create", key, obj))
        elif (have["metadata"].get("annotations") or {}).get(SPEC_HASH) != obj["metadata"]["annotations"][SPEC_HASH]:
            writes.append(Write("replace", key, obj))
    for key, have in actual.items():
        if key not in desired and is_managed(have):
            writes.append(Write("delete", key))
    return writes


def _object_events(writes: list[Write], policy_name: str) -> list[Event]:
    verbs = {"create": "Created", "replace": "Updated", "delete": "Deleted"}
    return [
        Event(KIND, policy_name, "Normal", f"{w.key.kind}{verbs[w.verb]}",
              f"{w.key.kind} {w.key.name} {verbs[w.verb].lower()}")
        for w in writes
        if w.verb in verbs
    ]


def _label_message(node: str, changes: Mapping[str, str | None]) -> str:
    parts = [f"{k}={v}" if v is not None else f"-{k}" for k, v in sorted(changes.items())]
    return f"node {node} labels: {', '.join(parts)}"


def reconcile(snap: Snapshot, *, namespace: str, images: Images, now: str) -> Plan:
    """Compute every write that brings the cluster to what the ClusterPolicy in effect asks for."""
    plan = Plan()
    policy = in_effect(snap.policies)
    for other in snap.policies:
        if policy is not None and other is not policy and not other["metadata"].get("deletionTimestamp"):
            name = other["metadata"]["name"]
            status = ignored_status(policy["metadata"]["name"], other.get("status"), now,
                                    other["metadata"].get("generation", 0))
            if _status_differs(other.get("status"), status):
                plan.writes.append(Write("status", policy_key(name), status))
                plan.events.append(Event(KIND, name, "Warning", "Ignored", status["conditions"][0]["message"]))

    if policy is None:
        # No policy: take back everything the operator made (GC also does this for owned objects).
        for name, lab in sorted(snap.nodes.items()):
            changes = nodelabels.plan_node(None, name, lab).changes
            if changes:
                plan.writes.append(Write("patch-node", node_key(name), changes))
        plan.writes += [Write("delete", k) for k, o in snap.owned.items() if is_managed(o)]
        return plan

    meta = policy["metadata"]
    plan.policy = meta["name"]
    generation = meta.get("generation", 0)
    try:
        spec = parse_spec(policy.get("spec"))
        problems = inconsistencies(spec)
    except PolicyError as e:
        spec, problems = None, [str(e)]

    workloads: Counter[str] = Counter()
    labelled: list[Event] = []
    if spec is None or problems:
        # An inconsistent policy is applied not at all: only its status says why.
        summary = summarize_nodes(snap.nodes.values(), {})
        status = policy_status(namespace=namespace, generation=generation, problems=problems, summary=summary,
                               operands={}, previous=policy.get("status"), now=now)
    else:
        owner = Owner(meta["name"], meta.get("uid", ""))
        any_gpu = False
        for name, lab in sorted(snap.nodes.items()):
            node_plan = nodelabels.plan_node(spec, name, lab)
            if node_plan.workload is not None:
                workloads[node_plan.workload.value] += 1
            any_gpu = any_gpu or nodelabels.has_gpu(lab)
            if node_plan.changes:
                plan.writes.append(Write("patch-node", node_key(name), node_plan.changes))
                labelled.append(Event("Node", name, "Normal", "GPULabelsUpdated",
                                      _label_message(name, node_plan.changes)))
            if node_plan.warning:
                plan.events.append(Event("Node", name, "Warning", "InvalidWorkloadConfig", node_plan.warning))
        if len(labelled) <= MAX_NODE_EVENTS:
            plan.events += labelled
        else:  # a first install or a policy change relabels many nodes: one summary, not an Event storm
            plan.events.append(Event(KIND, meta["name"], "Normal", "GPULabelsUpdated",
                                     f"updated GPU operand labels on {len(labelled)} nodes"))
        desired = desired_objects(spec, owner, namespace, images, any_gpu)
        object_writes = diff_objects(desired, snap.owned)
        plan.writes += object_writes
        plan.events += _object_events(object_writes, meta["name"])
        operands = {}
        for d in enabled_operands(spec) if any_gpu else []:
            key = ObjectKey("apps/v1", "DaemonSet", namespace, d.daemonset)
            operands[d.operand.value] = snap.owned.get(key)
        summary = summarize_nodes(snap.nodes.values(), workloads)
        status = policy_status(namespace=namespace, generation=generation, problems=[], summary=summary,
                               operands=operands, previous=policy.get("status"), now=now)

    plan.state = status["state"]
    if _status_differs(policy.get("status"), status):
        plan.writes.append(Write("status", policy_key(meta["name"]), status))
        old = (policy.get("status") or {})
        if old.get("state") != status["state"] or _reason(old) != _reason(status):
            kind: Literal["Normal", "Warning"] = "Normal" if status["state"] == "ready" else "Warning"
            cond = status["conditions"][0]
            plan.events.append(Event(KIND, meta["name"], kind, cond["reason"], cond["message"]))
    return plan


def _reason(status: Mapping[str, Any]) -> str | None:
    for c in status.get("conditions", []):
        if c.get("type") == "Ready":
            return c.get("reason")
    return None


def _status_differs(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    if not old:
        return True
    return any(old.get(k) != v for k, v in new.items())

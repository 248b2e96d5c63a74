"""A scheduler for the simulated cluster: binds pending pods honouring resources, nodeSelector, the RuntimeClass's
`scheduling` (nodeSelector and tolerations) and taints, and says why a pod cannot be placed.

The decisions are pure (`place`); `Scheduler` lists, binds and reports. A pod that fits nowhere gets the
condition `PodScheduled=False, reason=Unschedulable` and a `FailedScheduling` Event whose message reads like
kube-scheduler's: `0/4 nodes are available: 3 Insufficient nvidia.com/pgpu, 1 node(s) didn't match Pod's node
affinity/selector.` Binding is a POST to `pods/<name>/binding`, as kube-scheduler does it.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

log = logging.getLogger(__name__)

_SUFFIX: dict[str, int | Decimal] = {
    "": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]{0,2})$")


class QuantityError(ValueError):
    pass


def parse_quantity(text: Any) -> Decimal:
    """A Kubernetes quantity (`2`, `500m`, `10240Mi`, `1.5Gi`) as a number."""
    m = _QUANTITY.match(str(text).strip())
    if not m or m.group(2) not in _SUFFIX:
        raise QuantityError(f"{text!r} is not a quantity; accepted: a number with an optional suffix "
                            f"({', '.join(s for s in _SUFFIX if s)})")
    try:
        return Decimal(m.group(1)) * Decimal(_SUFFIX[m.group(2)])
    except InvalidOperation:
        raise QuantityError(f"{text!r} is not a quantity") from None


def pod_requests(pod: Mapping[str, Any], runtime_class: Mapping[str, Any] | None) -> dict[str, Decimal]:
    """What a pod needs from a node: the sum of its containers' requests (limits stand in for missing requests,
    as the API server defaults them), plus the RuntimeClass's fixed overhead."""
    need: dict[str, Decimal] = {}
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        merged = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        for k, v in merged.items():
            need[k] = need.get(k, Decimal(0)) + parse_quantity(v)
    overhead = ((runtime_class or {}).get("overhead") or {}).get("podFixed") or {}
    for k, v in overhead.items():
        need[k] = need.get(k, Decimal(0)) + parse_quantity(v)
    return need


def tolerates(taint: Mapping[str, Any], tolerations: Iterable[Mapping[str, Any]]) -> bool:
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        op = t.get("operator") or "Equal"
        if not t.get("key") and op == "Exists":
            return True
        if t.get("key") != taint.get("key"):
            continue
        if op == "Exists" or t.get("value", "") == taint.get("value", ""):
            return True
    return False


def selector_matches(selector: Mapping[str, str], node_labels: Mapping[str, str]) -> bool:
    return all(node_labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True)
class Placement:
    node: str | None
    reasons: Counter  # reason → number of nodes rejected for it

    def message(self, total: int) -> str:
        parts = ", ".join(f"{n} {r}" for r, n in sorted(self.reasons.items()))
        return f"0/{total} nodes are available: {parts}." if parts else f"0/{total} nodes are available."


def why_not(pod: Mapping[str, Any], node: Mapping[str, Any], used: Mapping[str, Decimal],
            runtime_class: Mapping[str, Any] | None) -> str | None:
    """None if `pod` fits `node` (with `used` already requested there), else kube-scheduler's reason."""
    spec = pod.get("spec") or {}
    meta = node.get("metadata") or {}
    node_labels = meta.get("labels") or {}
    nspec = node.get("spec") or {}
    if nspec.get("unschedulable"):
        return "node(s) were unschedulable"
    selector = dict(spec.get("nodeSelector") or {})
    tolerations = list(spec.get("tolerations") or [])
    if runtime_class is not None:
        sched = runtime_class.get("scheduling") or {}
        selector.update(sched.get("nodeSelector") or {})
        tolerations += sched.get("tolerations") or []
    if not selector_matches(selector, node_labels):
        return "node(s) didn't match Pod's node affinity/selector"
    for taint in nspec.get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(taint, tolerations):
            return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    for res, amount in pod_requests(pod, runtime_class).items():
        have = parse_quantity(allocatable.get(res, "0"))
        if used.get(res, Decimal(0)) + amount > have:
            return f"Insufficient {res}"
    return None


def place(pod: Mapping[str, Any], nodes: list[Mapping[str, Any]], used: Mapping[str, Mapping[str, Decimal]],
          runtime_class: Mapping[str, Any] | None) -> Placement:
    """The first node (by name) the pod fits on, or every node's reason. Pure."""
    reasons: Counter = Counter()
    for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        name = node["metadata"]["name"]
        why = why_not(pod, node, used.get(name, {}), runtime_class)
        if why is None:
            return Placement(name, reasons)
        reasons[why] += 1
    return Placement(None, reasons)


def usage(pods: Iterable[Mapping[str, Any]], runtime_classes: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
    """node → resource → amount requested by the pods bound there that have not finished."""
    used: dict[str, dict[str, Decimal]] = {}
    for p in pods:
        node = (p.get("spec") or {}).get("nodeName")
        if not node or (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        rc = runtime_classes.get((p.get("spec") or {}).get("runtimeClassName") or "")
        acc = used.setdefault(node, {})
        for k, v in pod_requests(p, rc).items():
            acc[k] = acc.get(k, Decimal(0)) + v
    return used


class Scheduler:
    """Binds the cluster's pending pods (those with no nodeName and the default scheduler) every pass."""

    def __init__(self, client: Any, informers: Any, interval_s: float = 0.1) -> None:
        self.client = client
        self.informers = informers  # pods and nodes come from the cluster's shared informers
        self.interval_s = interval_s
        self._reported: dict[str, str] = {}  # pod uid → last unschedulable message (one Event per change)
        self._binding: dict[str, str] = {}  # uid → node: bound by us, maybe not yet bound in the pod informer
        self.bound = 0

    async def sync_once(self) -> None:
        from lightkube.resources.node_v1 import RuntimeClass

        pods = []
        unbound = set()
        for p in self.informers.pods.items():
            uid = (p.get("metadata") or {}).get("uid", "")
            if not (p.get("spec") or {}).get("nodeName"):
                unbound.add(uid)
                if uid in self._binding:  # count it where we bound it
                    p = {**p, "spec": {**p["spec"], "nodeName": self._binding[uid]}}
            pods.append(p)
        self._binding = {u: n for u, n in self._binding.items() if u in unbound}
        pending = [p for p in pods if not (p.get("spec") or {}).get("nodeName")
                   and (p.get("spec") or {}).get("schedulerName", "default-scheduler") == "default-scheduler"
                   and not (p.get("metadata") or {}).get("deletionTimestamp")]
        if not pending:
            return
        nodes = self.informers.nodes.items()
        rcs = {r.metadata.name: r.to_dict() async for r in self.client.list(RuntimeClass)}
        used = usage(pods, rcs)
        for pod in sorted(pending, key=lambda p: p["metadata"].get("creationTimestamp") or ""):
            rc_name = pod["spec"].get("runtimeClassName")
            rc = rcs.get(rc_name) if rc_name else None
            if rc_name and rc is None:
                await self._unschedulable(pod, f'RuntimeClass "{rc_name}" not found', len(nodes))
                continue
            try:
                placement = place(pod, nodes, used, rc)
            except QuantityError as e:
                await self._unschedulable(pod, f"bad resource quantity: {e}", len(nodes))
                continue
            if placement.node is None:
                await self._unschedulable(pod, placement.message(len(nodes)), len(nodes))
                continue
            await self._bind(pod, placement.node)
            acc = used.setdefault(placement.node, {})
            for k, v in pod_requests(pod, rc).items():
                acc[k] = acc.get(k, Decimal(0)) + v

    async def _bind(self, pod: dict[str, Any], node: str) -> None:
        import msgspec  # lightkube's decoder
        from lightkube.resources.core_v1 import Pod

        meta = pod["metadata"]
        binding = Pod.Binding.from_dict({"apiVersion": "v1", "kind": "Binding",
                                         "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                                         "target": {"apiVersion": "v1", "kind": "Node", "name": node}})
        try:
            await self.client.create(binding, meta["name"], namespace=meta["namespace"])
        except msgspec.ValidationError:
            pass  # bound: the server answers a binding with a Status, which lightkube cannot read as a Binding
        self._binding[meta.get("uid", "")] = node
        self.bound += 1
        self._reported.pop(meta.get("uid", ""), None)
        await post_event(self.client, pod, "Normal", "Scheduled",
                         f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}", "default-scheduler")

    async def _unschedulable(self, pod: dict[str, Any], message: str, total: int) -> None:
        from lightkube.resources.core_v1 import Pod
        from lightkube.types import PatchType

        meta = pod["metadata"]
        if self._reported.get(meta.get("uid", "")) == message:
            return
        self._reported[meta.get("uid", "")] = message
        log.info("pod %s/%s unschedulable: %s", meta["namespace"], meta["name"], message)
        status = {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]}
        await self.client.patch(Pod.Status, meta["name"], {"status": status}, namespace=meta["namespace"],
                                patch_type=PatchType.MERGE)
        await post_event(self.client, pod, "Warning", "FailedScheduling", message, "default-scheduler")

    async def run(self, stop: Any) -> None:
        from ccgpu.sim.loop import every

        await every(self.interval_s, stop, self.sync_once, "scheduler")


async def post_event(client: Any, pod: Mapping[str, Any], type_: str, reason: str, message: str,
                     component: str) -> None:
    """An Event about a pod (best effort, as every Kubernetes component treats Events)."""
    from datetime import UTC, datetime

    from lightkube.core.exceptions import ApiError
    from lightkube.resources.core_v1 import Event

    meta = pod["metadata"]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ev = Event.from_dict({
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"kind": "Pod", "name": meta["name"], "namespace": meta["namespace"],
                           "uid": meta.get("uid"), "apiVersion": "v1"},
        "reason": reason, "message": message, "type": type_, "source": {"component": component},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    })
    try:
        await client.create(ev, namespace=meta["namespace"])
    except (ApiError, OSError) as e:
        log.warning("could not record event %s on pod %s: %s", reason, meta["name"], e)

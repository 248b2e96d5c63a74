"""Scripted scenarios for the cluster-in-a-box (`ccgpu simulate --scenario FILE`): actions and expected outcomes.

A scenario is YAML, `steps:` a list of one-key mappings, run in order:

    steps:
      - label: {node: "#0", labels: {nvidia.com/cc.mode: "off"}}     # null deletes a label
      - expect: {node: "#0", labels: {nvidia.com/cc.mode.state: "off"}, timeout: 30}
      - pod: {name: p1, runtimeClass: kata-qemu-nvidia-gpu-snp, gpus: 1}
      - expect: {pod: p1, phase: Running, timeout: 20}
      - pod: {name: p2, runtimeClass: kata-qemu-nvidia-gpu-snp, guestFault: debug-policy}  # attestation refused
      - expect: {pod: p2, phase: Failed, message_contains: "attestation refused"}
      - kubelet_restart: "#0"
      - fall_off_bus: {node: "#0", gpu: 0}                            # GPU index on that node, by BDF order
      - expect: {node: "#0", allocatable: {nvidia.com/pgpu: "7"}}
      - restart_operator: {}
      - kill_agent: {node: "#0", daemonset: nvidia-cc-manager}
      - api_faults: {rate: 0.05}                                      # 0 turns injection off
      - delete_pod: p1

A node is named, or `#<index>` in the node list. `expect` waits (up to `timeout` seconds, default 30) until the
condition holds and fails the step with what it saw otherwise: node `labels`/`allocatable`, pod `phase`,
`node`/`node_not`, `waiting_reason`, `message_contains`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

ACTIONS = ("label", "pod", "delete_pod", "kubelet_restart", "fall_off_bus", "restart_operator", "kill_agent",
           "api_faults", "expect")


class ScenarioError(ValueError):
    pass


def load(path: Path) -> list[dict[str, Any]]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ScenarioError(f"cannot read scenario {path}: {e}") from None
    return validate(doc, str(path))


def validate(doc: Any, where: str = "scenario") -> list[dict[str, Any]]:
    steps = (doc or {}).get("steps") if isinstance(doc, dict) else None
    if not isinstance(steps, list) or not steps:
        raise ScenarioError(f"{where}: needs `steps:`, a non-empty list")
    for i, step in enumerate(steps):
        if not (isinstance(step, dict) and len(step) == 1 and next(iter(step)) in ACTIONS):
            raise ScenarioError(f"{where}: step {i} is {step!r}; each step is one of: {', '.join(ACTIONS)}")
    return steps


def _node(cluster: Any, ref: Any) -> str:
    names = [s.name for s in cluster.specs]
    if isinstance(ref, str) and ref.startswith("#") and ref[1:].isdigit() and int(ref[1:]) < len(names):
        return names[int(ref[1:])]
    if ref in names:
        return str(ref)
    raise ScenarioError(f"node {ref!r} is not in this cluster; nodes: {', '.join(names)} (or #0..#{len(names) - 1})")


async def _check(cluster: Any, want: dict[str, Any]) -> tuple[bool, str]:
    from lightkube.core.exceptions import ApiError

    if "node" in want and "pod" not in want:
        node = (await cluster.nodes()).get(_node(cluster, want["node"])) or {}
        lab = (node.get("metadata") or {}).get("labels") or {}
        alloc = (node.get("status") or {}).get("allocatable") or {}
        bad = {k: lab.get(k) for k, v in (want.get("labels") or {}).items() if lab.get(k) != v}
        bad.update({k: alloc.get(k) for k, v in (want.get("allocatable") or {}).items() if alloc.get(k) != str(v)})
        return not bad, f"saw {bad}" if bad else "as expected"
    try:
        pod = await cluster.pod(want["pod"])
    except ApiError as e:
        return False, f"pod {want['pod']}: {e.status.message}"
    status = pod.get("status") or {}
    node = (pod.get("spec") or {}).get("nodeName")
    waiting = [((c.get("state") or {}).get("waiting") or {}) for c in status.get("containerStatuses") or []]
    reasons = {w.get("reason") for w in waiting if w}
    messages = " ".join([status.get("message") or ""] + [w.get("message") or "" for w in waiting] +
                        [c.get("message") or "" for c in status.get("conditions") or []])
    checks = [
        ("phase" not in want or status.get("phase") == want["phase"]),
        ("node" not in want or node == _node(cluster, want["node"])),
        ("node_not" not in want or (node is not None and node != _node(cluster, want["node_not"]))),
        ("waiting_reason" not in want or want["waiting_reason"] in reasons),
        ("message_contains" not in want or want["message_contains"] in messages),
    ]
    return all(checks), f"phase {status.get('phase')!r} on {node!r}; {messages.strip()[:300]}"


async def expect(cluster: Any, want: dict[str, Any]) -> tuple[bool, str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + float(want.get("timeout", 30))
    while True:
        ok, detail = await _check(cluster, want)
        if ok or loop.time() > deadline:
            return ok, detail
        await asyncio.sleep(0.1)


async def run_step(cluster: Any, step: dict[str, Any]) -> tuple[bool, str]:
    from ccgpu.sim.host import SimulatedHost

    (action, arg), = step.items()
    if action == "label":
        await cluster.label_node(_node(cluster, arg["node"]), arg.get("labels") or {})
        return True, f"labelled {arg['node']}"
    if action == "pod":
        from ccgpu.sim.vm_attestation import FAULT_ANNOTATION

        fault = arg.get("guestFault")
        await cluster.create_pod(arg["name"], arg.get("runtimeClass"), int(arg.get("gpus", 1)),
                                 annotations={FAULT_ANNOTATION: str(fault)} if fault else None)
        return True, f"created pod {arg['name']}"
    if action == "delete_pod":
        await cluster.delete_pod(str(arg))
        return True, f"deleted pod {arg}"
    if action == "kubelet_restart":
        await cluster.kubelets[_node(cluster, arg)].restart()
        return True, f"restarted the kubelet of {arg}"
    if action == "fall_off_bus":
        node = _node(cluster, arg["node"])
        host = SimulatedHost.open(cluster.hosts[node])
        bdf = host.gpus()[int(arg.get("gpu", 0))]
        host.gpu(bdf).fall_off_bus()
        return True, f"{bdf} on {node} fell off the bus"
    if action == "restart_operator":
        await cluster.stop_operator()
        cluster.start_operator()
        return True, "restarted the operator"
    if action == "kill_agent":
        killed = await cluster.daemonsets.kill_agent(arg["daemonset"], _node(cluster, arg["node"]))
        return killed, f"killed {arg['daemonset']} on {arg['node']}" if killed else "no such agent running"
    if action == "api_faults":
        rate = float(arg.get("rate", 0))
        cluster.api.faults.reset()
        if rate:
            cluster.api.faults.fail(rate=rate, code=int(arg.get("code", 500)))
        return True, f"API faults at {rate:.0%}"
    return await expect(cluster, arg)


async def run_scenario(cluster: Any, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run every step; stop at the first failed one. Returns one result per step run."""
    results = []
    for i, step in enumerate(steps):
        try:
            ok, detail = await run_step(cluster, step)
        except (ScenarioError, KeyError, ValueError, TypeError) as e:
            ok, detail = False, f"bad step {step!r}: {e}"
        results.append({"step": i, "action": next(iter(step)), "ok": ok, "detail": detail})
        if not ok:
            break
    return results

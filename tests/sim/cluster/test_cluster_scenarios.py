"""The cluster-in-a-box end to end: the real operator and agents on simulated nodes, scripted scenarios.

Each test builds a small cluster (1-GPU H200 SNP nodes converge fastest) and waits on conditions with deadlines.
"""

from __future__ import annotations

import asyncio

import pytest

from ccgpu.sim.cluster import Cluster, parse_nodes
from ccgpu.sim.host import SimulatedHost
from ccgpu.sim.scenario import run_scenario, validate

pytestmark = pytest.mark.timeout(90)



async def converged(spec, workdir) -> Cluster:
    c = Cluster(parse_nodes(spec), workdir)
    await c.start()
    await c.apply_policy()
    report = await c.wait_converged(60)
    assert report.ok, report.failed()
    return c


async def run(c, steps):
    results = await run_scenario(c, validate({"steps": steps}))
    assert all(r["ok"] for r in results), results
    return results


async def test_gpu_falling_off_the_bus_drops_allocatable_and_pods_go_elsewhere(workdir):
    c = await converged("2x1xh200-snp", workdir)
    try:
        await run(c, [
            {"fall_off_bus": {"node": "#0", "gpu": 0}},
            {"expect": {"node": "#0", "allocatable": {"nvidia.com/pgpu": "0"}, "timeout": 20}},
            {"pod": {"name": "p1", "runtimeClass": "kata-qemu-nvidia-gpu-snp", "gpus": 1}},
            {"expect": {"pod": "p1", "phase": "Running", "node": "#1", "timeout": 20}},
            {"pod": {"name": "p2", "runtimeClass": "kata-qemu-nvidia-gpu-snp", "gpus": 1}},
            {"expect": {"pod": "p2", "message_contains": "Insufficient nvidia.com/pgpu", "timeout": 20}},
        ])
    finally:
        await c.stop()


async def test_cc_switch_while_a_pod_holds_the_gpu_never_yanks_it(workdir):
    """operands.md §8: NVIDIA's stack resets/unbinds GPUs under a running VM; here the VM must keep its GPU."""
    c = await converged("1x1xh200-snp", workdir)
    try:
        await run(c, [
            {"pod": {"name": "vm", "runtimeClass": "kata-qemu-nvidia-gpu-snp", "gpus": 1}},
            {"expect": {"pod": "vm", "phase": "Running", "timeout": 20}},
            {"label": {"node": "#0", "labels": {"nvidia.com/cc.mode": "off"}}},
        ])
        host = SimulatedHost.open(c.hosts[c.specs[0].name])
        gpu = host.gpu(host.gpus()[0])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 6  # the cc-manager has seen the label by then (it switches in about a second)
        while loop.time() < deadline and gpu.query_cc().current == "on":
            await asyncio.sleep(0.1)
        assert gpu.driver == "vfio-pci" and gpu.query_cc().current == "on", "the running VM's GPU was not touched"
        assert (await c.pod("vm"))["status"]["phase"] == "Running"
    finally:
        await c.stop()


async def test_kubelet_restart_operator_restart_and_agent_crash_converge_again(workdir):
    c = await converged("1x1xh200-snp", workdir)
    try:
        await run(c, [
            {"kubelet_restart": "#0"},
            {"restart_operator": {}},
            {"kill_agent": {"node": "#0", "daemonset": "nvidia-cc-manager"}},
            {"label": {"node": "#0", "labels": {"nvidia.com/cc.mode": "off"}}},
            {"kill_agent": {"node": "#0", "daemonset": "nvidia-cc-manager"}},
            {"expect": {"node": "#0", "labels": {"nvidia.com/cc.mode.state": "off", "nvidia.com/cc.ready.state": "false"},
                        "allocatable": {"nvidia.com/pgpu": "1"}, "timeout": 40}},
            {"pod": {"name": "plain", "runtimeClass": "kata-qemu-nvidia-gpu", "gpus": 1}},
            {"expect": {"pod": "plain", "phase": "Running", "timeout": 20}},
        ])
        node = (await c.nodes())[c.specs[0].name]
        assert "ccgpu.dev/cc-mode-switch" not in (node["metadata"].get("annotations") or {}), "intent cleared"
    finally:
        await c.stop()


FAULTY = ("nodes", "nodes/status", "pods", "pods/status", "daemonsets", "daemonsets/status", "events",
          "clusterpolicies", "clusterpolicies/status", "nodefeaturerules", "runtimeclasses", "leases", "namespaces")


@pytest.mark.parametrize("seed", [7, 11])
async def test_converges_with_5_percent_of_all_api_requests_failing(workdir, seed):
    """5% of requests to every resource, with every verb, answer 500 (the cc-manager's `patch nodes` and
    `list pods` included): a CC switch that fails on one is retried a second later, so the nodes converge."""
    c = Cluster(parse_nodes("2x1xh200-snp"), workdir, seed=seed)
    await c.start()
    try:
        for resource in FAULTY:
            c.api.faults.fail("*", resource, rate=0.05, code=500)
        await c.apply_policy()
        report = await c.wait_converged(60)
        assert report.ok, report.failed()
        assert c.api.faults.injected > 0, "faults were really injected"
    finally:
        await c.stop()


async def test_operator_restart_mid_convergence_still_converges(workdir):
    c = Cluster(parse_nodes("1x1xh200-snp,1x4xh100-notee:container"), workdir)
    await c.start()
    try:
        await c.apply_policy()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not c.informers.daemonsets.items() and loop.time() < deadline:  # the operator is at work
            await asyncio.sleep(0.005)
        assert c.informers.daemonsets.items(), "the operator created no DaemonSet"
        first = await c.outcomes()
        assert not first.ok, "restart must land before convergence to test anything"
        await c.stop_operator()
        c.start_operator()
        report = await c.wait_converged(60)
        assert report.ok, report.failed()
    finally:
        await c.stop()

"""The reconcile loop over an in-memory cluster: convergence, zero writes on resync, restarts, lagging watches."""

from __future__ import annotations

import asyncio
import copy

import pytest
from operator_fake_cluster import FakeCluster, Sources

from ccgpu import labels as L
from ccgpu.operator.controller import Controller, OperatorConfig
from ccgpu.operator.policy import default_policy

GPU = {"feature.node.kubernetes.io/pci-10de.present": "true"}


def _policy(spec=None):
    p = copy.deepcopy(default_policy())
    p["metadata"].update(uid="uid-1", creationTimestamp="2026-11-01T00:00:00Z", generation=1)
    if spec is not None:
        p["spec"] = spec
    return p


def _nodes(n=6):
    out = {}
    for i in range(n):
        lab = dict(GPU) if i % 3 else {"feature.node.kubernetes.io/cpu": "x"}
        if i % 2:
            lab[L.WORKLOAD_CONFIG] = "vm-passthrough"
        out[f"node-{i}"] = lab
    return out


def _controller(cluster, **cfg):
    return Controller(OperatorConfig(debounce_s=0, **cfg), Sources(cluster), cluster, now=lambda: "2026-11-26T15:00:00Z")


async def test_converges_from_empty_and_a_resync_makes_zero_writes():
    cluster = FakeCluster(_nodes(), [_policy()])
    ctl = _controller(cluster)
    await ctl.reconcile_once()
    first = sum(cluster.writes.values())
    assert first > 0
    plan = await ctl.reconcile_once()
    assert plan.writes == []
    assert sum(cluster.writes.values()) == first


async def test_lagging_watch_does_not_cause_duplicate_writes():
    """The overlay holds our writes until the watch shows them, so a second reconcile repeats nothing."""
    cluster = FakeCluster(_nodes(), [_policy()], lagging=True)
    ctl = _controller(cluster)
    await ctl.reconcile_once()
    first = dict(cluster.writes)
    again = await ctl.reconcile_once()  # the watch has delivered nothing yet
    assert again.writes == [] and dict(cluster.writes) == first
    cluster.deliver()
    assert (await ctl.reconcile_once()).writes == []


@pytest.mark.parametrize("crash_after", [0, 1, 3, 7, 12])
async def test_restart_after_a_crash_at_any_write_converges_without_duplicates(crash_after):
    cluster = FakeCluster(_nodes(), [_policy()], fail_after=crash_after)
    with pytest.raises(ConnectionError):
        await _controller(cluster).reconcile_once()
    cluster.fail_after = None
    restarted = _controller(cluster)  # a fresh process: empty overlay, full list from the watch
    await restarted.reconcile_once()  # FakeCluster raises on any duplicate create
    assert (await restarted.reconcile_once()).writes == []
    reference = FakeCluster(_nodes(), [_policy()])
    await _controller(reference).reconcile_once()
    assert {k: v[1] for k, v in cluster.nodes.items()} == {k: v[1] for k, v in reference.nodes.items()}
    assert set(cluster.objects) == set(reference.objects)


async def test_a_restarted_operator_on_a_converged_cluster_makes_zero_writes():
    cluster = FakeCluster(_nodes(), [_policy()])
    await _controller(cluster).reconcile_once()
    before = sum(cluster.writes.values())
    assert (await _controller(cluster).reconcile_once()).writes == []
    assert sum(cluster.writes.values()) == before


async def test_one_node_label_change_costs_one_node_write_and_one_status_write_at_most():
    cluster = FakeCluster(_nodes(), [_policy()])
    ctl = _controller(cluster)
    await ctl.reconcile_once()
    before = sum(cluster.writes.values())
    rv, lab = cluster.nodes["node-2"]
    cluster.set_node_labels("node-2", {**lab, L.WORKLOAD_CONFIG: "vm-passthrough"})
    await ctl.reconcile_once()
    assert sum(cluster.writes.values()) - before <= 2
    assert cluster.nodes["node-2"][1][L.deploy_label("vfio-manager")] == "true"


async def test_events_are_posted_once_per_distinct_change():
    nodes = {"n1": {**GPU, L.WORKLOAD_CONFIG: "kata"}}
    cluster = FakeCluster(nodes, [_policy()])
    ctl = _controller(cluster)
    await ctl.reconcile_once()
    await ctl.reconcile_once()
    warnings = [e for e in cluster.events if e.reason == "InvalidWorkloadConfig"]
    assert len(warnings) == 1 and warnings[0].name == "n1" and warnings[0].type == "Warning"
    assert any(e.reason == "DaemonSetCreated" for e in cluster.events)


async def test_metrics_count_writes_and_nodes_by_state():
    cluster = FakeCluster(_nodes(), [_policy()])
    ctl = _controller(cluster)
    await ctl.reconcile_once()
    text = ctl.metrics.render().decode()
    assert 'ccgpu_operator_writes_total{kind="Node",verb="patch-node"} 4.0' in text
    assert 'ccgpu_operator_nodes{dimension="workloadConfigs",value="vm-passthrough"} 2.0' in text
    assert "ccgpu_operator_reconcile_duration_seconds_count 1.0" in text


async def test_loop_waits_for_sync_and_writes_only_while_leading():
    cluster = FakeCluster(_nodes(), [_policy()])
    ctl = _controller(cluster)
    stop = asyncio.Event()
    leading = {"now": False}
    task = asyncio.create_task(ctl.run(stop, lambda: leading["now"]))
    ctl.trigger()
    await asyncio.sleep(0)
    assert ctl.reconciles == 0  # not synced yet
    ctl.synced.set()
    ctl.trigger()
    await _until(lambda: not ctl.wake.is_set())
    assert sum(cluster.writes.values()) == 0  # synced, but not the leader
    leading["now"] = True
    ctl.trigger()
    await _until(lambda: ctl.reconciles == 1)
    assert sum(cluster.writes.values()) > 0
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_loop_retries_after_a_failed_reconcile():
    cluster = FakeCluster(_nodes(), [_policy()], fail_after=0)
    ctl = _controller(cluster)
    stop = asyncio.Event()
    ctl.synced.set()
    task = asyncio.create_task(ctl.run(stop))
    ctl.trigger()
    await _until(lambda: ctl.metrics.errors._value.get() >= 1)
    cluster.fail_after = None
    await _until(lambda: ctl.reconciles >= 1 and ctl.last_plan is not None and not ctl.wake.is_set())
    assert cluster.writes["create"] > 0
    stop.set()
    await asyncio.wait_for(task, 5)


async def _until(cond, timeout=5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.01)

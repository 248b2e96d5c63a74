"""Fault injection (seeded, deterministic) and request metering."""

from __future__ import annotations

import asyncio

import aiohttp
from apiserver_helpers import node, watch_events

from ccgpu.sim.apiserver import ApiServer

NODES = "/api/v1/nodes"


async def test_metrics_count_requests_per_verb_and_resource(http, api):
    api.metrics.reset()
    await http.post(NODES, node("n"))
    await http.patch(NODES + "/n", {"metadata": {"labels": {"a": "b"}}})
    await http.patch(NODES + "/n/status", {"status": {"phase": "x"}})
    await http.get(NODES + "/n")
    await http.get(NODES)
    await http.get(NODES + "/missing")
    assert api.metrics.count("create", "nodes") == 1
    assert api.metrics.count("patch", "nodes") == 1 and api.metrics.count("patch", "nodes/status") == 1
    assert api.metrics.count("get", "nodes") == 2 and api.metrics.count("get", "nodes", code=404) == 1
    assert api.metrics.count("list", "nodes") == 1
    assert api.metrics.writes("nodes") == 2
    async for _ in watch_events(http.session, api.url + NODES, timeoutSeconds=1):
        break
    assert api.metrics.count("watch", "nodes") == 1
    status, text = await http.get("/metrics")
    assert status == 200
    assert 'apiserver_request_total{verb="patch",resource="nodes",code="200"} 1' in text


async def _fault_pattern(seed: int) -> list[int]:
    async with ApiServer(seed=seed) as api, aiohttp.ClientSession() as s:
        api.faults.fail("get", "nodes", rate=0.5, code=503)
        codes = []
        for _ in range(20):
            async with s.get(api.url + NODES + "/none") as r:
                codes.append(r.status)
        return codes


async def test_error_rate_is_seeded_and_deterministic():
    a, b, c = await asyncio.gather(_fault_pattern(1), _fault_pattern(1), _fault_pattern(2))
    assert a == b and a != c
    assert set(a) == {503, 404}


async def test_injected_error_is_a_status_with_the_code_and_changes_nothing(http, api):
    api.faults.fail("create", "nodes", code=500, count=1)
    status, body = await http.post(NODES, node("n"))
    assert status == 500 and body["kind"] == "Status" and body["reason"] == "InternalError"
    assert (await http.get(NODES + "/n"))[0] == 404
    assert (await http.post(NODES, node("n")))[0] == 201  # count=1: only the first one failed


async def test_added_latency_delays_matching_requests(http, api):
    api.faults.delay(0.3, "list", "nodes")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await http.get(NODES)
    assert loop.time() - t0 >= 0.3
    # which requests a rule delays is a decision, checked as one (not by how fast the others were)
    assert api.faults.latency_for("list", "nodes") == 0.3
    assert api.faults.latency_for("list", "namespaces") == 0
    assert api.faults.latency_for("get", "nodes") == 0
    assert (await http.get("/api/v1/namespaces"))[0] == 200


async def test_dropped_watch_stream_ends_abruptly_after_n_events(http, api):
    for i in range(3):
        await http.post(NODES, node(f"n{i}"))
    api.faults.drop_watches("nodes", after_events=2)
    seen = []
    try:
        async for ev in watch_events(http.session, api.url + NODES):
            seen.append(ev)
    except aiohttp.ClientPayloadError:
        pass
    assert len(seen) == 2


async def test_forced_gone_answers_the_next_resumed_watch_with_410(http, api):
    _, n = await http.post(NODES, node("n"))
    api.faults.force_gone("nodes", count=1)
    first = [ev async for ev in watch_events(http.session, api.url + NODES,
                                             resourceVersion=n["metadata"]["resourceVersion"])]
    assert first[0]["type"] == "ERROR" and first[0]["object"]["code"] == 410
    async for ev in watch_events(http.session, api.url + NODES, resourceVersion=n["metadata"]["resourceVersion"],
                                 timeoutSeconds=1):
        raise AssertionError(f"no event expected, got {ev}")

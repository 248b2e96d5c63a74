"""A watcher leaving is normal: the simulator ends its stream quietly (no traceback, no error log), forgets the
watcher and keeps serving everyone else."""

from __future__ import annotations

import asyncio
import logging

import pytest
from apiserver_helpers import node, watch_events

from ccgpu.sim.apiserver import ApiServer
from ccgpu.sim.apiserver.server import CLIENT_CLOSED_REQUEST

NODES = "/api/v1/nodes"


async def _wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def _watch_then_leave(api: ApiServer, query: str, how: str) -> None:
    """Open a raw watch, read its first bytes, then leave: `close` (FIN) or `abort` (RST)."""
    reader, writer = await asyncio.open_connection(api.host, api.port)
    writer.write(f"GET {NODES}?{query} HTTP/1.1\r\nHost: sim\r\n\r\n".encode())
    await writer.drain()
    assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
    if how == "abort":
        writer.transport.abort()
    else:
        writer.close()


@pytest.mark.parametrize("how", ["close", "abort"])
@pytest.mark.parametrize(
    "query", ["watch=1", "watch=1&allowWatchBookmarks=true&timeoutSeconds=30", "watch=1&resourceVersion=1"]
)
async def test_a_watcher_leaving_mid_stream_is_quiet_forgotten_and_others_keep_watching(
    http, api, caplog, how, query
):
    caplog.set_level(logging.DEBUG)
    for i in range(300):  # a backlog, so the server is still writing when the client goes
        api.create(node(f"n{i}"))
    staying = asyncio.ensure_future(
        _first_event_named(http.session, api.url + NODES, "after", resourceVersion=str(api.store.rv))
    )
    await _wait_for(lambda: api.store.watcher_count() == 1)
    await _watch_then_leave(api, query, how)
    for i in range(20):  # events for the departed watcher's stream
        await http.post(NODES, node(f"m{i}"))
    await _wait_for(lambda: api.store.watcher_count() == 1)  # only the staying watcher is left
    await http.post(NODES, node("after"))
    assert await asyncio.wait_for(staying, 5) == "after"
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud]


async def _first_event_named(session, url: str, name: str, **params) -> str:
    async for ev in watch_events(session, url, **params):
        if ev["object"]["metadata"]["name"] == name:
            return name
    raise AssertionError("watch ended early")


async def test_a_connection_error_inside_a_handler_is_a_client_leaving_not_an_internal_error(
    http, api, caplog, monkeypatch
):
    """Writing to a client that left raises ConnectionResetError("Cannot write to closing transport") from
    aiohttp; it must not surface as a 500 "internal error" with a traceback in the log."""

    async def departed(*args, **kwargs):
        raise ConnectionResetError("Cannot write to closing transport")

    monkeypatch.setattr(api.app_state, "_dispatch", departed)
    caplog.set_level(logging.DEBUG)
    status, _ = await http.get(NODES)
    assert status == CLIENT_CLOSED_REQUEST
    assert api.metrics.count("list", "nodes", CLIENT_CLOSED_REQUEST) == 1
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud]

"""The cluster-in-a-box's shared informers and change signals, against the real API simulator over HTTP."""

from __future__ import annotations

import asyncio
import threading

import httpx2
import pytest

from ccgpu.sim.agents import SharedNodeHandle
from ccgpu.sim.apiserver import ApiServer
from ccgpu.sim.informer import Informer, Informers
from ccgpu.sim.signals import Signals, host_changed, unwatch_host, watch_host

pytestmark = pytest.mark.timeout(30)

NODES = "/api/v1/nodes"


def node(name: str, **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


async def until(cond, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.01)


@pytest.fixture
async def api():
    async with ApiServer(bookmark_interval=0.2) as server:
        yield server


@pytest.fixture
async def http(api):
    async with httpx2.AsyncClient(base_url=api.url) as client:
        yield client


@pytest.fixture
async def running(http):
    """Start informers over `http`; stop them at the end."""
    stop = asyncio.Event()
    tasks = []

    async def start(informer: Informer) -> Informer:
        tasks.append(asyncio.create_task(informer.run(stop)))
        await asyncio.wait_for(informer.synced.wait(), 5)
        return informer

    yield start
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_informer_lists_then_follows_adds_changes_and_deletes(api, http, running):
    await http.post(NODES, json=node("a"))
    changes = []
    inf = Informer(http, NODES)
    inf.on_change(lambda old, new: changes.append((old and old["metadata"]["name"], new and new["metadata"]["name"])))
    await running(inf)
    assert [o["metadata"]["name"] for o in inf.items()] == ["a"]
    await http.post(NODES, json=node("b"))
    await http.patch(NODES + "/a", json={"metadata": {"labels": {"x": "1"}}},
                     headers={"Content-Type": "application/merge-patch+json"})
    await http.delete(NODES + "/b")
    await until(lambda: inf.get("b") is None and (inf.get("a") or {}).get("metadata", {}).get("labels") == {"x": "1"}
                and ("b", None) in changes)
    assert changes[0] == (None, "a") and (None, "b") in changes and ("a", "a") in changes


async def test_informer_relists_after_410_and_after_a_dropped_stream(api, http, running):
    inf = await running(Informer(http, NODES, retry_s=0.01))
    await http.post(NODES, json=node("a"))
    await until(lambda: inf.get("a") is not None)
    api.faults.force_gone("nodes")
    api.drop_watches()  # the re-watch names a resourceVersion: 410, so a fresh list
    await http.post(NODES, json=node("b"))
    await http.delete(NODES + "/a")
    await until(lambda: inf.get("b") is not None and inf.get("a") is None)
    assert api.metrics.count("list", "nodes") >= 2, "a 410 made the informer list again"


async def test_apply_of_our_own_write_is_seen_at_once_and_an_older_event_changes_nothing(http, running):
    inf = await running(Informer(http, NODES))
    created = (await http.post(NODES, json=node("a"))).json()
    patched = (await http.patch(NODES + "/a", json={"metadata": {"labels": {"v": "2"}}},
                                headers={"Content-Type": "application/merge-patch+json"})).json()
    inf.apply(patched)
    assert inf.get("a")["metadata"]["labels"] == {"v": "2"}
    inf.apply(created)  # the watch delivering the older version afterwards
    assert inf.get("a")["metadata"]["labels"] == {"v": "2"}


async def test_pods_are_indexed_by_node(api, http, running):
    inf = Informers(http)
    await running(inf.pods)
    await http.post("/api/v1/namespaces", json={"metadata": {"name": "ns"}})
    for name, where in (("p1", "n1"), ("p2", "n2"), ("p3", "n1")):
        await http.post("/api/v1/namespaces/ns/pods", json={
            "metadata": {"name": name}, "spec": {"nodeName": where, "containers": [{"name": "c", "image": "i"}]}})
    await until(lambda: len(inf.pods.indexed("n1")) == 2)
    assert sorted(p["metadata"]["name"] for p in inf.pods.indexed("n1")) == ["p1", "p3"]
    await http.delete("/api/v1/namespaces/ns/pods/p1")
    await until(lambda: [p["metadata"]["name"] for p in inf.pods.indexed("n1")] == ["p3"])


async def test_shared_node_handle_watches_its_node_through_the_informer_without_a_watch_of_its_own(api, http,
                                                                                                     running):
    inf = await running(Informer(http, NODES))
    await http.post(NODES, json=node("mine"))
    await http.post(NODES, json=node("other"))
    await until(lambda: inf.get("mine") is not None)
    rv = inf.get("mine")["metadata"]["resourceVersion"]
    handle = SharedNodeHandle(None, "mine", component="test", informer=inf, cached_get=True)
    watchers_before = api.store.watcher_count()
    seen = []

    async def follow() -> None:
        async for _kind, view in handle.watch(rv):
            seen.append(view.labels)
            if view.labels.get("cc") == "on":
                return

    task = asyncio.create_task(follow())
    for value in ("a", "b"):
        await http.patch(NODES + "/other", json={"metadata": {"labels": {"x": value}}},
                         headers={"Content-Type": "application/merge-patch+json"})
    await http.patch(NODES + "/mine", json={"metadata": {"labels": {"cc": "on"}}},
                     headers={"Content-Type": "application/merge-patch+json"})
    await asyncio.wait_for(task, 5)
    assert seen == [{"cc": "on"}], "only its own node's change, once"
    assert api.store.watcher_count() == watchers_before, "no watch connection of its own"
    assert (await handle.get()).labels == {"cc": "on"}


async def test_pacer_returns_on_a_bump_from_another_thread_on_stop_and_after_the_interval():
    signals = Signals()
    signals.bind()
    pace = signals.pacer("node:a", "host:a", settle_s=0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    t0 = loop.time()
    await pace(stop, 0.05)
    assert loop.time() - t0 >= 0.04, "nothing changed: it waited the interval"

    threading.Timer(0.05, signals.bump, args=("host:a",)).start()
    t0 = loop.time()
    await pace(stop, 10)
    assert loop.time() - t0 < 5, "a bump from a worker thread woke it"

    waiter = asyncio.create_task(pace(stop, 10))
    while not signals._waiters.get("node:a"):  # parked on node:a's future
        await asyncio.sleep(0)
    signals.bump("node:b")  # another node's change, fired at once on this loop
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiter.done(), "another node's change does not wake it"
    stop.set()
    await asyncio.wait_for(waiter, 5)


async def test_host_change_reaches_the_listener_of_that_root_only(tmp_path):
    seen = []
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    watch_host(tmp_path / "a", seen.append)
    try:
        host_changed(tmp_path / "b", "state")
        host_changed(str(tmp_path / "a") + "/", "file")
        assert seen == ["file"]
    finally:
        unwatch_host(tmp_path / "a")
    host_changed(tmp_path / "a", "state")
    assert seen == ["file"]

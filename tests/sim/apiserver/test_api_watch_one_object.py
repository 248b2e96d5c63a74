"""A watch of one object (fieldSelector metadata.name=X) is offered only that object's events by the store, so
hundreds of per-node watches cost nothing per event of another node; what it streams is unchanged."""

from __future__ import annotations

import asyncio

from apiserver_helpers import node, watch_events

from ccgpu.sim.apiserver.server import _watched_name

NODES = "/api/v1/nodes"


def test_only_an_equality_on_metadata_name_names_the_watched_object():
    assert _watched_name("metadata.name=n1") == "n1"
    assert _watched_name("metadata.name==n1,spec.unschedulable=false") == "n1"
    assert _watched_name("spec.unschedulable=false, metadata.name = n1") == "n1"
    assert _watched_name("metadata.name!=n1") is None
    assert _watched_name("metadata.namespace=x") is None
    assert _watched_name("") is None and _watched_name(None) is None


async def test_a_one_node_watch_streams_its_node_only_and_is_never_offered_the_others(http, api):
    await http.post(NODES, node("mine"))
    await http.post(NODES, node("other"))
    seen = []

    async def follow() -> None:
        async for ev in watch_events(http.session, api.url + NODES, fieldSelector="metadata.name=mine",
                                     resourceVersion="0"):
            seen.append((ev["type"], ev["object"]["metadata"]["name"], ev["object"]["metadata"].get("labels")))
            if len(seen) == 2:
                return

    task = asyncio.create_task(follow())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while api.store.watcher_count() == 0 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    (watcher,) = [w for ws in api.store._watchers.values() for w in ws]
    for i in range(5):
        await http.patch(NODES + "/other", {"metadata": {"labels": {"i": str(i)}}})
    assert watcher.queue.qsize() == 0, "another node's changes reached the one-node watcher"
    assert watcher.seen_rv > 0, "the watcher still knows how far the store has gone (for bookmarks)"
    await http.patch(NODES + "/mine", {"metadata": {"labels": {"x": "1"}}})
    await asyncio.wait_for(task, 5)
    assert seen == [("ADDED", "mine", {}), ("MODIFIED", "mine", {"x": "1"})]

"""Watch semantics: initial state, resume from a resourceVersion, selectors across transitions, bookmarks,
timeoutSeconds, 410 Gone when the version left the window, and a property test of watch correctness under
concurrent writers against a reference model built from the writes' own responses."""

from __future__ import annotations

import asyncio

import aiohttp
from apiserver_helpers import node, watch_events
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccgpu.sim.apiserver import ApiServer

NODES = "/api/v1/nodes"


async def collect(session, url, stop_when, **params) -> list[dict]:
    out = []
    async for ev in watch_events(session, url, **params):
        out.append(ev)
        if stop_when(ev, out):
            break
    return out


async def test_watch_without_version_starts_with_current_objects_as_added(http, api):
    await http.post(NODES, node("a"))
    await http.post(NODES, node("b"))
    evs = await asyncio.wait_for(collect(http.session, api.url + NODES, lambda e, o: len(o) == 2), 5)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in evs] == [("ADDED", "a"), ("ADDED", "b")]


async def test_watch_resumes_after_a_resource_version_with_exactly_the_later_changes(http, api):
    _, a = await http.post(NODES, node("a"))
    await http.patch(NODES + "/a", {"metadata": {"labels": {"x": "1"}}})
    await http.post(NODES, node("b"))
    await http.delete(NODES + "/a")
    evs = await asyncio.wait_for(collect(http.session, api.url + NODES, lambda e, o: e["type"] == "DELETED",
                                         resourceVersion=a["metadata"]["resourceVersion"]), 5)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in evs] == [
        ("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a")]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in evs]
    assert rvs == sorted(rvs) and len(set(rvs)) == len(rvs)


async def test_label_selector_watch_sees_objects_enter_and_leave_the_selection(http, api):
    _, n = await http.post(NODES, node("n"))
    rv = n["metadata"]["resourceVersion"]
    await http.patch(NODES + "/n", {"metadata": {"labels": {"gpu": "yes"}}})
    await http.patch(NODES + "/n", {"metadata": {"labels": {"gpu": "no"}}})
    evs = await asyncio.wait_for(collect(http.session, api.url + NODES, lambda e, o: len(o) == 2,
                                         resourceVersion=rv, labelSelector="gpu=yes"), 5)
    assert [e["type"] for e in evs] == ["ADDED", "DELETED"]


async def test_too_old_resource_version_gets_410_expired_status_event(http, api):
    _, n = await http.post(NODES, node("n"))
    await http.patch(NODES + "/n", {"metadata": {"labels": {"a": "b"}}})
    api.compact()
    evs = await asyncio.wait_for(collect(http.session, api.url + NODES, lambda e, o: True,
                                         resourceVersion=n["metadata"]["resourceVersion"]), 5)
    assert evs[0]["type"] == "ERROR"
    status = evs[0]["object"]
    assert status["kind"] == "Status" and status["code"] == 410 and status["reason"] == "Expired"
    assert status["message"].startswith("too old resource version: ")


async def test_bookmarks_are_sent_only_when_asked(http, api):
    _, n = await http.post(NODES, node("n"))
    rv = n["metadata"]["resourceVersion"]
    evs = await asyncio.wait_for(collect(http.session, api.url + NODES, lambda e, o: True, resourceVersion=rv,
                                         allowWatchBookmarks="true"), 5)
    assert evs[0]["type"] == "BOOKMARK"
    assert evs[0]["object"]["metadata"]["resourceVersion"] == rv and evs[0]["object"]["kind"] == "Node"
    evs = await collect(http.session, api.url + NODES, lambda e, o: False, resourceVersion=rv, timeoutSeconds=1)
    assert evs == []


async def test_timeout_seconds_ends_the_stream(http, api):
    loop = asyncio.get_running_loop()
    start = loop.time()
    evs = await asyncio.wait_for(collect(http.session, api.url + NODES, lambda e, o: False, timeoutSeconds=1,
                                         resourceVersion=str(api.store.rv)), 5)
    assert evs == [] and 0.9 <= loop.time() - start < 4


async def test_send_initial_events_ends_with_an_initial_events_end_bookmark(http, api):
    await http.post(NODES, node("a"))
    evs = await asyncio.wait_for(collect(http.session, api.url + NODES, lambda e, o: e["type"] == "BOOKMARK",
                                         sendInitialEvents="true", allowWatchBookmarks="true",
                                         resourceVersionMatch="NotOlderThan"), 5)
    assert [e["type"] for e in evs] == ["ADDED", "BOOKMARK"]
    assert evs[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


# --- property: no missed or duplicated events under concurrent writers -----------------------------------

NAMES = ["n0", "n1", "n2", "n3"]
op_strategy = st.tuples(st.sampled_from(["create", "label", "put", "delete"]), st.sampled_from(NAMES),
                        st.sampled_from(["a", "b", "c"]))


async def _write(session: aiohttp.ClientSession, url: str, op: tuple[str, str, str]) -> dict | None:
    kind, name, value = op
    if kind == "create":
        r = await session.post(url + NODES, json=node(name, color=value))
    elif kind == "label":
        r = await session.patch(url + NODES + "/" + name, json={"metadata": {"labels": {"color": value}}},
                                headers={"Content-Type": "application/merge-patch+json"})
    elif kind == "put":
        got = await session.get(url + NODES + "/" + name)
        if got.status != 200:
            return None
        obj = await got.json()
        obj["metadata"]["labels"] = {"color": value, "put": "yes"}
        r = await session.put(url + NODES + "/" + name, json=obj)
    else:
        r = await session.delete(url + NODES + "/" + name)
    body = await r.json()
    assert r.status in (200, 201, 404, 409), body
    return {"kind": kind, "obj": body} if r.status in (200, 201) else None


def _reference(results: list[dict], selector: str | None) -> list[tuple[str, str, int]]:
    """The events a watcher must see: one per committed write, in resourceVersion order, filtered."""
    commits: dict[int, tuple[str, dict]] = {}
    for res in results:
        obj = res["obj"]
        rv = int(obj["metadata"]["resourceVersion"])
        etype = {"create": "ADDED", "delete": "DELETED"}.get(res["kind"], "MODIFIED")
        commits.setdefault(rv, (etype, obj))  # a no-op write returns an earlier commit's version
    out, current = [], {}
    for rv in sorted(commits):
        etype, obj = commits[rv]
        name = obj["metadata"]["name"]
        labels = obj["metadata"].get("labels") or {}
        match = selector is None or labels.get("color") == selector
        was = current.get(name, False)
        current[name] = match and etype != "DELETED"
        if etype == "MODIFIED" and was != match:
            etype = "ADDED" if match else "DELETED"
        if match or was:
            out.append((etype, name, rv))
    return out


async def _scenario(ops: list[tuple[str, str, str]], writers: int) -> None:
    async with ApiServer() as api, aiohttp.ClientSession() as session:
        start_rv = api.store.rv
        full_task = asyncio.create_task(collect(session, api.url + NODES, lambda e, o: False,
                                                resourceVersion=str(start_rv), timeoutSeconds=2))
        sel_task = asyncio.create_task(collect(session, api.url + NODES, lambda e, o: False,
                                               resourceVersion=str(start_rv), labelSelector="color=a",
                                               timeoutSeconds=2))
        await asyncio.sleep(0)
        chunks = [ops[i::writers] for i in range(writers)]

        async def writer(chunk):
            return [r for r in [await _write(session, api.url, op) for op in chunk] if r]

        results = [r for rs in await asyncio.gather(*(writer(c) for c in chunks)) for r in rs]
        api.drop_watches()  # end the streams now that every write has been answered
        full, selected = await asyncio.gather(full_task, sel_task)

        def seen(evs):
            return [(e["type"], e["object"]["metadata"]["name"], int(e["object"]["metadata"]["resourceVersion"]))
                    for e in evs]

        assert seen(full) == _reference(results, None)
        assert seen(selected) == _reference(results, "a")

        # Resume from the middle of the history: exactly the later events.
        ref = _reference(results, None)
        if len(ref) >= 2:
            mid = ref[len(ref) // 2 - 1][2]
            resumed = await collect(session, api.url + NODES, lambda e, o: len(o) == len([r for r in ref
                                                                                         if r[2] > mid]),
                                    resourceVersion=str(mid), timeoutSeconds=1)
            assert seen(resumed) == [r for r in ref if r[2] > mid]

        # Listing at any past version shows exactly the objects as they were then.
        for _, _, at in ref[:: max(1, len(ref) // 4)]:
            expected: dict[str, int] = {}
            for etype, name, rv in ref:
                if rv > at:
                    break
                if etype == "DELETED":
                    expected.pop(name, None)
                else:
                    expected[name] = rv
            past = await (await session.get(api.url + NODES, params={"resourceVersion": str(at),
                                                                     "resourceVersionMatch": "Exact"})).json()
            assert {o["metadata"]["name"]: int(o["metadata"]["resourceVersion"]) for o in past["items"]} == expected

        # After compaction an old version is refused with 410; a re-list then a watch from its version recovers.
        await session.post(api.url + NODES, json=node("late", color="a"))
        api.compact()
        gone = await collect(session, api.url + NODES, lambda e, o: True, resourceVersion=str(start_rv))
        assert gone[0]["type"] == "ERROR" and gone[0]["object"]["code"] == 410
        listed = await (await session.get(api.url + NODES)).json()
        state = {o["metadata"]["name"] for o in listed["items"]}
        await session.patch(api.url + NODES + "/late", json={"metadata": {"labels": {"color": "b"}}},
                            headers={"Content-Type": "application/merge-patch+json"})
        after = await collect(session, api.url + NODES, lambda e, o: True,
                              resourceVersion=listed["metadata"]["resourceVersion"])
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in after] == [("MODIFIED", "late")]
        assert "late" in state


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_strategy, min_size=1, max_size=30), writers=st.integers(1, 4))
def test_watch_sees_every_committed_write_once_in_order_under_concurrent_writers(ops, writers):
    asyncio.run(asyncio.wait_for(_scenario(ops, writers), 30))


async def test_namespaced_watch_sees_only_its_namespace(http, api):
    await http.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    rv = str(api.store.rv)
    for ns in ("other", "default"):
        await http.post(f"/api/v1/namespaces/{ns}/configmaps",
                        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c-{ns}"}})
    evs = await asyncio.wait_for(collect(http.session, api.url + "/api/v1/namespaces/default/configmaps",
                                         lambda e, o: True, resourceVersion=rv), 5)
    assert [e["object"]["metadata"]["name"] for e in evs] == ["c-default"]
    evs = await asyncio.wait_for(collect(http.session, api.url + "/api/v1/configmaps", lambda e, o: len(o) == 2,
                                         resourceVersion=rv), 5)
    assert [e["object"]["metadata"]["name"] for e in evs] == ["c-other", "c-default"]

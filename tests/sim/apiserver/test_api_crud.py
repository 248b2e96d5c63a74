"""CRUD semantics over raw HTTP: metadata the server owns, optimistic concurrency, status isolation,
generation, finalizers, namespaces, and the Status bodies of refusals."""

from __future__ import annotations

import asyncio

from apiserver_helpers import WIDGETS, node, widget

NODES = "/api/v1/nodes"


async def test_create_stamps_uid_timestamp_resource_version_and_generation(http, crd):
    status, obj = await http.post(WIDGETS, widget("w1"))
    assert status == 201
    meta = obj["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert int(meta["resourceVersion"]) > 0 and meta["generation"] == 1
    assert meta["namespace"] == "default"


async def test_generate_name_appends_five_random_characters(http):
    status, obj = await http.post("/api/v1/namespaces/default/configmaps",
                                  {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "cfg-"}})
    assert status == 201
    name = obj["metadata"]["name"]
    assert name.startswith("cfg-") and len(name) == len("cfg-") + 5


async def test_create_twice_is_already_exists_with_status_body(http):
    assert (await http.post(NODES, node("n1")))[0] == 201
    status, body = await http.post(NODES, node("n1"))
    assert status == 409
    assert body["kind"] == "Status" and body["reason"] == "AlreadyExists" and body["code"] == 409
    assert body["message"] == 'nodes "n1" already exists'


async def test_get_missing_is_not_found_naming_group_and_resource(http, crd):
    status, body = await http.get(WIDGETS + "/nope")
    assert status == 404 and body["reason"] == "NotFound"
    assert body["message"] == 'widgets.example.com "nope" not found'


async def test_unknown_resource_is_404_not_found(http):
    status, body = await http.get("/apis/example.com/v1/gizmos")
    assert status == 404 and body["reason"] == "NotFound"
    assert body["message"] == "the server could not find the requested resource"


async def test_put_with_stale_resource_version_is_conflict(http):
    _, obj = await http.post(NODES, node("n1"))
    stale = dict(obj)
    obj["metadata"]["labels"] = {"a": "1"}
    status, updated = await http.put(NODES + "/n1", obj)
    assert status == 200 and updated["metadata"]["resourceVersion"] != stale["metadata"]["resourceVersion"]
    stale["metadata"] = dict(stale["metadata"], labels={"b": "2"})
    status, body = await http.put(NODES + "/n1", stale)
    assert status == 409 and body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]
    assert (await http.get(NODES + "/n1"))[1]["metadata"]["labels"] == {"a": "1"}


async def test_two_writers_racing_on_one_object_get_exactly_one_conflict(http):
    _, obj = await http.post(NODES, node("race"))

    async def writer(value: str):
        body = {**obj, "metadata": {**obj["metadata"], "labels": {"writer": value}}}
        return await http.put(NODES + "/race", body)

    results = await asyncio.gather(writer("a"), writer("b"))
    codes = sorted(s for s, _ in results)
    assert codes == [200, 409]
    winner = next(b for s, b in results if s == 200)
    assert (await http.get(NODES + "/race"))[1]["metadata"]["labels"] == winner["metadata"]["labels"]


async def test_noop_update_keeps_resource_version(http):
    _, obj = await http.post(NODES, node("n1", a="1"))
    status, same = await http.patch(NODES + "/n1", {"metadata": {"labels": {"a": "1"}}})
    assert status == 200 and same["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


async def test_status_subresource_never_changes_spec_and_spec_writes_ignore_status(http, crd):
    _, w = await http.post(WIDGETS, {**widget("w1", size=2), "status": {"phase": "ignored-on-create"}})
    assert "status" not in w
    status, w = await http.patch(WIDGETS + "/w1/status", {"spec": {"size": 9}, "status": {"phase": "Ready"}})
    assert status == 200
    assert w["spec"]["size"] == 2 and w["status"]["phase"] == "Ready" and w["metadata"]["generation"] == 1
    status, w = await http.patch(WIDGETS + "/w1", {"spec": {"size": 3}, "status": {"phase": "Hacked"}})
    assert w["spec"]["size"] == 3 and w["status"]["phase"] == "Ready"
    assert w["metadata"]["generation"] == 2


async def test_metadata_change_does_not_bump_generation(http, crd):
    await http.post(WIDGETS, widget("w1"))
    _, w = await http.patch(WIDGETS + "/w1", {"metadata": {"labels": {"x": "y"}}})
    assert w["metadata"]["generation"] == 1


async def test_namespaced_create_in_missing_namespace_is_not_found(http):
    status, body = await http.post("/api/v1/namespaces/nowhere/configmaps",
                                   {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    assert status == 404 and body["message"] == 'namespaces "nowhere" not found'


async def test_finalizers_hold_deletion_until_removed(http, crd):
    await http.post(WIDGETS, {**widget("w1"), "metadata": {"name": "w1", "finalizers": ["example.com/keep"]}})
    status, w = await http.delete(WIDGETS + "/w1")
    assert status == 200 and w["metadata"]["deletionTimestamp"]
    assert (await http.get(WIDGETS + "/w1"))[0] == 200
    status, _ = await http.patch(WIDGETS + "/w1", [{"op": "remove", "path": "/metadata/finalizers"}],
                                 ctype="application/json-patch+json")
    assert status == 200
    assert (await http.get(WIDGETS + "/w1"))[0] == 404


async def test_new_finalizers_are_refused_once_deletion_started(http, crd):
    await http.post(WIDGETS, {**widget("w1"), "metadata": {"name": "w1", "finalizers": ["a/b"]}})
    await http.delete(WIDGETS + "/w1")
    status, body = await http.patch(WIDGETS + "/w1", {"metadata": {"finalizers": ["a/b", "c/d"]}})
    assert status == 422 and "no new finalizers" in body["message"]


async def test_delete_precondition_on_uid_is_conflict(http):
    await http.post(NODES, node("n1"))
    status, body = await http.delete(NODES + "/n1", {"preconditions": {"uid": "not-the-uid"}})
    assert status == 409 and "Precondition failed" in body["message"]


async def test_deleting_a_crd_stops_serving_its_kind_and_removes_its_objects(http, crd):
    await http.post(WIDGETS, widget("w1"))
    status, _ = await http.delete("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")
    assert status == 200
    assert (await http.get(WIDGETS))[0] == 404
    status, _ = await http.get("/apis/example.com/v1")
    assert status == 404


async def test_cluster_scoped_crd_is_served_without_namespace(http):
    from apiserver_helpers import widget_crd

    crd = widget_crd(scope="Cluster")
    assert (await http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd))[0] == 201
    status, w = await http.post("/apis/example.com/v1/widgets", widget("cw"))
    assert status == 201 and "namespace" not in w["metadata"]
    assert (await http.get("/apis/example.com/v1/namespaces/default/widgets"))[0] == 404


async def test_list_limit_and_continue_pages_through_everything_once(http):
    for i in range(7):
        await http.post(NODES, node(f"n{i}"))
    names, cont = [], None
    while True:
        params = {"limit": 3} | ({"continue": cont} if cont else {})
        _, page = await http.get(NODES, **params)
        names += [o["metadata"]["name"] for o in page["items"]]
        cont = page["metadata"].get("continue")
        if not cont:
            break
    assert names == [f"n{i}" for i in range(7)]


async def test_list_reports_current_resource_version(http, api):
    await http.post(NODES, node("n1"))
    _, lst = await http.get(NODES)
    assert lst["kind"] == "NodeList" and lst["metadata"]["resourceVersion"] == str(api.store.rv)


async def test_dry_run_create_persists_nothing(http):
    status, _ = await http.post(NODES, node("dry"), dryRun="All")
    assert status == 201
    assert (await http.get(NODES + "/dry"))[0] == 404


async def test_namespace_deletion_removes_its_contents_then_itself(http, api):
    from apiserver_helpers import wait_for

    await http.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tmp"}})
    await http.post("/api/v1/namespaces/tmp/configmaps",
                    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    status, ns = await http.delete("/api/v1/namespaces/tmp")
    assert status == 200 and ns["status"]["phase"] == "Terminating"

    async def gone():
        return (await http.get("/api/v1/namespaces/tmp"))[0] == 404

    await wait_for(gone)
    assert (await http.get("/api/v1/namespaces/tmp/configmaps/c"))[0] == 404


async def test_events_posted_through_either_api_are_listed_by_both(http):
    core = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"}, "reason": "CCModeSet",
            "message": "cc mode on", "type": "Normal", "involvedObject": {"kind": "Node", "name": "n1"},
            "source": {"component": "ccgpu"}}
    v1 = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e2"}, "reason": "Reset",
          "note": "gpu reset", "type": "Warning", "regarding": {"kind": "Node", "name": "n1"},
          "reportingController": "ccgpu.dev/cc-manager", "reportingInstance": "n1", "action": "Reset",
          "eventTime": "2026-11-26T00:00:00.000000Z"}
    assert (await http.post("/api/v1/namespaces/default/events", core))[0] == 201
    status, created = await http.post("/apis/events.k8s.io/v1/namespaces/default/events", v1)
    assert status == 201 and created["note"] == "gpu reset" and created["regarding"]["name"] == "n1"
    _, core_list = await http.get("/api/v1/namespaces/default/events")
    by_name = {e["metadata"]["name"]: e for e in core_list["items"]}
    assert by_name["e2"]["message"] == "gpu reset" and by_name["e2"]["reportingComponent"] == "ccgpu.dev/cc-manager"
    _, v1_list = await http.get("/apis/events.k8s.io/v1/namespaces/default/events",
                                fieldSelector="regarding.name=n1,reason=CCModeSet")
    assert [(e["metadata"]["name"], e["note"], e["deprecatedSource"]) for e in v1_list["items"]] == [
        ("e1", "cc mode on", {"component": "ccgpu"})]
    status, patched = await http.patch("/apis/events.k8s.io/v1/namespaces/default/events/e1", {"note": "edited"})
    assert status == 200 and patched["note"] == "edited"
    assert (await http.get("/api/v1/namespaces/default/events/e1"))[1]["message"] == "edited"


async def test_delete_collection_removes_only_the_selected_objects(http):
    for name, tier in (("a", "x"), ("b", "x"), ("c", "y")):
        await http.post(NODES, node(name, tier=tier))
    status, body = await http.delete(NODES, labelSelector="tier=x")
    assert status == 200 and sorted(o["metadata"]["name"] for o in body["items"]) == ["a", "b"]
    _, rest = await http.get(NODES)
    assert [o["metadata"]["name"] for o in rest["items"]] == ["c"]


async def test_crd_versions_share_storage_and_each_serves_its_api_version(http):
    from apiserver_helpers import WIDGET_CRD, widget_crd

    v1 = WIDGET_CRD["spec"]["versions"][0]
    crd = widget_crd(versions=[{**v1, "name": "v1beta1", "storage": False}, v1])
    assert (await http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd))[0] == 201
    await http.post(WIDGETS, widget("w", size=2))
    status, old = await http.get("/apis/example.com/v1beta1/namespaces/default/widgets/w")
    assert status == 200 and old["apiVersion"] == "example.com/v1beta1" and old["spec"] == {"size": 2}
    _, groups = await http.get("/apis/example.com")
    assert groups["preferredVersion"]["version"] == "v1"


PODS = "/api/v1/namespaces/default/pods"


def pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}


async def test_pod_spec_is_immutable_except_images_and_added_tolerations(http):
    await http.post(PODS, pod("p"))
    status, body = await http.patch(PODS + "/p", {"spec": {"nodeName": "n1"}})
    assert status == 422 and "pod updates may not change fields other than" in body["message"]
    status, p = await http.patch(PODS + "/p", {"spec": {"containers": [{"name": "c", "image": "busybox:2"}],
                                                        "tolerations": [{"key": "k", "operator": "Exists"}]}},
                                 ctype="application/strategic-merge-patch+json")
    assert status == 200 and p["spec"]["containers"][0]["image"] == "busybox:2"


async def test_binding_assigns_a_pod_to_a_node_once(http):
    await http.post(PODS, pod("p"))
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
               "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"}}
    status, body = await http.post(PODS + "/p/binding", binding)
    assert status == 201 and body["status"] == "Success"
    _, p = await http.get(PODS + "/p")
    assert p["spec"]["nodeName"] == "n1"
    assert {c["type"]: c["status"] for c in p["status"]["conditions"]} == {"PodScheduled": "True"}
    status, body = await http.post(PODS + "/p/binding", binding)
    assert status == 409 and 'already assigned to node "n1"' in body["message"]


async def test_daemonset_selector_is_immutable(http):
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "d"},
          "spec": {"selector": {"matchLabels": {"app": "d"}},
                   "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": []}}}}
    await http.post("/apis/apps/v1/namespaces/default/daemonsets", ds)
    status, body = await http.patch("/apis/apps/v1/namespaces/default/daemonsets/d",
                                    {"spec": {"selector": {"matchLabels": {"app": "e"}}}})
    assert status == 422 and "spec.selector" in body["message"] and "field is immutable" in body["message"]


async def test_pages_of_a_list_are_one_snapshot_even_when_objects_change_between_pages(http):
    for i in range(4):
        await http.post(NODES, node(f"n{i}", v="0"))
    _, first = await http.get(NODES, limit=2)
    await http.patch(NODES + "/n3", {"metadata": {"labels": {"v": "1"}}})
    await http.delete(NODES + "/n2")
    await http.post(NODES, node("n4"))
    _, second = await http.get(NODES, limit=10, **{"continue": first["metadata"]["continue"]})
    assert [(o["metadata"]["name"], o["metadata"]["labels"]["v"]) for o in second["items"]] == [("n2", "0"),
                                                                                                ("n3", "0")]
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]


async def test_continue_token_older_than_the_window_is_410_expired(http, api):
    for i in range(3):
        await http.post(NODES, node(f"n{i}"))
    _, first = await http.get(NODES, limit=1)
    await http.patch(NODES + "/n1", {"metadata": {"labels": {"x": "y"}}})
    api.compact()
    status, body = await http.get(NODES, limit=1, **{"continue": first["metadata"]["continue"]})
    assert status == 410 and body["reason"] == "Expired"
    assert body["message"].startswith("The provided continue parameter is too old")


async def test_exact_resource_version_list_reads_the_past(http):
    _, n = await http.post(NODES, node("n", v="old"))
    await http.patch(NODES + "/n", {"metadata": {"labels": {"v": "new"}}})
    _, past = await http.get(NODES, resourceVersion=n["metadata"]["resourceVersion"], resourceVersionMatch="Exact")
    assert [o["metadata"]["labels"]["v"] for o in past["items"]] == ["old"]

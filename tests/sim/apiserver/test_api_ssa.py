"""Server-side apply: managedFields ownership, idempotent re-apply, conflicts and force, co-ownership,
removal of fields a manager stopped applying, keyed lists, and apply on /status."""

from __future__ import annotations

import json

import yaml
from apiserver_helpers import WIDGETS

APPLY = "application/apply-patch+yaml"
CM = "/api/v1/namespaces/default/configmaps"


def cm(data: dict, **meta) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", **meta}, "data": data}


async def apply(http, path, obj, manager, **params):
    return await http.patch(path, obj, ctype=APPLY, fieldManager=manager, **params)


async def test_apply_creates_then_reapply_is_a_no_op(http):
    status, first = await apply(http, CM + "/c", cm({"a": "1"}), "mgr")
    assert status == 201
    assert [(m["manager"], m["operation"]) for m in first["metadata"]["managedFields"]] == [("mgr", "Apply")]
    assert first["metadata"]["managedFields"][0]["fieldsV1"] == {"f:data": {"f:a": {}}}
    status, second = await apply(http, CM + "/c", cm({"a": "1"}), "mgr")
    assert status == 200 and second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]


async def test_apply_body_may_be_yaml(http):
    raw = yaml.safe_dump(cm({"k": "v"})).encode()
    status, obj = await http.req("PATCH", CM + "/c", raw=raw, ctype=APPLY, fieldManager="yaml-mgr")
    assert status == 201 and obj["data"] == {"k": "v"}


async def test_apply_without_field_manager_is_400(http):
    status, body = await http.req("PATCH", CM + "/c", raw=json.dumps(cm({})).encode(), ctype=APPLY)
    assert status == 400 and "fieldManager" in body["message"]


async def test_conflicting_managers_get_409_until_forced(http):
    await apply(http, CM + "/c", cm({"a": "1"}), "alice")
    status, body = await apply(http, CM + "/c", cm({"a": "2"}), "bob")
    assert status == 409 and body["reason"] == "Conflict"
    assert body["message"].startswith('Apply failed with 1 conflict: conflict with "alice"')
    assert body["details"]["causes"] == [{"reason": "FieldManagerConflict", "message": 'conflict with "alice"',
                                          "field": ".data.a"}]
    status, obj = await apply(http, CM + "/c", cm({"a": "2"}), "bob", force="true")
    assert status == 200 and obj["data"] == {"a": "2"}
    owners = {m["manager"]: m["fieldsV1"] for m in obj["metadata"]["managedFields"]}
    assert owners == {"bob": {"f:data": {"f:a": {}}}}


async def test_same_value_is_co_owned_and_survives_one_manager_dropping_it(http):
    await apply(http, CM + "/c", cm({"a": "1", "b": "1"}), "alice")
    status, _ = await apply(http, CM + "/c", cm({"a": "1"}), "bob")
    assert status == 200
    _, obj = await apply(http, CM + "/c", cm({"b": "1"}), "alice")  # alice stops applying a; bob still owns it
    assert obj["data"] == {"a": "1", "b": "1"}
    _, obj = await apply(http, CM + "/c", cm({}), "bob")
    assert obj["data"] == {"b": "1"}


async def test_update_by_another_writer_conflicts_with_a_later_apply(http):
    await apply(http, CM + "/c", cm({"a": "1"}), "alice")
    await http.patch(CM + "/c", {"data": {"a": "9"}}, fieldManager="hand-edit")
    status, body = await apply(http, CM + "/c", cm({"a": "1"}), "alice")
    assert status == 409 and 'conflict with "hand-edit"' in body["message"]


async def test_keyed_list_items_are_owned_per_key(http):
    daemonsets = "/apis/apps/v1/namespaces/default/daemonsets"

    def ds(*containers):
        return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "d"},
                "spec": {"selector": {"matchLabels": {"app": "d"}},
                         "template": {"metadata": {"labels": {"app": "d"}},
                                      "spec": {"containers": [{"name": n, "image": i} for n, i in containers]}}}}

    await apply(http, daemonsets + "/d", ds(("a", "a:1"), ("b", "b:1")), "mgr")
    await http.patch(daemonsets + "/d",
                     {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "c:1"}]}}}},
                     ctype="application/strategic-merge-patch+json", fieldManager="other")
    status, obj = await apply(http, daemonsets + "/d", ds(("a", "a:2")), "mgr")
    assert status == 200
    containers = obj["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("a", "a:2"), ("c", "c:1")]


async def test_apply_to_status_subresource_touches_only_status(http, crd):
    w = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}}
    await apply(http, WIDGETS + "/w", w, "op")
    status, obj = await apply(http, WIDGETS + "/w/status", {**w, "spec": {"size": 50}, "status": {"phase": "Ok"}},
                              "op-status")
    assert status == 200 and obj["status"] == {"phase": "Ok"} and obj["spec"] == {"size": 1}
    mine = [m for m in obj["metadata"]["managedFields"] if m["manager"] == "op-status"]
    assert mine[0]["subresource"] == "status" and mine[0]["fieldsV1"] == {"f:status": {"f:phase": {}}}

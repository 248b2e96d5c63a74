"""Patch algebra: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge for built-in lists."""

from __future__ import annotations

import pytest

from ccgpu.sim.apiserver.patch import PatchError, json_patch, merge_patch, strategic_merge_patch


@pytest.mark.parametrize(("target", "patch", "result"), [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"a": "b"}, ["c"], ["c"]),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
])
def test_merge_patch_follows_rfc7386(target, patch, result):
    assert merge_patch(target, patch) == result


def test_merge_patch_does_not_modify_its_inputs():
    target = {"a": {"b": 1}}
    merge_patch(target, {"a": {"b": 2}})
    assert target == {"a": {"b": 1}}


def test_json_patch_operations():
    doc = {"metadata": {"labels": {"a": "1"}}, "list": [1, 2]}
    out = json_patch(doc, [
        {"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
        {"op": "replace", "path": "/metadata/labels/a", "value": "9"},
        {"op": "add", "path": "/list/-", "value": 3},
        {"op": "remove", "path": "/list/0"},
        {"op": "copy", "from": "/list", "path": "/copy"},
        {"op": "move", "from": "/copy", "path": "/moved"},
        {"op": "test", "path": "/moved", "value": [2, 3]},
    ])
    assert out == {"metadata": {"labels": {"a": "9", "b/c": "2"}}, "list": [2, 3], "moved": [2, 3]}
    assert doc == {"metadata": {"labels": {"a": "1"}}, "list": [1, 2]}


@pytest.mark.parametrize(("ops", "message"), [
    ([{"op": "test", "path": "/a", "value": 2}], "test failed"),
    ([{"op": "remove", "path": "/nope"}], "nonexistent"),
    ([{"op": "replace", "path": "/x/y", "value": 1}], "missing path"),
    ([{"op": "frob", "path": "/a"}], "unexpected kind of operation"),
    ([{"op": "add", "path": "a", "value": 1}], "invalid JSON pointer"),
    ({"op": "add"}, "must be a list"),
])
def test_json_patch_refusals_say_why(ops, message):
    with pytest.raises(PatchError, match=message):
        json_patch({"a": 1}, ops)


def test_strategic_merge_merges_containers_env_and_volumes_by_name():
    pod = {"spec": {"containers": [{"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
                                   {"name": "b", "image": "b:1"}],
                    "volumes": [{"name": "v1", "emptyDir": {}}]}}
    out = strategic_merge_patch(pod, {"spec": {
        "containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}]}, {"name": "c", "image": "c:1"}],
        "volumes": [{"name": "v1", "$patch": "delete"}, {"name": "v2", "hostPath": {"path": "/x"}}]}})
    assert [c["name"] for c in out["spec"]["containers"]] == ["a", "b", "c"]
    assert out["spec"]["containers"][0]["env"] == [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]
    assert out["spec"]["containers"][0]["image"] == "a:1"
    assert out["spec"]["volumes"] == [{"name": "v2", "hostPath": {"path": "/x"}}]


def test_strategic_merge_tolerations_by_key_and_replace_directive():
    spec = {"tolerations": [{"key": "k1", "operator": "Exists"}]}
    assert strategic_merge_patch(spec, {"tolerations": [{"key": "k1", "effect": "NoSchedule"}]}) == {
        "tolerations": [{"key": "k1", "operator": "Exists", "effect": "NoSchedule"}]}
    assert strategic_merge_patch(spec, {"tolerations": [{"key": "k2"}, {"$patch": "replace"}]}) == {
        "tolerations": [{"key": "k2"}]}


def test_strategic_merge_unions_finalizers_and_deletes_from_primitive_lists():
    meta = {"finalizers": ["a", "b"]}
    assert strategic_merge_patch(meta, {"finalizers": ["c"]}) == {"finalizers": ["a", "b", "c"]}
    assert strategic_merge_patch(meta, {"$deleteFromPrimitiveList/finalizers": ["a"]}) == {"finalizers": ["b"]}


def test_strategic_merge_replaces_lists_without_merge_key():
    assert strategic_merge_patch({"args": ["a", "b"]}, {"args": ["c"]}) == {"args": ["c"]}

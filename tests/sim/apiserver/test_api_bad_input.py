"""Bad input gets the status codes and messages a real apiserver gives, and changes nothing; the server keeps
serving whatever it is sent."""

from __future__ import annotations

import json

import pytest
from apiserver_helpers import WIDGETS, node, widget
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NODES = "/api/v1/nodes"


async def test_malformed_json_is_400_and_stores_nothing(http, api):
    rv = api.store.rv
    status, body = await http.req("POST", NODES, raw=b'{"kind": "Node", "metadata": {')
    assert status == 400 and body["reason"] == "BadRequest"
    assert "json parse error" in body["message"]
    assert api.store.rv == rv


async def test_malformed_yaml_body_is_400(http):
    status, body = await http.req("POST", NODES, raw=b"kind: Node\nmetadata: [unclosed", ctype="application/yaml")
    assert status == 400 and "yaml parse error" in body["message"]


async def test_yaml_body_is_accepted(http):
    status, obj = await http.req("POST", NODES, raw=b"apiVersion: v1\nkind: Node\nmetadata:\n  name: y\n",
                                 ctype="application/yaml")
    assert status == 201 and obj["metadata"]["name"] == "y"


async def test_kind_that_does_not_match_the_url_is_400(http):
    status, body = await http.post(NODES, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}})
    assert status == 400 and "does not match the expected kind" in body["message"]


async def test_unknown_api_group_is_404(http):
    status, body = await http.post("/apis/nope.example.com/v1/things", {"kind": "Thing"})
    assert status == 404 and body["reason"] == "NotFound"


@pytest.mark.parametrize(("name", "fragment"), [
    ("Upper", "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters"),
    ("bad_name", "a lowercase RFC 1123 subdomain"),
    ("-lead", "must start and end with an alphanumeric character"),
    ("x" * 254, "must be no more than 253 characters"),
])
async def test_invalid_names_are_422_naming_metadata_name(http, name, fragment):
    status, body = await http.post(NODES, node(name))
    assert status == 422 and body["reason"] == "Invalid"
    assert body["message"].startswith(f'Node "{name}" is invalid: metadata.name: Invalid value: "{name}": ')
    assert fragment in body["message"]
    assert body["details"]["causes"][0]["field"] == "metadata.name"


async def test_namespace_names_must_be_dns1123_labels(http):
    status, body = await http.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                          "metadata": {"name": "a.b"}})
    assert status == 422 and "a lowercase RFC 1123 label must consist of" in body["message"]


@pytest.mark.parametrize(("labels", "fragment"), [
    ({"ok": "bad value"}, "a valid label must be an empty string or consist of alphanumeric characters"),
    ({"ok": "v" * 64}, "must be no more than 63 characters"),
    ({"bad key": "v"}, "name part must consist of alphanumeric characters"),
    ({"Bad_Prefix.com/k": "v"}, "prefix part a lowercase RFC 1123 subdomain"),
])
async def test_invalid_labels_are_422_naming_metadata_labels(http, labels, fragment):
    status, body = await http.post(NODES, node("n", **labels))
    assert status == 422 and fragment in body["message"]
    assert body["details"]["causes"][0]["field"] == "metadata.labels"
    assert (await http.get(NODES + "/n"))[0] == 404


async def test_missing_name_is_422_required_value(http):
    status, body = await http.post(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {}})
    assert status == 422
    assert body["message"] == 'Node "" is invalid: metadata.name: Required value: name or generateName is required'


@pytest.mark.parametrize(("spec", "message"), [
    ({"size": "big"}, 'spec.size: Invalid value: "string": spec.size in body must be of type integer: "string"'),
    ({"size": 0}, "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"),
    ({"size": 101}, "spec.size: Invalid value: 101: spec.size in body should be less than or equal to 100"),
    ({"size": 1, "color": "green"}, 'spec.color: Unsupported value: "green": supported values: "red", "blue"'),
    ({}, "spec.size: Required value"),
    ({"size": 1, "tags": [1]}, "spec.tags[0]: Invalid value: \"integer\": spec.tags[0] in body must be of type string"),
])
async def test_schema_violating_custom_objects_are_422_naming_the_field(http, crd, spec, message):
    status, body = await http.post(WIDGETS, {**widget("w"), "spec": spec})
    assert status == 422 and body["reason"] == "Invalid"
    assert body["message"].startswith('Widget.example.com "w" is invalid: ')
    assert message in body["message"]
    assert (await http.get(WIDGETS + "/w"))[0] == 404


async def test_schema_violating_patch_changes_nothing(http, crd):
    _, w = await http.post(WIDGETS, widget("w", size=2))
    status, _ = await http.patch(WIDGETS + "/w", {"spec": {"size": -1}})
    assert status == 422
    _, again = await http.get(WIDGETS + "/w")
    assert again["spec"] == {"size": 2} and again["metadata"]["resourceVersion"] == w["metadata"]["resourceVersion"]


async def test_unknown_fields_are_pruned_or_refused_with_strict_validation(http, crd):
    status, w = await http.post(WIDGETS, {**widget("w"), "spec": {"size": 1, "extra": True}})
    assert status == 201 and w["spec"] == {"size": 1}
    status, body = await http.post(WIDGETS, {**widget("w2"), "spec": {"size": 1, "extra": True}},
                                   fieldValidation="Strict")
    assert status == 400 and body["message"] == 'strict decoding error: unknown field "spec.extra"'


async def test_strategic_merge_on_a_custom_resource_is_415(http, crd):
    await http.post(WIDGETS, widget("w"))
    status, body = await http.patch(WIDGETS + "/w", {"spec": {"size": 2}},
                                    ctype="application/strategic-merge-patch+json")
    assert status == 415 and body["reason"] == "UnsupportedMediaType"


async def test_unknown_patch_content_type_is_415(http):
    await http.post(NODES, node("n"))
    status, body = await http.patch(NODES + "/n", {}, ctype="text/plain")
    assert status == 415 and "application/merge-patch+json" in body["message"]


async def test_method_not_allowed_on_discovery(http):
    status, body = await http.req("DELETE", "/api/v1")
    assert status == 405 and body["reason"] == "MethodNotAllowed"


async def test_bad_query_parameters_are_400(http):
    assert (await http.get(NODES, limit="many"))[0] == 400
    assert (await http.get(NODES, labelSelector="a in b"))[0] == 400
    assert (await http.get(NODES, fieldSelector="spec.nodeName=x"))[0] == 400
    assert (await http.get(NODES, **{"continue": "garbage!"}))[0] == 400


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=3), max_leaves=10)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(body=json_values, method=st.sampled_from(["POST", "PUT", "PATCH"]),
       ctype=st.sampled_from(["application/json", "application/merge-patch+json", "application/json-patch+json",
                              "application/strategic-merge-patch+json", "application/apply-patch+yaml"]))
def test_arbitrary_bodies_never_crash_the_server_or_corrupt_state(body, method, ctype):
    import asyncio

    import aiohttp

    from ccgpu.sim.apiserver import ApiServer

    async def scenario():
        async with ApiServer() as api, aiohttp.ClientSession() as s:
            await s.post(api.url + NODES, json=node("n", a="b"))
            before = api.store.get(("", "nodes"), "", "n")
            path = NODES if method == "POST" else NODES + "/n"
            async with s.request(method, api.url + path, data=json.dumps(body),
                                 headers={"Content-Type": ctype}, params={"fieldManager": "t"}) as r:
                assert r.status < 500, await r.text()
                reply = await r.json()
                if r.status >= 400:
                    assert reply["kind"] == "Status" and reply["code"] == r.status
            after = api.store.get(("", "nodes"), "", "n")
            if r.status >= 400:
                assert after is before
            async with s.get(api.url + NODES) as r2:
                assert r2.status == 200

    asyncio.run(scenario())


async def test_schema_defaults_are_applied_and_alternatives_checked(http):
    from apiserver_helpers import widget_crd

    crd = widget_crd()
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["properties"]["mode"] = {"type": "string", "default": "on"}
    spec_schema["properties"]["port"] = {"anyOf": [{"type": "integer"}, {"type": "string"}],
                                         "x-kubernetes-int-or-string": True}
    spec_schema["properties"]["limits"] = {"type": "object", "properties": {"gpus": {"type": "integer",
                                                                                        "default": 1}}}
    assert (await http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd))[0] == 201
    status, w = await http.post(WIDGETS, {**widget("w"), "spec": {"size": 1, "limits": {}}})
    assert status == 201 and w["spec"] == {"size": 1, "mode": "on", "limits": {"gpus": 1}}
    status, body = await http.post(WIDGETS, {**widget("w2"), "spec": {"size": 1, "port": [1]}})
    assert status == 422 and "spec.port" in body["message"]


async def test_unknown_fields_are_reported_in_a_warning_header_under_warn(http, crd, api):
    async with http.session.post(api.url + WIDGETS, json={**widget("w"), "spec": {"size": 1, "extra": 1}},
                                 params={"fieldValidation": "Warn"}) as r:
        assert r.status == 201
        assert r.headers["Warning"] == '299 - "unknown field \\"spec.extra\\""'


segments = st.sampled_from(["api", "apis", "v1", "apps", "nodes", "namespaces", "default", "pods", "status",
                            "binding", "finalize", "x", "", "example.com", "widgets", "..", "%2F", "watch"])
query_keys = st.sampled_from(["watch", "labelSelector", "fieldSelector", "limit", "continue", "resourceVersion",
                              "timeoutSeconds", "dryRun", "fieldManager", "force", "propagationPolicy",
                              "allowWatchBookmarks", "sendInitialEvents", "fieldValidation"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.lists(segments, min_size=1, max_size=6),
       query=st.dictionaries(query_keys, st.text(max_size=6), max_size=3),
       method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]))
def test_arbitrary_paths_and_queries_get_a_status_never_a_500(path, query, method):
    import asyncio

    import aiohttp

    from ccgpu.sim.apiserver import ApiServer

    async def scenario():
        async with ApiServer() as api, aiohttp.ClientSession() as s:
            await s.post(api.url + NODES, json=node("n"))
            params = {**query, "timeoutSeconds": "1"} if query.get("watch") else query
            async with s.request(method, api.url + "/" + "/".join(path), params=params,
                                 data=json.dumps(node("n")), headers={"Content-Type": "application/json"},
                                 timeout=aiohttp.ClientTimeout(total=10)) as r:
                assert r.status < 500, await r.text()
                await r.read()

    asyncio.run(scenario())

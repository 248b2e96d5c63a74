"""The ApiServer harness: discovery documents, health, kubeconfig, the thread-hosted variant and in-process
seeding."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
import yaml
from lightkube.resources.core_v1 import Namespace

from ccgpu.kube.client import load_kubeconfig, make_async_client
from ccgpu.sim.apiserver import ApiServer


async def test_discovery_documents_name_groups_versions_and_resources(http, crd):
    _, api = await http.get("/api")
    assert api["kind"] == "APIVersions" and api["versions"] == ["v1"]
    _, core = await http.get("/api/v1")
    assert core["groupVersion"] == "v1"
    names = {r["name"] for r in core["resources"]}
    assert {"nodes", "nodes/status", "pods", "pods/status", "namespaces", "events", "configmaps", "secrets",
            "serviceaccounts"} <= names
    _, groups = await http.get("/apis")
    by_name = {g["name"]: g for g in groups["groups"]}
    assert {"apps", "events.k8s.io", "node.k8s.io", "coordination.k8s.io", "rbac.authorization.k8s.io",
            "apiextensions.k8s.io", "example.com"} <= set(by_name)
    assert by_name["example.com"]["preferredVersion"] == {"groupVersion": "example.com/v1", "version": "v1"}
    _, widgets = await http.get("/apis/example.com/v1")
    assert {(r["name"], r["namespaced"], r["kind"]) for r in widgets["resources"]} == {
        ("widgets", True, "Widget"), ("widgets/status", True, "Widget")}
    _, version = await http.get("/version")
    assert version["major"] == "1" and version["gitVersion"].startswith("v1.32")


async def test_health_endpoints(http):
    for path in ("/healthz", "/readyz", "/livez"):
        assert await http.get(path) == (200, "ok")


async def test_kubeconfig_dict_and_file_point_at_the_server(api, tmp_path):
    kc = api.kubeconfig_dict()
    assert kc["clusters"][0]["cluster"]["server"] == api.url and api.url.startswith("http://127.0.0.1:")
    path = api.write_kubeconfig(tmp_path / "kc")
    assert yaml.safe_load(path.read_text()) == kc
    assert load_kubeconfig(path).get().cluster.server == api.url
    client = make_async_client(path)
    try:
        names = [ns.metadata.name async for ns in client.list(Namespace)]
        assert names == ["default", "kube-node-lease", "kube-public", "kube-system"]
    finally:
        await client.close()


def test_missing_kubeconfig_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_async_client(tmp_path / "nope")


def test_thread_hosted_server_serves_synchronous_callers_and_seeds_in_process():
    with ApiServer() as api:
        node = api.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "seeded"}})
        assert node["metadata"]["uid"]
        with urllib.request.urlopen(api.url + "/api/v1/nodes/seeded", timeout=5) as r:
            assert json.load(r)["metadata"]["uid"] == node["metadata"]["uid"]
        assert [n["metadata"]["name"] for n in api.list("v1", "Node")] == ["seeded"]
        assert api.get("v1", "Node", "seeded")["metadata"]["name"] == "seeded"
        assert api.get("v1", "Node", "missing") is None
        url = api.url
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/healthz", timeout=2)


def test_seeding_an_unknown_kind_names_it():
    with ApiServer() as api, pytest.raises(LookupError, match="'Gizmo'"):
        api.create({"apiVersion": "v1", "kind": "Gizmo", "metadata": {"name": "g"}})


def test_two_servers_get_different_ports():
    with ApiServer() as a, ApiServer() as b:
        assert a.port != b.port and a.port > 0


async def test_aggregated_discovery_is_served_when_asked_for(http, crd):
    accept = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
              "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json")
    async with http.session.get(http.url + "/apis", headers={"Accept": accept}) as r:
        assert r.headers["Content-Type"] == "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        doc = await r.json(content_type=None)
    assert doc["kind"] == "APIGroupDiscoveryList" and doc["apiVersion"] == "apidiscovery.k8s.io/v2"
    groups = {g["metadata"]["name"]: g for g in doc["items"]}
    widgets = groups["example.com"]["versions"][0]["resources"][0]
    assert widgets["resource"] == "widgets" and widgets["scope"] == "Namespaced"
    assert widgets["responseKind"] == {"group": "example.com", "version": "v1", "kind": "Widget"}
    assert widgets["subresources"][0]["subresource"] == "status"
    async with http.session.get(http.url + "/api", headers={"Accept": accept}) as r:
        core = await r.json(content_type=None)
    names = {res["resource"] for res in core["items"][0]["versions"][0]["resources"]}
    assert {"nodes", "pods", "namespaces"} <= names
    _, legacy = await http.get("/apis")
    assert legacy["kind"] == "APIGroupList"


def test_binding_beyond_loopback_is_refused():
    with pytest.raises(ValueError, match="binds only to loopback"):
        ApiServer(host="0.0.0.0")  # noqa: S104

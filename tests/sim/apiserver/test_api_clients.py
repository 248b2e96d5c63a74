"""The official `kubernetes` client and a minimal kopf operator against the simulator."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import kopf
import pytest
from apiserver_helpers import WIDGET_CRD, WIDGETS, wait_for, widget
from kubernetes import client, config, watch

from ccgpu.sim.apiserver import ApiServer


@pytest.fixture
def core(tmp_path) -> Iterator[tuple[ApiServer, client.ApiClient]]:
    with ApiServer() as api:
        cfg = client.Configuration()
        config.load_kube_config(str(api.write_kubeconfig(tmp_path / "kc")), client_configuration=cfg)
        with client.ApiClient(cfg) as c:
            yield api, c


def test_official_client_crud_selector_watch_and_errors(core):
    api, c = core
    v1 = client.CoreV1Api(c)
    v1.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="n1", labels={"gpu": "yes"})))
    v1.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="n2", labels={"gpu": "no"})))
    assert [n.metadata.name for n in v1.list_node(label_selector="gpu in (yes)").items] == ["n1"]
    v1.patch_node("n1", {"metadata": {"labels": {"nvidia.com/cc.mode": "on"}}})

    seen = [(e["type"], e["object"].metadata.name)
            for e in watch.Watch().stream(v1.list_node, label_selector="nvidia.com/cc.mode=on", timeout_seconds=1)]
    assert seen == [("ADDED", "n1")]

    with pytest.raises(client.ApiException) as err:
        v1.read_node("missing")
    assert err.value.status == 404

    stale = v1.read_node("n2")
    v1.patch_node("n2", {"metadata": {"labels": {"x": "1"}}})
    stale.metadata.labels["y"] = "2"
    with pytest.raises(client.ApiException) as err:
        v1.replace_node("n2", stale)
    assert err.value.status == 409

    apps = client.AppsV1Api(c)
    ds = apps.create_namespaced_daemon_set("default", {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
    assert ds.metadata.generation == 1 and ds.status.number_ready == 0


def test_official_client_custom_objects(core):
    api, c = core
    ext = client.ApiextensionsV1Api(c)
    ext.create_custom_resource_definition(WIDGET_CRD)
    co = client.CustomObjectsApi(c)
    co.create_namespaced_custom_object("example.com", "v1", "default", "widgets", widget("w", size=2))
    co.patch_namespaced_custom_object_status("example.com", "v1", "default", "widgets", "w",
                                             {"status": {"phase": "Ready"}})
    got = co.get_namespaced_custom_object("example.com", "v1", "default", "widgets", "w")
    assert got["status"] == {"phase": "Ready"} and got["spec"] == {"size": 2}
    listed = co.list_namespaced_custom_object("example.com", "v1", "default", "widgets")
    assert [o["metadata"]["name"] for o in listed["items"]] == ["w"]


async def test_kopf_operator_handles_create_and_delete_of_a_custom_resource(api, http, crd, caplog):
    caplog.set_level(logging.WARNING)
    registry = kopf.OperatorRegistry()
    deleted: list[str] = []

    @kopf.on.login(registry=registry)
    def login(**_):
        return kopf.ConnectionInfo(server=api.url, token="any-token", insecure=True)

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, **_):
        settings.watching.server_timeout = 5
        settings.persistence.finalizer = "example.com/kopf-finalizer"

    @kopf.on.create("example.com", "v1", "widgets", registry=registry)
    async def created(body, spec, patch, **_):
        patch.status["phase"] = f"size-{spec['size']}"
        kopf.info(body, reason="Sized", message=f"size is {spec['size']}")

    @kopf.on.delete("example.com", "v1", "widgets", registry=registry)
    async def removed(name, **_):
        deleted.append(name)

    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(kopf.operator(registry=registry, standalone=True, clusterwide=True,
                                             stop_flag=stop, ready_flag=ready))
    try:
        await asyncio.wait_for(ready.wait(), 15)
        assert (await http.post(WIDGETS, widget("w1", size=4)))[0] == 201

        async def handled():
            _, w = await http.get(WIDGETS + "/w1")
            return (w.get("status") or {}).get("phase") == "size-4" and w

        w = await wait_for(handled, timeout=15)
        assert "example.com/kopf-finalizer" in w["metadata"]["finalizers"]
        assert w["spec"] == {"size": 4}
        await http.delete(WIDGETS + "/w1")

        async def gone():
            return (await http.get(WIDGETS + "/w1"))[0] == 404

        await wait_for(gone, timeout=15)
        assert deleted == ["w1"]

        async def event_posted():
            _, events = await http.get("/api/v1/namespaces/default/events")
            return any(e["involvedObject"]["name"] == "w1" and e["reason"] == "Sized" for e in events["items"])

        await wait_for(event_posted, timeout=15)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)

"""lightkube (async), the client ccgpu's operator and agents use, against the simulator: typed built-ins,
a CRD's generic resource, every patch type, /status, watch and label selectors."""

from __future__ import annotations

import asyncio

import pytest
from apiserver_helpers import WIDGET_CRD
from lightkube import ApiError
from lightkube.generic_resource import async_load_in_cluster_generic_resources, create_namespaced_resource
from lightkube.models.core_v1 import Container, PodSpec, Toleration
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import ConfigMap, Node, Pod
from lightkube.types import PatchType

from ccgpu.kube.client import make_async_client

Widget = create_namespaced_resource("example.com", "v1", "Widget", "widgets")


@pytest.fixture
async def client(api):
    c = make_async_client(api.kubeconfig_dict())
    yield c
    await c.close()


async def test_node_labels_patched_and_listed_by_selector(client):
    await client.create(Node(metadata=ObjectMeta(name="gpu-1", labels={"nvidia.com/gpu.present": "true"})))
    await client.create(Node(metadata=ObjectMeta(name="cpu-1", labels={"nvidia.com/gpu.present": "false"})))
    await client.patch(Node, "gpu-1", {"metadata": {"labels": {"nvidia.com/cc.mode": "on"}}},
                       patch_type=PatchType.MERGE)
    gpus = [n.metadata.name async for n in client.list(Node, labels={"nvidia.com/gpu.present": "true"})]
    assert gpus == ["gpu-1"]
    on = [n.metadata.name async for n in client.list(Node, labels={"nvidia.com/cc.mode": "on"})]
    assert on == ["gpu-1"]


async def test_strategic_merge_merges_containers_by_name_and_tolerations_by_key(client):
    pod = Pod(metadata=ObjectMeta(name="p", namespace="default"),
              spec=PodSpec(containers=[Container(name="a", image="a:1"), Container(name="b", image="b:1")],
                           tolerations=[Toleration(key="k1", operator="Exists")]))
    await client.create(pod)
    patched = await client.patch(Pod, "p", {"spec": {"containers": [{"name": "b", "image": "b:2"}],
                                                     "tolerations": [{"key": "k2", "operator": "Exists"}]}},
                                 namespace="default", patch_type=PatchType.STRATEGIC)
    assert [(c.name, c.image) for c in patched.spec.containers] == [("a", "a:1"), ("b", "b:2")]
    assert [t.key for t in patched.spec.tolerations] == ["k1", "k2"]


async def test_json_patch_test_op_guards_a_write(client):
    cm = await client.create(ConfigMap(metadata=ObjectMeta(name="c", namespace="default"), data={"k": "v"}))
    rv = cm.metadata.resourceVersion
    await client.patch(ConfigMap, "c", [{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                                        {"op": "replace", "path": "/data/k", "value": "w"}],
                       namespace="default", patch_type=PatchType.JSON)
    with pytest.raises(ApiError) as err:
        await client.patch(ConfigMap, "c", [{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                                            {"op": "replace", "path": "/data/k", "value": "x"}],
                           namespace="default", patch_type=PatchType.JSON)
    assert err.value.status.code == 422
    assert (await client.get(ConfigMap, "c", namespace="default")).data == {"k": "w"}


async def test_replace_with_stale_version_raises_conflict(client):
    n = await client.create(Node(metadata=ObjectMeta(name="n")))
    await client.patch(Node, "n", {"metadata": {"labels": {"a": "b"}}}, patch_type=PatchType.MERGE)
    with pytest.raises(ApiError) as err:
        await client.replace(n)
    assert err.value.status.code == 409 and err.value.status.reason == "Conflict"


async def test_crd_kind_created_patched_and_status_written_through_generic_resource(client):
    await client.create(CustomResourceDefinition.from_dict(WIDGET_CRD))
    w = await client.create(Widget(metadata=ObjectMeta(name="w", namespace="default"), spec={"size": 2}))
    assert w.metadata.generation == 1
    w = await client.patch(Widget.Status, "w", {"status": {"phase": "Ready"}}, namespace="default",
                           patch_type=PatchType.MERGE)
    assert w.status == {"phase": "Ready"} and w.spec == {"size": 2}
    w = await client.patch(Widget, "w", {"spec": {"size": 4}}, namespace="default", patch_type=PatchType.MERGE)
    assert w.metadata.generation == 2 and w.status == {"phase": "Ready"}


async def test_server_side_apply_twice_is_idempotent(client):
    cm = ConfigMap(metadata=ObjectMeta(name="applied", namespace="default"), data={"a": "1"})
    first = await client.apply(cm, field_manager="ccgpu-test")
    second = await client.apply(cm, field_manager="ccgpu-test")
    assert first.metadata.resourceVersion == second.metadata.resourceVersion
    assert [m.manager for m in second.metadata.managedFields] == ["ccgpu-test"]


async def test_server_side_apply_drops_fields_the_manager_stopped_applying(client):
    await client.apply(ConfigMap(metadata=ObjectMeta(name="a", namespace="default"), data={"x": "1", "y": "2"}),
                       field_manager="mgr")
    cm = await client.apply(ConfigMap(metadata=ObjectMeta(name="a", namespace="default"), data={"x": "1"}),
                            field_manager="mgr")
    assert cm.data == {"x": "1"}


async def test_watch_delivers_added_modified_deleted_for_selected_nodes(client):
    events: list[tuple[str, str]] = []
    done = asyncio.Event()

    async def watch():
        async for etype, obj in client.watch(Node, labels={"watch": "me"}):
            events.append((etype, obj.metadata.name))
            if etype == "DELETED":
                done.set()
                return

    task = asyncio.create_task(watch())
    await asyncio.sleep(0)
    await client.create(Node(metadata=ObjectMeta(name="other")))
    await client.create(Node(metadata=ObjectMeta(name="w", labels={"watch": "me"})))
    await client.patch(Node, "w", {"spec": {"unschedulable": True}}, patch_type=PatchType.MERGE)
    await client.delete(Node, "w")
    await asyncio.wait_for(done.wait(), 5)
    await task
    assert events == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]


async def test_generic_resources_are_loadable_from_discovery(client):
    await client.create(CustomResourceDefinition.from_dict(WIDGET_CRD))
    await async_load_in_cluster_generic_resources(client)
    from lightkube.generic_resource import get_generic_resource

    assert get_generic_resource("example.com/v1", "Widget") is not None

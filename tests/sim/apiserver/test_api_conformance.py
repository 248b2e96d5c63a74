"""One scenario, three real clients: kubectl, lightkube (async) and the official `kubernetes` client each
create a CRD, a node and a custom object, label and select, write /status, and delete, against a fresh
simulator; the server must end in the same state for all of them. (kopf runs its own scenario in
test_api_clients.py, since it is an operator framework rather than a client.)"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from apiserver_helpers import WIDGET_CRD, widget

from ccgpu.sim.apiserver import ApiServer

KUBECTL = shutil.which("kubectl")


class KubectlDriver:
    def __init__(self, api: ApiServer, tmp: Path):
        self.kc, self.tmp = api.write_kubeconfig(tmp / "kc"), tmp
        minor = json.loads(self._run("version", "--client", "-o", "json"))["clientVersion"]["minor"]
        self.minor = int("".join(ch for ch in minor if ch.isdigit()) or 0)
        if self.minor < 24:
            pytest.skip(f"kubectl 1.{self.minor} lacks `patch --subresource` (1.24+)")

    def _run(self, *args: str) -> str:
        r = subprocess.run([KUBECTL, "--kubeconfig", str(self.kc), *args], capture_output=True,  # noqa: S603
                           text=True, timeout=30, env={"HOME": str(self.tmp), "PATH": "/usr/bin:/bin"})
        assert r.returncode == 0, r.stderr
        return r.stdout

    def create(self, obj: dict) -> None:
        # kubectl before 1.26 validates client-side from protobuf OpenAPI v2, which the simulator does not serve.
        self._run("create", "-f", self._file(obj), *(["--validate=false"] if self.minor < 26 else []))

    def _file(self, obj: dict) -> str:
        path = self.tmp / f"{obj['kind']}-{obj['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(obj))
        return str(path)

    def scenario(self) -> dict[str, Any]:
        self.create(WIDGET_CRD)
        self.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-1", "labels": {"gpu": "yes"}}})
        self.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "cpu-1"}})
        self._run("label", "node", "gpu-1", "nvidia.com/cc.mode=on")
        selected = self._run("get", "nodes", "-l", "gpu=yes,nvidia.com/cc.mode=on", "-o", "name").split()
        self.create(widget("w1", size=3) | {"metadata": {"name": "w1", "namespace": "default"}})
        self._run("patch", "widget", "w1", "--subresource=status", "--type=merge", "-p",
                  json.dumps({"status": {"phase": "Ready"}}))
        got = json.loads(self._run("get", "widget", "w1", "-o", "json"))
        self._run("delete", "node", "cpu-1")
        return {"selected": [s.split("/", 1)[1] for s in selected], "widget": got}


class OfficialDriver:
    def __init__(self, api: ApiServer, tmp: Path):
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(str(api.write_kubeconfig(tmp / "kc")), client_configuration=cfg)
        self.c = client.ApiClient(cfg)
        self.client = client

    def scenario(self) -> dict[str, Any]:
        c, k = self.c, self.client
        k.ApiextensionsV1Api(c).create_custom_resource_definition(WIDGET_CRD)
        core = k.CoreV1Api(c)
        core.create_node(k.V1Node(metadata=k.V1ObjectMeta(name="gpu-1", labels={"gpu": "yes"})))
        core.create_node(k.V1Node(metadata=k.V1ObjectMeta(name="cpu-1")))
        core.patch_node("gpu-1", {"metadata": {"labels": {"nvidia.com/cc.mode": "on"}}})
        selected = [n.metadata.name for n in core.list_node(label_selector="gpu=yes,nvidia.com/cc.mode=on").items]
        co = k.CustomObjectsApi(c)
        co.create_namespaced_custom_object("example.com", "v1", "default", "widgets", widget("w1", size=3))
        co.patch_namespaced_custom_object_status("example.com", "v1", "default", "widgets", "w1",
                                                 {"status": {"phase": "Ready"}})
        got = co.get_namespaced_custom_object("example.com", "v1", "default", "widgets", "w1")
        core.delete_node("cpu-1")
        self.c.close()
        return {"selected": selected, "widget": got}


class LightkubeDriver:
    def __init__(self, api: ApiServer, tmp: Path):
        self.kubeconfig = api.kubeconfig_dict()

    def scenario(self) -> dict[str, Any]:
        return asyncio.run(self._scenario())

    async def _scenario(self) -> dict[str, Any]:
        from lightkube.generic_resource import create_namespaced_resource
        from lightkube.models.meta_v1 import ObjectMeta
        from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
        from lightkube.resources.core_v1 import Node
        from lightkube.types import PatchType

        from ccgpu.kube.client import make_async_client

        widget_kind = create_namespaced_resource("example.com", "v1", "Widget", "widgets")
        c = make_async_client(self.kubeconfig)
        try:
            await c.create(CustomResourceDefinition.from_dict(WIDGET_CRD))
            await c.create(Node(metadata=ObjectMeta(name="gpu-1", labels={"gpu": "yes"})))
            await c.create(Node(metadata=ObjectMeta(name="cpu-1")))
            await c.patch(Node, "gpu-1", {"metadata": {"labels": {"nvidia.com/cc.mode": "on"}}},
                          patch_type=PatchType.MERGE)
            selected = [n.metadata.name async for n in c.list(Node, labels={"gpu": "yes",
                                                                             "nvidia.com/cc.mode": "on"})]
            await c.create(widget_kind(metadata=ObjectMeta(name="w1", namespace="default"), spec={"size": 3}))
            await c.patch(widget_kind.Status, "w1", {"status": {"phase": "Ready"}}, namespace="default",
                          patch_type=PatchType.MERGE)
            got = (await c.get(widget_kind, "w1", namespace="default")).to_dict()
            await c.delete(Node, "cpu-1")
        finally:
            await c.close()
        return {"selected": selected, "widget": got}


DRIVERS = [
    pytest.param(KubectlDriver, id="kubectl",
                 marks=[pytest.mark.kubectl, pytest.mark.skipif(KUBECTL is None, reason="no kubectl binary on PATH")]),
    pytest.param(LightkubeDriver, id="lightkube"),
    pytest.param(OfficialDriver, id="kubernetes-client"),
]


@pytest.mark.parametrize("driver", DRIVERS)
def test_same_scenario_ends_in_the_same_state_for_every_client(driver, tmp_path):
    with ApiServer() as api:
        seen = driver(api, tmp_path).scenario()
        assert seen["selected"] == ["gpu-1"]
        w = seen["widget"]
        assert w["spec"] == {"size": 3} and w["status"] == {"phase": "Ready"}
        assert w["metadata"]["generation"] == 1 and w["metadata"]["uid"]
        assert [n["metadata"]["name"] for n in api.list("v1", "Node")] == ["gpu-1"]
        gpu = api.get("v1", "Node", "gpu-1")
        assert gpu["metadata"]["labels"] == {"gpu": "yes", "nvidia.com/cc.mode": "on"}
        stored = api.get("example.com/v1", "Widget", "w1", "default")
        assert stored["status"] == {"phase": "Ready"}
        assert api.metrics.count("patch", "widgets/status") == 1
        assert api.metrics.count("create", "nodes") == 2 and api.metrics.count("delete", "nodes") == 1

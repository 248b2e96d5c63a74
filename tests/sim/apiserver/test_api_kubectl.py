"""kubectl (the real binary) against the simulator: discovery, get/describe/label/annotate/patch,
server-side apply, delete and get -w on nodes, a CRD and its objects, with kubectl's own output checked."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from apiserver_helpers import WIDGET_CRD

from ccgpu.sim.apiserver import ApiServer

KUBECTL = shutil.which("kubectl")
pytestmark = [pytest.mark.kubectl,
              pytest.mark.skipif(KUBECTL is None, reason="no kubectl binary on PATH (CI installs kubernetes-client)")]

NODE = {"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "gpu-node-1", "labels": {"nvidia.com/gpu.present": "true",
                                                      "node-role.kubernetes.io/worker": ""}}}
W1 = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1", "labels": {"tier": "a"}},
      "spec": {"size": 3, "color": "red"}}


class Kubectl:
    def __init__(self, kubeconfig: Path, workdir: Path):
        self.kubeconfig = kubeconfig
        self.workdir = workdir

    def argv(self, *args: str) -> list[str]:
        assert KUBECTL is not None
        return [KUBECTL, "--kubeconfig", str(self.kubeconfig), *args]

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=30,  # noqa: S603
                           env={"HOME": str(self.workdir), "PATH": "/usr/bin:/bin"})
        if ok:
            assert r.returncode == 0, f"kubectl {' '.join(args)} failed: {r.stderr}"
        return r

    def apply(self, obj: dict, *extra: str) -> subprocess.CompletedProcess[str]:
        path = self.workdir / f"{obj['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(obj))
        return self("apply", "--server-side", "-f", str(path), *extra, *self.validate_flags())

    def validate_flags(self) -> tuple[str, ...]:
        """kubectl before 1.26 validates client-side from protobuf OpenAPI v2, which the simulator does not
        serve (Debian bookworm ships kubectl 1.20); newer ones ask the server to validate (fieldValidation)."""
        if not hasattr(self, "_minor"):
            out = json.loads(self("version", "--client", "-o", "json").stdout)
            self._minor = int("".join(ch for ch in out["clientVersion"]["minor"] if ch.isdigit()) or 0)
        return ("--validate=false",) if self._minor < 26 else ()


@pytest.fixture
def server() -> Iterator[ApiServer]:
    with ApiServer() as api:
        yield api


@pytest.fixture
def kubectl(server: ApiServer, tmp_path: Path) -> Kubectl:
    return Kubectl(server.write_kubeconfig(tmp_path / "kubeconfig"), tmp_path)


def rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.strip().splitlines()]


def test_kubectl_version_and_api_resources_discovery(kubectl):
    assert "v1.32.0-ccgpu-sim" in kubectl("version").stdout
    names = {r[0] for r in rows(kubectl("api-resources", "--no-headers").stdout)}
    assert {"nodes", "pods", "namespaces", "daemonsets", "runtimeclasses", "leases",
            "customresourcedefinitions", "events"} <= names


def test_kubectl_node_lifecycle_get_describe_label_annotate_patch_delete(kubectl):
    assert "node/gpu-node-1 serverside-applied" in kubectl.apply(NODE).stdout
    table = rows(kubectl("get", "nodes").stdout)
    assert table[0] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert table[1][:3] == ["gpu-node-1", "Unknown", "worker"]

    assert "node/gpu-node-1 labeled" in kubectl("label", "node", "gpu-node-1", "nvidia.com/cc.mode=on").stdout
    assert "node/gpu-node-1 annotated" in kubectl("annotate", "node", "gpu-node-1", "ccgpu.dev/note=hi").stdout
    assert "node/gpu-node-1 patched" in kubectl("patch", "node", "gpu-node-1", "-p",
                                                '{"spec":{"unschedulable":true}}').stdout
    out = kubectl("describe", "node", "gpu-node-1").stdout
    assert "Name:               gpu-node-1" in out
    assert "nvidia.com/cc.mode=on" in out and "ccgpu.dev/note: hi" in out
    assert "Unschedulable:      true" in out
    selected = kubectl("get", "nodes", "-l", "nvidia.com/cc.mode in (on,devtools)", "-o", "name").stdout
    assert selected.split() == ["node/gpu-node-1"]
    assert kubectl("get", "nodes", "-l", "nvidia.com/cc.mode!=on", "-o", "name").stdout.strip() == ""
    assert rows(kubectl("get", "nodes").stdout)[1][1] == "Unknown,SchedulingDisabled"

    assert 'node "gpu-node-1" deleted' in kubectl("delete", "node", "gpu-node-1").stdout
    assert "No resources found" in kubectl("get", "nodes").stderr


def test_kubectl_crd_and_custom_objects(kubectl):
    kubectl.apply(WIDGET_CRD)
    assert "widgets.example.com" in kubectl("get", "crd").stdout
    assert "widget.example.com/w1 serverside-applied" in kubectl.apply(W1).stdout
    table = rows(kubectl("get", "widgets").stdout)
    assert table[0] == ["NAME", "SIZE", "AGE"] and table[1][:2] == ["w1", "3"]
    assert rows(kubectl("get", "wd", "w1", "--show-labels").stdout)[1][-1] == "tier=a"

    kubectl("label", "widget", "w1", "x=y")
    kubectl("annotate", "widget", "w1", "note=hi")
    kubectl("patch", "widget", "w1", "--type=merge", "-p", '{"spec":{"color":"blue"}}')
    obj = json.loads(kubectl("get", "widget", "w1", "-o", "json").stdout)
    assert obj["metadata"]["labels"] == {"tier": "a", "x": "y"}
    assert obj["metadata"]["annotations"] == {"note": "hi"} and obj["spec"] == {"size": 3, "color": "blue"}
    assert obj["metadata"]["generation"] == 2
    described = kubectl("describe", "widget", "w1").stdout
    assert "Kind:         Widget" in described and "Color:  blue" in described

    kubectl("delete", "widget", "w1")
    assert "No resources found in default namespace." in kubectl("get", "widgets").stderr


def test_kubectl_server_side_reapply_is_idempotent_and_conflicts_are_reported(kubectl, server):
    kubectl.apply(WIDGET_CRD)
    kubectl.apply(W1)
    rv = json.loads(kubectl("get", "widget", "w1", "-o", "json").stdout)["metadata"]["resourceVersion"]
    kubectl.apply(W1)
    again = json.loads(kubectl("get", "widget", "w1", "-o", "json").stdout)
    assert again["metadata"]["resourceVersion"] == rv

    kubectl("patch", "widget", "w1", "--type=merge", "-p", '{"spec":{"size":5}}')
    r = kubectl("apply", "--server-side", "-f", str(kubectl.workdir / "w1.yaml"), ok=False)
    assert r.returncode != 0
    assert 'Apply failed with 1 conflict: conflict with "kubectl-patch"' in r.stderr and ".spec.size" in r.stderr
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(kubectl.workdir / "w1.yaml"))
    assert json.loads(kubectl("get", "widget", "w1", "-o", "json").stdout)["spec"]["size"] == 3


def test_kubectl_reports_server_validation_errors(kubectl):
    kubectl.apply(WIDGET_CRD)
    kubectl.apply(W1)
    r = kubectl("patch", "widget", "w1", "--type=merge", "-p", '{"spec":{"size":0}}', ok=False)
    assert r.returncode == 1
    assert ('The Widget "w1" is invalid: spec.size: Invalid value: 0: spec.size in body should be greater than '
            "or equal to 1") in r.stderr
    r = kubectl("patch", "widget", "w1", "-p", '{"spec":{"size":5}}', ok=False)
    assert "application/strategic-merge-patch+json is not supported" in r.stderr
    r = kubectl("label", "node", "missing", "a=b", ok=False)
    assert 'Error from server (NotFound): nodes "missing" not found' in r.stderr


def test_kubectl_get_watch_prints_each_change(kubectl):
    kubectl.apply(NODE)
    proc = subprocess.Popen(kubectl.argv("get", "nodes", "-w", "--output-watch-events"),  # noqa: S603
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={"HOME": str(kubectl.workdir), "PATH": "/usr/bin:/bin"})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()  # type: ignore[union-attr]

    def next_line() -> list[str]:
        return lines.get(timeout=10).split()

    try:
        assert next_line()[:2] == ["EVENT", "NAME"]
        assert next_line()[:2] == ["ADDED", "gpu-node-1"]
        kubectl("label", "node", "gpu-node-1", "nvidia.com/cc.mode=on")
        assert next_line()[:2] == ["MODIFIED", "gpu-node-1"]
        kubectl("delete", "node", "gpu-node-1")
        assert next_line()[:2] == ["DELETED", "gpu-node-1"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_kubectl_create_generators_send_protobuf_that_the_server_decodes(kubectl):
    assert "namespace/team-a created" in kubectl("create", "namespace", "team-a").stdout
    kubectl("create", "configmap", "c1", "-n", "team-a", "--from-literal=mode=on")
    kubectl("create", "secret", "generic", "s1", "-n", "team-a", "--from-literal=pw=x")
    kubectl("create", "serviceaccount", "robot", "-n", "team-a")
    cm = json.loads(kubectl("get", "configmap", "c1", "-n", "team-a", "-o", "json").stdout)
    assert cm["data"] == {"mode": "on"} and "generateName" not in cm["metadata"]
    assert json.loads(kubectl("get", "secret", "s1", "-n", "team-a", "-o", "json").stdout)["data"] == {"pw": "eA=="}
    assert rows(kubectl("get", "sa", "-n", "team-a").stdout)[1][0] == "robot"
    r = kubectl("create", "deployment", "d", "--image=x", ok=False)
    assert r.returncode != 0 and "send JSON or YAML" in r.stderr


def test_kubectl_cordon_and_drain_evict_the_pods_on_a_node(kubectl, server):
    kubectl.apply(NODE)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "gpu-pod", "namespace": "default"},
           "spec": {"nodeName": "gpu-node-1", "containers": [{"name": "c", "image": "busybox"}]}}
    kubectl.apply(pod)
    out = kubectl("drain", "gpu-node-1", "--ignore-daemonsets", "--force", "--timeout=20s")
    assert "pod/gpu-pod evicted" in out.stdout and "node/gpu-node-1 drained" in out.stdout
    assert server.metrics.count("create", "pods/eviction") == 1
    assert server.get("v1", "Pod", "gpu-pod", "default") is None
    assert server.get("v1", "Node", "gpu-node-1")["spec"]["unschedulable"] is True

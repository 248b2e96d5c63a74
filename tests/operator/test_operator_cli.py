"""`ccgpu operator` as a process: refuses bad settings, runs against the simulator, serves metrics, exits on TERM."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess

import aiohttp
from typer.testing import CliRunner

from ccgpu.cli import app
from ccgpu.kube.client import make_async_client
from ccgpu.operator import policy
from ccgpu.operator.writer import ClusterPolicy, Node
from ccgpu.sim.apiserver import ApiServer
from tests.conftest import ccgpu_command, ccgpu_env

runner = CliRunner()


def test_operator_refuses_a_bad_namespace_and_a_missing_kubeconfig(tmp_path):
    result = runner.invoke(app, ["operator", "--namespace", "GPU_Ops"])
    assert result.exit_code == 2 and "DNS-1123" in result.output
    result = runner.invoke(app, ["operator", "--kubeconfig", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "is not a file" in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_operator_process_reconciles_serves_metrics_and_stops_on_sigterm(tmp_path):
    from lightkube import codecs
    from lightkube.resources.core_v1 import Namespace

    async with ApiServer() as api:
        kc = api.write_kubeconfig(tmp_path / "kubeconfig")
        client = make_async_client(api.kubeconfig_dict())
        await client.create(codecs.from_dict(policy.crd()))
        await client.create(Namespace.from_dict({"metadata": {"name": "ccgpu"}}))
        await client.create(Node.from_dict({"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": "gpu-1", "labels": {"feature.node.kubernetes.io/pci-10de.present": "true"}}}))
        await client.create(ClusterPolicy.from_dict({**policy.default_policy(), "spec": {
            **policy.default_policy()["spec"], "nfd": {"nodeFeatureRules": False}}}))
        port = _free_port()
        proc = subprocess.Popen(ccgpu_command("operator", "--kubeconfig", str(kc), "--standalone",  # noqa: S603
                                              "--metrics-port", str(port)),
                                env=ccgpu_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while True:
                status = (await client.get(ClusterPolicy, policy.SINGLETON_NAME)).to_dict().get("status") or {}
                if status.get("state"):
                    break
                assert proc.poll() is None, proc.stdout.read().decode()
                assert loop.time() < deadline, "the operator process never wrote a status"
                await asyncio.sleep(0.1)
            labels = (await client.get(Node, "gpu-1")).metadata.labels
            assert labels["nvidia.com/gpu.deploy.driver"] == "true"
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{port}/metrics") as r:
                    text = await r.text()
                async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                    assert r.status == 200
            assert 'ccgpu_operator_writes_total{kind="Node",verb="patch-node"} 1.0' in text
            proc.send_signal(signal.SIGTERM)
            rc = await loop.run_in_executor(None, proc.wait, 30)
            assert rc == 0, proc.stdout.read().decode()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            await client.close()

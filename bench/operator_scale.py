"""Benchmark: the operator converging a 5,000-node cluster (half vm-passthrough) from empty, then one node's
workload-config change. Prints one JSON object.

    python bench/operator_scale.py [--nodes 5000]

The API simulator runs in a subprocess (`ccgpu sim apiserver`) so the operator's memory is measured alone;
write counts come from the simulator's own request metering (/metrics). Targets (issue 6): writes made /
minimal writes ≤ 1.05, operator RSS < 250 MB, one node's change ≤ 2 writes and < 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from ccgpu import labels as L  # noqa: E402
from ccgpu.kube.client import make_async_client  # noqa: E402
from ccgpu.operator import policy  # noqa: E402
from ccgpu.operator.controller import Controller, OperatorConfig, run  # noqa: E402
from ccgpu.operator.writer import ClusterPolicy, Node  # noqa: E402

NS = "ccgpu"
GPU = {"feature.node.kubernetes.io/pci-10de.present": "true"}
OPERATOR_RESOURCES = ("nodes", "daemonsets", "runtimeclasses", "nodefeaturerules", "clusterpolicies/status")
NFR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "nodefeaturerules.nfd.k8s-sigs.io"},
    "spec": {"group": "nfd.k8s-sigs.io", "scope": "Cluster",
             "names": {"kind": "NodeFeatureRule", "plural": "nodefeaturerules", "singular": "nodefeaturerule",
                       "listKind": "NodeFeatureRuleList"},
             "versions": [{"name": "v1alpha1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                 "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
}
_METRIC = re.compile(r'apiserver_request_total\{verb="(\w+)",resource="([^"]+)",code="(\d+)"\} (\d+)')


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def _writes(server: str) -> dict[str, int]:
    """Successful write requests per resource, from the simulator's /metrics."""
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(f"{server}/metrics") as r:
        text = await r.text()
    out: dict[str, int] = {}
    for verb, resource, code, n in _METRIC.findall(text):
        if verb in ("create", "update", "patch", "delete") and code.startswith("2"):
            out[resource] = out.get(resource, 0) + int(n)
    return out


def _delta(after: dict[str, int], before: dict[str, int], resources=OPERATOR_RESOURCES) -> int:
    return sum(after.get(r, 0) - before.get(r, 0) for r in resources)


async def _until(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _converged(holder: list[Controller]) -> bool:
    c = holder[0] if holder else None
    return bool(c and c.last_plan is not None and c.last_plan.writes == [] and c.overlay.pending("nodes") == 0
                and c.overlay.pending("owned") == 0 and not c.wake.is_set())


async def bench(n_nodes: int) -> dict:
    from lightkube import codecs
    from lightkube.resources.core_v1 import Namespace
    from lightkube.types import PatchType

    tmp = Path(tempfile.mkdtemp(prefix="ccgpu-bench-"))
    kc_path = tmp / "kubeconfig"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    sim = subprocess.Popen([sys.executable, "-m", "ccgpu", "sim", "apiserver", "--port", "0",  # noqa: S603
                            "--kubeconfig-out", str(kc_path)], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        await _until(lambda: kc_path.exists() and kc_path.stat().st_size > 0, 30, "the simulator")
        import yaml

        client = make_async_client(kc_path)
        server = yaml.safe_load(kc_path.read_text())["clusters"][0]["cluster"]["server"].rstrip("/")
        await client.create(codecs.from_dict(policy.crd()))
        await client.create(codecs.from_dict(NFR_CRD))
        await client.create(Namespace.from_dict({"metadata": {"name": NS}}))
        sem = asyncio.Semaphore(32)

        async def make_node(i: int) -> None:
            labels = dict(GPU)
            if i % 2:
                labels[L.WORKLOAD_CONFIG] = "vm-passthrough"
            async with sem:
                await client.create(Node.from_dict({"apiVersion": "v1", "kind": "Node",
                                                    "metadata": {"name": f"node-{i:05d}", "labels": labels}}))

        t = time.perf_counter()
        await asyncio.gather(*(make_node(i) for i in range(n_nodes)))
        populate_s = time.perf_counter() - t
        spec = copy.deepcopy(policy.default_policy()["spec"])
        spec["kataManager"]["runtimeClasses"] = [{"name": "kata-qemu-nvidia-gpu-snp"},
                                                 {"name": "kata-qemu-nvidia-gpu-tdx"}]
        await client.create(ClusterPolicy.from_dict({"apiVersion": policy.API_VERSION, "kind": policy.KIND,
                                                     "metadata": {"name": policy.SINGLETON_NAME}, "spec": spec}))
        before = await _writes(server)
        rss_before, _ = _rss_mb()

        stop = asyncio.Event()
        holder: list[Controller] = []
        cfg = OperatorConfig(namespace=NS, image="ccgpu:bench", nvidia_repository="nvidia.example",
                             metrics_port=0, kubeconfig=kc_path, standalone=True)
        t0 = time.perf_counter()
        op = asyncio.create_task(run(cfg, stop, started=holder.append))
        await _until(lambda: _converged(holder), 600, "convergence")
        converge_s = time.perf_counter() - t0
        after = await _writes(server)
        rss_now, rss_peak = _rss_mb()
        plan_objects = len([k for k in holder[0].snapshot().owned])
        minimal = n_nodes + plan_objects + 1  # one label patch per GPU node, each object once, one status write

        # One node's workload config changes in the converged cluster.
        target = "node-00002"  # a container node
        reconciles = holder[0].reconciles
        before_one = await _writes(server)
        t1 = time.perf_counter()
        await client.patch(Node, target, {"metadata": {"labels": {L.WORKLOAD_CONFIG: "vm-passthrough"}}},
                           patch_type=PatchType.MERGE)

        async def switched() -> bool:
            labels = (await client.get(Node, target)).metadata.labels or {}
            return labels.get(L.deploy_label("vfio-manager")) == "true"

        await _until(switched, 30, "the node's labels to switch")
        one_s = time.perf_counter() - t1
        await _until(lambda: holder[0].reconciles > reconciles and _converged(holder), 30, "re-convergence")
        after_one = await _writes(server)
        one_writes = _delta(after_one, before_one) - 1  # minus the user's own patch

        stop.set()
        await op
        await client.close()
        made = _delta(after, before)
        return {
            "nodes": n_nodes,
            "vm_passthrough_nodes": n_nodes // 2,
            "populate_s": round(populate_s, 2),
            "converge_s": round(converge_s, 2),
            "writes_made": made,
            "writes_minimal": minimal,
            "writes_ratio": round(made / minimal, 4),
            "writes_by_resource": {r: after.get(r, 0) - before.get(r, 0) for r in OPERATOR_RESOURCES},
            "events_posted": after.get("events", 0) - before.get("events", 0),
            "reconciles": holder[0].reconciles,
            "rss_mb_before_operator": round(rss_before, 1),
            "rss_mb_converged": round(rss_now, 1),
            "rss_mb_peak": round(rss_peak, 1),
            "operator_rss_mb": round(rss_peak - rss_before, 1),
            "one_node_change_s": round(one_s, 3),
            "one_node_change_writes": one_writes,
            "targets": {"writes_ratio": "<= 1.05", "operator_rss_mb": "< 250", "one_node_change_writes": "<= 2",
                        "one_node_change_s": "< 1"},
        }
    finally:
        sim.terminate()
        sim.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(json.dumps(asyncio.run(bench(args.nodes)), indent=2))


if __name__ == "__main__":
    main()

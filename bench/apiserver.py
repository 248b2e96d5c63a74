"""Benchmark of the Kubernetes API simulator: 5,000 nodes created, listed, read, patched, and watched by 20
watchers. Prints one JSON document with requests/s for get, list and patch and watch fan-out latency.

    python bench/apiserver.py [--nodes 5000] [--watchers 20]

The server runs as `ccgpu sim apiserver` in its own process, the 20 watchers in another, the measuring client
in this one, as they would against a real cluster. Rates are the median of 3 rounds (best also shown), as the
machine may be shared. Targets (issue 3, on a 2-core machine): >= 1,500 patches/s
from one client, a list of 5,000 nodes in < 250 ms, watch delivery p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
SENT = "bench.ccgpu.dev/sent-ns"


def node(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": f"node-{i:05d}", "labels": {
                "kubernetes.io/hostname": f"node-{i:05d}", "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.workload.config": "vm-passthrough", "node-role.kubernetes.io/worker": ""}},
            "spec": {"podCIDR": f"10.{i // 250}.{i % 250}.0/24"},
            "status": {"capacity": {"cpu": "64", "memory": "512Gi", "nvidia.com/pgpu": "8"},
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                       "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Ubuntu 24.04",
                                    "kernelVersion": "6.8.0", "containerRuntimeVersion": "containerd://1.7"}}}


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def run_concurrently(n: int, concurrency: int, fn) -> float:
    """Run fn(i) for i in range(n) with `concurrency` in flight; returns elapsed seconds."""
    it = iter(range(n))

    async def worker():
        for i in it:
            await fn(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0


# --- watcher process ----------------------------------------------------------------------------------

def watcher_main(url: str, rv: str, watchers: int, expect: int, out: mp.Queue, ready: mp.Event) -> None:
    async def one(session: aiohttp.ClientSession, started: list) -> list[float]:
        lat: list[float] = []
        got = 0
        async with session.get(url + "/api/v1/nodes", params={"watch": "1", "resourceVersion": rv},
                               timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as r:
            started.append(1)
            if len(started) == watchers:
                ready.set()
            async for line in r.content:
                now = time.monotonic_ns()
                ev = json.loads(line)
                sent = (ev["object"]["metadata"].get("annotations") or {}).get(SENT)
                if sent:
                    lat.append((now - int(sent)) / 1e6)
                    got += 1
                    if got >= expect:
                        break
        return lat

    async def main() -> None:
        started: list = []
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as s:
            results = await asyncio.wait_for(asyncio.gather(*(one(s, started) for _ in range(watchers))), 300)
        out.put([x for r in results for x in r])

    asyncio.run(main())


# --- main ---------------------------------------------------------------------------------------------

async def bench(url: str, n_nodes: int, n_watchers: int, paced_rate: float) -> dict:
    res: dict = {}
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        async def create(i: int):
            async with s.post(url + "/api/v1/nodes", json=node(i)) as r:
                assert r.status == 201, await r.text()
                await r.read()

        t = await run_concurrently(n_nodes, 16, create)
        res["create_per_s"] = round(n_nodes / t)

        list_ms = []
        for _ in range(5):
            t0 = time.perf_counter()
            async with s.get(url + "/api/v1/nodes") as r:
                body = await r.read()
            list_ms.append((time.perf_counter() - t0) * 1000)
        assert len(json.loads(body)["items"]) == n_nodes
        res["list_5000_nodes_ms"] = {"p50": round(statistics.median(list_ms), 1), "max": round(max(list_ms), 1),
                                     "bytes": len(body)}
        res["list_per_s"] = round(1000 / statistics.median(list_ms), 1)
        t0 = time.perf_counter()
        async with s.get(url + "/api/v1/nodes", params={"labelSelector": "nvidia.com/gpu.present=true"}) as r:
            await r.read()
        res["list_5000_nodes_with_label_selector_ms"] = round((time.perf_counter() - t0) * 1000, 1)

        async def get(i: int):
            async with s.get(url + f"/api/v1/nodes/node-{i % n_nodes:05d}") as r:
                await r.read()

        n_get = min(2000, n_nodes)
        rates = [n_get / await run_concurrently(n_get, 16, get) for _ in range(3)]
        res["get_per_s"] = round(statistics.median(rates))
        res["get_per_s_best_of_3"] = round(max(rates))

        async def patch(i: int):
            body = {"metadata": {"labels": {"nvidia.com/cc.mode.state": "on" if i % 2 else "off"}}}
            async with s.patch(url + f"/api/v1/nodes/node-{i % n_nodes:05d}", json=body,
                               headers={"Content-Type": "application/merge-patch+json"}) as r:
                assert r.status == 200, await r.text()
                await r.read()

        n_patch = min(2000, n_nodes)
        rates = [n_patch / await run_concurrently(n_patch, 16, patch) for _ in range(3)]
        res["patch_per_s_one_client"] = round(statistics.median(rates))
        res["patch_per_s_one_client_best_of_3"] = round(max(rates))

        # 20 watchers in another process; first a throughput run under fan-out, then a paced latency run.
        async with s.get(url + "/api/v1/nodes", params={"limit": "1"}) as r:
            rv = (await r.json())["metadata"]["resourceVersion"]
        n_fan = 1000
        n_paced = int(paced_rate * 5)
        ctx = mp.get_context("fork")
        out, ready = ctx.Queue(), ctx.Event()
        proc = ctx.Process(target=watcher_main, args=(url, rv, n_watchers, n_fan + n_paced, out, ready))
        proc.start()
        if not ready.wait(60):
            raise RuntimeError("watchers did not start")

        async def stamped_patch(i: int):
            body = {"metadata": {"annotations": {SENT: str(time.monotonic_ns())}}}
            async with s.patch(url + f"/api/v1/nodes/node-{i % n_nodes:05d}", json=body,
                               headers={"Content-Type": "application/merge-patch+json"}) as r:
                assert r.status == 200, await r.text()
                await r.read()

        t = await run_concurrently(n_fan, 16, stamped_patch)
        res["patch_per_s_with_watchers"] = round(n_fan / t)
        await asyncio.sleep(1.0)  # let the fan-out backlog drain before the paced run
        t0 = time.perf_counter()
        for i in range(n_paced):
            await stamped_patch(n_fan + i)
            delay = t0 + (i + 1) / paced_rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        lat = await asyncio.get_running_loop().run_in_executor(None, out.get, True, 300)
        proc.join(30)
        # Latencies of the paced part only (the first n_fan per watcher were sent as fast as possible).
        paced = [x for i, x in enumerate(lat) if (i % (n_fan + n_paced)) >= n_fan]
        burst = [x for i, x in enumerate(lat) if (i % (n_fan + n_paced)) < n_fan]
        res["watch_fanout"] = {
            "watchers": n_watchers,
            "paced_patches_per_s": paced_rate,
            "events_delivered": len(lat),
            "latency_ms_p50": round(pct(paced, 50), 2),
            "latency_ms_p99": round(pct(paced, 99), 2),
            "latency_ms_max": round(max(paced), 2) if paced else None,
            "burst_latency_ms_p50": round(pct(burst, 50), 2),
            "burst_latency_ms_p99": round(pct(burst, 99), 2),
        }
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--watchers", type=int, default=20)
    ap.add_argument("--paced-rate", type=float, default=200.0, help="patches/s during the latency run")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory() as tmp:
        kc = Path(tmp) / "kubeconfig"
        server = subprocess.Popen([sys.executable, "-m", "ccgpu", "sim", "apiserver", "--kubeconfig-out", str(kc)],  # noqa: S603
                                  env=env, stdout=subprocess.PIPE, text=True)
        try:
            line = server.stdout.readline()  # type: ignore[union-attr]
            url = line.split(" at ", 1)[1].split(";", 1)[0].strip()
            res = asyncio.run(bench(url, args.nodes, args.watchers, args.paced_rate))
        finally:
            server.terminate()
            server.wait(10)
    res = {"benchmark": "apiserver", "nodes": args.nodes, "client_concurrency": 16,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "load_average_1m": round(os.getloadavg()[0], 2)},
           **res,
           "targets": {"patch_per_s_one_client": ">= 1500", "list_5000_nodes_ms": "< 250",
                       "watch_latency_ms_p99": "< 50"}}
    res["targets_met"] = {
        "patch_per_s_one_client": res["patch_per_s_one_client"] >= 1500,
        "list_5000_nodes_ms": res["list_5000_nodes_ms"]["p50"] < 250,
        "watch_latency_ms_p99": res["watch_fanout"]["latency_ms_p99"] < 50,
    }
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

"""Benchmark: the cluster-in-a-box converging at 10, 100 and 500 simulated nodes.

Usage: python bench/simulate.py [--sizes 10,100,500] [--profile 1xh200-snp] [--timeout 600]
For each size it starts a fresh cluster (the real operator and agents, one process), applies the default
ClusterPolicy and measures the time until every expected outcome holds, the API writes (and requests) the whole
system made meanwhile, and per-node writes. `growth` gives the ratio of each figure per 10x nodes (1.0 = linear).
Everything in the cluster reacts to changes (shared informers, per-node change signals); the backstop periods
that grow with the node count are in `Cluster.__init__`. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from ccgpu.sim.cluster import Cluster, parse_nodes  # noqa: E402


async def one(size: int, profile: str, timeout_s: float) -> dict:
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    workdir = Path(tempfile.mkdtemp(prefix="ccgpu-bench-", dir=base))
    try:
        t0 = time.monotonic()
        cluster = Cluster(parse_nodes(profile, size), workdir)
        await cluster.start()
        try:
            started_s = time.monotonic() - t0
            before = cluster.metrics()
            t1 = time.monotonic()
            await cluster.apply_policy()
            report = await cluster.wait_converged(timeout_s)
            converge_s = time.monotonic() - t1
            after = cluster.metrics()
        finally:
            await cluster.stop()
        writes = after["api_writes"] - before["api_writes"]
        return {"nodes": size, "converged": report.ok, "failed_count": len(report.failed()),
                "outcomes": len(report.outcomes), "failed": [o.what for o in report.failed()][:5],
                "start_seconds": round(started_s, 2), "converge_seconds": round(converge_s, 2),
                "api_writes": writes, "api_requests": after["api_requests"] - before["api_requests"],
                "writes_per_node": round(writes / size, 1)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,100,500")
    ap.add_argument("--profile", default="1xh200-snp")
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = [asyncio.run(one(n, args.profile, args.timeout)) for n in sizes]
    growth = []
    for a, b in zip(runs, runs[1:], strict=False):
        per10 = (b["nodes"] / a["nodes"]) / 10
        growth.append({
            "from": a["nodes"], "to": b["nodes"],
            "converge_seconds_ratio": round(b["converge_seconds"] / max(a["converge_seconds"], 1e-9) / per10, 2),
            "api_writes_ratio": round(b["api_writes"] / max(a["api_writes"], 1) / per10, 2),
        })
    print(json.dumps({"benchmark": "simulate", "profile": args.profile, "runs": runs, "growth_per_10x": growth},
                     indent=2))


if __name__ == "__main__":
    main()

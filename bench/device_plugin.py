"""Device-plugin latency: Allocate over the unix socket, and health change -> ListAndWatch update.

Runs the real DevicePluginAgent against ccgpu.sim.kubelet on a temporary fake VFIO host (8 GPUs), then prints
one JSON object. Targets (issue 5): Allocate p99 < 5 ms; health change seen by the kubelet < 200 ms; after a kubelet restart
(socket directory wiped) the plugin serves again, re-registers and lists its devices within 1 s.

    python bench/device_plugin.py [--allocations 2000] [--health-changes 40] [--restarts 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests" / "agents")]

from fakehost import FakeVfioHost  # noqa: E402

from ccgpu.agents import cdi  # noqa: E402
from ccgpu.agents.device_plugin.server import DevicePluginAgent, DevicePluginConfig  # noqa: E402
from ccgpu.hw.sysfs import Sysfs  # noqa: E402
from ccgpu.sim.kubelet import FakeKubelet  # noqa: E402

RESOURCE = "nvidia.com/pgpu"


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _summary(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms), "p50_ms": round(_pct(ms, 50), 3), "p99_ms": round(_pct(ms, 99), 3),
        "max_ms": round(max(ms), 3), "mean_ms": round(statistics.fmean(ms), 3),
    }


async def bench(allocations: int, health_changes: int, restarts: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="ccgpu-bench-"))
    try:
        host = FakeVfioHost(work / "host")
        for i in range(8):
            host.add(f"0000:{0x10 + i:02x}:00.0", group=20 + i, numa=i // 4)
        host.write_readiness()
        fs = Sysfs(work / "host")
        cdi.write_specs(fs, "/var/run/cdi", cdi.inventory(fs, host.devices()))
        config = DevicePluginConfig(host_root=str(work / "host"), plugin_dir=str(work / "dp"))
        agent = DevicePluginAgent(config)
        stop = asyncio.Event()
        async with FakeKubelet(work / "dp") as kubelet:
            task = asyncio.get_running_loop().create_task(agent.run(stop))
            ids = [str(20 + i) for i in range(8)]  # IOMMU groups 20..27
            await kubelet.wait_for(lambda k: set(k.health(RESOURCE)) == set(ids), timeout=10)

            # Allocate from another process, as the kubelet does: the plugin's event loop serves only the calls.
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--client", str(work / "dp" / "ccgpu-pgpu.sock"), str(allocations),
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 300)
            if proc.returncode != 0:
                raise RuntimeError(f"Allocate client failed with exit status {proc.returncode}")
            alloc_ms = json.loads(out)

            node = work / "host/dev/vfio/23"
            plugin = kubelet.plugins[RESOURCE]
            down_ms, up_ms = [], []
            for n in range(health_changes):
                restore = n % 2 == 1
                want = "Healthy" if restore else "Unhealthy"
                t0 = time.monotonic()
                node.touch() if restore else node.unlink()
                await kubelet.wait_for(lambda k, w=want: k.health(RESOURCE).get("23") == w, timeout=5)
                (up_ms if restore else down_ms).append((plugin.last_update - t0) * 1000)
            restart_ms = []
            for _ in range(restarts):
                t0 = time.monotonic()
                await kubelet.restart()  # wipes every socket, as a new kubelet does
                await kubelet.wait_for(lambda k: len(k.health(RESOURCE)) == 8, timeout=10)
                restart_ms.append((time.monotonic() - t0) * 1000)
            stop.set()
            await asyncio.wait_for(task, 10)
        return {
            "benchmark": "device_plugin",
            "python": platform.python_version(),
            "devices": 8,
            "health_period_ms": config.health_period_s * 1000,
            "allocate_latency": _summary(alloc_ms) | {"target_p99_ms": 5.0},
            "health_to_listandwatch_unhealthy": _summary(down_ms) | {"target_ms": 200.0},
            "health_to_listandwatch_healthy": _summary(up_ms) | {"target_ms": 200.0},
            "kubelet_restart_to_registered_and_listed": _summary(restart_ms) | {"target_ms": 1000.0},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def allocate_client(socket: str, allocations: int) -> list[float]:
    """Blocking gRPC client in its own process: Allocate one device at a time, latency of each call in ms."""
    import grpc

    from ccgpu.agents.device_plugin import api_pb2 as pb
    from ccgpu.agents.device_plugin import api_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"unix://{socket}") as channel:
        stub = pb_grpc.DevicePluginStub(channel)
        requests = [
            pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=[str(20 + n % 8)])])
            for n in range(8)
        ]
        for n in range(50):  # warm the channel
            stub.Allocate(requests[n % 8], timeout=5)
        out = []
        for n in range(allocations):
            t0 = time.perf_counter()
            stub.Allocate(requests[n % 8], timeout=5)
            out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--client":
        print(json.dumps(allocate_client(sys.argv[2], int(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allocations", type=int, default=2000)
    parser.add_argument("--health-changes", type=int, default=40)
    parser.add_argument("--restarts", type=int, default=10)
    args = parser.parse_args()
    logging.getLogger("ccgpu").setLevel(logging.ERROR)  # health flips are logged as warnings; keep stdout JSON
    print(json.dumps(asyncio.run(bench(args.allocations, args.health_changes, args.restarts)), indent=2))


if __name__ == "__main__":
    main()

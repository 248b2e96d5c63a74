"""CC-mode switch time: 8 GPUs whose reset takes 2 s each, switched off -> on by cc-manager.

Runs the real CCManager with the production gpu-admin-tools backend (one `nvidia_gpu_tools.py` process per
device and operation, here the emulator over a simulated HGX H100) against the API simulator, then prints one
JSON object. Target (issue 4): the switch takes < 1.5x one reset, because the resets run in parallel; the
same switch with resets forced one after another is reported beside it, with the API writes per switch.

    python bench/cc_switch.py [--reset-ms 2000] [--gpus 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src")]

from lightkube.models.meta_v1 import ObjectMeta  # noqa: E402
from lightkube.resources.core_v1 import Node  # noqa: E402

from ccgpu import labels  # noqa: E402
from ccgpu.agents.cc_manager import CCManager, CCManagerConfig, host_devices, host_has_tee  # noqa: E402
from ccgpu.hw.ccmode import GpuAdminToolsBackend  # noqa: E402
from ccgpu.hw.pci import BDF  # noqa: E402
from ccgpu.kube.client import make_async_client  # noqa: E402
from ccgpu.kube.nodes import NodeHandle  # noqa: E402
from ccgpu.sim import gpu_admin_tools  # noqa: E402
from ccgpu.sim.apiserver import ApiServer  # noqa: E402
from ccgpu.sim.host import SimulatedHost  # noqa: E402

NODE = "bench-node"
SHARED = Path(os.environ.get("CCGPU_SHARED", ROOT.parent / "shared"))


class SequentialResets:
    """The same backend with one device switched at a time (what a loop over the GPUs does)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.lock = asyncio.Lock()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def apply_cc(self, bdf: BDF, mode: str) -> str:
        async with self.lock:
            return await self.inner.apply_cc(bdf, mode)

    async def apply_ppcie(self, bdf: BDF, mode: str) -> str:
        async with self.lock:
            return await self.inner.apply_ppcie(bdf, mode)


async def bench(reset_ms: int, gpus: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="ccgpu-bench-cc-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        fixtures = SHARED / "fixtures"
        host = SimulatedHost.create(work / "host", "8xh100-snp", fixtures=fixtures if fixtures.is_dir() else None)
        for bdf in host.gpus():
            host.gpu(bdf).set_reset_duration(reset_ms)
        managed = set(host.gpus()[:gpus])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env[gpu_admin_tools.HOST_ROOT_ENV] = str(host.root)
        backend = GpuAdminToolsBackend(gpu_admin_tools.__file__, env=env)

        # one reset alone, as the tool does it (process start-up included)
        one = BDF.parse(host.gpus()[0])
        t0 = time.perf_counter()
        await backend.reset(one)
        one_reset_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        await backend.query_cc(one)
        tool_start_s = time.perf_counter() - t0  # a tool run that does no reset: what each process adds

        async with ApiServer() as api:
            client = make_async_client(api.kubeconfig_dict())
            deploy = {labels.deploy_label(op): "true" for op in
                      ("vfio-manager", "kata-sandbox-device-plugin", "sandbox-validator", "kata-manager")}
            await client.create(Node(metadata=ObjectMeta(name=NODE, labels=deploy)))
            fs = host.sysfs

            def devices():
                return [d for d in host_devices(fs) if d.is_nvswitch or d.bdf in managed]

            def manager(be) -> CCManager:
                return CCManager(NodeHandle(client, NODE, component="bench"), be, devices=devices,
                                 host_tee=lambda: host_has_tee(fs), config=CCManagerConfig(default_mode="off"))

            await manager(backend).reconcile()  # settle the node's labels: every GPU is off

            async def switch(be, mode: str) -> tuple[float, dict, int]:
                await client.patch(Node, NODE, {"metadata": {"labels": {labels.CC_MODE: mode}}})
                api.metrics.reset()
                t0 = time.perf_counter()
                result = await manager(be).reconcile()
                elapsed = time.perf_counter() - t0
                if result is None or result.error:
                    raise RuntimeError(f"switch to {mode} failed: {result}")
                return elapsed, api.metrics.snapshot(), api.metrics.writes()

            parallel_s, requests, writes = await switch(backend, "on")
            sequential_s, _, _ = await switch(SequentialResets(backend), "off")
            # the protocol alone, without tool start-ups: the same switch with the in-process backend
            in_process_s, _, _ = await switch(gpu_admin_tools.InProcessBackend(host), "devtools")
            await client.close()
        ratio = parallel_s / one_reset_s
        return {
            "gpus": gpus,
            "emulated_reset_ms": reset_ms,
            "one_reset_s": round(one_reset_s, 3),
            "one_tool_run_without_reset_s": round(tool_start_s, 3),
            "parallel_switch_s": round(parallel_s, 3),
            "sequential_switch_s": round(sequential_s, 3),
            "parallel_switch_in_process_backend_s": round(in_process_s, 3),
            "parallel_over_one_reset": round(ratio, 3),
            "target_parallel_over_one_reset": 1.5,
            "meets_target": ratio < 1.5,
            "api_writes_per_switch": writes,
            "api_requests_per_switch": requests,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reset-ms", type=int, default=2000, help="Emulated reset time per GPU (ms).")
    parser.add_argument("--gpus", type=int, default=8, choices=range(1, 9), metavar="1-8", help="GPUs to switch.")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args.reset_ms, args.gpus)), indent=2))


if __name__ == "__main__":
    main()

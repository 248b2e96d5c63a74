"""Benchmark the simulated host: build time per profile and the cost of one simulated kernel write.

Run from the checkout: `python bench/simhost_bench.py [--dir DIR] [--rounds N]`. Prints one JSON object:
`create_ms` per profile, `write_ms` (median of one sysfs write with its side effects), `vfio_cycle_ms` (the
vfio-manager sequence for one GPU: override, unbind, bind, then back), `reset_ms`, `state_bytes`.
Targets (so agents and the cluster-in-a-box can use simulated hosts freely): 8-GPU host built in < 1 s on
tmpfs, one write < 20 ms.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ccgpu.sim.host import SimulatedHost  # noqa: E402
from ccgpu.sim.profiles import list_profiles  # noqa: E402


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir", default="/dev/shm" if Path("/dev/shm").is_dir() else None, help="scratch directory"
    )
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ccgpu-simhost-bench-", dir=args.dir))
    try:
        create = {}
        for profile in list_profiles():
            start = time.perf_counter()
            SimulatedHost.create(scratch / profile.name, profile.name)
            create[profile.name] = _ms(time.perf_counter() - start)

        host = SimulatedHost.open(scratch / "8xh100-snp")
        fs = host.sysfs
        gpu = host.gpus()[0]
        base = f"sys/bus/pci/devices/{gpu}"
        writes, cycles, resets = [], [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            fs.write(f"{base}/driver_override", "vfio-pci")
            writes.append(time.perf_counter() - start)
            fs.write("sys/bus/pci/drivers/nvidia/unbind", gpu)
            fs.write("sys/bus/pci/drivers/vfio-pci/bind", gpu)
            fs.write(f"{base}/driver_override", "\n")
            fs.write("sys/bus/pci/drivers/vfio-pci/unbind", gpu)
            fs.write("sys/bus/pci/drivers_probe", gpu)
            cycles.append(time.perf_counter() - start)
            start = time.perf_counter()
            fs.write(f"{base}/reset", "1")
            resets.append(time.perf_counter() - start)
        result = {
            "benchmark": "simhost",
            "scratch": str(args.dir or tempfile.gettempdir()),
            "rounds": args.rounds,
            "create_ms": create,
            "write_ms": _ms(statistics.median(writes)),
            "vfio_cycle_ms": _ms(statistics.median(cycles)),
            "reset_ms": _ms(statistics.median(resets)),
            "state_bytes": (scratch / "8xh100-snp/.sim/state.json").stat().st_size,
        }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

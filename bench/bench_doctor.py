"""Benchmark: how long `ccgpu doctor` takes to read and check a host, and PCI enumeration alone.

Usage: python bench/bench_doctor.py [--root DIR] [--gpus N] [--rounds R]
Without --root it lays N copies of the real H100 capture (../shared/fixtures/h100-sxm5-80gb) plus 200 non-NVIDIA
functions into a temporary SEV-SNP host tree, the size of a loaded 8-GPU HGX node. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from ccgpu.hw.doctor import diagnose  # noqa: E402
from ccgpu.hw.pci import scan_devices  # noqa: E402
from ccgpu.hw.sysfs import Sysfs  # noqa: E402


def _write(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def build_host(root: Path, capture: Path, gpus: int, others: int) -> None:
    """A synthetic SNP host: `gpus` unbound H100s (one IOMMU group each) and `others` Intel functions."""
    attrs = {f.name: f.read_text() for f in (capture / "sysfs").iterdir() if not f.name.startswith("_")
             and f.name != "config.hex"}
    devices = [(f"0000:{0x18 + 0x10 * i:02x}:00.0", attrs) for i in range(gpus)]
    plain = dict(attrs, vendor="0x8086\n", device="0x0998\n", **{"class": "0x060400\n"},
                 modalias="pci:v00008086d00000998sv00008086sd00000000bc06sc04i00\n")
    devices += [(f"0000:{0x80 + i // 32:02x}:{i % 32:02x}.0", plain) for i in range(others)]
    for n, (bdf, files) in enumerate(devices):
        bus = bdf[5:7]
        ddir = f"sys/devices/pci0000:{bus}/{bdf}"
        for name, text in files.items():
            _write(root, f"{ddir}/{name}", text)
        os.makedirs(root / "sys/bus/pci/devices", exist_ok=True)
        os.symlink(f"../../../devices/pci0000:{bus}/{bdf}", root / f"sys/bus/pci/devices/{bdf}")
        os.makedirs(root / f"sys/kernel/iommu_groups/{n}/devices", exist_ok=True)
        os.symlink(f"../../../kernel/iommu_groups/{n}", root / f"{ddir}/iommu_group")
        os.symlink(f"../../../../devices/pci0000:{bus}/{bdf}", root / f"sys/kernel/iommu_groups/{n}/devices/{bdf}")
    _write(root, "proc/cpuinfo", "vendor_id\t: AuthenticAMD\nflags\t\t: fpu sev sev_es sev_snp svm\n")
    for p in ("sev", "sev_es", "sev_snp"):
        _write(root, f"sys/module/kvm_amd/parameters/{p}", "Y\n")
    _write(root, "sys/fs/cgroup/misc.capacity", "sev 410\nsev_es 99\n")
    _write(root, "proc/cmdline", "root=/dev/sda1 amd_iommu=on iommu=pt modprobe.blacklist=nouveau\n")
    _write(root, "proc/sys/kernel/osrelease", "6.17.0-5-generic\n")
    _write(root, "proc/modules", "vfio_pci 16384 0 - Live 0x0\nkvm_amd 217088 0 - Live 0x0\n")
    _write(root, "lib/modules/6.17.0-5-generic/modules.alias", "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n")
    _write(root, "dev/vfio/vfio", "")


def timed(fn, rounds: int) -> dict[str, float]:
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return {"mean_ms": round(statistics.fmean(samples), 3), "p50_ms": round(samples[len(samples) // 2], 3),
            "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root")
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--others", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=50)
    args = ap.parse_args()
    shared = Path(os.environ.get("CCGPU_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))
    scratch = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # in memory, like real sysfs
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        root = Path(args.root) if args.root else Path(tmp)
        if not args.root:
            build_host(root, shared / "fixtures" / "h100-sxm5-80gb", args.gpus, args.others)
        report = diagnose(str(root))
        out = {
            "bench": "doctor",
            "root": "synthetic" if not args.root else str(root),
            "gpus": sum(1 for d in report.devices if d.is_gpu),
            "pci_functions": len(Sysfs(root).listdir("sys/bus/pci/devices")),
            "ready": report.ready,
            "rounds": args.rounds,
            "diagnose": timed(lambda: diagnose(str(root)), args.rounds),
            "scan_all_devices": timed(lambda: scan_devices(Sysfs(root)), args.rounds),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()

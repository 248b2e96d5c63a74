"""Attestation benchmark: KBS handshake (auth + attest) and resource fetch latency on loopback, with a simulated
SNP guest and H100 through the production verifiers; SNP and SPDM verifications per second. Prints JSON.

    python bench/attest.py [--rounds 200] [--verify-seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from ccgpu.attest.appraisal import Appraiser  # noqa: E402
from ccgpu.attest.client import KbsClient  # noqa: E402
from ccgpu.attest.kbs import KbsServer, ResourceStore, serve  # noqa: E402
from ccgpu.attest.rvps import ReferenceValueStore  # noqa: E402
from ccgpu.attest.verify_gpu import verify_gpu_evidence  # noqa: E402
from ccgpu.attest.verify_snp import verify_snp_evidence  # noqa: E402
from ccgpu.sim.guest import SimGuest  # noqa: E402


def _pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _summary(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {"p50_ms": round(_pct(ms, 50), 3), "p99_ms": round(_pct(ms, 99), 3),
            "mean_ms": round(statistics.fmean(ms), 3), "n": len(ms)}


async def loopback(guest: SimGuest, rounds: int, data_dir: Path) -> dict[str, object]:
    rvps = ReferenceValueStore()
    for name, values in guest.reference_values().items():
        rvps.set(name, values)
    server = KbsServer(Appraiser(guest.verifiers(), reference_values=rvps), ResourceStore(data_dir),
                       admin_token="bench-admin-token-0123456789")
    server.resources.put("default", "key", "model", b"k" * 32)
    runner = await serve(server, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    handshake, resource, total = [], [], []
    try:
        for _ in range(rounds):
            async with KbsClient(url, guest.cpu, [guest.gpu]) as client:
                t0 = time.perf_counter()
                await client.attest()
                t1 = time.perf_counter()
                await client.get_resource("kbs:///default/key/model")
                t2 = time.perf_counter()
            handshake.append(t1 - t0)
            resource.append(t2 - t1)
            total.append(t2 - t0)
    finally:
        await runner.cleanup()
    return {"handshake_cpu_plus_1_gpu": _summary(handshake), "resource": _summary(resource),
            "handshake_plus_resource": _summary(total)}


def per_second(fn, seconds: float) -> float:
    count, end = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        fn()
        count += 1
    return round(count / (time.perf_counter() - start), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--verify-seconds", type=float, default=2.0)
    args = parser.parse_args()
    guest = SimGuest()
    platform, gpu = guest.cpu.platform, guest.gpu.gpus[0]
    report_data, nonce = bytes(range(64)), bytes(range(32))
    report = platform.report(report_data=report_data)
    spdm = gpu.evidence(nonce)
    with tempfile.TemporaryDirectory() as tmp:
        kbs = asyncio.run(loopback(guest, args.rounds, Path(tmp)))
    result = {
        "benchmark": "attest",
        "loopback": kbs,
        "verifications_per_second": {
            "snp_report": per_second(lambda: verify_snp_evidence(
                report, vcek_der=platform.vek_der, chain_pem=platform.chain_pem, expected_report_data=report_data),
                args.verify_seconds),
            "spdm_h100": per_second(lambda: verify_gpu_evidence(
                spdm, gpu.cert_chain_pem, root_pem=gpu.root_pem, expected_nonce=nonce), args.verify_seconds),
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

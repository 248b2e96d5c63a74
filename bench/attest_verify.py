"""Evidence verifications per second: SEV-SNP reports and NVIDIA SPDM reports, real vectors and simulated.

Run: python bench/attest_verify.py [--seconds 2] [--shared PATH]. Prints one JSON object. Each figure is full
verification through the public entry point (parse, chain, signature, bindings), single-threaded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from ccgpu.attest import verify_gpu_evidence, verify_snp_evidence  # noqa: E402
from ccgpu.attest.nvidia_certs import clear_chain_cache  # noqa: E402
from ccgpu.sim.tee import SimulatedGpu, SimulatedSnpPlatform  # noqa: E402


def rate(fn, seconds: float) -> dict:
    """Calls per second of `fn` over about `seconds`, plus per-call latency percentiles in microseconds."""
    fn()  # warm up caches and imports
    samples = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    samples.sort()
    total = sum(samples)
    return {
        "per_second": round(len(samples) / total, 1),
        "calls": len(samples),
        "p50_us": round(samples[len(samples) // 2] * 1e6, 1),
        "p99_us": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1e6, 1),
    }


def shared_dir(given: str | None) -> Path | None:
    for candidate in (given, os.environ.get("CCGPU_SHARED"), str(ROOT.parent / "shared")):
        if candidate and (Path(candidate) / "vectors").is_dir():
            return Path(candidate)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--shared", help="shared/ folder holding vectors/ (default: ../shared)")
    args = parser.parse_args()

    results: dict = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "seconds": args.seconds,
    }
    snp = SimulatedSnpPlatform()
    report = snp.report(report_data=b"r" * 64)
    results["snp_simulated"] = rate(
        lambda: verify_snp_evidence(
            report, vcek_der=snp.vek_der, chain_pem=snp.chain_pem, expected_report_data=b"r" * 64
        ),
        args.seconds,
    )
    gpu = SimulatedGpu()
    nonce = bytes(range(32))
    evidence = gpu.evidence(nonce)

    def verify_gpu() -> None:
        verify_gpu_evidence(evidence, gpu.cert_chain_pem, root_pem=gpu.root_pem, expected_nonce=nonce)

    def verify_gpu_cold() -> None:
        clear_chain_cache()
        verify_gpu()

    # warm: the GPU's chain was verified before (same boot, repeated attestation); cold: every chain is new
    results["spdm_simulated"] = rate(verify_gpu, args.seconds)
    results["spdm_simulated_cold_chain"] = rate(verify_gpu_cold, args.seconds)
    shared = shared_dir(args.shared)
    if shared is not None:
        v = shared / "vectors"
        real_report, vcek = (v / "snp/test-report.bin").read_bytes(), (v / "snp/test-vcek.der").read_bytes()
        results["snp_real_vector"] = rate(
            lambda: verify_snp_evidence(
                real_report, vcek_der=vcek, chain_pem=None, expected_report_data=None
            ),
            args.seconds,
        )
        real_ev = bytes.fromhex((v / "nvidia/hopperAttestationReport.txt").read_text())
        chain = (v / "nvidia/hopper_cert_chain_case1.txt").read_bytes()
        results["spdm_real_vector"] = rate(
            lambda: verify_gpu_evidence(real_ev, chain, root_pem=None, expected_nonce=None), args.seconds
        )
        results["spdm_real_vector_cold_chain"] = rate(
            lambda: (
                clear_chain_cache(),
                verify_gpu_evidence(real_ev, chain, root_pem=None, expected_nonce=None),
            ),
            args.seconds,
        )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

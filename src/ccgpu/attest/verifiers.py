"""The KBS's verifiers by TEE name: `snp` (primary evidence) and `nvidia` (additional devices), thin adapters
from the `Verifier` protocol the appraisal uses to `ccgpu.attest.trustee_evidence`, which reads the wire JSON
a real attestation-agent sends and runs the SNP/SPDM verifiers on the raw bytes.

Only VCEK/VLEK come from the evidence: the AMD and NVIDIA roots the chains must reach are the verifier's own
(`chain_pem`/`root_pem`, None = the vendors' built-in roots).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ccgpu.attest.trustee_evidence import verify_nvidia_json, verify_snp_json

GPU_CHECK_CLAIMS = (
    "x-nvidia-gpu-attestation-report-parsed",
    "x-nvidia-gpu-attestation-report-signature-verified",
    "x-nvidia-gpu-attestation-report-cert-chain-fwid-match",
    "x-nvidia-gpu-attestation-report-nonce-match",
)


@dataclass
class SnpVerifier:
    """`snp` evidence → Trustee snp claims, bound to the expected report_data and init-data digest."""

    chain_pem: bytes | None = None
    device_class: str = "cpu"

    def verify(self, evidence: Any, *, expected_binding: bytes, init_data_digest: bytes | None) -> dict[str, Any]:
        return verify_snp_json(
            evidence,
            chain_pem=self.chain_pem,
            expected_report_data=expected_binding,
            expected_host_data=init_data_digest,
        )


@dataclass
class NvidiaVerifier:
    """`nvidia` evidence → one claims dict per GPU (Trustee's Local mode: no OCSP, no RIMs; the policy compares
    measurements with reference values)."""

    root_pem: bytes | None = None
    device_class: str = "gpu"

    def verify(self, evidence: Any, *, expected_binding: bytes, init_data_digest: bytes | None) -> list[dict]:
        claims = verify_nvidia_json(evidence, root_pem=self.root_pem, expected_nonce=expected_binding)
        # The verifier raises on any failed check, so every GPU returned passed each of these.
        return [{**c, **dict.fromkeys(GPU_CHECK_CLAIMS, True)} for c in claims]


def default_verifiers(*, snp_chain_pem: bytes | None = None, gpu_root_pem: bytes | None = None) -> dict[str, Any]:
    return {"snp": SnpVerifier(snp_chain_pem), "nvidia": NvidiaVerifier(gpu_root_pem)}

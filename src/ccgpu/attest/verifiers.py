"""The KBS's verifiers for Trustee-shaped evidence: `snp` (primary) and `nvidia` (additional devices), adapters
from the wire JSON to `verify_snp_evidence` / `verify_gpu_evidence`.

Wire shapes: snp `{"attestation_report": <the sev crate's serde object, or the 1184 raw bytes as base64/hex>,
"cert_chain": [{"cert_type": "VCEK"|"VLEK"|..., "data": [DER bytes]}] | null}`; nvidia `{"device_evidence_list": [{"arch", "uuid", "evidence": base64
or hex SPDM, "certificate": base64 PEM chain}]}` as the attestation-agent sends it. Only VCEK/VLEK are taken
from the evidence: the AMD and NVIDIA roots the chains must reach are the verifier's own.
"""

from __future__ import annotations

import base64
import binascii
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccgpu.attest import sev_serde
from ccgpu.attest.errors import EvidenceFormatError, VerificationError
from ccgpu.attest.verify_gpu import verify_gpu_evidence
from ccgpu.attest.verify_snp import verify_snp_evidence

GPU_CHECK_CLAIMS = (
    "x-nvidia-gpu-attestation-report-parsed",
    "x-nvidia-gpu-attestation-report-signature-verified",
    "x-nvidia-gpu-attestation-report-cert-chain-fwid-match",
    "x-nvidia-gpu-attestation-report-nonce-match",
)


def decode_blob(value: Any, what: str) -> bytes:
    """Bytes from hex or base64 text (hex when it is all hex digits), or from a JSON list of byte values."""
    if isinstance(value, list):
        if not all(isinstance(b, int) and 0 <= b <= 255 for b in value):
            raise EvidenceFormatError(f"{what}.format", f"{what} as a list must hold byte values 0-255")
        return bytes(value)
    if not isinstance(value, str) or not value:
        raise EvidenceFormatError(f"{what}.format", f"{what} must be a base64 or hex string")
    if len(value) % 2 == 0 and all(c in string.hexdigits for c in value):
        return bytes.fromhex(value)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise EvidenceFormatError(f"{what}.format", f"{what} is neither hex nor base64") from e


@dataclass
class SnpVerifier:
    """`snp` evidence → Trustee snp claims. `chain_pem` None = AMD's built-in ASK/ARK for the generation."""

    chain_pem: bytes | None = None
    vcek_dir: Path | None = None
    device_class: str = "cpu"

    def verify(self, evidence: Any, *, expected_binding: bytes, init_data_digest: bytes | None) -> dict[str, Any]:
        if not isinstance(evidence, dict) or "attestation_report" not in evidence:
            raise EvidenceFormatError("snp.format", 'snp evidence must be {"attestation_report", "cert_chain"}')
        report_field = evidence["attestation_report"]
        if isinstance(report_field, dict):
            report = sev_serde.from_serde(report_field)
        else:
            report = decode_blob(report_field, "snp.attestation_report")
        vcek, vlek = self._endorsement(evidence.get("cert_chain"))
        return verify_snp_evidence(
            report,
            vcek_der=vcek,
            vlek_der=vlek,
            chain_pem=self.chain_pem,
            expected_report_data=expected_binding,
            expected_host_data=init_data_digest,
        )

    def _endorsement(self, chain: Any) -> tuple[bytes | None, bytes | None]:
        certs: dict[str, bytes] = {}
        if chain is not None:
            if not isinstance(chain, list) or not all(isinstance(c, dict) for c in chain):
                raise EvidenceFormatError("snp.cert_chain", 'cert_chain must be a list of {"cert_type", "data"}')
            for entry in chain:
                kind = str(entry.get("cert_type", "")).upper()
                if kind in ("VCEK", "VLEK"):
                    certs[kind] = decode_blob(entry.get("data"), f"snp.cert_chain.{kind}")
        if not certs and self.vcek_dir is not None and (self.vcek_dir / "vcek.der").is_file():
            certs["VCEK"] = (self.vcek_dir / "vcek.der").read_bytes()
        if not certs:
            raise VerificationError(
                "snp.vcek", "no VCEK or VLEK: the evidence's cert_chain has none and no offline VCEK is configured"
            )
        return certs.get("VCEK"), certs.get("VLEK") if "VCEK" not in certs else None


@dataclass
class NvidiaVerifier:
    """`nvidia` evidence → one claims dict per GPU (Trustee's Local mode: no OCSP, no RIMs; the policy compares
    measurements with reference values). `root_pem` None = NVIDIA's device identity root."""

    root_pem: bytes | None = None
    device_class: str = "gpu"

    def verify(self, evidence: Any, *, expected_binding: bytes, init_data_digest: bytes | None) -> list[dict]:
        devices = evidence.get("device_evidence_list") if isinstance(evidence, dict) else None
        if not isinstance(devices, list) or not devices:
            raise EvidenceFormatError("nvidia.format", "nvidia evidence must carry a non-empty device_evidence_list")
        out = []
        for i, device in enumerate(devices):
            if not isinstance(device, dict):
                raise EvidenceFormatError("nvidia.format", f"device_evidence_list[{i}] is not an object")
            spdm = decode_blob(device.get("evidence"), "nvidia.evidence")
            chain = decode_blob(device.get("certificate"), "nvidia.certificate")
            uuid = device.get("uuid")
            claims = verify_gpu_evidence(
                spdm,
                chain,
                root_pem=self.root_pem,
                expected_nonce=expected_binding,
                uuid=uuid if isinstance(uuid, str) else None,
                arch=str(device.get("arch", "HOPPER")),
            )
            # verify_gpu_evidence raises on any failed check, so reaching here means each of these passed.
            claims.update(dict.fromkeys(GPU_CHECK_CLAIMS, True))
            out.append(claims)
        return out


def default_verifiers(
    *, snp_chain_pem: bytes | None = None, gpu_root_pem: bytes | None = None, vcek_dir: Path | None = None
) -> dict[str, Any]:
    return {"snp": SnpVerifier(snp_chain_pem, vcek_dir), "nvidia": NvidiaVerifier(gpu_root_pem)}

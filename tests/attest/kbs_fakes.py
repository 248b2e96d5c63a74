"""Test doubles for the TEE side: an SNP-like CPU and an H100-like GPU that sign JSON evidence with P-384 test
keys, and the matching verifiers. They exercise every binding the real formats carry (report_data, host_data,
GPU nonce, signatures) so the KBS paths are the production ones; only the byte formats are simplified.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ccgpu.attest.errors import VerificationError

MEASUREMENT = "ab" * 48
GPU_MEASUREMENTS = {"0": "11" * 48, "1": "22" * 48, "2": "33" * 48}
DRIVER, VBIOS = "550.90.07", "96.00.9F.00.04"


def _sign(key: ec.EllipticCurvePrivateKey, body: dict[str, Any]) -> dict[str, str]:
    raw = json.dumps(body, sort_keys=True).encode()
    return {"body": base64.b64encode(raw).decode(),
            "signature": base64.b64encode(key.sign(raw, ec.ECDSA(hashes.SHA384()))).decode()}


def _open(key: ec.EllipticCurvePublicKey, evidence: Any) -> dict[str, Any]:
    if not isinstance(evidence, dict) or not isinstance(evidence.get("body"), str):
        raise VerificationError("fake.format", "evidence is not a signed body")
    raw = base64.b64decode(evidence["body"])
    try:
        key.verify(base64.b64decode(evidence.get("signature", "")), raw, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as e:
        raise VerificationError("fake.signature", "signature check failed") from e
    return json.loads(raw)


@dataclass
class FakeSnp:
    """A guest's CPU: `debug` sets the policy DEBUG bit; `host_data` is what the host set at launch."""

    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP384R1()))
    debug: bool = False
    measurement: str = MEASUREMENT
    host_data: bytes = bytes(32)
    tee: str = "snp"
    report_data_override: bytes | None = None
    reports: list[Any] = field(default_factory=list)

    def evidence(self, report_data: bytes) -> Any:
        body = {
            "report_data": (self.report_data_override or report_data).hex(),
            "host_data": self.host_data.hex(),
            "measurement": self.measurement,
            "policy_debug_allowed": self.debug,
            "policy_migrate_ma": False,
            "policy_abi_major": 0,
            "policy_single_socket": False,
            "platform_smt_enabled": True,
            "platform_tsme_enabled": False,
            "reported_tcb_bootloader": 3,
            "reported_tcb_tee": 0,
            "reported_tcb_snp": 20,
            "reported_tcb_microcode": 209,
        }
        ev = _sign(self.key, body)
        self.reports.append(ev)
        return ev


@dataclass
class FakeSnpVerifier:
    key: ec.EllipticCurvePublicKey
    device_class: str = "cpu"

    def verify(self, evidence: Any, *, expected_binding: bytes, init_data_digest: bytes | None) -> dict[str, Any]:
        claims = _open(self.key, evidence)
        if bytes.fromhex(claims.pop("report_data")) != expected_binding:
            raise VerificationError("fake.report_data", "report_data does not match the expected runtime data hash")
        host_data = bytes.fromhex(claims.pop("host_data"))
        if init_data_digest is not None and host_data != init_data_digest:
            raise VerificationError("fake.host_data", "host_data does not match the init-data digest")
        claims["report_data"] = expected_binding.hex()
        return claims


@dataclass
class FakeGpu:
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP384R1()))
    measurements: dict[str, str] = field(default_factory=lambda: dict(GPU_MEASUREMENTS))
    count: int = 1
    name: str = "nvidia"

    def evidence(self, nonce: bytes) -> Any:
        devices = []
        for i in range(self.count):
            body = {"nonce": nonce.hex(), "measurements": self.measurements,
                    "config": {"driver_version": DRIVER, "vbios_version": VBIOS}}
            devices.append({"arch": "HOPPER", "uuid": f"GPU-{i:08d}", **_sign(self.key, body)})
        return {"device_evidence_list": devices}


@dataclass
class FakeGpuVerifier:
    key: ec.EllipticCurvePublicKey
    device_class: str = "gpu"

    def verify(self, evidence: Any, *, expected_binding: bytes, init_data_digest: bytes | None) -> list[dict]:
        out = []
        for device in evidence["device_evidence_list"]:
            claims = _open(self.key, device)
            if bytes.fromhex(claims["nonce"]) != expected_binding:
                raise VerificationError("fake.nonce", "SPDM nonce does not match the expected GPU nonce")
            out.append({
                "arch": device["arch"], "uuid": device["uuid"], "measurements": claims["measurements"],
                "config": claims["config"],
                "x-nvidia-gpu-attestation-report-signature-verified": True,
                "x-nvidia-gpu-attestation-report-cert-chain-fwid-match": True,
                "x-nvidia-gpu-attestation-report-nonce-match": True,
            })
        return out


REFERENCE_VALUES = {
    "snp_launch_measurement": [MEASUREMENT],
    "snp_bootloader": [3], "snp_microcode": [209], "snp_snp_svn": [20], "snp_tee_svn": [0],
    "snp_smt_enabled": [True], "snp_tsme_enabled": [False], "snp_policy_abi_major": [0],
    "snp_single_socket": [False],
    **{f"gpu_measurement_{i}": [v] for i, v in GPU_MEASUREMENTS.items()},
    "allowed_driver_versions": [DRIVER], "allowed_vbios_versions": [VBIOS],
}

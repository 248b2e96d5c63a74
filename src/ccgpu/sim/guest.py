"""A simulated confidential guest for the KBS: `ccgpu.sim.tee`'s SNP platform and H100s behind the guest
client's attester interfaces, plus the reference values that describe exactly this guest.

The evidence goes through the production verifiers unchanged; only the trust anchors are the simulation's test
roots (`snp_chain_pem`, `gpu_root_pem`), which the simulated KBS is configured to trust.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccgpu.attest.attester import snp_evidence_json
from ccgpu.attest.snp import GuestPolicy
from ccgpu.attest.storage import atomic_write
from ccgpu.attest.verifiers import NvidiaVerifier, SnpVerifier
from ccgpu.sim.tee import SimulatedGpu, SimulatedSnpPlatform

GUEST_MEASUREMENT = hashlib.sha384(b"ccgpu simulated guest").digest()


@dataclass
class SimSnpAttester:
    """The guest's CPU: reports signed by the simulated platform's VCEK, which travels in `cert_chain`."""

    platform: SimulatedSnpPlatform = field(default_factory=SimulatedSnpPlatform)
    policy: GuestPolicy = field(default_factory=GuestPolicy.build)
    measurement: bytes = GUEST_MEASUREMENT
    host_data: bytes = b""
    tee: str = "snp"

    def evidence(self, report_data: bytes) -> dict[str, Any]:
        report = self.platform.report(
            report_data=report_data, measurement=self.measurement, host_data=self.host_data, policy=self.policy
        )
        kind = self.platform.signing_key.value.upper()  # the host's certificate table carries VCEK or VLEK
        return snp_evidence_json(report, {kind: self.platform.vek_der})


@dataclass
class SimGpuAttester:
    """The guest's GPUs (one simulated H100 by default), as the attestation-agent's nvidia attester emits them."""

    gpus: list[SimulatedGpu] = field(default_factory=lambda: [SimulatedGpu()])
    name: str = "nvidia"

    def evidence(self, nonce: bytes) -> dict[str, Any]:
        return {"device_evidence_list": [gpu.evidence_list_entry(nonce) for gpu in self.gpus]}


@dataclass
class SimGuest:
    """One simulated guest: its attesters, the verifiers that trust its test roots, its reference values."""

    cpu: SimSnpAttester = field(default_factory=SimSnpAttester)
    gpu: SimGpuAttester = field(default_factory=SimGpuAttester)

    def verifiers(self) -> dict[str, Any]:
        root = self.gpu.gpus[0].root_pem if self.gpu.gpus else None
        return {"snp": SnpVerifier(chain_pem=self.cpu.platform.chain_pem), "nvidia": NvidiaVerifier(root_pem=root)}

    def reference_values(self) -> dict[str, list[Any]]:
        """RVPS values under which this guest, as configured now, is affirmed."""
        tcb, policy = self.cpu.platform.tcb, GuestPolicy.build()
        values: dict[str, list[Any]] = {
            "snp_launch_measurement": [self.cpu.measurement.hex()],
            "snp_bootloader": [tcb.bootloader],
            "snp_microcode": [tcb.microcode],
            "snp_snp_svn": [tcb.snp],
            "snp_tee_svn": [tcb.tee],
            "snp_smt_enabled": [True],
            "snp_tsme_enabled": [True],
            "snp_policy_abi_major": [policy.abi_major],
            "snp_single_socket": [policy.single_socket],
        }
        for gpu in self.gpu.gpus:
            for index, value in gpu.measurements.items():
                values.setdefault(f"gpu_measurement_{index}", []).append(value.hex())
            values.setdefault("allowed_driver_versions", []).append(gpu.driver_version)
        vbios = self.gpu.gpus[0].vbios_version if self.gpu.gpus else b""
        if vbios:
            from ccgpu.attest.spdm import vbios_version

            values["allowed_vbios_versions"] = [vbios_version(vbios)]
        return values


# --- persistence: one simulated guest identity shared by the processes of a CLI session ----------------------
# The simulated platform and GPUs make fresh test keys per process; `ccgpu attest kbs --sim-guest DIR` and
# `ccgpu attest get-resource --attester sim --sim-guest DIR` run in different processes, so the identity (test
# keys and certificates, never real ones) is saved once and loaded by both. This reaches into ccgpu.sim.tee's
# attributes on purpose: it is the simulation's own state.

_STATE = "sim-guest.json"


def _key_pem(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _cert_pem(cert: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM).decode()


def save_guest(guest: SimGuest, directory: Path) -> None:
    """Write the guest's simulated identity (test keys, certificates, settings) to `directory`."""
    p = guest.cpu.platform
    r = p._roots
    state = {
        "snp": {
            "generation": p.generation.value, "signing_key": p.signing_key.value, "chip_id": p.chip_id.hex(),
            "tcb": dataclasses.asdict(p.tcb), "vek_key": _key_pem(p._vek_key), "vek": _cert_pem(p.vek),
            "roots": {name: (_key_pem(getattr(r, f"{name}_key")), _cert_pem(getattr(r, name)))
                      for name in ("ark", "ask", "asvk")},
            "measurement": guest.cpu.measurement.hex(), "policy": guest.cpu.policy.raw,
        },
        "gpus": [
            {"uuid": g.uuid, "measurements": {str(i): v.hex() for i, v in g.measurements.items()},
             "driver_version": g.driver_version, "vbios_version": g.vbios_version.hex(), "fwid": g.fwid.hex(),
             "leaf_key": _key_pem(g._leaf_key), "certs": [_cert_pem(c) for c in g._certs]}
            for g in guest.gpu.gpus
        ],
    }
    atomic_write(directory / _STATE, json.dumps(state, indent=1).encode(), mode=0o600)


def load_guest(directory: Path) -> SimGuest:
    """The simulated guest saved in `directory`."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key as _load_key

    from ccgpu.attest.snp import Generation, SigningKey, TcbVersion
    from ccgpu.sim import tee

    def load_pem_private_key(data: bytes, password: None) -> Any:
        # Our own saved test keys: skipping RSA consistency checks saves about a second per load.
        return _load_key(data, password, unsafe_skip_rsa_key_validation=True)

    state = json.loads((directory / _STATE).read_text())
    snp = state["snp"]
    platform = object.__new__(SimulatedSnpPlatform)
    platform.generation = Generation(snp["generation"])
    platform.signing_key = SigningKey(snp["signing_key"])
    platform.chip_id = bytes.fromhex(snp["chip_id"])
    platform.tcb = TcbVersion(**snp["tcb"])
    platform._vek_key = load_pem_private_key(snp["vek_key"].encode(), None)
    platform.vek = x509.load_pem_x509_certificate(snp["vek"].encode())
    roots = {}
    for name, (key, cert) in snp["roots"].items():
        roots[f"{name}_key"] = load_pem_private_key(key.encode(), None)
        roots[name] = x509.load_pem_x509_certificate(cert.encode())
    platform._roots = tee._AmdTestRoots(**roots)
    gpus = []
    for g in state["gpus"]:
        gpu = object.__new__(SimulatedGpu)
        gpu.uuid, gpu.driver_version = g["uuid"], g["driver_version"]
        gpu.measurements = {int(i): bytes.fromhex(v) for i, v in g["measurements"].items()}
        gpu.vbios_version, gpu.fwid = bytes.fromhex(g["vbios_version"]), bytes.fromhex(g["fwid"])
        gpu._leaf_key = load_pem_private_key(g["leaf_key"].encode(), None)
        gpu._certs = [x509.load_pem_x509_certificate(c.encode()) for c in g["certs"]]
        gpus.append(gpu)
    cpu = SimSnpAttester(platform, GuestPolicy(snp["policy"]), bytes.fromhex(snp["measurement"]))
    return SimGuest(cpu, SimGpuAttester(gpus))


def load_or_create_guest(directory: Path) -> SimGuest:
    """Load the simulated guest saved in `directory`, or make one and save it there."""
    if (directory / _STATE).is_file():
        return load_guest(directory)
    guest = SimGuest()
    save_guest(guest, directory)
    return guest


def kbs_trust(directory: Path) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Verifiers trusting the simulated guest in `directory`, and its reference values (for `attest kbs`)."""
    guest = load_or_create_guest(directory)
    return guest.verifiers(), guest.reference_values()

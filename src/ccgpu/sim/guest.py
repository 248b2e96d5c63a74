"""A simulated confidential guest for the KBS: `ccgpu.sim.tee`'s SNP platform and H100s behind the guest
client's attester interfaces, plus the reference values that describe exactly this guest.

The evidence goes through the production verifiers unchanged; only the trust anchors are the simulation's test
roots (`snp_chain_pem`, `gpu_root_pem`), which the simulated KBS is configured to trust.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ccgpu.attest.attester import snp_evidence_json
from ccgpu.attest.snp import GuestPolicy
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
        return snp_evidence_json(report, self.platform.vek_der)


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

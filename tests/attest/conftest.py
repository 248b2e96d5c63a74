"""Attestation fixtures: the real vectors from shared/vectors and simulated evidence sources (made once)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ccgpu.sim.tee import SimulatedGpu, SimulatedSnpPlatform


@dataclass(frozen=True)
class SnpVector:
    report: bytes
    vcek: bytes
    milan_chain: bytes
    genoa_chain: bytes


@dataclass(frozen=True)
class GpuVector:
    evidence: bytes
    chain: bytes
    root: bytes
    claims_text: str
    nonce: bytes = bytes.fromhex("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb")
    uuid: str = "1111-2222-33333-444444-555555"  # the uuid Trustee's claims file carries


@pytest.fixture(scope="session")
def snp_vector(shared) -> SnpVector:
    d = shared / "vectors" / "snp"
    return SnpVector(
        report=(d / "test-report.bin").read_bytes(),
        vcek=(d / "test-vcek.der").read_bytes(),
        milan_chain=(d / "milan_ask_ark_asvk.pem").read_bytes(),
        genoa_chain=(d / "genoa_ask_ark_asvk.pem").read_bytes(),
    )


@pytest.fixture(scope="session")
def gpu_vector(shared) -> GpuVector:
    d = shared / "vectors" / "nvidia"
    return GpuVector(
        evidence=bytes.fromhex((d / "hopperAttestationReport.txt").read_text().strip()),
        chain=(d / "hopper_cert_chain_case1.txt").read_bytes(),
        root=(d / "verifier_device_root.pem").read_bytes(),
        claims_text=(d / "hopperAttestationReport-claims.txt").read_text(),
    )


@pytest.fixture(scope="session")
def milan() -> SimulatedSnpPlatform:
    return SimulatedSnpPlatform()


@pytest.fixture(scope="session")
def sim_gpu() -> SimulatedGpu:
    return SimulatedGpu(uuid="GPU-11111111-2222-3333-4444-555555555555")


# The KBS tests' loopback fixture (kept in its own module so the two halves of the attest tests merge cleanly).
from kbs_fixtures import kbs, sim_guest, sim_kbs  # noqa: E402, F401

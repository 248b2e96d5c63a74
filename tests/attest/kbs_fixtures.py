"""Fixtures for the KBS tests (imported by the test modules that use them): a KBS on loopback with fake SNP/GPU verifiers and reference values installed."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from kbs_fakes import REFERENCE_VALUES, FakeGpu, FakeGpuVerifier, FakeSnp, FakeSnpVerifier

from ccgpu.attest.appraisal import Appraiser
from ccgpu.attest.ear import TokenSigner
from ccgpu.attest.kbs import KbsServer, ResourceStore, serve
from ccgpu.attest.policy import PolicyStore
from ccgpu.attest.rvps import ReferenceValueStore
from ccgpu.sim.guest import SimGuest

ADMIN_TOKEN = "test-admin-token-0123456789"
SECRET = b"model-decryption-key-\x00\x01\x02"


class Clock:
    """A clock tests move by hand, so session and token expiry need no sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Kbs:
    url: str
    server: KbsServer
    snp: FakeSnp
    gpu: FakeGpu
    clock: Clock


@pytest.fixture
async def kbs(tmp_path: Path):
    snp, gpu, clock = FakeSnp(), FakeGpu(), Clock()
    rvps = ReferenceValueStore(tmp_path / "rvps.json", clock=clock)
    payload = base64.b64encode(json.dumps(REFERENCE_VALUES).encode()).decode()
    rvps.ingest({"version": "0.1.0", "type": "sample", "payload": payload})
    appraiser = Appraiser(
        verifiers={"snp": FakeSnpVerifier(snp.key.public_key()), "nvidia": FakeGpuVerifier(gpu.key.public_key())},
        policies=PolicyStore(tmp_path / "policies"),
        reference_values=rvps,
        signer=TokenSigner(clock=clock),
    )
    server = KbsServer(appraiser, ResourceStore(tmp_path / "resources"), admin_token=ADMIN_TOKEN, clock=clock)
    server.resources.put("default", "key", "model", SECRET)
    runner = await serve(server, "127.0.0.1", 0)
    port = runner.addresses[0][1]
    try:
        yield Kbs(f"http://127.0.0.1:{port}", server, snp, gpu, clock)
    finally:
        await runner.cleanup()


@dataclass
class SimKbs:
    url: str
    server: KbsServer
    guest: SimGuest
    clock: Clock


@pytest.fixture(scope="session")
def sim_guest() -> SimGuest:
    """One simulated guest (SNP platform + H100) per test session: its RSA-4096 test roots take seconds."""
    return SimGuest()


@pytest.fixture
async def sim_kbs(tmp_path: Path, sim_guest: SimGuest):
    """A KBS with the production verifiers, trusting the simulated guest's test roots, on loopback."""
    clock = Clock()
    rvps = ReferenceValueStore(clock=clock)
    payload = base64.b64encode(json.dumps(sim_guest.reference_values()).encode()).decode()
    rvps.ingest({"version": "0.1.0", "type": "sample", "payload": payload})
    appraiser = Appraiser(sim_guest.verifiers(), reference_values=rvps, signer=TokenSigner(clock=clock))
    server = KbsServer(appraiser, ResourceStore(tmp_path / "resources"), admin_token=ADMIN_TOKEN, clock=clock)
    server.resources.put("default", "key", "model", SECRET)
    runner = await serve(server, "127.0.0.1", 0)
    try:
        yield SimKbs(f"http://127.0.0.1:{runner.addresses[0][1]}", server, sim_guest, clock)
    finally:
        await runner.cleanup()

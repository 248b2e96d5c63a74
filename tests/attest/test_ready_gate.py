"""The GPU ready gate: ready only after an affirming verdict for this attestation (closes reference
attestation.md §2.1: NVIDIA's guest sets ready at boot, via NVRC nvrc.smi.srs=1, without any verdict)."""

from __future__ import annotations

from kbs_fixtures import Kbs

from ccgpu.attest.client import KbsClient
from ccgpu.attest.ready_gate import FileReadyState, judge, run_ready_gate


class MemoryReadyState:
    def __init__(self, ready: bool = False) -> None:
        self.ready = ready
        self.calls: list[bool] = []

    def is_ready(self) -> bool:
        return self.ready

    def set_ready(self, ready: bool) -> None:
        self.calls.append(ready)
        self.ready = ready


async def test_affirmed_cpu_and_gpu_set_the_gpus_ready(kbs: Kbs):
    backend = MemoryReadyState()
    async with KbsClient(kbs.url, kbs.snp, [kbs.gpu]) as client:
        result = await run_ready_gate(client, backend, trusted_token_keys=kbs.server.trusted_token_keys)
    assert result.ready and backend.calls == [True]
    assert result.submods == {"cpu0": "affirming", "gpu0": "affirming"}


async def test_gpu_outside_reference_values_leaves_gpus_not_ready_even_if_boot_set_them_ready(kbs: Kbs):
    """NVIDIA's NVRC sets ready at boot (nvrc.smi.srs=1, attestation.md §2.1): the gate puts it back."""
    kbs.gpu.measurements = {**kbs.gpu.measurements, "2": "ff" * 48}
    backend = MemoryReadyState(ready=True)
    async with KbsClient(kbs.url, kbs.snp, [kbs.gpu]) as client:
        result = await run_ready_gate(client, backend)
    assert not result.ready and not backend.ready
    assert "gpu0=warning" in result.reason


async def test_refused_attestation_leaves_gpus_not_ready_and_says_why(kbs: Kbs):
    kbs.snp.report_data_override = bytes(64)
    backend = MemoryReadyState()
    async with KbsClient(kbs.url, kbs.snp, [kbs.gpu]) as client:
        result = await run_ready_gate(client, backend)
    assert not result.ready and backend.calls == [False]
    assert "attestation refused" in result.reason and "report_data" in result.reason


async def test_cpu_only_attestation_does_not_open_the_gpus(kbs: Kbs):
    backend = MemoryReadyState()
    async with KbsClient(kbs.url, kbs.snp, []) as client:
        result = await run_ready_gate(client, backend)
    assert not result.ready and "0 GPU(s)" in result.reason


async def test_token_from_an_untrusted_signer_does_not_open_the_gpus(kbs: Kbs):
    from ccgpu.attest.ear import TokenSigner

    backend = MemoryReadyState()
    async with KbsClient(kbs.url, kbs.snp, [kbs.gpu]) as client:
        result = await run_ready_gate(client, backend, trusted_token_keys=[TokenSigner().public_jwk])
    assert not result.ready and "not a trusted EAR signer" in result.reason


def test_token_for_another_tee_key_is_not_a_verdict_for_this_guest():
    mine = {"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}
    theirs = {**mine, "x": "c"}
    claims = {"submods": {
        "cpu0": {"ear.status": "affirming",
                 "ear.veraison.annotated-evidence": {"runtime_data_claims": {"tee-pubkey": theirs}}},
        "gpu0": {"ear.status": "affirming"}}}
    assert "another TEE key" in judge(claims, mine)
    assert judge(claims, theirs) is None


def test_file_backend_writes_the_state_atomically(tmp_path):
    backend = FileReadyState(tmp_path / "gpus-ready")
    assert not backend.is_ready()
    backend.set_ready(True)
    assert backend.is_ready() and (tmp_path / "gpus-ready").read_text() == "1\n"
    backend.set_ready(False)
    assert not backend.is_ready()


async def test_unreachable_kbs_fails_closed_even_if_boot_set_the_gpus_ready(kbs: Kbs):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    backend = MemoryReadyState(ready=True)
    async with KbsClient(f"http://127.0.0.1:{port}", kbs.snp, [kbs.gpu]) as client:
        result = await run_ready_gate(client, backend)
    assert not result.ready and not backend.ready and "did not complete" in result.reason


async def test_attester_failure_fails_closed(kbs: Kbs):
    class BrokenGpu:
        name = "nvidia"

        def evidence(self, nonce: bytes):
            raise RuntimeError("NVML: GPU is lost")

    backend = MemoryReadyState(ready=True)
    async with KbsClient(kbs.url, kbs.snp, [BrokenGpu()]) as client:
        result = await run_ready_gate(client, backend)
    assert not backend.ready and "GPU is lost" in result.reason

"""The GPU ready gate: a ccgpu guest's GPUs accept CUDA work only after the verifier affirmed CPU and GPU.

NVIDIA's stack sets the CC "ready" state at guest boot without any verdict (NVRC `nvrc.smi.srs=1`, earlier the
attestation-agent at evidence collection; reference attestation.md §2.1). Here the state is set only when the
KBS's EAR token for *this* attestation (our TEE key, our nonce) affirms every submod, and it is put back to
not-ready on any refusal, so a boot-time `srs=1` cannot leave an unattested GPU open.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ccgpu.attest import ear
from ccgpu.attest.client import KbsClient, KbsClientError
from ccgpu.attest.storage import atomic_write


class ReadyStateBackend(Protocol):
    """System-wide CC ready state of the guest's GPUs."""

    def is_ready(self) -> bool: ...

    def set_ready(self, ready: bool) -> None: ...


class NvmlReadyState:
    """NVML's `nvmlSystemSetConfComputeGpusReadyState` (nvidia-smi conf-compute -srs), read back after setting."""

    def _nvml(self) -> Any:
        try:
            import pynvml
        except ImportError as e:
            raise RuntimeError("the NVML ready-state backend needs nvidia-ml-py (pip install nvidia-ml-py)") from e
        pynvml.nvmlInit()
        return pynvml

    def is_ready(self) -> bool:
        nvml = self._nvml()
        try:
            return bool(nvml.nvmlSystemGetConfComputeGpusReadyState())
        finally:
            nvml.nvmlShutdown()

    def set_ready(self, ready: bool) -> None:
        nvml = self._nvml()
        try:
            nvml.nvmlSystemSetConfComputeGpusReadyState(1 if ready else 0)
            if bool(nvml.nvmlSystemGetConfComputeGpusReadyState()) != ready:
                raise RuntimeError("NVML did not apply the GPUs' ready state")
        finally:
            nvml.nvmlShutdown()


class FileReadyState:
    """The ready state kept in a file (`1`/`0`): the simulated guest's GPUs, and a marker others can watch."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def is_ready(self) -> bool:
        return self.path.exists() and self.path.read_text().strip() == "1"

    def set_ready(self, ready: bool) -> None:
        atomic_write(self.path, b"1\n" if ready else b"0\n", mode=0o644)


@dataclass
class GateResult:
    ready: bool
    reason: str
    submods: dict[str, str]


def judge(claims: dict[str, Any], tee_pubkey: dict[str, Any], *, min_gpus: int = 1) -> str | None:
    """Why this token must not open the GPUs, or None when it affirms this guest: cpu0 present and bound to
    our TEE key, at least `min_gpus` GPU submods, every submod `affirming`."""
    submods = claims.get("submods")
    if not isinstance(submods, dict) or "cpu0" not in submods:
        return "token has no cpu0 submod: the CPU was not appraised"
    try:
        bound = ear.tee_pubkey_of(claims)
    except ear.TokenError as e:
        return str(e)
    if any(bound.get(k) != tee_pubkey.get(k) for k in ("kty", "crv", "x", "y")):
        return "token was issued for another TEE key, not for this attestation"
    gpus = sorted(n for n in submods if n.startswith("gpu"))
    if len(gpus) < min_gpus:
        return f"token appraises {len(gpus)} GPU(s); at least {min_gpus} required"
    not_affirming = {n: s.get("ear.status") for n, s in submods.items() if s.get("ear.status") != "affirming"}
    if not_affirming:
        return f"not affirming: {', '.join(f'{n}={s}' for n, s in sorted(not_affirming.items()))}"
    return None


async def run_ready_gate(
    client: KbsClient,
    backend: ReadyStateBackend,
    *,
    trusted_token_keys: list[dict[str, Any]] | None = None,
    min_gpus: int = 1,
) -> GateResult:
    """Attest through `client`; set the GPUs ready only on an affirming verdict, else make sure they are not."""
    try:
        token = await client.attest()
        claims = ear.verify(token, trusted_token_keys) if trusted_token_keys else ear.unverified_claims(token)
    except (KbsClientError, ear.TokenError) as e:
        backend.set_ready(False)
        return GateResult(False, f"attestation refused: {e}", {})
    except Exception as e:  # unreachable KBS, attester failure, ...: the gate fails closed
        backend.set_ready(False)
        return GateResult(False, f"attestation did not complete: {type(e).__name__}: {e}", {})
    statuses = {n: s.get("ear.status", "none") for n, s in claims.get("submods", {}).items()}
    reason = judge(claims, client.tee_pubkey, min_gpus=min_gpus)
    if reason is not None:
        backend.set_ready(False)
        return GateResult(False, reason, statuses)
    backend.set_ready(True)
    return GateResult(True, "CPU and GPU evidence affirmed; GPUs set ready", statuses)

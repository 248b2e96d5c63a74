"""From an Attestation message to an EAR token: verify each piece of evidence against the binding the session
demands, turn it into Trustee-shaped claims, run the per-class policy, sign.

Verifiers plug in by TEE name through the small `Verifier` protocol, so the KBS does not care whether claims come
from the real SNP/SPDM verifiers or from a test double.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from typing import Any, Protocol

from ccgpu.attest import protocol
from ccgpu.attest.ear import Submod, TokenSigner
from ccgpu.attest.errors import VerificationError
from ccgpu.attest.jwe import JweError, load_public_jwk
from ccgpu.attest.policy import PolicyError, PolicyStore
from ccgpu.attest.rvps import ReferenceValueStore

HOST_DATA_LEN = 32


class Verifier(Protocol):
    """Verifies one TEE's evidence against the bytes it must carry (report_data or GPU nonce).

    Returns claims: one dict for a CPU TEE, a list of per-device dicts for a device TEE such as `nvidia`.
    Raises VerificationError naming the failed check.
    """

    device_class: str

    def verify(self, evidence: Any, *, expected_binding: bytes, init_data_digest: bytes | None) -> Any: ...


class AttestationRefused(Exception):
    """Attestation did not produce a token; `kind` is the RFC 7807 error kind, the message says why."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def init_data_digest(init_data: protocol.InitData) -> bytes:
    """HOST_DATA the host set for this init-data: hash named by its `algorithm` over the whole TOML, 32 bytes."""
    if init_data.format != "toml":
        raise AttestationRefused("InvalidRequest", f"init-data format {init_data.format!r}; accepted: toml")
    try:
        alg = tomllib.loads(init_data.body).get("algorithm", "sha384")
    except tomllib.TOMLDecodeError as e:
        raise AttestationRefused("InvalidRequest", f"init-data body is not TOML: {e}") from e
    if alg not in protocol.HASH_ALGORITHMS:
        raise AttestationRefused("InvalidRequest", f"init-data algorithm {alg!r}; accepted: sha256, sha384, sha512")
    return hashlib.new(alg, init_data.body.encode()).digest()[:HOST_DATA_LEN].ljust(HOST_DATA_LEN, b"\0")


@dataclass
class Appraiser:
    verifiers: dict[str, Verifier]
    policies: PolicyStore = field(default_factory=PolicyStore)
    reference_values: ReferenceValueStore = field(default_factory=ReferenceValueStore)
    signer: TokenSigner = field(default_factory=TokenSigner)
    policy_id: str = "default"

    def appraise(
        self, tee: str, nonce: str, attestation: protocol.Attestation, hash_alg: str = protocol.DEFAULT_HASH
    ) -> str:
        """Verify the whole Attestation against the session's TEE and nonce; return a signed EAR token."""
        runtime = attestation.runtime_data
        if runtime.nonce != nonce:
            raise AttestationRefused("AttestationFailed", "runtime-data nonce does not match the session's challenge")
        try:
            load_public_jwk(runtime.tee_pubkey)
        except JweError as e:
            raise AttestationRefused("InvalidRequest", str(e)) from e
        primary = self._verifier(tee)
        if primary.device_class != "cpu":
            raise AttestationRefused("InvalidRequest", f"tee {tee!r} is not a CPU TEE; a CPU TEE such as snp leads")
        additional = attestation.tee_evidence.additional_evidence
        expected = protocol.report_data(runtime.nonce, runtime.tee_pubkey, additional, hash_alg)
        host_data = init_data_digest(attestation.init_data) if attestation.init_data else None
        cpu_claims = self._verify(tee, primary, attestation.tee_evidence.primary_evidence, expected, host_data)
        cpu0: dict[str, Any] = {
            tee: cpu_claims,
            "report_data": expected.hex(),
            "runtime_data_claims": runtime.to_wire(),
        }
        if attestation.init_data:
            cpu0["init_data"] = host_data.hex() if host_data else ""
            cpu0["init_data_claims"] = tomllib.loads(attestation.init_data.body).get("data", {})
        devices = [("cpu0", "cpu", cpu0)]
        devices += self._devices(additional, runtime, hash_alg)
        reference = self.reference_values.snapshot()
        submods = {}
        for name, device_class, claims in devices:
            policy_id = f"{self.policy_id}_{device_class}"
            try:
                vector = self.policies.trust_vector(policy_id, claims, reference)
            except PolicyError as e:
                raise AttestationRefused("PolicyError", f"{name}: {e}") from e
            submods[name] = Submod(vector, policy_id, claims)
        return self.signer.issue(submods)

    def _devices(
        self, additional: str, runtime: protocol.RuntimeData, hash_alg: str
    ) -> list[tuple[str, str, dict[str, Any]]]:
        if not additional:
            return []
        try:
            by_tee = json.loads(additional)
        except ValueError as e:
            raise AttestationRefused("InvalidRequest", "additional_evidence is not a JSON string of an object") from e
        if not isinstance(by_tee, dict):
            raise AttestationRefused("InvalidRequest", "additional_evidence must be a JSON object {tee: evidence}")
        counters: dict[str, int] = {}
        out = []
        for tee, evidence in by_tee.items():
            verifier = self._verifier(tee)
            if tee == "nvidia":
                binding = protocol.gpu_nonce(runtime.nonce, runtime.tee_pubkey, hash_alg)
            else:
                binding = protocol.device_runtime_hash(runtime.nonce, runtime.tee_pubkey, hash_alg)
            claims = self._verify(tee, verifier, evidence, binding, None)
            for device in claims if isinstance(claims, list) else [claims]:
                n = counters.get(verifier.device_class, 0)
                counters[verifier.device_class] = n + 1
                out.append((f"{verifier.device_class}{n}", verifier.device_class, {tee: device}))
        return out

    def _verifier(self, tee: str) -> Verifier:
        try:
            return self.verifiers[tee]
        except KeyError:
            known = ", ".join(sorted(self.verifiers)) or "none"
            raise AttestationRefused("InvalidRequest", f"tee {tee!r} has no verifier here; accepted: {known}") from None

    @staticmethod
    def _verify(tee: str, verifier: Verifier, evidence: Any, binding: bytes, host_data: bytes | None) -> Any:
        try:
            return verifier.verify(evidence, expected_binding=binding, init_data_digest=host_data)
        except VerificationError as e:
            raise AttestationRefused("AttestationFailed", f"{tee} evidence refused: {e}") from e
        except (ValueError, TypeError, KeyError) as e:
            raise AttestationRefused("AttestationFailed", f"{tee} evidence malformed: {e}") from e

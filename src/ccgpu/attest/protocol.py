"""Trustee KBS protocol 0.4.0 (RCAR) messages with their exact wire field names, and the evidence binding.

The binding is what makes a real Trustee peer accept our evidence and us accept theirs: the CPU report_data is
H(JCS(runtime data)) zero-padded to 64 bytes, each additional device gets H(JCS({nonce, tee-pubkey})) and NVIDIA
GPUs use its first 32 bytes as the SPDM nonce (reference attestation.md §1.3).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import rfc8785
from pydantic import BaseModel, ConfigDict, Field

PROTOCOL_VERSION = "0.4.0"
HASH_ALGORITHMS = ("sha256", "sha384", "sha512")
DEFAULT_HASH = "sha384"
SNP_REPORT_DATA_LEN = 64
GPU_NONCE_LEN = 32


class ProtocolError(ValueError):
    """A message that does not follow the protocol; the text says what was wrong and what is accepted."""


class _Wire(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class Request(_Wire):
    """`POST /kbs/v0/auth` body."""

    version: str
    tee: str
    extra_params: dict[str, Any] | str = Field(default_factory=dict, alias="extra-params")


class Challenge(_Wire):
    """`POST /kbs/v0/auth` reply: a fresh base64 nonce of 32 random bytes."""

    nonce: str
    extra_params: dict[str, Any] | str = Field(default="", alias="extra-params")


class InitData(_Wire):
    format: str = "toml"
    body: str


class RuntimeData(_Wire):
    nonce: str
    tee_pubkey: dict[str, Any] = Field(alias="tee-pubkey")


class TeeEvidence(_Wire):
    primary_evidence: Any
    additional_evidence: str = ""


class Attestation(_Wire):
    """`POST /kbs/v0/attest` body."""

    init_data: InitData | None = Field(default=None, alias="init-data")
    runtime_data: RuntimeData = Field(alias="runtime-data")
    tee_evidence: TeeEvidence = Field(alias="tee-evidence")


def parse_message(model: type[_Wire], body: bytes) -> Any:
    """Parse a JSON body into a protocol model, or raise ProtocolError naming the problem."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"body is not JSON ({e}); a {model.__name__} JSON object is accepted") from e
    if not isinstance(data, dict):
        raise ProtocolError(f"body is a JSON {type(data).__name__}; a {model.__name__} JSON object is accepted")
    try:
        return model.model_validate(data)
    except Exception as e:  # pydantic.ValidationError, but keep the message short and field-named
        fields = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in getattr(e, "errors", lambda: [])()
        )
        raise ProtocolError(f"{model.__name__} is malformed ({fields or e})") from e


def new_nonce() -> str:
    import secrets

    return base64.b64encode(secrets.token_bytes(32)).decode()


def jcs(value: Any) -> bytes:
    """RFC 8785 canonical JSON."""
    return rfc8785.dumps(value)


def _hash(alg: str, data: bytes) -> bytes:
    if alg not in HASH_ALGORITHMS:
        raise ProtocolError(f"hash algorithm {alg!r} is not supported; accepted: {', '.join(HASH_ALGORITHMS)}")
    return hashlib.new(alg, data).digest()


def runtime_data_object(nonce: str, tee_pubkey: dict[str, Any], additional_evidence: str = "") -> dict[str, Any]:
    """The object whose JCS hash the CPU report_data carries; `additional-evidence` only when there is some."""
    obj: dict[str, Any] = {"nonce": nonce, "tee-pubkey": tee_pubkey}
    if additional_evidence:
        obj["additional-evidence"] = additional_evidence
    return obj


def report_data(nonce: str, tee_pubkey: dict[str, Any], additional_evidence: str = "", alg: str = DEFAULT_HASH) -> bytes:
    """CPU report_data: H(JCS(runtime data)), zero-padded to SNP's 64 bytes."""
    digest = _hash(alg, jcs(runtime_data_object(nonce, tee_pubkey, additional_evidence)))
    return digest.ljust(SNP_REPORT_DATA_LEN, b"\0")


def device_runtime_hash(nonce: str, tee_pubkey: dict[str, Any], alg: str = DEFAULT_HASH) -> bytes:
    """H(JCS({nonce, tee-pubkey})): the runtime data every additional device binds."""
    return _hash(alg, jcs({"nonce": nonce, "tee-pubkey": tee_pubkey}))


def gpu_nonce(nonce: str, tee_pubkey: dict[str, Any], alg: str = DEFAULT_HASH) -> bytes:
    """The SPDM nonce NVIDIA's attester uses: the first 32 bytes of the device runtime hash, zero-padded."""
    return device_runtime_hash(nonce, tee_pubkey, alg)[:GPU_NONCE_LEN].ljust(GPU_NONCE_LEN, b"\0")


def selected_hash(request: Request) -> str:
    """The hash the guest will use: sha384 unless it offered only others (Trustee's default is sha384)."""
    offered = request.extra_params.get("supported-hash-algorithms") if isinstance(request.extra_params, dict) else None
    if offered is None:
        return DEFAULT_HASH
    if not isinstance(offered, list) or not all(isinstance(a, str) for a in offered):
        raise ProtocolError("extra-params.supported-hash-algorithms must be a list of names such as \"sha384\"")
    if not offered or DEFAULT_HASH in offered:
        return DEFAULT_HASH
    for alg in offered:
        if alg in HASH_ALGORITHMS:
            return alg
    raise ProtocolError(f"none of the offered hash algorithms {offered!r} is supported; accepted: {', '.join(HASH_ALGORITHMS)}")

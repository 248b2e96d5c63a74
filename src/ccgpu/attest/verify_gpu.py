"""NVIDIA GPU SPDM evidence -> Trustee-shaped `nvidia` claims, or a VerificationError naming the failed check.

What Trustee's local NVIDIA verifier does (reference/attestation.md §1.8): parse, architecture, nonce, device
chain to the pinned root, FWID in the leaf == FWID in the signed opaque data, signature with the leaf key.
Claims: `{arch, uuid, measurements: {index: hex}, config: {opaque fields}}`. Like Trustee's local mode there
is no OCSP and no RIM comparison: the appraisal policy compares measurements with reference values.
"""

from __future__ import annotations

from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ccgpu.attest.errors import VerificationError
from ccgpu.attest.nvidia_certs import device_root, leaf_fwid, verify_device_chain
from ccgpu.attest.spdm import NONCE_SIZE, SpdmEvidence, opaque_claims

SUPPORTED_ARCHES = {"HOPPER": "Hopper"}


def verify_gpu_evidence(
    evidence: bytes,
    cert_chain_pem: bytes,
    *,
    root_pem: bytes | None,
    expected_nonce: bytes | None,
    uuid: str | None = None,
    arch: str = "HOPPER",
    now: datetime | None = None,
) -> dict:
    """Verify raw SPDM GET_MEASUREMENTS request||response bytes and return the GPU's claims.

    cert_chain_pem: the GPU's PEM chain, leaf first. root_pem: trust anchor, None = NVIDIA's device root.
    expected_nonce: the 32-byte SPDM nonce the verifier asked for (shorter is zero-padded); None skips.
    uuid / arch: as the attester reported them in `device_evidence_list` (uuid is copied into the claims).
    """
    pretty_arch = SUPPORTED_ARCHES.get(arch.upper())
    if pretty_arch is None:
        raise VerificationError(
            "nvidia.arch", f"GPU architecture {arch!r} cannot be verified locally; accepted: HOPPER"
        )
    parsed = SpdmEvidence.parse(evidence)
    request, response = parsed.request, parsed.response
    if not request.signature_requested:
        raise VerificationError(
            "spdm.signature", "GPU evidence is unsigned: the request did not ask for a signature"
        )
    if expected_nonce is not None:
        _check_nonce(request.nonce or b"", expected_nonce)
    chain = verify_device_chain(cert_chain_pem, device_root(root_pem), now)
    report_fwid = response.opaque_field("fwid")
    if report_fwid is None:
        raise VerificationError("nvidia.fwid", "GPU report opaque data carries no FWID (type 20)")
    cert_fwid = leaf_fwid(chain[0])
    if cert_fwid != report_fwid:
        raise VerificationError(
            "nvidia.fwid",
            f"leaf certificate FWID {cert_fwid.hex()} does not match report FWID {report_fwid.hex()}",
        )
    _verify_signature(parsed, chain[0].public_key())
    claims: dict = {
        "arch": pretty_arch,
        "measurements": {str(b.index): b.value.hex() for b in response.blocks},
        "config": opaque_claims(response.opaque),
    }
    if uuid is not None:
        claims["uuid"] = uuid
    return claims


def _check_nonce(actual: bytes, expected: bytes) -> None:
    if len(expected) > NONCE_SIZE:
        raise VerificationError(
            "spdm.nonce", f"expected GPU nonce is {len(expected)} bytes; at most {NONCE_SIZE}"
        )
    want = expected + bytes(NONCE_SIZE - len(expected))
    if actual != want:
        raise VerificationError(
            "spdm.nonce", f"GPU report nonce {actual.hex()} does not match the expected nonce {want.hex()}"
        )


def _verify_signature(evidence: SpdmEvidence, key: object) -> None:
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise VerificationError("spdm.signature", "GPU leaf key is not ECDSA P-384")
    signature = evidence.response.signature
    r, s = int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big")
    try:
        key.verify(encode_dss_signature(r, s), evidence.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except (InvalidSignature, ValueError) as exc:
        raise VerificationError(
            "spdm.signature", "GPU report signature does not verify with the leaf certificate's key"
        ) from exc

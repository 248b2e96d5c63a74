"""Resource replies as Trustee sends them: flattened JWE, ECDH-ES+A256KW + A256GCM, epk in the protected header.

Built on `cryptography` directly so every byte of the layout is ours to pin (reference attestation.md §1.6):
Concat KDF (RFC 7518 §4.6) with AlgorithmID "ECDH-ES+A256KW" and a 256-bit KEK, AES key wrap of a random CEK,
AES-256-GCM with a 12-byte IV and AAD = ASCII(base64url(protected)).
"""

from __future__ import annotations

import base64
import json
import os
import struct
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

ALG = "ECDH-ES+A256KW"
ENC = "A256GCM"
_CURVES = {"P-256": (ec.SECP256R1, 32), "P-384": (ec.SECP384R1, 48), "P-521": (ec.SECP521R1, 66)}


class JweError(ValueError):
    """A JWE or JWK that cannot be used; the text says which part and what is accepted."""


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_decode(text: str) -> bytes:
    if not isinstance(text, str):
        raise JweError("expected a base64url string")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as e:
        raise JweError(f"not base64url: {e}") from e


def public_jwk(key: ec.EllipticCurvePublicKey, alg: str | None = ALG) -> dict[str, str]:
    """An EC public key as a JWK in the member order Trustee's guest sends (kty, crv, alg, x, y)."""
    crv = {v[0]().name: k for k, v in _CURVES.items()}[key.curve.name]
    size = _CURVES[crv][1]
    nums = key.public_numbers()
    jwk: dict[str, str] = {"kty": "EC", "crv": crv}
    if alg:
        jwk["alg"] = alg
    jwk["x"] = b64u(nums.x.to_bytes(size, "big"))
    jwk["y"] = b64u(nums.y.to_bytes(size, "big"))
    return jwk


def load_public_jwk(jwk: Any) -> ec.EllipticCurvePublicKey:
    """Parse an EC public JWK; RSA and other types are refused by name."""
    if not isinstance(jwk, dict):
        raise JweError("tee-pubkey must be a JWK object")
    if jwk.get("kty") != "EC":
        raise JweError(f"tee-pubkey kty {jwk.get('kty')!r} is not supported; accepted: EC (P-256, P-384, P-521)")
    crv = jwk.get("crv")
    if crv not in _CURVES:
        raise JweError(f"tee-pubkey curve {crv!r} is not supported; accepted: {', '.join(_CURVES)}")
    curve, size = _CURVES[crv]
    x, y = b64u_decode(jwk.get("x", "")), b64u_decode(jwk.get("y", ""))
    if len(x) != size or len(y) != size:
        raise JweError(f"tee-pubkey x/y must be {size} bytes each for {crv}")
    try:
        return ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve()).public_key()
    except ValueError as e:
        raise JweError(f"tee-pubkey is not a point on {crv}") from e


def _kek(shared: bytes, apu: bytes = b"", apv: bytes = b"") -> bytes:
    def part(b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + b

    other = part(ALG.encode()) + part(apu) + part(apv) + struct.pack(">I", 256)
    return ConcatKDFHash(hashes.SHA256(), 32, other).derive(shared)


def encrypt(
    plaintext: bytes,
    recipient: dict[str, Any],
    *,
    _epk: ec.EllipticCurvePrivateKey | None = None,
    _cek: bytes | None = None,
    _iv: bytes | None = None,
) -> dict[str, str]:
    """Encrypt to the TEE key; returns the flattened JSON JWE. The underscored arguments pin bytes in tests."""
    peer = load_public_jwk(recipient)
    epk = _epk or ec.generate_private_key(peer.curve)
    epk_jwk = public_jwk(epk.public_key(), alg=None)
    # Member order as the reference shows Trustee's header: epk {crv, kty, x, y}.
    protected = {"alg": ALG, "enc": ENC, "epk": {k: epk_jwk[k] for k in ("crv", "kty", "x", "y")}}
    protected_b64 = b64u(json.dumps(protected, separators=(",", ":")).encode())
    kek = _kek(epk.exchange(ec.ECDH(), peer))
    cek = _cek or os.urandom(32)
    iv = _iv or os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected_b64.encode("ascii"))
    return {
        "protected": protected_b64,
        "encrypted_key": b64u(aes_key_wrap(kek, cek)),
        "iv": b64u(iv),
        "ciphertext": b64u(sealed[:-16]),
        "tag": b64u(sealed[-16:]),
    }


def decrypt(jwe: Any, key: ec.EllipticCurvePrivateKey) -> bytes:
    """Decrypt a flattened JWE with the TEE private key (the guest side)."""
    if not isinstance(jwe, dict):
        raise JweError("JWE must be a JSON object with protected, encrypted_key, iv, ciphertext, tag")
    missing = [k for k in ("protected", "encrypted_key", "iv", "ciphertext", "tag") if k not in jwe]
    if missing:
        raise JweError(f"JWE lacks {', '.join(missing)}")
    try:
        header = json.loads(b64u_decode(jwe["protected"]))
    except ValueError as e:
        raise JweError("JWE protected header is not base64url JSON") from e
    if not isinstance(header, dict) or header.get("alg") != ALG or header.get("enc") != ENC:
        raise JweError(f"JWE header must say alg {ALG} and enc {ENC}")
    epk = load_public_jwk(header.get("epk"))
    if epk.curve.name != key.curve.name:
        raise JweError("JWE epk curve does not match the TEE key")
    kek = _kek(key.exchange(ec.ECDH(), epk), b64u_decode(header.get("apu", "")), b64u_decode(header.get("apv", "")))
    try:
        cek = aes_key_unwrap(kek, b64u_decode(jwe["encrypted_key"]))
    except InvalidUnwrap as e:
        raise JweError("JWE key unwrap failed: not encrypted to this TEE key") from e
    aad = jwe["protected"].encode("ascii")
    if jwe.get("aad"):
        aad += b"." + jwe["aad"].encode("ascii")
    try:
        return AESGCM(cek).decrypt(
            b64u_decode(jwe["iv"]), b64u_decode(jwe["ciphertext"]) + b64u_decode(jwe["tag"]), aad
        )
    except Exception as e:
        raise JweError("JWE content failed authentication") from e

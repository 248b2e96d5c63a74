"""X.509 helpers shared by the AMD and NVIDIA chains: loading, validity windows, ECDSA signature checks."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.utils import CryptographyDeprecationWarning

from ccgpu.attest.errors import VerificationError

T = TypeVar("T")


@functools.cache
def builtin_pem(name: str) -> bytes:
    """A vendor root shipped in ccgpu/attest/roots (AMD ARK/ASK/ASVK per generation, NVIDIA device root)."""
    return resources.files("ccgpu.attest").joinpath("roots", name).read_bytes()


def _quietly(load: Callable[[bytes], T], data: bytes) -> T:
    # AMD VCEK certificates carry serial number 0, which RFC 5280 disallows; cryptography warns but parses them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return load(data)


def load_certificate(data: bytes, *, what: str, check: str) -> x509.Certificate:
    """One certificate from DER or PEM bytes; refuses anything else naming `what`."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return _quietly(x509.load_pem_x509_certificate, data)
        return _quietly(x509.load_der_x509_certificate, data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise VerificationError(
            check, f"{what} is not an X.509 certificate in DER or PEM form ({exc})"
        ) from exc


def load_pem_certificates(data: bytes, *, what: str, check: str) -> list[x509.Certificate]:
    """All certificates of a PEM bundle, in file order; an empty or garbled bundle is refused."""
    try:
        certs = _quietly(x509.load_pem_x509_certificates, data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise VerificationError(check, f"{what} is not a PEM certificate bundle ({exc})") from exc
    if not certs:
        raise VerificationError(check, f"{what} holds no certificate")
    return certs


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def check_validity(cert: x509.Certificate, now: datetime | None, *, what: str, check: str) -> None:
    """Refuse a certificate outside its validity window at `now` (default: the current time)."""
    at = now or datetime.now(UTC)
    if at < cert.not_valid_before_utc:
        raise VerificationError(check, f"{what} is not valid before {cert.not_valid_before_utc.isoformat()}")
    if at > cert.not_valid_after_utc:
        raise VerificationError(check, f"{what} expired at {cert.not_valid_after_utc.isoformat()}")


def verify_ecdsa_issued(child: x509.Certificate, issuer: x509.Certificate, *, what: str, check: str) -> None:
    """`child` names `issuer` and carries a valid ECDSA signature by the issuer's key."""
    if child.issuer != issuer.subject:
        raise VerificationError(
            check,
            f"{what}: issuer {child.issuer.rfc4514_string()!r} is not {issuer.subject.rfc4514_string()!r}",
        )
    key = issuer.public_key()
    algorithm = child.signature_hash_algorithm
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(algorithm, hashes.HashAlgorithm):
        raise VerificationError(check, f"{what}: issuer key or signature is not ECDSA")
    try:
        key.verify(child.signature, child.tbs_certificate_bytes, ec.ECDSA(algorithm))
    except InvalidSignature as exc:
        raise VerificationError(
            check, f"{what}: signature does not verify with {common_name(issuer)!r}"
        ) from exc

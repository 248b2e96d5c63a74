"""NVIDIA GPU device identity chain: leaf (per boot, GSP FMC) -> ... -> NVIDIA Device Identity CA.

Every certificate is checked against the next one (ECDSA P-384), intermediates must be CAs, the chain must end
at the trusted root (NVIDIA's, shipped in roots/, unless the caller passes another), and the leaf's TCG DICE
TcbInfo extension carries the firmware id (FWID, its last 48 bytes) that the signed report's opaque data must
repeat (reference/attestation.md §4.1-4.2). OCSP is out of scope here: it needs NVIDIA's service.
"""

from __future__ import annotations

import functools
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ccgpu.attest.certs import (
    builtin_pem,
    check_validity,
    common_name,
    load_certificate,
    load_pem_certificates,
    verify_ecdsa_issued,
)
from ccgpu.attest.errors import VerificationError

OID_TCG_DICE_TCB_INFO = "2.23.133.5.4.1"
FWID_SIZE = 48
DEVICE_ROOT_PEM = "nvidia_device_identity_ca.pem"


def device_root(root_pem: bytes | None) -> x509.Certificate:
    """The trust anchor: `root_pem` if given, else NVIDIA's device identity root."""
    data = root_pem if root_pem is not None else builtin_pem(DEVICE_ROOT_PEM)
    return load_certificate(data, what="GPU device root", check="nvidia.root")


def verify_device_chain(
    chain_pem: bytes, root: x509.Certificate, now: datetime | None = None
) -> list[x509.Certificate]:
    """Verify the leaf-first PEM chain up to `root`; return it (root included).

    Signature checks of a chain already verified against the same root are remembered (the same GPU boot
    presents the same chain at every attestation); validity windows are checked on every call.
    """
    if not isinstance(chain_pem, bytes | bytearray | memoryview):
        raise VerificationError(
            "nvidia.chain", f"GPU certificate chain must be PEM bytes, got {type(chain_pem).__name__}"
        )
    certs = list(_verified_chain(bytes(chain_pem), root.public_bytes(serialization.Encoding.DER)))
    for position, cert in enumerate(certs):
        check_validity(
            cert, now, what=f"GPU chain certificate {position} {common_name(cert)!r}", check="nvidia.chain"
        )
    return certs


def clear_chain_cache() -> None:
    """Forget verified chains (benchmarks measure the cold path with it)."""
    _verified_chain.cache_clear()


@functools.lru_cache(maxsize=256)
def _verified_chain(chain_pem: bytes, root_der: bytes) -> tuple[x509.Certificate, ...]:
    """Signature and structure checks; only successes are cached (lru_cache does not keep exceptions)."""
    root = load_certificate(root_der, what="GPU device root", check="nvidia.root")
    certs = load_pem_certificates(chain_pem, what="GPU certificate chain", check="nvidia.chain")
    if certs[-1] != root:
        if certs[-1].issuer != root.subject or certs[-1].issuer == certs[-1].subject:
            raise VerificationError(
                "nvidia.root",
                f"GPU certificate chain ends at {common_name(certs[-1])!r}, which is neither the trusted root "
                f"{common_name(root)!r} nor issued by it (a self-signed root must be the trusted one itself)",
            )
        certs.append(root)
    if len(certs) < 2:
        raise VerificationError(
            "nvidia.chain", "GPU certificate chain holds no device certificate, only the root"
        )
    verify_ecdsa_issued(root, root, what=f"root {common_name(root)!r}", check="nvidia.root")
    for position, (child, issuer) in enumerate(zip(certs, certs[1:], strict=False)):
        label = f"GPU chain certificate {position} {common_name(child)!r}"
        verify_ecdsa_issued(child, issuer, what=label, check="nvidia.chain")
        if not _is_ca(issuer):
            raise VerificationError(
                "nvidia.chain", f"{common_name(issuer)!r} signs certificates but is not a CA"
            )
    return tuple(certs)


def leaf_fwid(leaf: x509.Certificate) -> bytes:
    """The FWID the leaf certificate attests: last 48 bytes of its DICE TcbInfo extension."""
    for ext in leaf.extensions:
        if ext.oid.dotted_string == OID_TCG_DICE_TCB_INFO and isinstance(
            ext.value, x509.UnrecognizedExtension
        ):
            if len(ext.value.value) < FWID_SIZE:
                raise VerificationError(
                    "nvidia.fwid", "leaf certificate DICE TcbInfo is too short to hold a FWID"
                )
            return ext.value.value[-FWID_SIZE:]
    raise VerificationError(
        "nvidia.fwid", f"leaf certificate has no DICE TcbInfo extension ({OID_TCG_DICE_TCB_INFO})"
    )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False

"""AMD's SEV-SNP key hierarchy: ARK -> ASK -> VCEK and ARK -> ASVK -> VLEK, per processor generation.

ARK, ASK and ASVK are RSA-4096 certificates signed with RSASSA-PSS/SHA-384 (salt 48); the VCEK/VLEK is a
P-384 key whose certificate carries the TCB it was derived from and (VCEK) the chip id as extensions
(OIDs 1.3.6.1.4.1.3704.1.*, reference/attestation.md §3). AMD's roots per generation ship in roots/;
a caller may pass another ARK (the simulator's) and it goes through exactly the same checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ccgpu.attest import der
from ccgpu.attest.certs import builtin_pem, check_validity, common_name, load_pem_certificates
from ccgpu.attest.errors import VerificationError
from ccgpu.attest.snp import Generation, SigningKey

AMD_OID = "1.3.6.1.4.1.3704.1"
OID_STRUCT_VERSION = f"{AMD_OID}.1"
OID_PRODUCT_NAME = f"{AMD_OID}.2"
OID_BL_SPL = f"{AMD_OID}.3.1"
OID_TEE_SPL = f"{AMD_OID}.3.2"
OID_SNP_SPL = f"{AMD_OID}.3.3"
OID_UCODE_SPL = f"{AMD_OID}.3.8"
OID_FMC_SPL = f"{AMD_OID}.3.9"
OID_HWID = f"{AMD_OID}.4"

PSS_SALT_LENGTH = 48


def amd_pss() -> padding.PSS:
    """The padding AMD signs its certificates with."""
    return padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=PSS_SALT_LENGTH)


@dataclass(frozen=True)
class AmdChain:
    """The generation's root (ARK), its VCEK signer (ASK) and, when present, its VLEK signer (ASVK)."""

    ark: x509.Certificate
    ask: x509.Certificate
    asvk: x509.Certificate | None = None

    @classmethod
    def from_pem(cls, pem: bytes) -> AmdChain:
        """Pick ARK (self-issued), ASVK (CN names VLEK) and ASK out of a PEM bundle in any order."""
        certs = load_pem_certificates(pem, what="AMD chain", check="amd.chain")
        arks = [c for c in certs if c.subject == c.issuer]
        asvks = [c for c in certs if c.subject != c.issuer and "VLEK" in common_name(c).upper()]
        asks = [c for c in certs if c.subject != c.issuer and c not in asvks]
        if len(arks) != 1 or len(asks) != 1 or len(asvks) > 1:
            raise VerificationError(
                "amd.chain",
                f"AMD chain must hold one ARK (self-signed), one ASK and at most one ASVK; got {len(arks)} ARK, "
                f"{len(asks)} ASK, {len(asvks)} ASVK",
            )
        return cls(ark=arks[0], ask=asks[0], asvk=asvks[0] if asvks else None)

    @classmethod
    def builtin(cls, generation: Generation) -> AmdChain:
        """AMD's published ARK/ASK/ASVK for `generation`."""
        return cls.from_pem(builtin_pem(f"{generation.value.lower()}_ask_ark_asvk.pem"))

    def verify(self, now: datetime | None = None) -> None:
        """ARK self-signature, ASK and ASVK signed by the ARK, all within their validity windows."""
        verify_pss_issued(self.ark, self.ark, what="ARK", check="amd.ark")
        check_validity(self.ark, now, what="ARK certificate", check="amd.ark")
        verify_pss_issued(self.ask, self.ark, what="ASK", check="amd.ask")
        check_validity(self.ask, now, what="ASK certificate", check="amd.ask")
        if self.asvk is not None:
            verify_pss_issued(self.asvk, self.ark, what="ASVK", check="amd.asvk")
            check_validity(self.asvk, now, what="ASVK certificate", check="amd.asvk")


def verify_pss_issued(child: x509.Certificate, issuer: x509.Certificate, *, what: str, check: str) -> None:
    """`child` names `issuer` and is signed by its RSA key with RSASSA-PSS/SHA-384, salt 48."""
    issuer_name = "itself" if child is issuer else common_name(issuer)
    if child.issuer != issuer.subject:
        raise VerificationError(
            check, f"{what} is not issued by {issuer_name} (its issuer is {child.issuer.rfc4514_string()!r})"
        )
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise VerificationError(check, f"{what} issuer {issuer_name} does not have an RSA key")
    try:
        key.verify(child.signature, child.tbs_certificate_bytes, amd_pss(), hashes.SHA384())
    except InvalidSignature as exc:
        raise VerificationError(
            check, f"{what} signature does not verify with {issuer_name} (RSA-PSS SHA-384 salt 48)"
        ) from exc


@dataclass(frozen=True)
class VekExtensions:
    """What a VCEK/VLEK certificate says about the platform it belongs to."""

    product_name: str | None
    bl_spl: int | None
    tee_spl: int | None
    snp_spl: int | None
    ucode_spl: int | None
    fmc_spl: int | None
    hwid: bytes | None
    struct_version: int | None = None

    @classmethod
    def of(cls, cert: x509.Certificate, what: str) -> VekExtensions:
        raw = {
            e.oid.dotted_string: e.value for e in cert.extensions if e.oid.dotted_string.startswith(AMD_OID)
        }

        def value(oid: str) -> bytes | None:
            ext = raw.get(oid)
            return ext.value if isinstance(ext, x509.UnrecognizedExtension) else None

        def integer(oid: str, label: str) -> int | None:
            data = value(oid)
            if data is None:
                return None
            try:
                return der.read_integer(data)
            except der.DerError as exc:
                raise VerificationError(
                    "amd.vek_extensions", f"{what} extension {label} is malformed: {exc}"
                ) from exc

        name = value(OID_PRODUCT_NAME)
        try:
            product = der.read_string(name) if name is not None else None
        except der.DerError as exc:
            raise VerificationError("amd.vek_extensions", f"{what} product name is malformed: {exc}") from exc
        return cls(
            product_name=product,
            bl_spl=integer(OID_BL_SPL, "blSPL"),
            tee_spl=integer(OID_TEE_SPL, "teeSPL"),
            snp_spl=integer(OID_SNP_SPL, "snpSPL"),
            ucode_spl=integer(OID_UCODE_SPL, "ucodeSPL"),
            fmc_spl=integer(OID_FMC_SPL, "fmcSPL"),
            hwid=value(OID_HWID),
            struct_version=integer(OID_STRUCT_VERSION, "struct version"),
        )


def verify_vek(
    vek: x509.Certificate, kind: SigningKey, chain: AmdChain, now: datetime | None = None
) -> ec.EllipticCurvePublicKey:
    """Check the VCEK (by the ASK) or VLEK (by the ASVK) and return its P-384 key."""
    label = kind.value.upper()
    if kind is SigningKey.VLEK:
        if chain.asvk is None:
            raise VerificationError("amd.vek_chain", "VLEK given but the AMD chain has no ASVK")
        verify_pss_issued(vek, chain.asvk, what=label, check="amd.vek_chain")
    else:
        verify_pss_issued(vek, chain.ask, what=label, check="amd.vek_chain")
    check_validity(vek, now, what=f"{label} certificate", check="amd.vek_chain")
    key = vek.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise VerificationError("amd.vek_key", f"{label} key is not ECDSA P-384")
    return key

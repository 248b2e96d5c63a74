"""SEV-SNP evidence -> Trustee-shaped `snp` claims, or a VerificationError naming the check that failed.

Checks, in order (Trustee's SNP verifier, reference/attestation.md §1.7, plus the unsigned-tail check):
parse, report version, signature algorithm, endorsement key kind, processor generation, AMD chain, VCEK/VLEK
signature, report signature, unsigned bytes empty, TCB extensions == reported_tcb, hwID == chip_id, VMPL 0,
report_data and host_data bindings. Version 2 reports are accepted (Trustee requires 3..5): the real Milan
vector is v2, and v2 differs from v3 only by carrying no CPUID bytes, so the generation then comes from the
VCEK's product name.
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ccgpu.attest.amd_certs import AmdChain, VekExtensions, verify_vek
from ccgpu.attest.certs import load_certificate
from ccgpu.attest.errors import VerificationError
from ccgpu.attest.snp import (
    SIGNATURE_ALGO_ECDSA_P384_SHA384,
    AttestationReport,
    Generation,
    SigningKey,
    TcbVersion,
    generation_from_product_name,
)

SUPPORTED_VERSIONS = range(2, 6)


def verify_snp_evidence(
    report: bytes,
    *,
    vcek_der: bytes | None,
    chain_pem: bytes | None,
    expected_report_data: bytes | None,
    vlek_der: bytes | None = None,
    expected_host_data: bytes | None = None,
    now: datetime | None = None,
) -> dict:
    """Verify a raw 1184-byte SNP report and return its claims (Trustee's `snp` claim names).

    vcek_der / vlek_der: the endorsement key certificate (DER or PEM), exactly one of them.
    chain_pem: ASK+ARK(+ASVK) to trust; None = AMD's built-in chain for the report's generation.
    expected_report_data / expected_host_data: required values, zero-padded to 64 / 32 bytes; None skips.
    """
    parsed = AttestationReport.parse(report)
    if parsed.version not in SUPPORTED_VERSIONS:
        raise VerificationError(
            "snp.version", f"SNP report version {parsed.version} is not supported; accepted: 2 to 5"
        )
    if parsed.signature_algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
        raise VerificationError(
            "snp.signature_algo",
            f"report signature_algo {parsed.signature_algo} is not supported; accepted: 1 (ECDSA P-384 SHA-384)",
        )
    kind, vek = _endorsement(parsed, vcek_der, vlek_der)
    extensions = VekExtensions.of(vek, kind.value.upper())
    generation = _generation(parsed, extensions, kind)
    chain = AmdChain.from_pem(chain_pem) if chain_pem is not None else AmdChain.builtin(generation)
    chain.verify(now)
    key = verify_vek(vek, kind, chain, now)
    _verify_report_signature(parsed, key, kind)
    _check_unsigned_tail(parsed)
    reported = parsed.tcb("reported", generation)
    _check_tcb(extensions, reported, kind, generation)
    if kind is SigningKey.VCEK:
        _check_hwid(extensions, parsed, generation)
    if parsed.vmpl != 0:
        raise VerificationError(
            "snp.vmpl", f"report VMPL is {parsed.vmpl}; accepted: 0 (the guest kernel's level)"
        )
    if expected_report_data is not None:
        _check_binding("report_data", parsed.report_data, expected_report_data, 64)
    if expected_host_data is not None:
        _check_binding("host_data", parsed.host_data, expected_host_data, 32)
    return snp_claims(parsed, generation, kind)


def snp_claims(report: AttestationReport, generation: Generation, kind: SigningKey) -> dict:
    """Trustee's SNP claim names (JSON booleans/ints, hex strings) plus generation and signing key."""
    policy, platform, tcb = report.guest_policy, report.platform, report.tcb("reported", generation)
    claims: dict = {
        "policy_abi_major": policy.abi_major,
        "policy_abi_minor": policy.abi_minor,
        "policy_smt_allowed": policy.smt_allowed,
        "policy_migrate_ma": policy.migrate_ma,
        "policy_debug_allowed": policy.debug_allowed,
        "policy_single_socket": policy.single_socket,
        "reported_tcb_bootloader": tcb.bootloader,
        "reported_tcb_tee": tcb.tee,
        "reported_tcb_snp": tcb.snp,
        "reported_tcb_microcode": tcb.microcode,
        "platform_tsme_enabled": platform.tsme_enabled,
        "platform_smt_enabled": platform.smt_enabled,
        "measurement": report.measurement.hex(),
        "report_data": report.report_data.hex(),
        "init_data": report.host_data.hex(),
        "chip_id": report.chip_id.hex(),
        "report_version": report.version,
        "guest_svn": report.guest_svn,
        "vmpl": report.vmpl,
        "generation": generation.value,
        "signing_key": kind.value,
    }
    if tcb.fmc is not None:
        claims["reported_tcb_fmc"] = tcb.fmc
    return claims


def _endorsement(
    report: AttestationReport, vcek_der: bytes | None, vlek_der: bytes | None
) -> tuple[SigningKey, x509.Certificate]:
    if (vcek_der is None) == (vlek_der is None):
        raise VerificationError(
            "snp.endorsement",
            "give exactly one endorsement key certificate: the VCEK or the VLEK that signed the report",
        )
    kind = SigningKey.VCEK if vcek_der is not None else SigningKey.VLEK
    cert = load_certificate(vcek_der or vlek_der or b"", what=kind.value.upper(), check="snp.endorsement")
    said = report.keys.signing_key
    if said is not kind:
        named = said.value.upper() if said else f"reserved code {report.keys.signing_key_code}"
        raise VerificationError(
            "snp.signing_key", f"report says it is signed by {named} but a {kind.value.upper()} was given"
        )
    return kind, cert


def _generation(report: AttestationReport, extensions: VekExtensions, kind: SigningKey) -> Generation:
    from_cpuid = report.cpuid_generation()
    from_cert = generation_from_product_name(extensions.product_name) if extensions.product_name else None
    if from_cpuid and from_cert and from_cpuid is not from_cert:
        raise VerificationError(
            "snp.generation",
            f"report CPUID says {from_cpuid.value} but the {kind.value.upper()} is for {extensions.product_name}",
        )
    generation = from_cpuid or from_cert
    if generation is None:
        raise VerificationError(
            "snp.generation",
            f"processor generation unknown: CPUID family 0x{report.cpuid_fam_id:02x} model "
            f"0x{report.cpuid_mod_id:02x} and {kind.value.upper()} product name {extensions.product_name!r} "
            "name none of Milan, Genoa, Turin",
        )
    return generation


def _verify_report_signature(
    report: AttestationReport, key: ec.EllipticCurvePublicKey, kind: SigningKey
) -> None:
    try:
        key.verify(report.der_signature(), report.signed_bytes(), ec.ECDSA(hashes.SHA384()))
    except (InvalidSignature, ValueError) as exc:
        raise VerificationError(
            "snp.signature", f"report signature does not verify with the {kind.value.upper()}"
        ) from exc


def _check_unsigned_tail(report: AttestationReport) -> None:
    """The signature area past r and s is not signed, so anything there is unauthenticated: require zeros."""
    if any(report.signature_r[48:]) or any(report.signature_s[48:]) or any(report.signature_reserved):
        raise VerificationError(
            "snp.signature_format",
            "report signature area has non-zero bytes beyond P-384's r and s (0x2D0-0x2E7, 0x318-0x49F); "
            "they are not covered by the signature and must be zero",
        )


def _check_tcb(ext: VekExtensions, tcb: TcbVersion, kind: SigningKey, generation: Generation) -> None:
    pairs: list[tuple[str, int | None, str, int | None]] = [
        ("blSPL", ext.bl_spl, "bootloader", tcb.bootloader),
        ("teeSPL", ext.tee_spl, "tee", tcb.tee),
        ("snpSPL", ext.snp_spl, "snp", tcb.snp),
        ("ucodeSPL", ext.ucode_spl, "microcode", tcb.microcode),
    ]
    if generation is Generation.TURIN:
        pairs.append(("fmcSPL", ext.fmc_spl, "fmc", tcb.fmc))
    for ext_name, cert_value, field, report_value in pairs:
        if cert_value is None:
            raise VerificationError("snp.tcb", f"{kind.value.upper()} has no TCB extension {ext_name}")
        if cert_value != report_value:
            raise VerificationError(
                "snp.tcb",
                f"{kind.value.upper()} TCB extension {ext_name}={cert_value} does not match report "
                f"reported_tcb {field}={report_value}",
            )


def _check_hwid(ext: VekExtensions, report: AttestationReport, generation: Generation) -> None:
    expected = report.chip_id[:8] if generation is Generation.TURIN else report.chip_id
    if ext.hwid is None:
        raise VerificationError("snp.chip_id", "VCEK has no hwID extension")
    if ext.hwid != expected:
        raise VerificationError(
            "snp.chip_id", f"VCEK hwID {ext.hwid.hex()} does not match report chip_id {expected.hex()}"
        )


def _check_binding(field: str, actual: bytes, expected: bytes, size: int) -> None:
    if len(expected) > size:
        raise VerificationError(f"snp.{field}", f"expected {field} is {len(expected)} bytes; at most {size}")
    want = expected + bytes(size - len(expected))
    if actual != want:
        raise VerificationError(
            f"snp.{field}", f"report {field} {actual.hex()} does not match the expected {want.hex()}"
        )

"""SEV-SNP verification: the real Milan vector, simulated platforms, and one refusal per check."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccgpu.attest import VerificationError, verify_snp_evidence
from ccgpu.attest.snp import (
    REPORT_SIZE,
    SIGNED_SIZE,
    AttestationReport,
    Generation,
    GuestPolicy,
    SigningKey,
    TcbVersion,
)
from ccgpu.sim.tee import SimulatedSnpPlatform


def verify_real(report: bytes, vector, **kwargs) -> dict:
    kwargs.setdefault("chain_pem", vector.milan_chain)
    kwargs.setdefault("expected_report_data", None)
    return verify_snp_evidence(report, vcek_der=vector.vcek, **kwargs)


def flip(blob: bytes, bit: int) -> bytes:
    out = bytearray(blob)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_real_trustee_report_verifies_against_its_vcek_and_the_milan_ark_ask(snp_vector):
    """The vector is a version 2 report: Trustee's verifier wants 3..5 (attestation.md §1.7), ccgpu takes 2..5."""
    claims = verify_real(snp_vector.report, snp_vector)
    assert claims["generation"] == "Milan" and claims["signing_key"] == "vcek"
    assert claims["reported_tcb_bootloader"] == 3 and claims["reported_tcb_microcode"] == 115
    assert claims["policy_debug_allowed"] is False and claims["policy_abi_minor"] == 31
    assert claims["measurement"].startswith("a1f39304") and claims["chip_id"].startswith("c38427a3")


def test_real_report_verifies_with_the_builtin_amd_milan_chain(snp_vector):
    assert verify_real(snp_vector.report, snp_vector, chain_pem=None)["generation"] == "Milan"


def test_real_report_binds_its_report_data(snp_vector):
    expected = AttestationReport.parse(snp_vector.report).report_data[
        :32
    ]  # zero-padded to 64 by the verifier
    verify_real(snp_vector.report, snp_vector, expected_report_data=expected)
    with pytest.raises(VerificationError, match="report_data .* does not match the expected") as err:
        verify_real(snp_vector.report, snp_vector, expected_report_data=b"\x01" * 48)
    assert err.value.check == "snp.report_data"


def test_genoa_chain_does_not_endorse_the_milan_vcek(snp_vector):
    with pytest.raises(VerificationError, match="VCEK is not issued by SEV-Genoa") as err:
        verify_real(snp_vector.report, snp_vector, chain_pem=snp_vector.genoa_chain)
    assert err.value.check == "amd.vek_chain"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bit=st.integers(0, SIGNED_SIZE * 8 - 1))
def test_one_flipped_bit_in_the_signed_region_of_the_real_report_is_refused(snp_vector, bit):
    with pytest.raises(VerificationError) as err:
        verify_real(flip(snp_vector.report, bit), snp_vector)
    # Most fields are only protected by the signature; a few are checked (and named) before it.
    assert err.value.check in {"snp.signature", "snp.version", "snp.signature_algo", "snp.signing_key"}
    if err.value.check == "snp.signature":
        assert "report signature does not verify with the VCEK" in str(err.value)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bit=st.integers(SIGNED_SIZE * 8, REPORT_SIZE * 8 - 1))
def test_one_flipped_bit_in_the_signature_area_of_the_real_report_is_refused(snp_vector, bit):
    with pytest.raises(VerificationError) as err:
        verify_real(flip(snp_vector.report, bit), snp_vector)
    assert err.value.check in {"snp.signature", "snp.signature_format"}


def test_every_report_data_bit_is_covered_by_the_signature(snp_vector):
    for bit in range(0x50 * 8, 0x90 * 8, 37):
        with pytest.raises(VerificationError, match="report signature does not verify"):
            verify_real(flip(snp_vector.report, bit), snp_vector)


def test_simulated_platforms_of_every_generation_verify_through_the_same_path():
    for gen in Generation:
        platform = SimulatedSnpPlatform(gen)
        claims = verify_snp_evidence(
            platform.report(report_data=b"k" * 48),
            vcek_der=platform.vek_der,
            chain_pem=platform.chain_pem,
            expected_report_data=b"k" * 48,
        )
        assert claims["generation"] == gen.value
        assert claims["report_data"] == (b"k" * 48 + bytes(16)).hex()
        assert ("reported_tcb_fmc" in claims) == (gen is Generation.TURIN)


def test_simulated_report_is_refused_without_its_test_root(milan):
    """Default trust is AMD's real ARK: a test chain never verifies unless passed in explicitly."""
    with pytest.raises(VerificationError) as err:
        verify_snp_evidence(milan.report(), vcek_der=milan.vek_der, chain_pem=None, expected_report_data=None)
    assert err.value.check == "amd.vek_chain"


def test_vlek_signed_report_verifies_through_the_asvk():
    platform = SimulatedSnpPlatform(Generation.GENOA, signing_key=SigningKey.VLEK)
    claims = verify_snp_evidence(
        platform.report(),
        vcek_der=None,
        vlek_der=platform.vek_der,
        chain_pem=platform.chain_pem,
        expected_report_data=None,
    )
    assert claims["signing_key"] == "vlek"


def test_report_signed_by_a_vlek_but_presented_with_a_vcek_is_refused():
    platform = SimulatedSnpPlatform(Generation.GENOA, signing_key=SigningKey.VLEK)
    with pytest.raises(VerificationError, match="signed by VLEK but a VCEK was given"):
        verify_snp_evidence(
            platform.report(),
            vcek_der=platform.vek_der,
            chain_pem=platform.chain_pem,
            expected_report_data=None,
        )


def test_vcek_tcb_extension_must_match_the_reported_tcb(milan):
    report = milan.report(reported_tcb=replace(milan.tcb, bootloader=4))
    with pytest.raises(VerificationError) as err:
        verify_snp_evidence(
            report, vcek_der=milan.vek_der, chain_pem=milan.chain_pem, expected_report_data=None
        )
    assert str(err.value) == "VCEK TCB extension blSPL=3 does not match report reported_tcb bootloader=4"
    assert err.value.check == "snp.tcb"


def test_turin_fmc_spl_is_checked():
    platform = SimulatedSnpPlatform(
        Generation.TURIN, tcb=TcbVersion(1, 0, 3, 0x44, fmc=2), cert_tcb=TcbVersion(1, 0, 3, 0x44, fmc=1)
    )
    with pytest.raises(VerificationError, match="fmcSPL=1 does not match report reported_tcb fmc=2"):
        verify_snp_evidence(
            platform.report(),
            vcek_der=platform.vek_der,
            chain_pem=platform.chain_pem,
            expected_report_data=None,
        )


def test_vcek_of_another_chip_is_refused(milan):
    other = SimulatedSnpPlatform(Generation.MILAN)
    with pytest.raises(VerificationError) as err:
        verify_snp_evidence(
            milan.report(), vcek_der=other.vek_der, chain_pem=milan.chain_pem, expected_report_data=None
        )
    assert err.value.check == "snp.signature"


def test_chip_id_must_match_the_vcek_hwid(milan):
    report = replace(milan.unsigned_report(), chip_id=bytes(64))
    with pytest.raises(VerificationError, match="VCEK hwID .* does not match report chip_id 0000"):
        verify_snp_evidence(
            milan.sign(report), vcek_der=milan.vek_der, chain_pem=milan.chain_pem, expected_report_data=None
        )


def test_report_from_a_higher_vmpl_is_refused(milan):
    with pytest.raises(VerificationError, match="VMPL is 2; accepted: 0"):
        verify_snp_evidence(
            milan.report(vmpl=2), vcek_der=milan.vek_der, chain_pem=milan.chain_pem, expected_report_data=None
        )


def test_debug_policy_is_reported_in_claims_for_the_appraisal_policy_to_refuse(milan):
    report = milan.report(policy=GuestPolicy.build(debug_allowed=True, migrate_ma=True))
    claims = verify_snp_evidence(
        report, vcek_der=milan.vek_der, chain_pem=milan.chain_pem, expected_report_data=None
    )
    assert claims["policy_debug_allowed"] is True and claims["policy_migrate_ma"] is True


def test_host_data_binds_the_init_data_digest(milan):
    digest = bytes(range(32))
    report = milan.report(host_data=digest)
    claims = verify_snp_evidence(
        report,
        vcek_der=milan.vek_der,
        chain_pem=milan.chain_pem,
        expected_report_data=None,
        expected_host_data=digest,
    )
    assert claims["init_data"] == digest.hex()
    with pytest.raises(VerificationError) as err:
        verify_snp_evidence(
            report,
            vcek_der=milan.vek_der,
            chain_pem=milan.chain_pem,
            expected_report_data=None,
            expected_host_data=b"\x01" * 32,
        )
    assert err.value.check == "snp.host_data"


def test_unsupported_report_version_is_refused_naming_the_accepted_range(milan):
    with pytest.raises(VerificationError, match="version 6 is not supported; accepted: 2 to 5"):
        verify_snp_evidence(
            milan.sign(replace(milan.unsigned_report(), version=6)),
            vcek_der=milan.vek_der,
            chain_pem=milan.chain_pem,
            expected_report_data=None,
        )


def test_cpuid_generation_must_agree_with_the_vcek_product(milan):
    genoa_cpuid = replace(milan.unsigned_report(), cpuid_fam_id=0x19, cpuid_mod_id=0x11)
    with pytest.raises(VerificationError, match="CPUID says Genoa but the VCEK is for Milan-B0"):
        verify_snp_evidence(
            milan.sign(genoa_cpuid),
            vcek_der=milan.vek_der,
            chain_pem=milan.chain_pem,
            expected_report_data=None,
        )


def test_expired_vcek_is_refused(snp_vector):
    with pytest.raises(VerificationError, match="VCEK certificate expired at 2030-01-24") as err:
        verify_real(snp_vector.report, snp_vector, now=datetime(2031, 1, 1, tzinfo=UTC))
    assert err.value.check == "amd.vek_chain"


def test_endorsement_key_must_be_given_exactly_once(snp_vector):
    with pytest.raises(VerificationError, match="exactly one endorsement key"):
        verify_snp_evidence(snp_vector.report, vcek_der=None, chain_pem=None, expected_report_data=None)
    with pytest.raises(VerificationError, match="VCEK is not an X.509 certificate"):
        verify_snp_evidence(snp_vector.report, vcek_der=b"garbage", chain_pem=None, expected_report_data=None)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.one_of(st.binary(max_size=1300), st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE)))
def test_garbled_reports_raise_only_verification_errors(snp_vector, blob):
    with pytest.raises(VerificationError):
        verify_real(blob, snp_vector)


def test_amds_serial_zero_vcek_verifies_without_deprecation_noise(snp_vector):
    """AMD issues VCEKs with serial number 0; cryptography warns about it, the verifier must not leak that."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        verify_real(snp_vector.report, snp_vector)

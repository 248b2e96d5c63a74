"""SEV-SNP report layout: every field at its offset, TCB per generation, policy/platform/key bits."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccgpu.attest.errors import EvidenceFormatError
from ccgpu.attest.snp import (
    REPORT_SIZE,
    AttestationReport,
    Generation,
    GuestPolicy,
    KeyInfo,
    PlatformInfo,
    SigningKey,
    TcbVersion,
    build_report,
    generation_from_cpuid,
    generation_from_product_name,
)


def test_real_milan_report_fields_are_read_at_their_abi_offsets(snp_vector):
    r = AttestationReport.parse(snp_vector.report)
    assert (r.version, r.guest_svn, r.vmpl, r.signature_algo) == (2, 4, 0, 1)
    assert r.policy == 0x3001F
    assert r.guest_policy.abi_minor == 31 and r.guest_policy.abi_major == 0
    assert r.guest_policy.smt_allowed and not r.guest_policy.debug_allowed and not r.guest_policy.migrate_ma
    assert r.platform.smt_enabled and not r.platform.tsme_enabled
    assert r.keys.signing_key is SigningKey.VCEK
    assert r.report_data.hex().startswith("ec6c52d7533cc2c4")
    assert r.measurement.hex().startswith("a1f393041324")
    assert r.chip_id.hex().startswith("c38427a30d4c")
    assert r.report_id_ma == b"\xff" * 32
    assert r.tcb("reported", Generation.MILAN) == TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)
    assert (r.current_major, r.current_minor, r.current_build) == (1, 52, 4)
    assert r.cpuid_generation() is None  # v2 reports carry no CPUID bytes


def test_real_report_serialises_back_to_the_same_bytes(snp_vector):
    assert AttestationReport.parse(snp_vector.report).to_bytes() == snp_vector.report


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE))
def test_any_1184_bytes_round_trip_losslessly_reserved_bytes_included(blob):
    assert AttestationReport.parse(blob).to_bytes() == blob


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=2 * REPORT_SIZE).filter(lambda b: len(b) != REPORT_SIZE))
def test_wrong_length_is_a_parse_error_that_names_the_sizes(blob):
    with pytest.raises(EvidenceFormatError, match=f"exactly 1184 bytes.*got {len(blob)}"):
        AttestationReport.parse(blob)


def test_milan_and_turin_tcb_layouts_differ_as_the_abi_says():
    raw = bytes([1, 2, 3, 4, 0, 0, 0, 9])
    assert TcbVersion.from_raw(bytes([1, 2, 0, 0, 0, 0, 6, 9]), Generation.GENOA) == TcbVersion(1, 2, 6, 9)
    assert TcbVersion.from_raw(raw, Generation.TURIN) == TcbVersion(
        bootloader=2, tee=3, snp=4, microcode=9, fmc=1
    )
    for gen, tcb in [
        (Generation.MILAN, TcbVersion(1, 2, 6, 9)),
        (Generation.TURIN, TcbVersion(2, 3, 4, 9, fmc=1)),
    ]:
        assert TcbVersion.from_raw(tcb.to_raw(gen), gen) == tcb


def test_policy_bits_decode_each_flag():
    p = GuestPolicy(0x3001F | 1 << 19 | 1 << 18 | 1 << 20 | 1 << 21 | 1 << 22 | 1 << 23 | 1 << 24 | 1 << 25)
    assert p.debug_allowed and p.migrate_ma and p.single_socket and p.cxl_allowed
    assert p.mem_aes_256_xts and p.rapl_disabled and p.ciphertext_hiding and p.page_swap_disabled
    built = GuestPolicy.build(abi_major=1, abi_minor=55, debug_allowed=True, smt_allowed=False)
    assert (built.abi_major, built.abi_minor, built.debug_allowed, built.smt_allowed) == (1, 55, True, False)
    assert built.raw & (1 << 17), "bit 17 is reserved and must be one"


def test_platform_info_and_key_info_bits():
    info = PlatformInfo(0b1011_1111)
    assert all(
        [
            info.smt_enabled,
            info.tsme_enabled,
            info.ecc_enabled,
            info.rapl_disabled,
            info.ciphertext_hiding_enabled,
            info.alias_check_complete,
            info.sev_tio_enabled,
        ]
    )
    assert KeyInfo(1 << 2).signing_key is SigningKey.VLEK
    assert KeyInfo(7 << 2).signing_key is SigningKey.NONE
    assert KeyInfo(3 << 2).signing_key is None and KeyInfo(0b11).mask_chip_key


@pytest.mark.parametrize(
    "family,model,gen",
    [
        (0x19, 0x01, Generation.MILAN),
        (0x19, 0x11, Generation.GENOA),
        (0x19, 0xA0, Generation.GENOA),
        (0x1A, 0x02, Generation.TURIN),
        (0x17, 0x31, None),
        (0x1A, 0x20, None),
    ],
)
def test_generation_from_cpuid_family_and_model(family, model, gen):
    assert generation_from_cpuid(family, model) is gen


def test_generation_from_vcek_product_name():
    assert generation_from_product_name("Milan-B0") is Generation.MILAN
    assert generation_from_product_name("Genoa") is Generation.GENOA
    assert generation_from_product_name("Siena-A0") is None


def test_built_report_places_fields_where_a_struct_reader_finds_them():
    tcb = TcbVersion(bootloader=7, tee=1, snp=22, microcode=0xD5, fmc=3)
    blob = build_report(
        generation=Generation.TURIN,
        report_data=b"\x11" * 64,
        measurement=b"\x22" * 48,
        host_data=b"\x33" * 32,
        tcb=tcb,
        chip_id=b"\x44" * 64,
        vmpl=2,
        version=5,
        guest_svn=9,
    ).to_bytes()
    assert len(blob) == REPORT_SIZE
    assert struct.unpack_from("<IIQ", blob, 0) == (5, 9, GuestPolicy.build().raw)
    assert struct.unpack_from("<I", blob, 0x30)[0] == 2
    assert (
        blob[0x50:0x90] == b"\x11" * 64
        and blob[0x90:0xC0] == b"\x22" * 48
        and blob[0xC0:0xE0] == b"\x33" * 32
    )
    assert blob[0x180:0x188] == bytes([3, 7, 1, 22, 0, 0, 0, 0xD5])
    assert (blob[0x188], blob[0x189]) == (0x1A, 0x02)
    assert blob[0x1A0:0x1E0] == b"\x44" * 64

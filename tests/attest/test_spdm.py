"""SPDM GET_MEASUREMENTS evidence layout: the real H100 report, round trips, and strict length checks."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccgpu.attest.errors import EvidenceFormatError
from ccgpu.attest.spdm import (
    MeasurementBlock,
    OpaqueField,
    SpdmEvidence,
    opaque_claims,
    parse_opaque,
    serialise_opaque,
    vbios_version,
)


def test_real_h100_evidence_parses_into_request_blocks_opaque_and_signature(gpu_vector):
    ev = SpdmEvidence.parse(gpu_vector.evidence)
    assert len(gpu_vector.evidence) == 4117
    assert (ev.request.version, ev.request.param1, ev.request.param2) == (0x11, 0x01, 0xFF)
    assert ev.request.nonce == gpu_vector.nonce and ev.request.slot_id == 0
    assert len(ev.response.blocks) == 64
    assert all(len(b.value) == 48 and b.value_type == 0x01 for b in ev.response.blocks)
    assert [b.index for b in ev.response.blocks] == list(range(1, 65))
    assert len(serialise_opaque(ev.response.opaque)) == 422
    assert ev.response.opaque_field("driver_version") == b"550.90.07\0"
    assert len(ev.response.signature) == 96
    assert ev.signed_bytes == gpu_vector.evidence[:-96]


def test_real_evidence_serialises_back_to_the_same_bytes(gpu_vector):
    ev = SpdmEvidence.parse(gpu_vector.evidence)
    assert ev.request.to_bytes() + ev.response.to_bytes() == gpu_vector.evidence


def test_opaque_fields_render_as_trustee_renders_them(gpu_vector):
    config = opaque_claims(SpdmEvidence.parse(gpu_vector.evidence).response.opaque)
    assert config["vbios_version"] == "96.00.9f.00.01"
    assert config["driver_version"] == "550.90.07"
    assert config["project_sku_mod"] == "0000"  # all NULs: no text, so hex
    assert config["chip_sku"] == "882" and config["nvdec0_status"] == "U"
    assert config["measurement_count"]["12"] == 130 and len(config["measurement_count"]) == 64
    assert vbios_version(b"\x01\x02") == "0102"


def test_opaque_tlvs_round_trip_and_unknown_types_keep_their_number():
    fields = (OpaqueField(20, b"\xaa" * 48), OpaqueField(99, b"x"), OpaqueField(3, b"1.2\0"))
    assert parse_opaque(serialise_opaque(fields)) == fields
    assert fields[1].name == "opaque_99"


def test_measurement_block_encodes_index_spec_size_and_dmtf_header():
    raw = MeasurementBlock(7, 0x01, b"\x11" * 48).to_bytes()
    assert raw[:4] == bytes([7, 1]) + struct.pack("<H", 51)
    assert raw[4:7] == bytes([1]) + struct.pack("<H", 48)


def test_opaque_field_running_past_the_end_is_named():
    with pytest.raises(EvidenceFormatError, match="opaque field 20 data needs 48 bytes"):
        parse_opaque(struct.pack("<HH", 20, 48) + b"\0" * 10)


def test_wrong_request_code_is_refused_naming_the_accepted_code(gpu_vector):
    bad = bytearray(gpu_vector.evidence)
    bad[1] = 0x81
    with pytest.raises(EvidenceFormatError, match="request code is 0x81; accepted: 0xE0"):
        SpdmEvidence.parse(bytes(bad))


def test_trailing_bytes_after_the_signature_are_refused(gpu_vector):
    with pytest.raises(EvidenceFormatError, match="1 bytes after the response"):
        SpdmEvidence.parse(gpu_vector.evidence + b"\0")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 4116))
def test_every_truncation_of_the_real_evidence_is_a_parse_error(gpu_vector, cut):
    with pytest.raises(
        EvidenceFormatError, match="truncated|blocks but its record holds|after its DMTF value"
    ):
        SpdmEvidence.parse(gpu_vector.evidence[:cut])


@settings(max_examples=150, deadline=None)
@given(blob=st.binary(max_size=600))
def test_garbage_never_raises_anything_but_a_parse_error(blob):
    try:
        SpdmEvidence.parse(blob)
    except EvidenceFormatError:
        pass


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_garbled_real_evidence_parses_or_fails_cleanly(gpu_vector, data):
    blob = bytearray(gpu_vector.evidence)
    for _ in range(data.draw(st.integers(1, 8))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    try:
        SpdmEvidence.parse(bytes(blob))
    except EvidenceFormatError:
        pass

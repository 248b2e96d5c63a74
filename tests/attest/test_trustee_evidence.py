"""Trustee/attestation-agent evidence JSON <-> raw evidence: lossless, and garbled JSON is a clear error."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccgpu.attest import VerificationError, verify_gpu_evidence, verify_snp_evidence
from ccgpu.attest.errors import EvidenceFormatError
from ccgpu.attest.snp import Generation
from ccgpu.attest.trustee_evidence import (
    GpuEvidence,
    nvidia_evidence_from_json,
    nvidia_evidence_to_json,
    snp_evidence_from_json,
    snp_evidence_to_json,
    snp_report_from_json,
    snp_report_to_json,
    verify_nvidia_json,
    verify_snp_json,
)
from ccgpu.sim.tee import SimulatedGpu, SimulatedSnpPlatform

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def test_real_report_survives_the_serde_json_form_byte_for_byte(snp_vector):
    as_json = json.loads(json.dumps(snp_report_to_json(snp_vector.report)))
    assert as_json["current_tcb"] == {"fmc": None, "bootloader": 3, "tee": 0, "snp": 8, "microcode": 206}
    assert as_json["reported_tcb"]["microcode"] == 115 and as_json["cpuid_fam_id"] is None
    assert len(as_json["signature"]["r"]) == 72 and as_json["current"] == {
        "major": 1,
        "minor": 52,
        "build": 4,
    }
    assert snp_report_from_json(as_json) == snp_vector.report


def test_simulated_reports_of_each_generation_round_trip_and_turin_carries_fmc():
    for gen in Generation:
        platform = SimulatedSnpPlatform(gen)
        report = platform.report(version=5)
        as_json = snp_report_to_json(report)
        assert (as_json["reported_tcb"]["fmc"] is not None) == (gen is Generation.TURIN)
        assert as_json["launch_mit_vector"] == 0
        assert snp_report_from_json(as_json) == report


def test_snp_evidence_with_cert_chain_verifies_after_the_json_trip(milan):
    report = milan.report(report_data=b"\x07" * 48)
    wire = json.loads(json.dumps(snp_evidence_to_json(report, {"VCEK": milan.vek_der})))
    assert wire["cert_chain"][0]["cert_type"] == "VCEK"
    evidence = snp_evidence_from_json(wire)
    claims = verify_snp_evidence(
        evidence.report,
        vcek_der=evidence.certs["VCEK"],
        chain_pem=milan.chain_pem,
        expected_report_data=b"\x07" * 48,
    )
    assert claims["report_data"].startswith("07" * 48)


def test_missing_or_mistyped_fields_are_named(snp_vector):
    base = snp_report_to_json(snp_vector.report)
    broken = dict(base)
    del broken["measurement"]
    with pytest.raises(EvidenceFormatError, match="has no field 'measurement'"):
        snp_report_from_json(broken)
    broken = dict(base, report_data=[0] * 63)
    with pytest.raises(EvidenceFormatError, match="report_data must be a list of 64 bytes"):
        snp_report_from_json(broken)
    broken = dict(base, vmpl=-1)
    with pytest.raises(EvidenceFormatError, match="vmpl must be an integer"):
        snp_report_from_json(broken)
    with pytest.raises(EvidenceFormatError, match="cert_type 'PEK' unknown; accepted: VCEK"):
        snp_evidence_from_json(
            {"attestation_report": base, "cert_chain": [{"cert_type": "PEK", "data": [1]}]}
        )


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_garbled_snp_json_never_escapes_as_anything_but_an_evidence_error(snp_vector, data):
    obj = copy.deepcopy(snp_report_to_json(snp_vector.report))
    key = data.draw(st.sampled_from(sorted(obj)))
    obj[key] = data.draw(JSON)
    try:
        report = snp_report_from_json(obj)
    except EvidenceFormatError:
        return
    if report == snp_vector.report:
        return  # the drawn value happened to equal the original
    with pytest.raises(
        VerificationError
    ):  # it parsed, so a signed value changed: the signature must catch it
        verify_snp_evidence(report, vcek_der=snp_vector.vcek, chain_pem=None, expected_report_data=None)


@settings(max_examples=80, deadline=None)
@given(obj=JSON)
def test_arbitrary_json_bodies_are_refused_cleanly(obj):
    for parse in (snp_evidence_from_json, nvidia_evidence_from_json):
        try:
            parse(obj)
        except EvidenceFormatError:
            pass


def test_nvidia_evidence_list_round_trips_and_verifies(sim_gpu):
    nonce = b"\x09" * 32
    wire = json.loads(json.dumps({"device_evidence_list": [sim_gpu.evidence_list_entry(nonce)]}))
    [item] = nvidia_evidence_from_json(wire)
    assert item.uuid == sim_gpu.uuid and item.arch == "HOPPER"
    claims = verify_gpu_evidence(
        item.evidence,
        item.certificate_pem,
        root_pem=sim_gpu.root_pem,
        expected_nonce=nonce,
        uuid=item.uuid,
        arch=item.arch,
    )
    assert claims["uuid"] == sim_gpu.uuid
    assert nvidia_evidence_from_json(nvidia_evidence_to_json([item])) == [item]


def test_nvidia_evidence_in_hex_is_accepted_as_trustee_accepts_it(gpu_vector):
    wire = nvidia_evidence_to_json([GpuEvidence("HOPPER", "u", gpu_vector.evidence, gpu_vector.chain)])
    wire["device_evidence_list"][0]["evidence"] = gpu_vector.evidence.hex()
    assert nvidia_evidence_from_json(wire)[0].evidence == gpu_vector.evidence


def test_nvidia_evidence_that_is_not_base64_is_named():
    with pytest.raises(
        EvidenceFormatError, match=r"device_evidence_list\[0\].evidence is neither hex nor base64"
    ):
        nvidia_evidence_from_json(
            {
                "device_evidence_list": [
                    {"arch": "HOPPER", "uuid": "u", "evidence": "@@", "certificate": "QUJD"}
                ]
            }
        )


def test_snp_json_verification_takes_the_vcek_from_the_cert_chain(milan):
    wire = snp_evidence_to_json(milan.report(), {"VCEK": milan.vek_der})
    assert (
        verify_snp_json(wire, chain_pem=milan.chain_pem, expected_report_data=None)["signing_key"] == "vcek"
    )
    with pytest.raises(VerificationError, match="carries no VCEK/VLEK"):
        verify_snp_json(
            snp_evidence_to_json(milan.report()), chain_pem=milan.chain_pem, expected_report_data=None
        )


def test_nvidia_json_verification_gives_claims_per_gpu_in_order(sim_gpu):
    nonce = b"\x03" * 32
    other = SimulatedGpu(uuid="GPU-second")
    wire = {"device_evidence_list": [sim_gpu.evidence_list_entry(nonce), other.evidence_list_entry(nonce)]}
    with pytest.raises(VerificationError) as err:  # each GPU must chain to the one trusted root
        verify_nvidia_json(wire, root_pem=sim_gpu.root_pem, expected_nonce=nonce)
    assert err.value.check == "nvidia.root"
    wire["device_evidence_list"].pop()
    [claims] = verify_nvidia_json(wire, root_pem=sim_gpu.root_pem, expected_nonce=nonce)
    assert claims["uuid"] == sim_gpu.uuid

"""Garbled evidence through the production verifiers behind the KBS: truncated or bit-flipped SNP reports and
SPDM blobs, and wrong JSON shapes, are refused as AttestationRefused (a 4xx), never an unexpected exception
(which the server would turn into a 500)."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccgpu.attest import protocol
from ccgpu.attest.appraisal import Appraiser, AttestationRefused
from ccgpu.attest.jwe import public_jwk
from ccgpu.attest.rvps import ReferenceValueStore
from ccgpu.sim.guest import SimGuest

KEY = public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())
NONCE = base64.b64encode(bytes(32)).decode()


@pytest.fixture(scope="module")
def setup(sim_guest: SimGuest):
    rvps = ReferenceValueStore()
    appraiser = Appraiser(sim_guest.verifiers(), reference_values=rvps)
    gpu_nonce = protocol.gpu_nonce(NONCE, KEY)
    gpu_ev = sim_guest.gpu.evidence(gpu_nonce)
    additional = json.dumps({"nvidia": gpu_ev})
    cpu_ev = sim_guest.cpu.evidence(protocol.report_data(NONCE, KEY, additional))
    return appraiser, cpu_ev, gpu_ev


def _appraise(appraiser: Appraiser, cpu_ev, additional: str) -> None:
    attestation = protocol.Attestation(
        runtime_data=protocol.RuntimeData(nonce=NONCE, tee_pubkey=KEY),
        tee_evidence=protocol.TeeEvidence(primary_evidence=cpu_ev, additional_evidence=additional),
    )
    try:
        appraiser.appraise("snp", NONCE, attestation)
    except AttestationRefused:
        pass


def _mutate(data: bytes, cut: int, flip: int, mode: str) -> bytes:
    if mode == "truncate":
        return data[: cut % max(1, len(data))]
    if mode == "extend":
        return data + bytes([flip % 256]) * (cut % 64 + 1)
    out = bytearray(data)
    out[cut % len(out)] ^= 1 << (flip % 8)
    return bytes(out)


FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
mutations = st.tuples(st.integers(0, 5000), st.integers(0, 255), st.sampled_from(["truncate", "extend", "flip"]))


@FUZZ
@given(m=mutations, as_base64=st.booleans())
def test_garbled_snp_reports_are_refused_not_crashed_on(setup, m, as_base64):
    from ccgpu.attest.trustee_evidence import snp_report_from_json as from_serde
    from ccgpu.attest.trustee_evidence import snp_report_to_json as to_serde

    appraiser, cpu_ev, gpu_ev = setup
    raw = _mutate(from_serde(cpu_ev["attestation_report"]), *m)
    if as_base64 or len(raw) != 1184:
        report = base64.b64encode(raw).decode()
    else:
        report = to_serde(raw)
    _appraise(appraiser, {**cpu_ev, "attestation_report": report}, json.dumps({"nvidia": gpu_ev}))


@FUZZ
@given(m=mutations, field=st.sampled_from(["evidence", "certificate"]))
def test_garbled_spdm_blobs_and_chains_are_refused_not_crashed_on(setup, m, field):
    appraiser, cpu_ev, gpu_ev = setup
    device = dict(gpu_ev["device_evidence_list"][0])
    device[field] = base64.b64encode(_mutate(base64.b64decode(device[field]), *m)).decode()
    _appraise(appraiser, cpu_ev, json.dumps({"nvidia": {"device_evidence_list": [device]}}))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8)


@FUZZ
@given(key=st.sampled_from(["version", "policy", "measurement", "current_tcb", "signature", "chip_id",
                            "cpuid_fam_id", "current", "key_info"]), value=json_values)
def test_serde_reports_with_any_value_in_a_field_are_refused_not_crashed_on(setup, key, value):
    appraiser, cpu_ev, gpu_ev = setup
    report = {**cpu_ev["attestation_report"], key: value}
    _appraise(appraiser, {**cpu_ev, "attestation_report": report}, json.dumps({"nvidia": gpu_ev}))


@FUZZ
@given(device=st.dictionaries(st.sampled_from(["arch", "uuid", "evidence", "certificate"]), json_values),
       wrap=st.booleans())
def test_device_evidence_of_any_shape_is_refused_not_crashed_on(setup, device, wrap):
    appraiser, cpu_ev, _ = setup
    body = {"device_evidence_list": [device]} if wrap else device
    _appraise(appraiser, cpu_ev, json.dumps({"nvidia": body}))


def test_the_unmutated_evidence_the_fuzzers_start_from_is_accepted(setup):
    appraiser, cpu_ev, gpu_ev = setup
    attestation = protocol.Attestation(
        runtime_data=protocol.RuntimeData(nonce=NONCE, tee_pubkey=KEY),
        tee_evidence=protocol.TeeEvidence(primary_evidence=cpu_ev, additional_evidence=json.dumps({"nvidia": gpu_ev})),
    )
    assert appraiser.appraise("snp", NONCE, attestation).count(".") == 2

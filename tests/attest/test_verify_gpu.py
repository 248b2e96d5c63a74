"""NVIDIA GPU verification: the real H100 vector, the simulated GPU, and one refusal per check."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccgpu.attest import VerificationError, verify_gpu_evidence
from ccgpu.sim.tee import SimulatedGpu


def verify_real(vector, evidence: bytes | None = None, **kwargs) -> dict:
    kwargs.setdefault("root_pem", None)
    kwargs.setdefault("expected_nonce", vector.nonce)
    return verify_gpu_evidence(evidence if evidence is not None else vector.evidence, vector.chain, **kwargs)


def flip(blob: bytes, bit: int) -> bytes:
    out = bytearray(blob)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_real_h100_report_verifies_to_the_claims_trustee_derives(gpu_vector):
    claims = verify_real(gpu_vector, uuid=gpu_vector.uuid)
    assert claims == json.loads(gpu_vector.claims_text)


def test_real_report_verifies_with_the_root_given_explicitly(gpu_vector):
    assert verify_real(gpu_vector, root_pem=gpu_vector.root)["arch"] == "Hopper"


def test_real_report_with_another_nonce_is_refused(gpu_vector):
    with pytest.raises(VerificationError, match="does not match the expected nonce") as err:
        verify_real(gpu_vector, expected_nonce=b"\x01" * 32)
    assert err.value.check == "spdm.nonce"


def test_real_chain_does_not_reach_a_foreign_root(gpu_vector, sim_gpu):
    with pytest.raises(VerificationError, match="neither the trusted root") as err:
        verify_real(gpu_vector, root_pem=sim_gpu.root_pem)
    assert err.value.check == "nvidia.root"


def test_chain_without_its_root_certificate_is_completed_from_the_trusted_root(gpu_vector):
    without_root = b"".join(
        b"-----BEGIN CERTIFICATE-----" + part
        for part in gpu_vector.chain.split(b"-----BEGIN CERTIFICATE-----")[1:5]
    )
    assert verify_gpu_evidence(gpu_vector.evidence, without_root, root_pem=None, expected_nonce=None)["arch"]


def test_chain_missing_an_intermediate_is_refused(gpu_vector):
    parts = [
        b"-----BEGIN CERTIFICATE-----" + p for p in gpu_vector.chain.split(b"-----BEGIN CERTIFICATE-----")[1:]
    ]
    broken = b"".join(parts[:2] + parts[3:])  # drop the provisioner ICA
    with pytest.raises(VerificationError, match="issuer .* is not") as err:
        verify_gpu_evidence(gpu_vector.evidence, broken, root_pem=None, expected_nonce=None)
    assert err.value.check == "nvidia.chain"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bit=st.integers(0, 4117 * 8 - 1))
def test_one_flipped_bit_anywhere_in_the_real_report_is_refused_naming_the_check(gpu_vector, bit):
    with pytest.raises(VerificationError) as err:
        verify_real(gpu_vector, flip(gpu_vector.evidence, bit))
    assert err.value.check in {"spdm.parse", "spdm.nonce", "spdm.signature", "nvidia.fwid"}
    messages = {
        "spdm.signature": "GPU report signature does not verify",
        "spdm.nonce": "nonce",
        "nvidia.fwid": "FWID",
    }
    assert messages.get(err.value.check, "") in str(err.value)


def test_flipped_bits_in_measurements_and_signature_fail_the_signature_check(gpu_vector):
    block_value = 37 + 8 + 7  # request, response header, block header
    for byte in (
        block_value + 10,
        block_value + 51 * 40 + 5,
        len(gpu_vector.evidence) - 96,
        len(gpu_vector.evidence) - 1,
    ):
        with pytest.raises(VerificationError, match="GPU report signature does not verify with the leaf"):
            verify_real(gpu_vector, flip(gpu_vector.evidence, byte * 8))


def test_flipped_fwid_in_the_report_fails_the_fwid_check(gpu_vector):
    fwid_at = gpu_vector.evidence.find(bytes.fromhex("f5c384aebb579217a2c66b17"))
    with pytest.raises(VerificationError, match="leaf certificate FWID .* does not match report FWID") as err:
        verify_real(gpu_vector, flip(gpu_vector.evidence, fwid_at * 8))
    assert err.value.check == "nvidia.fwid"


def test_simulated_gpu_verifies_through_the_same_path(sim_gpu):
    nonce = bytes(range(32))
    claims = verify_gpu_evidence(
        sim_gpu.evidence(nonce),
        sim_gpu.cert_chain_pem,
        root_pem=sim_gpu.root_pem,
        expected_nonce=nonce,
        uuid=sim_gpu.uuid,
    )
    assert claims["uuid"] == sim_gpu.uuid
    assert claims["measurements"]["1"] == sim_gpu.measurements[1].hex()
    assert claims["config"]["fwid"] == sim_gpu.fwid.hex()
    assert claims["config"]["driver_version"] == "550.90.07"


def test_simulated_gpu_is_refused_under_nvidias_real_root(sim_gpu):
    """Default trust is NVIDIA's device root: a test chain never verifies unless its root is passed."""
    nonce = bytes(32)
    with pytest.raises(VerificationError) as err:
        verify_gpu_evidence(
            sim_gpu.evidence(nonce), sim_gpu.cert_chain_pem, root_pem=None, expected_nonce=nonce
        )
    assert err.value.check == "nvidia.root"


def test_measurements_outside_the_reference_still_verify_and_show_in_claims(sim_gpu):
    """Signature checks prove where evidence came from; comparing values is the appraisal policy's job."""
    odd = dict(sim_gpu.measurements) | {5: b"\xee" * 48}
    claims = verify_gpu_evidence(
        sim_gpu.evidence(bytes(32), measurements=odd),
        sim_gpu.cert_chain_pem,
        root_pem=sim_gpu.root_pem,
        expected_nonce=None,
    )
    assert claims["measurements"]["5"] == "ee" * 48


def test_report_fwid_that_differs_from_the_leaf_certificate_is_refused(sim_gpu):
    with pytest.raises(VerificationError, match="does not match report FWID " + "00" * 48):
        verify_gpu_evidence(
            sim_gpu.evidence(bytes(32), report_fwid=bytes(48)),
            sim_gpu.cert_chain_pem,
            root_pem=sim_gpu.root_pem,
            expected_nonce=None,
        )


def test_evidence_signed_by_another_gpu_is_refused(sim_gpu):
    other = SimulatedGpu(fwid=sim_gpu.fwid)
    with pytest.raises(VerificationError) as err:
        verify_gpu_evidence(
            other.evidence(bytes(32)), sim_gpu.cert_chain_pem, root_pem=sim_gpu.root_pem, expected_nonce=None
        )
    assert err.value.check == "spdm.signature"


def test_unsupported_architecture_is_refused_naming_what_is_accepted(gpu_vector):
    with pytest.raises(VerificationError, match="'BLACKWELL' cannot be verified locally; accepted: HOPPER"):
        verify_real(gpu_vector, arch="BLACKWELL")


def test_chain_checked_at_a_time_before_its_validity_is_refused(gpu_vector):
    with pytest.raises(VerificationError, match="is not valid before") as err:
        verify_real(gpu_vector, now=datetime(2019, 1, 1, tzinfo=UTC))
    assert err.value.check == "nvidia.chain"


def test_garbage_chain_is_a_clear_error(gpu_vector):
    with pytest.raises(VerificationError, match="GPU certificate chain holds no certificate|not a PEM"):
        verify_gpu_evidence(gpu_vector.evidence, b"not a chain", root_pem=None, expected_nonce=None)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.one_of(st.binary(max_size=5000), st.integers(0, 4116).map(lambda n: n)))
def test_truncated_or_garbled_evidence_raises_only_verification_errors(gpu_vector, blob):
    evidence = gpu_vector.evidence[:blob] if isinstance(blob, int) else blob
    with pytest.raises(VerificationError):
        verify_real(gpu_vector, evidence)


def test_a_remembered_chain_is_still_checked_for_validity_at_each_call(gpu_vector):
    verify_real(gpu_vector)  # verified once: its signatures are remembered
    with pytest.raises(VerificationError, match="is not valid before"):
        verify_real(gpu_vector, now=datetime(2019, 1, 1, tzinfo=UTC))


def test_a_chain_that_failed_is_not_remembered_as_good(sim_gpu):
    evidence = sim_gpu.evidence(bytes(32))
    for _ in range(2):
        with pytest.raises(VerificationError):
            verify_gpu_evidence(evidence, sim_gpu.cert_chain_pem, root_pem=None, expected_nonce=None)
    assert verify_gpu_evidence(
        evidence, sim_gpu.cert_chain_pem, root_pem=sim_gpu.root_pem, expected_nonce=None
    )

"""Interop with Trustee and CoCo's guest components, built from the documented messages (reference
attestation.md §1.3 field names, §1.3 binding, §1.4 EAR shape, §1.6 JWE layout): a real Trustee peer must be able
to talk to both our KBS and our client."""

from __future__ import annotations

import base64
import hashlib
import json
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from joserfc import jwe as joserfc_jwe
from joserfc import jws
from joserfc.jwk import ECKey

from ccgpu.attest import ear, jwe, protocol

# A fixed TEE key, written as the guest sends it (kty, crv, alg, x, y).
TEE_D = 0x2F1A3C4D5E6F708192A3B4C5D6E7F8091A2B3C4D5E6F708192A3B4C5D6E7F809
TEE_KEY = ec.derive_private_key(TEE_D, ec.SECP256R1())
TEE_JWK = jwe.public_jwk(TEE_KEY.public_key())
NONCE = base64.b64encode(bytes(range(32))).decode()


def test_request_challenge_attestation_use_the_exact_wire_field_names():
    request = protocol.Request(version="0.4.0", tee="snp", extra_params={"supported-hash-algorithms": ["sha384"]})
    assert request.to_wire() == {"version": "0.4.0", "tee": "snp",
                                 "extra-params": {"supported-hash-algorithms": ["sha384"]}}
    challenge = protocol.Challenge.model_validate({"nonce": NONCE, "extra-params": ""})
    assert challenge.to_wire() == {"nonce": NONCE, "extra-params": ""}
    attestation = protocol.Attestation.model_validate({
        "init-data": {"format": "toml", "body": 'version = "0.1.0"'},
        "runtime-data": {"nonce": NONCE, "tee-pubkey": TEE_JWK},
        "tee-evidence": {"primary_evidence": {"attestation_report": {}}, "additional_evidence": "{}"},
    })
    wire = attestation.to_wire()
    assert list(wire) == ["init-data", "runtime-data", "tee-evidence"]
    assert list(wire["runtime-data"]) == ["nonce", "tee-pubkey"]
    assert list(wire["tee-evidence"]) == ["primary_evidence", "additional_evidence"]


def test_guest_tee_pubkey_is_an_ec_p256_jwk_for_ecdh_es_a256kw():
    assert list(TEE_JWK) == ["kty", "crv", "alg", "x", "y"]
    assert (TEE_JWK["kty"], TEE_JWK["crv"], TEE_JWK["alg"]) == ("EC", "P-256", "ECDH-ES+A256KW")
    assert len(jwe.b64u_decode(TEE_JWK["x"])) == 32 and "=" not in TEE_JWK["x"]


def test_report_data_is_sha384_of_the_jcs_runtime_data_zero_padded_to_64():
    # JCS written out by hand: keys sorted by code point, no whitespace, the JWK's members sorted too.
    canonical = (
        '{"nonce":"' + NONCE + '","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC",'
        '"x":"' + TEE_JWK["x"] + '","y":"' + TEE_JWK["y"] + '"}}'
    ).encode()
    assert protocol.jcs({"tee-pubkey": TEE_JWK, "nonce": NONCE}) == canonical
    rd = protocol.report_data(NONCE, TEE_JWK)
    assert rd == hashlib.sha384(canonical).digest() + bytes(16)


def test_report_data_with_additional_evidence_hashes_the_string_under_its_key():
    additional = '{"nvidia":{"device_evidence_list":[]}}'
    canonical = (
        '{"additional-evidence":' + json.dumps(additional) + ',"nonce":"' + NONCE + '","tee-pubkey":'
        '{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"' + TEE_JWK["x"] + '","y":"' + TEE_JWK["y"] + '"}}'
    ).encode()
    assert protocol.report_data(NONCE, TEE_JWK, additional)[:48] == hashlib.sha384(canonical).digest()


def test_gpu_nonce_is_the_first_32_bytes_of_the_device_runtime_hash():
    device_hash = hashlib.sha384(protocol.jcs({"nonce": NONCE, "tee-pubkey": TEE_JWK})).digest()
    assert protocol.gpu_nonce(NONCE, TEE_JWK) == device_hash[:32]
    assert protocol.gpu_nonce(NONCE, TEE_JWK, "sha256") == hashlib.sha256(
        protocol.jcs({"nonce": NONCE, "tee-pubkey": TEE_JWK})).digest()


def _concat_kdf_by_hand(z: bytes) -> bytes:
    """RFC 7518 §4.6 for a 256-bit key: one SHA-256 round over counter || Z || OtherInfo."""
    def part(b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + b

    other = part(b"ECDH-ES+A256KW") + part(b"") + part(b"") + struct.pack(">I", 256)
    return hashlib.sha256(struct.pack(">I", 1) + z + other).digest()


def test_jwe_layout_matches_trustee_byte_for_byte_for_fixed_keys():
    epk = ec.derive_private_key(0x1234567890ABCDEF1234567890ABCDEF1234567890ABCDEF1234567890ABCDEF, ec.SECP256R1())
    cek, iv, plaintext = bytes(range(32)), bytes(range(12)), b"top secret"
    out = jwe.encrypt(plaintext, TEE_JWK, _epk=epk, _cek=cek, _iv=iv)
    assert list(out) == ["protected", "encrypted_key", "iv", "ciphertext", "tag"]
    nums = epk.public_key().public_numbers()
    header = ('{"alg":"ECDH-ES+A256KW","enc":"A256GCM","epk":{"crv":"P-256","kty":"EC","x":"'
              + jwe.b64u(nums.x.to_bytes(32, "big")) + '","y":"' + jwe.b64u(nums.y.to_bytes(32, "big")) + '"}}')
    assert out["protected"] == jwe.b64u(header.encode())
    kek = _concat_kdf_by_hand(epk.exchange(ec.ECDH(), TEE_KEY.public_key()))
    assert out["encrypted_key"] == jwe.b64u(aes_key_wrap(kek, cek))
    sealed = AESGCM(cek).encrypt(iv, plaintext, out["protected"].encode("ascii"))
    assert out["iv"] == jwe.b64u(iv)
    assert (out["ciphertext"], out["tag"]) == (jwe.b64u(sealed[:-16]), jwe.b64u(sealed[-16:]))
    assert all("=" not in v for v in out.values())


def test_our_jwe_decrypts_with_an_independent_jose_library_and_theirs_with_ours():
    key = ECKey.import_key({**TEE_JWK, "d": jwe.b64u(TEE_D.to_bytes(32, "big"))})
    ours = jwe.encrypt(b"to joserfc", TEE_JWK)
    compact = ".".join(ours[k] for k in ("protected", "encrypted_key", "iv", "ciphertext", "tag"))
    assert joserfc_jwe.decrypt_compact(compact, key).plaintext == b"to joserfc"
    theirs = joserfc_jwe.encrypt_compact({"alg": "ECDH-ES+A256KW", "enc": "A256GCM"}, b"from joserfc", key)
    p, k, i, c, t = theirs.split(".")
    assert jwe.decrypt({"protected": p, "encrypted_key": k, "iv": i, "ciphertext": c, "tag": t}, TEE_KEY) == (
        b"from joserfc")


def test_jwe_to_another_key_does_not_decrypt():
    other = ec.generate_private_key(ec.SECP256R1())
    sealed = jwe.encrypt(b"x", TEE_JWK)
    try:
        jwe.decrypt(sealed, other)
    except jwe.JweError as e:
        assert "unwrap failed" in str(e)
    else:
        raise AssertionError("decrypted with the wrong key")


def test_ear_token_has_trustee_header_and_claims_shape():
    signer = ear.TokenSigner()
    cpu = {"snp": {"measurement": "00"}, "report_data": "00",
           "runtime_data_claims": {"nonce": NONCE, "tee-pubkey": TEE_JWK}}
    token = signer.issue({"cpu0": ear.Submod({"hardware": 2, "executables": 3, "configuration": 2}, "default_cpu",
                                             cpu),
                          "gpu0": ear.Submod({"hardware": 2, "executables": 33}, "default_gpu", {"nvidia": {}})})
    header = jws.extract_compact(token.encode()).protected
    assert header["alg"] == "ES256" and header["jwk"] == signer.public_jwk and header["jwk"]["crv"] == "P-256"
    claims = ear.verify(token, [signer.public_jwk])
    assert claims["eat_profile"] == "tag:github.com,2024:confidential-containers/Trustee"
    assert claims["iss"] == "CoCo-Attestation-Service" and claims["exp"] - claims["iat"] == 300
    assert set(claims["ear.verifier-id"]) == {"developer", "build"}
    cpu0, gpu0 = claims["submods"]["cpu0"], claims["submods"]["gpu0"]
    assert cpu0["ear.status"] == "affirming" and gpu0["ear.status"] == "warning"
    assert cpu0["ear.trustworthiness-vector"] == {"configuration": 2, "executables": 3, "hardware": 2}
    assert cpu0["ear.appraisal-policy-id"] == "default_cpu"
    assert ear.tee_pubkey_of(claims) == TEE_JWK


def test_ear_status_is_the_most_severe_tier_in_the_vector():
    assert ear.status_of({}) == "none"
    assert ear.status_of({"hardware": 0}) == "none"
    assert ear.status_of({"hardware": 2, "executables": 3}) == "affirming"
    assert ear.status_of({"hardware": 2, "configuration": 36}) == "warning"
    assert ear.status_of({"hardware": 97, "configuration": 36}) == "contraindicated"
    assert (ear.tier(31), ear.tier(32), ear.tier(95), ear.tier(96)) == ("affirming", "warning", "warning",
                                                                        "contraindicated")


def test_trustee_snp_report_verifies_in_the_sev_serde_form_the_guest_sends(shared):
    """Trustee's Milan test report, as its attestation-agent would send it (sev crate serde JSON), through the
    KBS's snp verifier against the VCEK in cert_chain and AMD's built-in Milan ASK/ARK."""
    from ccgpu.attest.trustee_evidence import snp_report_to_json as to_serde
    from ccgpu.attest.verifiers import SnpVerifier

    d = shared / "vectors" / "snp"
    report, vcek = (d / "test-report.bin").read_bytes(), (d / "test-vcek.der").read_bytes()
    evidence = {"attestation_report": to_serde(report), "cert_chain": [{"cert_type": "VCEK", "data": list(vcek)}]}
    claims = SnpVerifier().verify(evidence, expected_binding=report[0x50:0x90], init_data_digest=None)
    assert claims["report_data"] == report[0x50:0x90].hex() and claims["generation"] == "Milan"


def test_serde_report_with_a_field_changed_fails_the_signature_check(shared):
    from ccgpu.attest.errors import VerificationError
    from ccgpu.attest.trustee_evidence import snp_report_to_json as to_serde
    from ccgpu.attest.verifiers import SnpVerifier

    d = shared / "vectors" / "snp"
    report, vcek = (d / "test-report.bin").read_bytes(), (d / "test-vcek.der").read_bytes()
    serde = to_serde(report)
    serde["guest_svn"] += 1
    evidence = {"attestation_report": serde, "cert_chain": [{"cert_type": "VCEK", "data": list(vcek)}]}
    with pytest.raises(VerificationError) as err:
        SnpVerifier().verify(evidence, expected_binding=report[0x50:0x90], init_data_digest=None)
    assert err.value.check == "snp.signature"

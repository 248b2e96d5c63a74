"""End to end on loopback: the guest client and the KBS with simulated evidence; every refusal releases nothing."""

from __future__ import annotations

import hashlib
import json

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import ECKey
from kbs_fixtures import SECRET, Kbs

from ccgpu.attest import ear, protocol
from ccgpu.attest.client import KbsClient, KbsClientError, build_attestation
from ccgpu.attest.ear import Submod, TokenSigner
from ccgpu.attest.jwe import b64u, b64u_decode, decrypt, public_jwk

URI = "kbs:///default/key/model"


async def test_attested_guest_with_cpu_and_gpu_gets_the_secret(kbs: Kbs):
    async with KbsClient(kbs.url, kbs.snp, [kbs.gpu]) as client:
        assert await client.get_resource(URI) == SECRET
        claims = jwt.decode(client.token, ECKey.import_key(kbs.server.appraiser.signer.public_jwk)).claims
    assert set(claims["submods"]) == {"cpu0", "gpu0"}
    assert {s["ear.status"] for s in claims["submods"].values()} == {"affirming"}


async def test_two_gpus_become_two_submods(kbs: Kbs):
    kbs.gpu.count = 2
    async with KbsClient(kbs.url, kbs.snp, [kbs.gpu]) as client:
        assert await client.get_resource(URI) == SECRET
        claims = ear.verify(client.token, kbs.server.trusted_token_keys, now=kbs.clock())
    assert set(claims["submods"]) == {"cpu0", "gpu0", "gpu1"}
    assert claims["submods"]["gpu1"]["ear.veraison.annotated-evidence"]["nvidia"]["uuid"] == "GPU-00000001"


async def _raw_session(kbs: Kbs) -> tuple[aiohttp.ClientSession, protocol.Challenge]:
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with http.post(f"{kbs.url}/kbs/v0/auth", json={"version": "0.4.0", "tee": "snp", "extra-params": {}}) as r:
        assert r.status == 200
        challenge = protocol.Challenge.model_validate(await r.json())
    return http, challenge


async def _problem(response: aiohttp.ClientResponse) -> tuple[int, str, str]:
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body = await response.json()
    return response.status, body["type"].rsplit("/", 1)[-1], body["detail"]


async def _attest_then_fetch(kbs: Kbs, http: aiohttp.ClientSession, attestation: protocol.Attestation):
    async with http.post(f"{kbs.url}/kbs/v0/attest", json=attestation.to_wire()) as r:
        attest = (r.status, await r.json())
    async with http.get(f"{kbs.url}/kbs/v0/resource/default/key/model") as r:
        fetch = (r.status, await r.json())
    return attest, fetch


async def test_wrong_nonce_is_refused_with_401_attestation_failed(kbs: Kbs):
    http, challenge = await _raw_session(kbs)
    async with http:
        wrong = protocol.Challenge(nonce=protocol.new_nonce())
        built = build_attestation(wrong, public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()),
                                  kbs.snp, [kbs.gpu])
        (status, body), (fstatus, fbody) = await _attest_then_fetch(kbs, http, built.attestation)
    assert status == 401 and body["type"].endswith("/AttestationFailed")
    assert "nonce does not match" in body["detail"]
    assert fstatus == 401 and "ciphertext" not in fbody


async def test_replayed_evidence_from_an_earlier_session_is_refused(kbs: Kbs):
    """Evidence captured from a successful session, resent in a new session with the new nonce."""
    key = public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())
    http1, c1 = await _raw_session(kbs)
    async with http1:
        first = build_attestation(c1, key, kbs.snp, [kbs.gpu]).attestation
        (status, _), _ = await _attest_then_fetch(kbs, http1, first)
        assert status == 200
    http2, c2 = await _raw_session(kbs)
    async with http2:
        replay = first.model_copy(update={"runtime_data": protocol.RuntimeData(nonce=c2.nonce, tee_pubkey=key)})
        (status, body), (fstatus, _) = await _attest_then_fetch(kbs, http2, replay)
        (status_same, body_same), _ = await _attest_then_fetch(kbs, http2, first)
    assert status == 401 and "report_data does not match" in body["detail"]
    assert status_same == 401 and "nonce does not match" in body_same["detail"]
    assert fstatus == 401


async def test_report_data_not_binding_the_key_is_refused(kbs: Kbs):
    """A report whose report_data was computed for another TEE key cannot be used to receive secrets."""
    http, challenge = await _raw_session(kbs)
    async with http:
        theirs = public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())
        mine = public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())
        kbs.snp.report_data_override = protocol.report_data(challenge.nonce, theirs)
        built = build_attestation(challenge, mine, kbs.snp, [])
        (status, body), (fstatus, _) = await _attest_then_fetch(kbs, http, built.attestation)
    assert status == 401 and "report_data does not match" in body["detail"]
    assert fstatus == 401


async def test_debug_policy_guest_gets_a_warning_token_and_no_secret(kbs: Kbs):
    kbs.snp.debug = True
    async with KbsClient(kbs.url, kbs.snp, [kbs.gpu]) as client:
        token = await client.attest()
        with pytest.raises(KbsClientError) as err:
            await client.get_resource(URI)
    claims = ear.verify(token, kbs.server.trusted_token_keys, now=kbs.clock())
    cpu0 = claims["submods"]["cpu0"]
    assert cpu0["ear.status"] == "warning" and cpu0["ear.trustworthiness-vector"]["configuration"] == 36
    assert err.value.status == 401 and err.value.kind == "PolicyDeny"
    assert "'cpu0': 'warning'" in err.value.detail


async def test_gpu_measurement_outside_reference_values_denies_the_secret(kbs: Kbs):
    kbs.gpu.measurements = {**kbs.gpu.measurements, "1": "ee" * 48}
    async with KbsClient(kbs.url, kbs.snp, [kbs.gpu]) as client:
        token = await client.attest()
        with pytest.raises(KbsClientError) as err:
            await client.get_resource(URI)
    gpu0 = ear.verify(token, kbs.server.trusted_token_keys, now=kbs.clock())["submods"]["gpu0"]
    assert gpu0["ear.trustworthiness-vector"]["executables"] == 33 and gpu0["ear.status"] == "warning"
    assert err.value.status == 401 and err.value.kind == "PolicyDeny"


async def test_gpu_evidence_with_a_wrong_nonce_is_refused(kbs: Kbs):
    class StaleGpu:
        name = "nvidia"

        def evidence(self, nonce: bytes):
            return kbs.gpu.evidence(bytes(32))

    async with KbsClient(kbs.url, kbs.snp, [StaleGpu()]) as client:
        with pytest.raises(KbsClientError) as err:
            await client.get_resource(URI)
    assert err.value.status == 401 and err.value.kind == "AttestationFailed"
    assert "SPDM nonce does not match" in err.value.detail


async def test_expired_session_is_refused_and_releases_nothing(kbs: Kbs):
    async with KbsClient(kbs.url, kbs.snp, [kbs.gpu]) as client:
        await client.attest()
        kbs.clock.now += kbs.server.session_timeout_s + 1
        with pytest.raises(KbsClientError) as err:
            await client.get_resource(URI)
    assert err.value.status == 401 and err.value.kind == "ExpiredCookie"


async def test_expired_token_as_bearer_is_refused(kbs: Kbs):
    async with KbsClient(kbs.url, kbs.snp, [kbs.gpu]) as client:
        token = await client.attest()
    kbs.clock.now += kbs.server.appraiser.signer.lifetime_s + 1
    async with aiohttp.ClientSession() as http, http.get(
        f"{kbs.url}/kbs/v0/resource/default/key/model", headers={"Authorization": f"Bearer {token}"}
    ) as r:
        status, kind, detail = await _problem(r)
    assert (status, kind) == (401, "TokenInvalid") and "expired" in detail


async def test_valid_token_as_bearer_gets_the_secret_without_a_cookie(kbs: Kbs):
    async with KbsClient(kbs.url, kbs.snp, [kbs.gpu]) as client:
        token = await client.attest()
        async with aiohttp.ClientSession() as http, http.get(
            f"{kbs.url}/kbs/v0/resource/default/key/model", headers={"Authorization": f"Bearer {token}"}
        ) as r:
            assert r.status == 200
            assert decrypt(await r.json(), client.key) == SECRET


async def test_forged_token_signed_by_another_key_is_refused(kbs: Kbs):
    """A token with all-affirming submods, signed by the attacker's key and embedding that key as jwk."""
    attacker = TokenSigner()
    pub = public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())
    claims = {"runtime_data_claims": {"nonce": "x", "tee-pubkey": pub}}
    forged = attacker.issue({"cpu0": Submod({"hardware": 2, "executables": 3}, "default_cpu", claims)},
                            now=kbs.clock())
    async with aiohttp.ClientSession() as http, http.get(
        f"{kbs.url}/kbs/v0/resource/default/key/model", headers={"Authorization": f"Bearer {forged}"}
    ) as r:
        status, kind, detail = await _problem(r)
    assert (status, kind) == (401, "TokenInvalid") and "not a trusted EAR signer" in detail


async def test_token_with_tampered_claims_is_refused(kbs: Kbs):
    async with KbsClient(kbs.url, kbs.snp, [kbs.gpu]) as client:
        token = await client.attest()
    header, payload, sig = token.split(".")
    claims = json.loads(b64u_decode(payload))
    claims["exp"] += 3600
    tampered = ".".join([header, b64u(json.dumps(claims).encode()), sig])
    async with aiohttp.ClientSession() as http, http.get(
        f"{kbs.url}/kbs/v0/resource/default/key/model", headers={"Authorization": f"Bearer {tampered}"}
    ) as r:
        status, kind, detail = await _problem(r)
    assert (status, kind) == (401, "TokenInvalid") and "signature" in detail


async def test_resource_before_attesting_is_refused(kbs: Kbs):
    http, _ = await _raw_session(kbs)
    async with http, http.get(f"{kbs.url}/kbs/v0/resource/default/key/model") as r:
        status, kind, _ = await _problem(r)
    assert (status, kind) == (401, "UnAuthenticatedCookie")


async def test_unknown_protocol_version_is_refused(kbs: Kbs):
    async with aiohttp.ClientSession() as http, http.post(
        f"{kbs.url}/kbs/v0/auth", json={"version": "0.3.0", "tee": "snp", "extra-params": {}}
    ) as r:
        status, kind, detail = await _problem(r)
    assert (status, kind) == (400, "ProtocolVersion") and "0.4.0" in detail


async def test_missing_resource_is_404_after_attesting(kbs: Kbs):
    async with KbsClient(kbs.url, kbs.snp, [kbs.gpu]) as client:
        with pytest.raises(KbsClientError) as err:
            await client.get_resource("kbs:///default/key/absent")
    assert err.value.status == 404 and err.value.kind == "ResourceNotFound"


async def test_init_data_must_match_host_data(kbs: Kbs):
    body = 'version = "0.1.0"\nalgorithm = "sha384"\n[data]\n"aa.toml" = "x"\n'
    kbs.snp.host_data = hashlib.sha384(body.encode()).digest()[:32]
    good = protocol.InitData(format="toml", body=body)
    async with KbsClient(kbs.url, kbs.snp, [kbs.gpu], init_data=good) as client:
        assert await client.get_resource(URI) == SECRET
    bad = protocol.InitData(format="toml", body=body + "# changed\n")
    async with KbsClient(kbs.url, kbs.snp, [kbs.gpu], init_data=bad) as client:
        with pytest.raises(KbsClientError) as err:
            await client.attest()
    assert err.value.status == 401 and "host_data" in err.value.detail


async def test_unsigned_alg_none_token_is_refused(kbs: Kbs):
    """The classic JWT downgrade: header alg none, the trusted key embedded as jwk, no signature."""
    header = {"alg": "none", "jwk": kbs.server.appraiser.signer.public_jwk}
    claims = {"eat_profile": ear.EAT_PROFILE, "exp": int(kbs.clock()) + 300, "submods": {}}
    token = f"{b64u(json.dumps(header).encode())}.{b64u(json.dumps(claims).encode())}."
    async with aiohttp.ClientSession() as http, http.get(
        f"{kbs.url}/kbs/v0/resource/default/key/model", headers={"Authorization": f"Bearer {token}"}
    ) as r:
        status, kind, detail = await _problem(r)
    assert (status, kind) == (401, "TokenInvalid") and "ES256" in detail


async def test_metrics_count_tokens_refusals_and_releases(kbs: Kbs):
    async with KbsClient(kbs.url, kbs.snp, [kbs.gpu]) as client:
        await client.get_resource(URI)
    kbs.snp.report_data_override = bytes(64)
    async with KbsClient(kbs.url, kbs.snp, [kbs.gpu]) as client:
        with pytest.raises(KbsClientError):
            await client.attest()
    async with aiohttp.ClientSession() as http, http.get(f"{kbs.url}/metrics") as r:
        text = await r.text()
    assert 'kbs_attestations_total{outcome="token"} 1.0' in text
    assert 'kbs_attestations_total{outcome="refused"} 1.0' in text
    assert 'kbs_resource_requests_total{outcome="released"} 1.0' in text


async def test_auth_flood_is_bounded_by_evicting_the_oldest_sessions(kbs: Kbs, monkeypatch):
    from ccgpu.attest import kbs as kbs_module

    monkeypatch.setattr(kbs_module, "MAX_SESSIONS", 5)
    async with aiohttp.ClientSession() as http:
        for _ in range(12):
            async with http.post(f"{kbs.url}/kbs/v0/auth", json={"version": "0.4.0", "tee": "snp"}) as r:
                assert r.status == 200
    assert len(kbs.server.sessions) == 5


@pytest.mark.parametrize("offered", [5, "sha384", [1, 2], ["md5"]])
async def test_unusable_hash_algorithm_offers_are_refused_with_400(kbs: Kbs, offered):
    body = {"version": "0.4.0", "tee": "snp", "extra-params": {"supported-hash-algorithms": offered}}
    async with aiohttp.ClientSession() as http, http.post(f"{kbs.url}/kbs/v0/auth", json=body) as r:
        status, kind, detail = await _problem(r)
    assert (status, kind) == (400, "InvalidRequest") and "hash" in detail and "sha384" in detail


async def test_guest_offering_only_sha512_binds_its_evidence_with_sha512(kbs: Kbs):
    body = {"version": "0.4.0", "tee": "snp", "extra-params": {"supported-hash-algorithms": ["sha512"]}}
    key = public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(f"{kbs.url}/kbs/v0/auth", json=body) as r:
            challenge = protocol.Challenge.model_validate(await r.json())
        assert challenge.extra_params == {"selected-hash-algorithm": "sha512"}
        built = build_attestation(challenge, key, kbs.snp, [kbs.gpu])
        assert built.report_data == hashlib.sha512(protocol.jcs(protocol.runtime_data_object(
            challenge.nonce, key, built.attestation.tee_evidence.additional_evidence))).digest()
        async with http.post(f"{kbs.url}/kbs/v0/attest", json=built.attestation.to_wire()) as r:
            assert r.status == 200


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/kbs/v0/auth", 405), ("POST", "/kbs/v0/nothing", 404), ("DELETE", "/kbs/v0/resource/a/b/c", 405)])
async def test_unknown_endpoints_and_methods_answer_problem_json(kbs: Kbs, method, path, status):
    async with aiohttp.ClientSession() as http, http.request(method, f"{kbs.url}{path}") as r:
        got, _, detail = await _problem(r)
    assert got == status and path in detail


async def test_an_unexpected_failure_is_a_500_problem_that_leaks_nothing(kbs: Kbs, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("secret internal state")

    monkeypatch.setattr(kbs.server.appraiser, "appraise", boom)
    async with KbsClient(kbs.url, kbs.snp, [kbs.gpu]) as client:
        with pytest.raises(KbsClientError) as err:
            await client.attest()
    assert err.value.status == 500 and "secret internal state" not in err.value.detail


async def test_concurrent_guests_each_get_the_secret_encrypted_to_their_own_key(kbs: Kbs):
    import asyncio

    clients = [KbsClient(kbs.url, kbs.snp, [kbs.gpu]) for _ in range(6)]
    try:
        secrets = await asyncio.gather(*(c.get_resource(URI) for c in clients))
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    assert secrets == [SECRET] * 6
    assert len({c.tee_pubkey["x"] for c in clients}) == 6

"""End to end through the production verifiers: simulated SNP + H100 evidence (ccgpu.sim.tee), the guest
client, the KBS on loopback. Each refusal is checked for its status, its reason and that no secret left."""

from __future__ import annotations

import dataclasses

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from kbs_fixtures import SECRET, SimKbs

from ccgpu.attest import ear, protocol
from ccgpu.attest.client import KbsClient, KbsClientError, build_attestation
from ccgpu.attest.jwe import public_jwk
from ccgpu.attest.snp import GuestPolicy

URI = "kbs:///default/key/model"


async def _refusal(sim_kbs: SimKbs, cpu, devices) -> KbsClientError:
    async with KbsClient(sim_kbs.url, cpu, devices) as client:
        with pytest.raises(KbsClientError) as err:
            await client.get_resource(URI)
    return err.value


async def test_simulated_guest_gets_the_secret_through_the_real_verifiers(sim_kbs: SimKbs):
    guest = sim_kbs.guest
    async with KbsClient(sim_kbs.url, guest.cpu, [guest.gpu]) as client:
        assert await client.get_resource(URI) == SECRET
        claims = ear.verify(client.token, sim_kbs.server.trusted_token_keys, now=sim_kbs.clock())
    cpu0, gpu0 = claims["submods"]["cpu0"], claims["submods"]["gpu0"]
    assert cpu0["ear.status"] == gpu0["ear.status"] == "affirming"
    assert cpu0["ear.veraison.annotated-evidence"]["snp"]["measurement"] == guest.cpu.measurement.hex()
    assert gpu0["ear.veraison.annotated-evidence"]["nvidia"]["uuid"] == guest.gpu.gpus[0].uuid


async def test_debug_policy_guest_is_refused_the_secret(sim_kbs: SimKbs):
    debug_cpu = dataclasses.replace(sim_kbs.guest.cpu, policy=GuestPolicy.build(debug_allowed=True))
    err = await _refusal(sim_kbs, debug_cpu, [sim_kbs.guest.gpu])
    assert (err.status, err.kind) == (401, "PolicyDeny") and "'cpu0': 'warning'" in err.detail


async def test_gpu_measurement_outside_reference_values_is_refused_the_secret(sim_kbs: SimKbs, monkeypatch):
    gpu = sim_kbs.guest.gpu.gpus[0]
    monkeypatch.setitem(gpu.measurements, 7, bytes(48))
    err = await _refusal(sim_kbs, sim_kbs.guest.cpu, [sim_kbs.guest.gpu])
    assert (err.status, err.kind) == (401, "PolicyDeny") and "'gpu0': 'warning'" in err.detail


async def test_report_data_not_binding_the_tee_key_is_refused(sim_kbs: SimKbs):
    """Genuine evidence whose report_data binds another TEE key than the one the secret would be wrapped to."""
    mine, theirs = (public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()) for _ in range(2))
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(f"{sim_kbs.url}/kbs/v0/auth", json={"version": "0.4.0", "tee": "snp"}) as r:
            challenge = protocol.Challenge.model_validate(await r.json())
        evidence = sim_kbs.guest.cpu.evidence(protocol.report_data(challenge.nonce, theirs))
        attestation = protocol.Attestation(
            runtime_data=protocol.RuntimeData(nonce=challenge.nonce, tee_pubkey=mine),
            tee_evidence=protocol.TeeEvidence(primary_evidence=evidence),
        )
        async with http.post(f"{sim_kbs.url}/kbs/v0/attest", json=attestation.to_wire()) as r:
            body = await r.json()
            assert r.status == 401 and body["type"].endswith("/AttestationFailed")
        async with http.get(f"{sim_kbs.url}/kbs/v0/resource/default/key/model") as r:
            assert r.status == 401
    assert "report_data" in body["detail"]


async def test_replayed_real_evidence_is_refused_in_a_new_session(sim_kbs: SimKbs):
    guest = sim_kbs.guest
    key = public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async def auth() -> protocol.Challenge:
            async with http.post(f"{sim_kbs.url}/kbs/v0/auth", json={"version": "0.4.0", "tee": "snp"}) as r:
                return protocol.Challenge.model_validate(await r.json())

        first = build_attestation(await auth(), key, guest.cpu, [guest.gpu]).attestation
        second = await auth()  # a new session; the old evidence is replayed with the new nonce
        replay = first.model_copy(update={"runtime_data": protocol.RuntimeData(nonce=second.nonce, tee_pubkey=key)})
        async with http.post(f"{sim_kbs.url}/kbs/v0/attest", json=replay.to_wire()) as r:
            body = await r.json()
            assert r.status == 401 and body["type"].endswith("/AttestationFailed")
        async with http.get(f"{sim_kbs.url}/kbs/v0/resource/default/key/model") as r:
            assert r.status == 401
    assert "report_data" in body["detail"] or "nonce" in body["detail"]


async def test_gpu_evidence_for_another_nonce_is_refused_naming_the_check(sim_kbs: SimKbs):
    class StaleGpu:
        name = "nvidia"

        def evidence(self, nonce: bytes):
            return sim_kbs.guest.gpu.evidence(bytes(32))

    err = await _refusal(sim_kbs, sim_kbs.guest.cpu, [StaleGpu()])
    assert (err.status, err.kind) == (401, "AttestationFailed") and "nonce" in err.detail


async def test_one_flipped_bit_in_the_snp_report_in_transit_is_refused(sim_kbs: SimKbs):
    class Flipping:
        tee = "snp"

        def evidence(self, report_data: bytes):
            ev = sim_kbs.guest.cpu.evidence(report_data)
            report = dict(ev["attestation_report"])
            report["measurement"] = [report["measurement"][0] ^ 0x01, *report["measurement"][1:]]  # one bit
            return {**ev, "attestation_report": report}

    err = await _refusal(sim_kbs, Flipping(), [sim_kbs.guest.gpu])
    assert (err.status, err.kind) == (401, "AttestationFailed") and "signature" in err.detail


async def test_evidence_without_a_vcek_is_refused_naming_what_is_missing(sim_kbs: SimKbs):
    class NoVcek:
        tee = "snp"

        def evidence(self, report_data: bytes):
            return {**sim_kbs.guest.cpu.evidence(report_data), "cert_chain": None}

    err = await _refusal(sim_kbs, NoVcek(), [])
    assert err.kind == "AttestationFailed" and "no VCEK" in err.detail


def test_saved_simulated_guest_loads_with_the_same_identity(tmp_path, sim_guest):
    """The CLI's KBS and guest run in two processes; both must see one simulated identity."""
    from ccgpu.sim.guest import load_guest, save_guest

    save_guest(sim_guest, tmp_path)
    loaded = load_guest(tmp_path)
    assert loaded.reference_values() == sim_guest.reference_values()
    assert loaded.cpu.platform.chain_pem == sim_guest.cpu.platform.chain_pem
    assert loaded.gpu.gpus[0].cert_chain_pem == sim_guest.gpu.gpus[0].cert_chain_pem
    report_data = bytes(range(64))
    claims = sim_guest.verifiers()["snp"].verify(loaded.cpu.evidence(report_data), expected_binding=report_data,
                                                 init_data_digest=None)
    assert claims["measurement"] == sim_guest.cpu.measurement.hex()
    nonce = bytes(range(32))
    [gpu] = sim_guest.verifiers()["nvidia"].verify(loaded.gpu.evidence(nonce), expected_binding=nonce,
                                                   init_data_digest=None)
    assert gpu["x-nvidia-gpu-attestation-report-signature-verified"] is True


async def test_init_data_other_than_the_launch_host_data_is_refused(sim_kbs: SimKbs):
    from ccgpu.attest.appraisal import init_data_digest

    launched = protocol.InitData(body='version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"policy.rego" = "allow"\n')
    claimed = protocol.InitData(body=launched.body.replace("allow", "allow everything"))
    cpu = dataclasses.replace(sim_kbs.guest.cpu, host_data=init_data_digest(launched))
    async with KbsClient(sim_kbs.url, cpu, [sim_kbs.guest.gpu], init_data=launched) as client:
        assert await client.get_resource(URI) == SECRET
    async with KbsClient(sim_kbs.url, cpu, [sim_kbs.guest.gpu], init_data=claimed) as client:
        with pytest.raises(KbsClientError) as err:
            await client.get_resource(URI)
    assert (err.value.status, err.value.kind) == (401, "AttestationFailed") and "host_data" in err.value.detail


async def test_real_evidence_for_a_nonce_other_than_the_sessions_is_refused(sim_kbs: SimKbs):
    guest = sim_kbs.guest
    key = public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(f"{sim_kbs.url}/kbs/v0/auth", json={"version": "0.4.0", "tee": "snp"}) as r:
            assert r.status == 200
        own = protocol.Challenge(nonce=protocol.new_nonce())  # evidence made for a nonce of the guest's choosing
        attestation = build_attestation(own, key, guest.cpu, [guest.gpu]).attestation
        async with http.post(f"{sim_kbs.url}/kbs/v0/attest", json=attestation.to_wire()) as r:
            body = await r.json()
            assert r.status == 401 and body["type"].endswith("/AttestationFailed")
        async with http.get(f"{sim_kbs.url}/kbs/v0/resource/default/key/model") as r:
            assert r.status == 401
    assert "nonce does not match" in body["detail"]


async def test_session_expired_after_attesting_with_real_evidence_releases_nothing(sim_kbs: SimKbs):
    async with KbsClient(sim_kbs.url, sim_kbs.guest.cpu, [sim_kbs.guest.gpu]) as client:
        await client.attest()
        sim_kbs.clock.now += sim_kbs.server.session_timeout_s + 1
        with pytest.raises(KbsClientError) as err:
            await client.get_resource(URI)
    assert (err.value.status, err.value.kind) == (401, "ExpiredCookie")

"""Admin endpoints (token-authenticated), on-disk resources and policies, the RVPS store."""

from __future__ import annotations

import base64
import json
import logging

import aiohttp
import pytest
from kbs_fixtures import ADMIN_TOKEN, SECRET, Kbs

from ccgpu.attest.client import KbsClient, KbsClientError
from ccgpu.attest.policy import PolicyError, PolicyStore
from ccgpu.attest.rvps import ReferenceValueError, ReferenceValueStore

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_admin_endpoints_refuse_missing_and_wrong_tokens_and_change_nothing(kbs: Kbs):
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{kbs.url}/kbs/v0/resource/default/key/model", data=b"overwritten") as r:
            assert r.status == 401
        async with http.post(f"{kbs.url}/kbs/v0/resource/default/key/model", data=b"overwritten",
                             headers={"Authorization": "Bearer wrong-token-wrong-token"}) as r:
            assert r.status == 403 and (await r.json())["type"].endswith("/AdminForbidden")
    assert kbs.server.resources.get("default", "key", "model") == SECRET


async def test_admin_registers_a_resource_that_an_attested_guest_then_gets(kbs: Kbs, tmp_path):
    async with aiohttp.ClientSession() as http, http.post(
        f"{kbs.url}/kbs/v0/resource/team-a/keys/weights", data=b"new secret", headers=ADMIN
    ) as r:
        assert r.status == 200
    assert (tmp_path / "resources" / "team-a" / "keys" / "weights").read_bytes() == b"new secret"
    assert not [p for p in (tmp_path / "resources" / "team-a" / "keys").iterdir() if p.name.startswith(".")]
    async with KbsClient(kbs.url, kbs.snp, [kbs.gpu]) as client:
        assert await client.get_resource("kbs:///team-a/keys/weights") == b"new secret"


@pytest.mark.parametrize("path", ["..%2F..%2Fetc/key/x", "default/.hidden/x", "default/key/a..b"])
async def test_resource_paths_that_could_escape_the_store_are_refused(kbs: Kbs, path: str):
    async with aiohttp.ClientSession() as http, http.post(
        f"{kbs.url}/kbs/v0/resource/{path}", data=b"x", headers=ADMIN
    ) as r:
        assert r.status in (400, 404)
        assert r.headers["Content-Type"].startswith("application/problem+json")


async def test_resource_policy_upload_takes_effect_and_persists(kbs: Kbs, tmp_path):
    deny_all = "package policy\nimport rego.v1\ndefault allow := false\n"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{kbs.url}/kbs/v0/resource-policy", json={"policy": _b64(deny_all)},
                             headers=ADMIN) as r:
            assert r.status == 200
        async with http.get(f"{kbs.url}/kbs/v0/resource-policy", headers=ADMIN) as r:
            assert base64.b64decode((await r.json())["policy"]).decode() == deny_all
    async with KbsClient(kbs.url, kbs.snp, [kbs.gpu]) as client:
        with pytest.raises(KbsClientError) as err:
            await client.get_resource("kbs:///default/key/model")
    assert err.value.kind == "PolicyDeny"
    assert PolicyStore(tmp_path / "policies").resource_policy == deny_all


async def test_broken_policy_upload_is_refused_and_the_old_policy_stays(kbs: Kbs):
    before = kbs.server.appraiser.policies.attestation_policy("default_cpu")
    async with aiohttp.ClientSession() as http, http.post(
        f"{kbs.url}/kbs/v0/attestation-policy",
        json={"type": "rego", "policy_id": "default_cpu", "policy": _b64("package policy\nallow if {")},
        headers=ADMIN,
    ) as r:
        body = await r.json()
        assert r.status == 400 and "policy" in body["detail"]
    assert kbs.server.appraiser.policies.attestation_policy("default_cpu") == before


async def test_attestation_policy_upload_changes_the_verdict(kbs: Kbs):
    strict = 'package policy\nimport rego.v1\ntrust_claims := {"hardware": 97}\n'
    async with aiohttp.ClientSession() as http, http.post(
        f"{kbs.url}/kbs/v0/attestation-policy",
        json={"type": "rego", "policy_id": "default_cpu", "policy": _b64(strict)}, headers=ADMIN,
    ) as r:
        assert r.status == 200
    async with KbsClient(kbs.url, kbs.snp, [kbs.gpu]) as client:
        with pytest.raises(KbsClientError) as err:
            await client.get_resource("kbs:///default/key/model")
    assert "'cpu0': 'contraindicated'" in err.value.detail


async def test_reference_values_posted_as_sample_provenance_are_queryable(kbs: Kbs):
    payload = base64.b64encode(json.dumps({"snp_launch_measurement": ["cd" * 48]}).encode()).decode()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{kbs.url}/kbs/v0/reference-value", headers=ADMIN,
                             json={"version": "0.1.0", "type": "sample", "payload": payload}) as r:
            assert r.status == 200 and (await r.json()) == {"names": ["snp_launch_measurement"]}
        async with http.get(f"{kbs.url}/kbs/v0/reference-value/snp_launch_measurement", headers=ADMIN) as r:
            assert await r.json() == {"snp_launch_measurement": ["cd" * 48]}
    # The guest's measurement ("ab"*48) is no longer a reference value: executables 33, secret withheld.
    async with KbsClient(kbs.url, kbs.snp, [kbs.gpu]) as client:
        with pytest.raises(KbsClientError):
            await client.get_resource("kbs:///default/key/model")


def test_reference_values_expire(tmp_path):
    now = [1000.0]
    store = ReferenceValueStore(tmp_path / "rv.json", clock=lambda: now[0])
    store.set("allowed_driver_versions", ["550.90.07"], expiry_s=60)
    assert store.query("allowed_driver_versions") == ["550.90.07"]
    assert ReferenceValueStore(tmp_path / "rv.json", clock=lambda: now[0]).query("allowed_driver_versions")
    now[0] += 61
    assert store.query("allowed_driver_versions") == []


@pytest.mark.parametrize("message", [
    {"version": "0.1.0", "type": "swid", "payload": ""},
    {"version": "0.1.0", "type": "sample", "payload": "not base64!"},
    {"version": "0.1.0", "type": "sample", "payload": base64.b64encode(b'{"a": "not a list"}').decode()},
    ["not", "an", "object"],
])
def test_bad_provenance_is_refused_with_what_is_accepted(message):
    with pytest.raises(ReferenceValueError, match="accepted|must"):
        ReferenceValueStore().ingest(message)


def test_policy_that_sets_no_trust_claim_cannot_issue_a_token():
    store = PolicyStore()
    store.set_attestation_policy("default_cpu", "package policy\nimport rego.v1\ntrust_claims := {}\n")
    with pytest.raises(PolicyError, match="set no trust claims"):
        store.trust_vector("default_cpu", {"snp": {}}, {})


async def test_admin_tokens_right_or_wrong_never_reach_the_logs(kbs: Kbs, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-token-that-an-attacker-guessed"
    async with aiohttp.ClientSession() as http:
        for token in (ADMIN_TOKEN, wrong):
            async with http.post(f"{kbs.url}/kbs/v0/resource/default/key/logged", data=b"x",
                                 headers={"Authorization": f"Bearer {token}"}):
                pass
    assert "default/key/logged" in caplog.text  # the requests were logged...
    assert ADMIN_TOKEN not in caplog.text and wrong not in caplog.text  # ...their tokens were not

"""Garbled JSON bodies never crash the KBS: every answer is a 2xx or a 4xx problem, never a 5xx (hypothesis)."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kbs_fakes import FakeGpu, FakeGpuVerifier, FakeSnp, FakeSnpVerifier
from kbs_fixtures import ADMIN_TOKEN

from ccgpu.attest.appraisal import Appraiser
from ccgpu.attest.jwe import public_jwk
from ccgpu.attest.kbs import KbsServer, ResourceStore, serve

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
# Bodies shaped like the real messages, with any value in any slot.
mostly = lambda good, bad: st.one_of(st.just(good), st.just(good), st.just(good), bad)  # noqa: E731
hash_offer = st.one_of(st.lists(st.sampled_from(["sha384", "sha512", "md5"])), st.integers(), st.booleans(),
                       st.none(), st.text(max_size=8), json_values)
offer = st.builds(lambda v: {"supported-hash-algorithms": v}, hash_offer)
request_like = st.fixed_dictionaries(
    {"version": mostly("0.4.0", st.sampled_from(["0.3.0", ""]) | json_values),
     "tee": mostly("snp", st.sampled_from(["nvidia", "tdx"]) | json_values)},
    optional={"extra-params": st.one_of(offer, offer, st.just({}), json_values)})
_VALID_KEY = public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())
tee_pubkey = st.one_of(st.just(_VALID_KEY), st.just(_VALID_KEY), st.fixed_dictionaries(
    {}, optional={"kty": st.sampled_from(["EC", "RSA"]), "crv": st.sampled_from(["P-256", "P-384", "X"]),
                  "x": st.text(max_size=44), "y": st.text(max_size=44)}), json_values)
primary = st.one_of(st.fixed_dictionaries({}, optional={"body": st.text(max_size=20) | json_values,
                                                         "signature": st.text(max_size=20) | json_values}),
                    json_values)
attestation_like = st.fixed_dictionaries(
    {"runtime-data": mostly({"nonce": "session", "tee-pubkey": _VALID_KEY}, json_values).flatmap(
        lambda rd: st.fixed_dictionaries({"nonce": st.just("x"), "tee-pubkey": tee_pubkey})
        if isinstance(rd, dict) and rd.get("nonce") == "session" else st.just(rd)),
     "tee-evidence": st.one_of(st.fixed_dictionaries({"primary_evidence": primary}, optional={
         "additional_evidence": st.text(max_size=40) | json_values.map(json.dumps)
         | st.builds(lambda ev: json.dumps({"nvidia": ev}), json_values)}), json_values)},
    optional={"init-data": st.fixed_dictionaries({}, optional={"format": json_values, "body": json_values})
              | st.builds(lambda b: {"format": "toml", "body": b}, st.text(max_size=30)) | json_values},
)
bodies = st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64),
                   request_like.map(lambda v: json.dumps(v).encode()),
                   attestation_like.map(lambda v: json.dumps(v).encode()))


class Background:
    """One KBS on loopback in its own thread and event loop, shared by all hypothesis examples."""

    def __init__(self, tmp: str) -> None:
        from pathlib import Path

        snp, gpu = FakeSnp(), FakeGpu()
        appraiser = Appraiser({"snp": FakeSnpVerifier(snp.key.public_key()),
                               "nvidia": FakeGpuVerifier(gpu.key.public_key())})
        self.server = KbsServer(appraiser, ResourceStore(Path(tmp) / "res"), admin_token=ADMIN_TOKEN)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = asyncio.run_coroutine_threadsafe(serve(self.server, "127.0.0.1", 0), self.loop).result(10)
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> int:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            assert e.headers["Content-Type"].startswith("application/problem+json"), e.read()
            return e.code


@pytest.fixture(scope="module")
def background(tmp_path_factory) -> Iterator[Background]:
    bg = Background(str(tmp_path_factory.mktemp("kbs-fuzz")))
    yield bg
    bg.close()


def _session(bg: Background) -> tuple[str, str]:
    req = urllib.request.Request(bg.url + "/kbs/v0/auth", method="POST",
                                 data=json.dumps({"version": "0.4.0", "tee": "snp"}).encode())
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers["Set-Cookie"].split(";")[0], json.loads(r.read())["nonce"]


FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(body=st.one_of(*[request_like.map(lambda v: json.dumps(v).encode())] * 3, bodies))
def test_garbled_auth_bodies_never_crash_the_server(background: Background, body: bytes):
    assert background.call("POST", "/kbs/v0/auth", body) in (200, 400)


@FUZZ
@given(body=st.one_of(*[attestation_like.map(lambda v: json.dumps(v).encode())] * 3, bodies))
def test_garbled_attest_bodies_never_crash_the_server(background: Background, body: bytes):
    """Where the body has a runtime-data object, it gets the session's nonce so the deeper checks run too."""
    cookie, nonce = _session(background)
    try:
        value = json.loads(body)
    except ValueError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("runtime-data"), dict):
        value["runtime-data"]["nonce"] = nonce
        body = json.dumps(value).encode()
    assert background.call("POST", "/kbs/v0/attest", body, {"Cookie": cookie}) in (400, 401)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, path=st.sampled_from(["/kbs/v0/attestation-policy", "/kbs/v0/resource-policy",
                                          "/kbs/v0/reference-value"]))
def test_garbled_admin_bodies_never_crash_the_server(background: Background, body: bytes, path: str):
    status = background.call("POST", path, body, {"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert status in (200, 400)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=st.text(max_size=80) | st.lists(st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=40), min_size=3,
    max_size=3).map(".".join))
def test_garbled_bearer_tokens_are_refused_not_crashed_on(background: Background, token: str):
    safe = "".join(c for c in token if 0x20 < ord(c) < 0x7F)
    status = background.call("GET", "/kbs/v0/resource/default/key/model", None,
                             {"Authorization": f"Bearer {safe}"} if safe else {})
    assert status == 401

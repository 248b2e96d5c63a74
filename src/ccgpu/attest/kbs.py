"""The Key Broker Service: Trustee's KBS protocol 0.4.0 over aiohttp.

`/kbs/v0/auth` opens a session (cookie `kbs-session-id`) with a fresh challenge, `/attest` turns evidence into
an EAR token, `/resource/<repo>/<type>/<tag>` releases a secret as a JWE to the TEE key named in the token,
if the resource policy allows. Admin endpoints take `Authorization: Bearer <admin token>`. Every error is RFC 7807
problem+json naming what was wrong; nothing a client sends can make the server fail with a 500.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest

from ccgpu.attest import ear, jwe, protocol
from ccgpu.attest.appraisal import Appraiser, AttestationRefused
from ccgpu.attest.policy import PolicyError
from ccgpu.attest.rvps import ReferenceValueError
from ccgpu.attest.storage import atomic_write, check_segment

log = logging.getLogger(__name__)

ERROR_TYPE_BASE = "https://github.com/confidential-containers/kbs/errors/"
SESSION_COOKIE = "kbs-session-id"
DEFAULT_SESSION_TIMEOUT_S = 300
MAX_SESSIONS = 10_000  # a flood of /auth evicts the oldest unattested sessions instead of growing memory
MAX_BODY = 4 * 1024 * 1024
_STATUS = {
    "InvalidRequest": 400,
    "ProtocolVersion": 400,
    "MissingCookie": 401,
    "UnAuthenticatedCookie": 401,
    "ExpiredCookie": 401,
    "AttestationFailed": 401,
    "PolicyError": 401,
    "TokenInvalid": 401,
    "PolicyDeny": 401,
    "AdminAuth": 401,
    "AdminForbidden": 403,
    "ResourceNotFound": 404,
    "NotFound": 404,
}


class Problem(Exception):
    """An RFC 7807 refusal: `kind` picks the type URI and status, `detail` says what was wrong."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail

    def response(self) -> web.Response:
        return _problem_response(self.kind, _STATUS[self.kind], self.detail)


def _problem_response(kind: str, status: int, detail: str) -> web.Response:
    body = {"type": ERROR_TYPE_BASE + kind, "title": kind, "status": status, "detail": detail}
    return web.json_response(body, status=status, content_type="application/problem+json")


@dataclass
class Session:
    tee: str
    nonce: str
    hash_alg: str
    expires: float
    token: str | None = None


class ResourceStore:
    """Secrets on disk at <dir>/<repo>/<type>/<tag>, written atomically; every segment is checked first."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, repo: str, type_: str, tag: str) -> Path:
        return self.directory / check_segment("repository", repo) / check_segment("type", type_) / check_segment(
            "tag", tag
        )

    def put(self, repo: str, type_: str, tag: str, data: bytes) -> None:
        atomic_write(self._path(repo, type_, tag), data)

    def get(self, repo: str, type_: str, tag: str) -> bytes | None:
        path = self._path(repo, type_, tag)
        return path.read_bytes() if path.is_file() else None


class KbsServer:
    """State and handlers of one KBS. `clock` is injectable so tests can expire sessions without sleeping."""

    def __init__(
        self,
        appraiser: Appraiser,
        resources: ResourceStore,
        *,
        admin_token: str,
        session_timeout_s: float = DEFAULT_SESSION_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(admin_token) < 16:
            raise ValueError("admin token must be at least 16 characters")
        self.appraiser = appraiser
        self.resources = resources
        self._admin_token = admin_token
        self.session_timeout_s = session_timeout_s
        self.clock = clock
        self.sessions: dict[str, Session] = {}
        self.registry = CollectorRegistry()
        self.m_attest = Counter("kbs_attestations", "Attestation attempts by outcome", ["outcome"],
                                registry=self.registry)
        self.m_resource = Counter("kbs_resource_requests", "Resource requests by outcome", ["outcome"],
                                  registry=self.registry)

    @property
    def trusted_token_keys(self) -> list[dict[str, Any]]:
        return [self.appraiser.signer.public_jwk]

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._problems])
        app.router.add_post("/kbs/v0/auth", self.auth)
        app.router.add_post("/kbs/v0/attest", self.attest)
        app.router.add_get("/kbs/v0/resource/{repo}/{type}/{tag}", self.get_resource)
        app.router.add_post("/kbs/v0/resource/{repo}/{type}/{tag}", self.put_resource)
        app.router.add_post("/kbs/v0/attestation-policy", self.set_attestation_policy)
        app.router.add_post("/kbs/v0/resource-policy", self.set_resource_policy)
        app.router.add_get("/kbs/v0/resource-policy", self.get_resource_policy)
        app.router.add_post("/kbs/v0/reference-value", self.add_reference_value)
        app.router.add_get("/kbs/v0/reference-value/{name}", self.get_reference_value)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        return app

    @web.middleware
    async def _problems(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except Problem as p:
            log.info("%s %s refused: %s: %s", request.method, request.path, p.kind, p.detail)
            return p.response()
        except web.HTTPException as e:
            if e.status < 400:
                raise
            detail = {404: f"no endpoint {request.method} {request.path}",
                      405: f"{request.method} is not allowed on {request.path}",
                      413: f"body larger than {MAX_BODY} bytes"}.get(e.status, e.reason)
            return _problem_response("NotFound" if e.status == 404 else "InvalidRequest", e.status, detail)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return _problem_response("InternalError", 500, "internal error; the KBS log has the details")

    # --- RCAR ---------------------------------------------------------------------------------------------------

    async def auth(self, request: web.Request) -> web.Response:
        req = self._parse(protocol.Request, await request.read())
        if req.version != protocol.PROTOCOL_VERSION:
            raise Problem("ProtocolVersion", f"protocol version {req.version!r}; accepted: {protocol.PROTOCOL_VERSION}")
        if req.tee not in self.appraiser.verifiers:
            raise Problem("InvalidRequest",
                          f"tee {req.tee!r} not supported; accepted: {', '.join(sorted(self.appraiser.verifiers))}")
        try:
            alg = protocol.selected_hash(req)
        except protocol.ProtocolError as e:
            raise Problem("InvalidRequest", str(e)) from e
        self._expire_sessions()
        if len(self.sessions) >= MAX_SESSIONS:  # read at call time so tests can lower it
            oldest = min(self.sessions, key=lambda sid: self.sessions[sid].expires)
            del self.sessions[oldest]
        session_id = str(uuid.uuid4())
        session = Session(req.tee, protocol.new_nonce(), alg, self.clock() + self.session_timeout_s)
        self.sessions[session_id] = session
        extra: dict[str, Any] | str = "" if alg == protocol.DEFAULT_HASH else {"selected-hash-algorithm": alg}
        challenge = protocol.Challenge(nonce=session.nonce, extra_params=extra)
        response = web.json_response(challenge.to_wire())
        response.set_cookie(SESSION_COOKIE, session_id, max_age=int(self.session_timeout_s), httponly=True,
                            samesite="Strict")
        return response

    async def attest(self, request: web.Request) -> web.Response:
        session = self._session(request)
        attestation = self._parse(protocol.Attestation, await request.read())
        if session.token is not None:
            return web.json_response({"token": session.token})
        try:  # verification and Rego take milliseconds of CPU: keep the event loop free for other guests
            token = await asyncio.to_thread(
                self.appraiser.appraise, session.tee, session.nonce, attestation, session.hash_alg
            )
        except AttestationRefused as e:
            self.m_attest.labels(outcome="refused").inc()
            raise Problem(e.kind, e.detail) from e
        self.m_attest.labels(outcome="token").inc()
        statuses = {n: sm["ear.status"] for n, sm in ear.unverified_claims(token)["submods"].items()}
        log.info("tee %s attested: %s", session.tee, ", ".join(f"{n}={st}" for n, st in statuses.items()))
        session.token = token
        return web.json_response({"token": token})

    async def get_resource(self, request: web.Request) -> web.Response:
        token = self._bearer(request) or self._session(request).token
        if token is None:
            raise Problem("UnAuthenticatedCookie", "session has not attested yet; POST /kbs/v0/attest first")
        try:
            claims = ear.verify(token, self.trusted_token_keys, now=self.clock())
            pubkey = ear.tee_pubkey_of(claims)
        except ear.TokenError as e:
            self.m_resource.labels(outcome="token-invalid").inc()
            raise Problem("TokenInvalid", str(e)) from e
        path = self._resource_path(request)
        try:
            allowed = await asyncio.to_thread(self.appraiser.policies.allow_resource, claims, list(path))
        except PolicyError as e:
            raise Problem("PolicyDeny", str(e)) from e
        if not allowed:
            self.m_resource.labels(outcome="denied").inc()
            statuses = {n: s.get("ear.status") for n, s in claims["submods"].items()}
            raise Problem("PolicyDeny", f"resource policy denied {'/'.join(path)} (submod status: {statuses})")
        secret = self.resources.get(*path)
        if secret is None:
            raise Problem("ResourceNotFound", f"no resource {'/'.join(path)}")
        try:
            body = jwe.encrypt(secret, pubkey)
        except jwe.JweError as e:
            raise Problem("TokenInvalid", f"token tee-pubkey unusable: {e}") from e
        self.m_resource.labels(outcome="released").inc()
        log.info("resource %s released, encrypted to the attested TEE key", "/".join(path))
        return web.json_response(body)

    # --- admin --------------------------------------------------------------------------------------------------

    async def put_resource(self, request: web.Request) -> web.Response:
        self._admin(request)
        path = self._resource_path(request)
        self.resources.put(*path, await request.read())
        log.info("resource %s stored", "/".join(path))
        return web.Response(status=200)

    async def set_attestation_policy(self, request: web.Request) -> web.Response:
        self._admin(request)
        body = self._json_object(await request.read())
        if body.get("type", "rego") != "rego":
            raise Problem("InvalidRequest", f"policy type {body.get('type')!r}; accepted: rego")
        policy_id = body.get("policy_id")
        if not isinstance(policy_id, str):
            raise Problem("InvalidRequest", "policy_id (string, e.g. default_cpu) is required")
        try:
            self.appraiser.policies.set_attestation_policy(policy_id, self._b64_text(body.get("policy")))
        except PolicyError as e:
            raise Problem("InvalidRequest", str(e)) from e
        return web.Response(status=200)

    async def set_resource_policy(self, request: web.Request) -> web.Response:
        self._admin(request)
        body = self._json_object(await request.read())
        try:
            self.appraiser.policies.set_resource_policy(self._b64_text(body.get("policy")))
        except PolicyError as e:
            raise Problem("InvalidRequest", str(e)) from e
        return web.Response(status=200)

    async def get_resource_policy(self, request: web.Request) -> web.Response:
        self._admin(request)
        policy = base64.b64encode(self.appraiser.policies.resource_policy.encode()).decode()
        return web.json_response({"policy": policy})

    async def add_reference_value(self, request: web.Request) -> web.Response:
        self._admin(request)
        body = self._json_object(await request.read())
        try:
            names = self.appraiser.reference_values.ingest(body)
        except ReferenceValueError as e:
            raise Problem("InvalidRequest", str(e)) from e
        return web.json_response({"names": names})

    async def get_reference_value(self, request: web.Request) -> web.Response:
        self._admin(request)
        name = request.match_info["name"]
        return web.json_response({name: self.appraiser.reference_values.query(name)})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    # --- helpers ------------------------------------------------------------------------------------------------

    def _admin(self, request: web.Request) -> None:
        token = self._bearer(request)
        if token is None:
            raise Problem("AdminAuth", "admin endpoint needs Authorization: Bearer <admin token>")
        if not hmac.compare_digest(token.encode(), self._admin_token.encode()):
            raise Problem("AdminForbidden", "admin token not accepted")

    @staticmethod
    def _bearer(request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None

    def _session(self, request: web.Request) -> Session:
        session_id = request.cookies.get(SESSION_COOKIE)
        if not session_id:
            raise Problem("MissingCookie", f"no {SESSION_COOKIE} cookie; POST /kbs/v0/auth first")
        session = self.sessions.get(session_id)
        if session is None:
            raise Problem("UnAuthenticatedCookie", f"unknown {SESSION_COOKIE}; POST /kbs/v0/auth for a new one")
        if session.expires <= self.clock():
            del self.sessions[session_id]
            raise Problem("ExpiredCookie", "session expired; POST /kbs/v0/auth for a new one")
        return session

    def _expire_sessions(self) -> None:
        now = self.clock()
        for sid in [sid for sid, s in self.sessions.items() if s.expires <= now]:
            del self.sessions[sid]

    @staticmethod
    def _parse(model: type, body: bytes) -> Any:
        try:
            return protocol.parse_message(model, body)
        except protocol.ProtocolError as e:
            raise Problem("InvalidRequest", str(e)) from e

    @staticmethod
    def _json_object(body: bytes) -> dict[str, Any]:
        try:
            value = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise Problem("InvalidRequest", "body is not JSON; a JSON object is accepted") from e
        if not isinstance(value, dict):
            raise Problem("InvalidRequest", "body must be a JSON object")
        return value

    @staticmethod
    def _b64_text(value: Any) -> str:
        if not isinstance(value, str):
            raise Problem("InvalidRequest", "policy must be a base64 string of the Rego text")
        try:
            return base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as e:
            raise Problem("InvalidRequest", "policy is not base64 of UTF-8 Rego text") from e

    @staticmethod
    def _resource_path(request: web.Request) -> tuple[str, str, str]:
        m = request.match_info
        try:
            return (check_segment("repository", m["repo"]), check_segment("type", m["type"]),
                    check_segment("tag", m["tag"]))
        except ValueError as e:
            raise Problem("InvalidRequest", str(e)) from e


def tls_context(cert_pem: Path, key_pem: Path) -> ssl.SSLContext:
    """Server TLS (1.2+) from a certificate chain and its key, as Trustee's KBS serves HTTPS."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_pem, key_pem)
    return ctx


async def serve(
    server: KbsServer, host: str, port: int, *, tls: ssl.SSLContext | None = None
) -> web.AppRunner:
    """Start the KBS on host:port (HTTPS when `tls` is given); returns the runner (call `cleanup()` to stop)."""
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=tls).start()
    return runner

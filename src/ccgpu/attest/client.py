"""The guest side: run the RCAR handshake with evidence from a pluggable attester, then fetch and decrypt
resources (what CoCo's attestation-agent and CDH do, reference attestation.md §2).
"""

from __future__ import annotations

import json
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec

from ccgpu.attest import jwe, protocol

_URI = re.compile(r"^kbs://(?P<host>[^/]*)/(?P<repo>[^/]+)/(?P<type>[^/]+)/(?P<tag>[^/]+)$")


class Attester(Protocol):
    """A CPU TEE that reports: returns the primary evidence carrying `report_data` (64 bytes)."""

    tee: str

    def evidence(self, report_data: bytes) -> Any: ...


class DeviceAttester(Protocol):
    """An additional device (e.g. `nvidia`): returns its evidence bound to `nonce` (the device runtime data)."""

    name: str

    def evidence(self, nonce: bytes) -> Any: ...


class KbsClientError(Exception):
    """The KBS refused or answered something unusable; carries the HTTP status and the server's detail."""

    def __init__(self, status: int, detail: str, kind: str = "") -> None:
        super().__init__(f"{status} {kind}: {detail}" if kind else f"{status}: {detail}")
        self.status, self.detail, self.kind = status, detail, kind


def parse_resource_uri(uri: str) -> tuple[str, str, str]:
    """`kbs:///repo/type/tag` (or `kbs://host/repo/type/tag`) → (repo, type, tag)."""
    m = _URI.match(uri)
    if not m:
        raise ValueError(f"resource URI {uri!r} not accepted; expected kbs:///<repository>/<type>/<tag>")
    return m["repo"], m["type"], m["tag"]


@dataclass
class BuiltEvidence:
    attestation: protocol.Attestation
    report_data: bytes
    gpu_nonce: bytes


def build_attestation(
    challenge: protocol.Challenge,
    tee_pubkey: dict[str, Any],
    attester: Attester,
    devices: list[DeviceAttester],
    init_data: protocol.InitData | None = None,
) -> BuiltEvidence:
    """Collect device evidence first (its binding excludes it), then the CPU report binding all of it."""
    alg = protocol.DEFAULT_HASH
    if isinstance(challenge.extra_params, dict):
        alg = challenge.extra_params.get("selected-hash-algorithm", alg)
    nonce_for_gpu = protocol.gpu_nonce(challenge.nonce, tee_pubkey, alg)
    additional = ""
    if devices:
        by_name: dict[str, Any] = {}
        for device in devices:
            binding = nonce_for_gpu if device.name == "nvidia" else protocol.device_runtime_hash(
                challenge.nonce, tee_pubkey, alg)
            by_name[device.name] = device.evidence(binding)
        additional = json.dumps(by_name, separators=(",", ":"))
    rd = protocol.report_data(challenge.nonce, tee_pubkey, additional, alg)
    attestation = protocol.Attestation(
        init_data=init_data,
        runtime_data=protocol.RuntimeData(nonce=challenge.nonce, tee_pubkey=tee_pubkey),
        tee_evidence=protocol.TeeEvidence(primary_evidence=attester.evidence(rd), additional_evidence=additional),
    )
    return BuiltEvidence(attestation, rd, nonce_for_gpu)


class KbsClient:
    """One guest's conversation with a KBS: a fresh P-256 TEE key per client, cookie session, token, resources."""

    def __init__(
        self,
        url: str,
        attester: Attester,
        devices: list[DeviceAttester] | None = None,
        *,
        init_data: protocol.InitData | None = None,
        kbs_cert: Path | None = None,
        timeout_s: float = 30,
    ) -> None:
        self.url = url.rstrip("/")
        self.attester = attester
        self.devices = devices or []
        self.init_data = init_data
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.tee_pubkey = jwe.public_jwk(self.key.public_key())
        self.token: str | None = None
        # HTTPS: the system's CAs, or only `kbs_cert` (the KBS's certificate or its CA, PEM) when given.
        tls = ssl.create_default_context(cafile=str(kbs_cert)) if kbs_cert is not None else None
        self._http = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            connector=aiohttp.TCPConnector(ssl=tls) if tls is not None else None,
        )

    async def __aenter__(self) -> KbsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.close()

    async def attest(self) -> str:
        """RCAR handshake; returns the EAR token (also kept for resource requests in this session)."""
        request = protocol.Request(
            version=protocol.PROTOCOL_VERSION,
            tee=self.attester.tee,
            extra_params={"supported-hash-algorithms": ["sha384", "sha256", "sha512"]},
        )
        challenge = protocol.Challenge.model_validate(await self._post("auth", request.to_wire()))
        built = build_attestation(challenge, self.tee_pubkey, self.attester, self.devices, self.init_data)
        reply = await self._post("attest", built.attestation.to_wire())
        token = reply.get("token") if isinstance(reply, dict) else None
        if not isinstance(token, str):
            raise KbsClientError(200, "attest reply carries no token")
        self.token = token
        return token

    async def get_resource(self, uri: str) -> bytes:
        """Fetch `kbs:///repo/type/tag`, attesting first if this client has no token yet; returns the plaintext."""
        repo, type_, tag = parse_resource_uri(uri)
        if self.token is None:
            await self.attest()
        async with self._http.get(f"{self.url}/kbs/v0/resource/{repo}/{type_}/{tag}") as r:
            body = await self._json(r)
        try:
            return jwe.decrypt(body, self.key)
        except jwe.JweError as e:
            raise KbsClientError(200, f"resource reply unusable: {e}") from e

    async def _post(self, endpoint: str, body: dict[str, Any]) -> Any:
        async with self._http.post(f"{self.url}/kbs/v0/{endpoint}", json=body) as r:
            return await self._json(r)

    @staticmethod
    async def _json(response: aiohttp.ClientResponse) -> Any:
        text = await response.text()
        try:
            value = json.loads(text) if text else None
        except ValueError:
            value = None
        if response.status != 200:
            detail = value.get("detail", text) if isinstance(value, dict) else text
            kind = value.get("type", "").rsplit("/", 1)[-1] if isinstance(value, dict) else ""
            raise KbsClientError(response.status, str(detail), kind)
        return value

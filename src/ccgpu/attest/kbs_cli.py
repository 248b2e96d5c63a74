"""What `ccgpu attest kbs|get-resource|ready-gate` do, apart from choosing attesters and verifiers (cli.py does
that, since only it may reach the simulation).

KBS data directory: `resources/<repo>/<type>/<tag>`, `policies/*.rego`, `reference-values.json`,
`token-signer.pem` (the EAR signing key, made on first start, 0600) and `token-signer.jwk.json` (its public key,
for guests that pin the KBS's verdicts, e.g. `ready-gate --token-key`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey

from ccgpu.attest.appraisal import Appraiser
from ccgpu.attest.client import Attester, DeviceAttester, KbsClient
from ccgpu.attest.ear import TokenSigner
from ccgpu.attest.kbs import KbsServer, ResourceStore, serve, tls_context
from ccgpu.attest.policy import PolicyStore
from ccgpu.attest.protocol import InitData
from ccgpu.attest.ready_gate import GateResult, ReadyStateBackend, run_ready_gate
from ccgpu.attest.rvps import ReferenceValueStore
from ccgpu.attest.storage import atomic_write

ADMIN_TOKEN_ENV = "CCGPU_KBS_ADMIN_TOKEN"
log = logging.getLogger(__name__)


class CommandError(Exception):
    """A command cannot start; the message says what was wrong and what is accepted."""


def load_admin_token(path: Path | None) -> str:
    """The admin token from a file (first line) or $CCGPU_KBS_ADMIN_TOKEN; never echoed anywhere."""
    if path is not None:
        try:
            token = path.read_text().strip()
        except OSError as e:
            raise CommandError(f"cannot read the admin token file {path}: {e.strerror}") from e
    else:
        token = os.environ.get(ADMIN_TOKEN_ENV, "").strip()
    if len(token) < 16:
        raise CommandError(
            f"an admin token of at least 16 characters is required (--admin-token-file or ${ADMIN_TOKEN_ENV})"
        )
    return token


def load_signer(data_dir: Path) -> TokenSigner:
    """The KBS's EAR signing key, kept in the data directory so tokens survive a restart."""
    key_path = data_dir / "token-signer.pem"
    if key_path.is_file():
        key = ECKey.import_key(key_path.read_bytes())
    else:
        key = ECKey.generate_key("P-256")
        atomic_write(key_path, key.as_pem(private=True), mode=0o600)
    signer = TokenSigner(key)
    atomic_write(data_dir / "token-signer.jwk.json", json.dumps(signer.public_jwk).encode(), mode=0o644)
    return signer


def build_server(
    data_dir: Path,
    admin_token: str,
    verifiers: dict[str, Any],
    *,
    session_timeout_s: float = 300,
    reference_values: dict[str, list[Any]] | None = None,
) -> KbsServer:
    """A KBS over `data_dir`; `reference_values` are added to the RVPS store (e.g. a simulated guest's)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    rvps = ReferenceValueStore(data_dir / "reference-values.json")
    for name, values in (reference_values or {}).items():
        rvps.set(name, values)
    appraiser = Appraiser(verifiers, PolicyStore(data_dir / "policies"), rvps, load_signer(data_dir))
    return KbsServer(appraiser, ResourceStore(data_dir / "resources"), admin_token=admin_token,
                     session_timeout_s=session_timeout_s)


async def serve_until_stopped(
    server: KbsServer, host: str, port: int, *, tls_cert: Path | None = None, tls_key: Path | None = None
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if (tls_cert is None) != (tls_key is None):
        raise CommandError("--tls-cert and --tls-key go together (both for HTTPS, neither for plain HTTP)")
    tls = tls_context(tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
    if tls is None and host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("serving plain HTTP on %s: the admin token and tokens travel unencrypted; use --tls-cert", host)
    runner = await serve(server, host, port, tls=tls)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound = ", ".join(f"{a[0]}:{a[1]}" for a in runner.addresses)
    scheme = "https" if tls else "http"
    print(f"ccgpu KBS listening on {scheme}://{bound} (protocol 0.4.0)", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


async def fetch_resource(
    url: str,
    uri: str,
    attester: Attester,
    devices: list[DeviceAttester],
    *,
    kbs_cert: Path | None = None,
    init_data: InitData | None = None,
) -> bytes:
    async with KbsClient(url, attester, devices, kbs_cert=kbs_cert, init_data=init_data) as client:
        return await client.get_resource(uri)


async def ready_gate(
    url: str,
    attester: Attester,
    devices: list[DeviceAttester],
    backend: ReadyStateBackend,
    *,
    token_key: Path | None = None,
    min_gpus: int = 1,
    kbs_cert: Path | None = None,
    init_data: InitData | None = None,
) -> GateResult:
    keys = [json.loads(token_key.read_text())] if token_key is not None else None
    async with KbsClient(url, attester, devices, kbs_cert=kbs_cert, init_data=init_data) as client:
        return await run_ready_gate(client, backend, trusted_token_keys=keys, min_gpus=min_gpus)

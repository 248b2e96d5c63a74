"""The CLI end to end: `ccgpu attest kbs` in one process, `get-resource` and `ready-gate` (simulated guest) in
others, talking over loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from ccgpu.sim.guest import save_guest
from tests.conftest import ccgpu_command, ccgpu_env

ADMIN_TOKEN = "cli-test-admin-token-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, deadline_s: float = 60) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"KBS exited early: {proc.stderr.read().decode()}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)  # polling a condition with a deadline, not hoping
    raise AssertionError("KBS did not become healthy in time")


@pytest.fixture(scope="module")
def kbs_process(tmp_path_factory, sim_guest):
    base = tmp_path_factory.mktemp("kbs-cli")
    save_guest(sim_guest, base / "guest")  # the session's guest: no second set of RSA-4096 test roots to make
    (base / "admin-token").write_text(ADMIN_TOKEN + "\n")
    port = _free_port()
    proc = subprocess.Popen(  # noqa: S603 (our own CLI, fixed argv)
        ccgpu_command("attest", "kbs", "--port", str(port), "--data-dir", str(base / "data"),
                      "--admin-token-file", str(base / "admin-token"), "--sim-guest", str(base / "guest")),
        env=ccgpu_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        req = urllib.request.Request(f"{url}/kbs/v0/resource/default/key/model", data=b"cli secret", method="POST",
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        yield url, base
    finally:
        proc.terminate()
        proc.wait(10)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(ccgpu_command(*args), env=ccgpu_env(), capture_output=True, timeout=60)  # noqa: S603


def test_get_resource_with_the_simulated_guest_prints_the_secret(kbs_process):
    url, base = kbs_process
    out = _run("attest", "get-resource", "kbs:///default/key/model", "--kbs-url", url, "--attester", "sim",
               "--sim-guest", str(base / "guest"))
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout == b"cli secret"


def test_get_resource_for_a_missing_resource_fails_with_the_kbs_reason(kbs_process):
    url, base = kbs_process
    out = _run("attest", "get-resource", "kbs:///default/key/absent", "--kbs-url", url, "--attester", "sim",
               "--sim-guest", str(base / "guest"))
    assert out.returncode == 1 and b"404 ResourceNotFound" in out.stderr and out.stdout == b""


def test_ready_gate_sets_ready_after_an_affirming_pinned_verdict(kbs_process, tmp_path):
    url, base = kbs_process
    state = tmp_path / "gpus-ready"
    out = _run("attest", "ready-gate", "--kbs-url", url, "--attester", "sim", "--sim-guest", str(base / "guest"),
               "--state-file", str(state), "--token-key", str(base / "data" / "token-signer.jwk.json"))
    assert out.returncode == 0, out.stderr.decode()
    assert state.read_text() == "1\n" and b"ready: CPU and GPU evidence affirmed" in out.stdout


def test_ready_gate_refuses_a_verdict_from_another_signer(kbs_process, tmp_path):
    url, base = kbs_process
    other = tmp_path / "other.jwk.json"
    other.write_text(json.dumps({"kty": "EC", "crv": "P-256", "x": "A" * 43, "y": "A" * 43}))
    state = tmp_path / "gpus-ready"
    out = _run("attest", "ready-gate", "--kbs-url", url, "--attester", "sim", "--sim-guest", str(base / "guest"),
               "--state-file", str(state), "--token-key", str(other))
    assert out.returncode == 1 and state.read_text() == "0\n"
    assert b"not ready" in out.stderr and b"trusted EAR signer" in out.stderr


def test_kbs_without_an_admin_token_refuses_to_start(tmp_path):
    env = ccgpu_env()
    env.pop("CCGPU_KBS_ADMIN_TOKEN", None)
    out = subprocess.run(  # noqa: S603 (our own CLI, fixed argv)
        ccgpu_command("attest", "kbs", "--data-dir", str(tmp_path), "--port", "1"), env=env,
        capture_output=True, timeout=60)
    assert out.returncode == 2 and b"admin token of at least 16 characters" in out.stderr


def test_admin_token_is_not_stored_in_the_kbs_data_directory(kbs_process):
    _, base = kbs_process
    files = [f for f in (base / "data").rglob("*") if f.is_file()]
    assert files and not [f for f in files if ADMIN_TOKEN.encode() in f.read_bytes()]


def test_get_resource_with_init_data_binds_it_through_host_data(kbs_process, tmp_path):
    url, base = kbs_process
    init = tmp_path / "initdata.toml"
    init.write_text('version = "0.1.0"\nalgorithm = "sha384"\n[data]\n"aa.toml" = "[token_configs.kbs]"\n')
    out = _run("attest", "get-resource", "kbs:///default/key/model", "--kbs-url", url, "--attester", "sim",
               "--sim-guest", str(base / "guest"), "--init-data", str(init))
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout == b"cli secret"

"""Restarting containerd: SIGHUP to the socket's peer (against real processes on a real unix socket), systemd."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccgpu.agents.containerd_restart import (
    RestartError,
    RestartMethod,
    RestartOptions,
    resolve_method,
    restart_containerd,
    socket_peer_pid,
)
from ccgpu.hw.sysfs import Sysfs

SOCKET = "/run/containerd/containerd.sock"

# A stand-in for containerd: serves a unix socket, records each SIGHUP, then exits like containerd does
# (mode "exit", status 129) or keeps running (mode "ignore", what a SIGHUP-ignoring containerd would do).
FAKE_CONTAINERD = """
import os, signal, socket, sys
sock_path, record, mode = sys.argv[1:4]
def on_hup(signum, frame):
    with open(record, "a") as f:
        f.write(f"{os.getpid()} SIGHUP\\n")
    if mode == "exit":
        os._exit(128 + signum)
signal.signal(signal.SIGHUP, on_hup)
os.chdir(os.path.dirname(sock_path))  # bind by short name: pytest's tmp paths can exceed sun_path
name = os.path.basename(sock_path)
if os.path.exists(name):
    os.unlink(name)
s = socket.socket(socket.AF_UNIX)
s.bind(name)
s.listen(8)
while True:
    conn, _ = s.accept()
    conn.close()
"""

# systemd's Restart=always in miniature: start the server again whenever it exits.
SUPERVISOR = """
import subprocess, sys
while True:
    subprocess.call([sys.executable, *sys.argv[1:]])
"""


def _wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.02)


def _serving(fs: Sysfs) -> bool:
    try:
        socket_peer_pid(fs, SOCKET)
        return True
    except RestartError:
        return False


@pytest.fixture
def host(tmp_path: Path) -> Sysfs:
    (tmp_path / "run/containerd").mkdir(parents=True)
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts/fake_containerd.py").write_text(FAKE_CONTAINERD)
    (tmp_path / "scripts/supervisor.py").write_text(SUPERVISOR)
    return Sysfs(tmp_path)


@pytest.fixture
def start(host: Sysfs) -> Iterator:
    """Start the fake containerd (optionally under the supervisor) in its own process group; stop it after."""
    started: list[subprocess.Popen] = []

    def _start(mode: str, supervised: bool) -> subprocess.Popen:
        server = [
            str(host.root / "scripts/fake_containerd.py"),
            str(host.path(SOCKET[1:])),
            str(host.root / "hups"),
            mode,
        ]
        argv = (
            [sys.executable, str(host.root / "scripts/supervisor.py"), *server]
            if supervised
            else [sys.executable, *server]
        )
        proc = subprocess.Popen(argv, start_new_session=True)  # noqa: S603 - our own test scripts, argv list
        started.append(proc)
        _wait_for(lambda: _serving(host))
        return proc

    yield _start
    for proc in started:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _hups(host: Sysfs) -> list[str]:
    path = host.root / "hups"
    return path.read_text().splitlines() if path.exists() else []


def test_signal_restart_sends_sighup_to_the_socket_peer_and_waits_for_a_new_process(
    host: Sysfs, start
) -> None:  # type: ignore[no-untyped-def]
    """NVIDIA's restart (operands.md §1): SIGHUP to the pid behind containerd.sock; containerd exits on it and
    its supervisor starts a new one, which ccgpu waits for."""
    start("exit", supervised=True)
    old = socket_peer_pid(host, SOCKET)
    message = restart_containerd(host, RestartMethod.SIGNAL, RestartOptions(socket=SOCKET, timeout_s=10))
    new = socket_peer_pid(host, SOCKET)
    assert new != old
    assert _hups(host) == [f"{old} SIGHUP"]
    assert message == f"sent SIGHUP to containerd pid {old}; pid {new} now serves {SOCKET}"


def test_signal_restart_reports_a_containerd_that_ignores_sighup(host: Sysfs, start) -> None:  # type: ignore[no-untyped-def]
    proc = start("ignore", supervised=False)
    with pytest.raises(RestartError, match=r"still runs after 0.3 s.*use --restart systemd"):
        restart_containerd(host, RestartMethod.SIGNAL, RestartOptions(socket=SOCKET, timeout_s=0.3))
    assert _hups(host) == [f"{proc.pid} SIGHUP"]


def test_signal_restart_reports_when_nothing_restarts_containerd(host: Sysfs, start) -> None:  # type: ignore[no-untyped-def]
    proc = start("exit", supervised=False)
    with pytest.raises(RestartError, match=r"exited on SIGHUP but nothing started a new one"):
        restart_containerd(host, RestartMethod.SIGNAL, RestartOptions(socket=SOCKET, timeout_s=0.5))
    assert proc.wait(timeout=5) == 128 + signal.SIGHUP


def test_signal_restart_without_a_socket_says_which_socket(host: Sysfs) -> None:
    with pytest.raises(
        RestartError, match=r"cannot connect to containerd's socket /run/containerd/containerd.sock"
    ):
        restart_containerd(host, RestartMethod.SIGNAL, RestartOptions(socket=SOCKET))


def test_systemd_restart_runs_systemctl_in_the_hosts_mount_namespace_without_a_shell(
    host: Sysfs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nsenter"
    fake.write_text(
        f"#!{sys.executable}\nimport sys\nopen({str(tmp_path / 'argv')!r}, 'w').write(repr(sys.argv[1:]))\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    message = restart_containerd(host, RestartMethod.SYSTEMD, RestartOptions(unit="containerd.service"))
    assert (tmp_path / "argv").read_text() == repr(
        ["--target", "1", "--mount", "--", "systemctl", "restart", "containerd.service"]
    )
    assert "restarted containerd.service" in message


def test_systemd_restart_failure_carries_systemctls_message(host: Sysfs, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nsenter").write_text(
        f"#!{sys.executable}\nimport sys\nsys.stderr.write('Unit containerd.service not found.\\n')\nsys.exit(5)\n"
    )
    (bin_dir / "nsenter").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(RestartError, match=r"exit status 5: Unit containerd.service not found."):
        restart_containerd(host, RestartMethod.SYSTEMD)


@pytest.mark.parametrize(
    "unit", ["containerd service", "../x", "a;b", "", "-Hevil.example.com", "--user", "containerd.service\n"]
)
def test_systemd_unit_names_are_checked_and_nothing_runs(host: Sysfs, unit: str) -> None:
    """A unit starting with '-' would be a systemctl option (-H restarts on another host over ssh)."""
    ran = []
    with pytest.raises(RestartError, match="is not a unit name"):
        restart_containerd(host, RestartMethod.SYSTEMD, RestartOptions(unit=unit), runner=lambda *a, **k: ran.append(a))
    assert ran == []


def test_auto_means_systemd_only_on_a_host_booted_with_systemd(host: Sysfs) -> None:
    with pytest.raises(RestartError, match="choose a restart method: signal .* or none"):
        resolve_method(host, RestartMethod.AUTO)
    (host.root / "run/systemd/system").mkdir(parents=True)
    assert resolve_method(host, RestartMethod.AUTO) is RestartMethod.SYSTEMD
    assert resolve_method(host, RestartMethod.SIGNAL) is RestartMethod.SIGNAL


def test_none_restarts_nothing_and_says_a_restart_is_needed(host: Sysfs) -> None:
    assert "restart containerd to load the new config" in restart_containerd(host, RestartMethod.NONE)


def test_configure_with_the_signal_method_restarts_a_supervised_containerd(host: Sysfs, start) -> None:  # type: ignore[no-untyped-def]
    from containerd_hosts import KATA_DIR, KUBEADM_V2, make_host

    from ccgpu.agents.containerd import configure

    make_host(host.root, KUBEADM_V2)
    start("exit", supervised=True)
    old = socket_peer_pid(host, SOCKET)
    report = configure(host, kata_config_dir=KATA_DIR, restart=RestartMethod.SIGNAL)
    assert report.restart is not None and report.restart.startswith(
        f"sent SIGHUP to containerd pid {old}; pid "
    )
    assert socket_peer_pid(host, SOCKET) != old
    assert _hups(host) == [f"{old} SIGHUP"]

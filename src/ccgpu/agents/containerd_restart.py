"""Making containerd pick up a changed config: containerd has no live config reload, so it must restart.

NVIDIA's kata-manager and container toolkit find containerd as the peer of its socket (SO_PEERCRED) and send
SIGHUP (reference/operands.md §1). containerd does **not** reload its config on SIGHUP: it handles only
SIGTERM, SIGINT, SIGUSR1 and SIGPIPE, so SIGHUP takes Go's default action and the daemon exits (exit status
129, checked against Debian's containerd 1.6; containerd#13285 reports the same for 2.2 and the restart loop it
causes under rke2). The "reload" works only because systemd's `Restart=always` starts a new containerd; without
such a supervisor the node loses its runtime. So:

- `systemd` (the default on hosts booted with systemd): `nsenter --target 1 --mount -- systemctl restart
  <unit>`, a clean stop and start that systemd orders and logs.
- `signal`: NVIDIA's way, for hosts whose supervisor restarts containerd; ccgpu then waits until a *new*
  process answers on the socket, and says so plainly when the old one ignored the signal or nothing restarted it.
- `none`: leave restarting to the operator (the report says a restart is needed).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from ccgpu.hw.sysfs import Sysfs


class RestartMethod(StrEnum):
    AUTO = "auto"
    SIGNAL = "signal"
    SYSTEMD = "systemd"
    NONE = "none"


class RestartError(RuntimeError):
    """containerd could not be restarted; the message says why and what to try instead."""


@dataclass(frozen=True)
class RestartOptions:
    socket: str = "/run/containerd/containerd.sock"  # host path, read under the host root
    unit: str = "containerd.service"
    timeout_s: float = 30.0
    poll_s: float = 0.05


DEFAULT_RESTART_OPTIONS = RestartOptions()

# Not starting with '-': systemctl would read it as an option (`-Hhost` runs the restart on another machine).
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.@][A-Za-z0-9:_.@-]*")
Runner = Callable[..., subprocess.CompletedProcess]


def resolve_method(fs: Sysfs, method: RestartMethod) -> RestartMethod:
    """`auto` → `systemd` on a host booted with systemd (sd_booted: /run/systemd/system exists), else refuse."""
    method = RestartMethod(method)
    if method is not RestartMethod.AUTO:
        return method
    if fs.is_dir("run/systemd/system"):
        return RestartMethod.SYSTEMD
    raise RestartError(
        f"cannot tell how containerd is supervised on {fs.root} (no run/systemd/system); choose a restart method: "
        "signal (SIGHUP; containerd exits and its supervisor must restart it) or none (restart it yourself)"
    )


def restart_containerd(
    fs: Sysfs,
    method: RestartMethod,
    options: RestartOptions = DEFAULT_RESTART_OPTIONS,
    runner: Runner = subprocess.run,
) -> str:
    """Restart containerd the chosen way; returns a one-line account of what was done."""
    method = resolve_method(fs, method)
    if method is RestartMethod.NONE:
        return "restart skipped (method none): restart containerd to load the new config"
    if method is RestartMethod.SYSTEMD:
        return _restart_with_systemd(options, runner)
    return _restart_with_signal(fs, options)


def _restart_with_systemd(options: RestartOptions, runner: Runner) -> str:
    if not _UNIT_NAME.fullmatch(options.unit):
        raise RestartError(
            f"systemd unit {options.unit!r} is not a unit name (letters, digits, ':_.@-', not starting with '-')"
        )
    # In the host's mount namespace systemctl reaches the host's systemd; needs hostPID (pid 1 is the host's).
    argv = ["nsenter", "--target", "1", "--mount", "--", "systemctl", "restart", options.unit]
    try:
        done = runner(argv, capture_output=True, text=True, timeout=options.timeout_s, check=False)
    except FileNotFoundError as e:
        raise RestartError(
            f"cannot run {argv[0]}: {e}; install util-linux or use --restart signal|none"
        ) from e
    except subprocess.TimeoutExpired as e:
        raise RestartError(f"`{' '.join(argv)}` did not finish within {options.timeout_s:g} s") from e
    if done.returncode != 0:
        detail = (done.stderr or done.stdout or "").strip().splitlines()[-1:] or ["no output"]
        raise RestartError(f"`{' '.join(argv)}` failed with exit status {done.returncode}: {detail[0]}")
    return f"restarted {options.unit} with systemctl in the host's mount namespace"


def _restart_with_signal(fs: Sysfs, options: RestartOptions) -> str:
    old_pid = socket_peer_pid(fs, options.socket)
    try:
        os.kill(old_pid, signal.SIGHUP)
    except OSError as e:
        raise RestartError(f"cannot signal containerd pid {old_pid}: {e.strerror or e}") from e
    deadline = time.monotonic() + options.timeout_s
    while time.monotonic() < deadline:
        if not _alive(old_pid):
            new_pid = _peer_pid_or_none(fs, options.socket)
            if new_pid is not None and new_pid != old_pid:
                return f"sent SIGHUP to containerd pid {old_pid}; pid {new_pid} now serves {options.socket}"
        time.sleep(options.poll_s)
    if _alive(old_pid):
        raise RestartError(
            f"containerd pid {old_pid} was sent SIGHUP but still runs after {options.timeout_s:g} s, so it has not "
            "loaded the new config (this containerd ignores SIGHUP); use --restart systemd or restart it yourself"
        )
    raise RestartError(
        f"containerd pid {old_pid} exited on SIGHUP but nothing started a new one on {options.socket} within "
        f"{options.timeout_s:g} s; its supervisor did not restart it: start containerd now"
    )


def socket_peer_pid(fs: Sysfs, host_socket: str) -> int:
    """The pid (in this PID namespace) of the process serving a unix socket, from SO_PEERCRED."""
    path = fs.path(host_socket.lstrip("/"))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5.0)
        try:
            _connect(s, str(path))
        except OSError as e:
            raise RestartError(
                f"cannot connect to containerd's socket {host_socket} ({path}): {e.strerror or e}"
            ) from e
        pid, _uid, _gid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    if pid <= 0:
        raise RestartError(
            f"the process behind {host_socket} is in another PID namespace (peer pid {pid}); run the agent with "
            "hostPID: true, or use --restart systemd"
        )
    return pid


def _peer_pid_or_none(fs: Sysfs, host_socket: str) -> int | None:
    try:
        return socket_peer_pid(fs, host_socket)
    except RestartError:
        return None


def _connect(s: socket.socket, path: str) -> None:
    """connect(2), reaching paths longer than sun_path (108 bytes) through the parent directory's fd."""
    if len(path.encode()) < 100:
        s.connect(path)
        return
    dirfd = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY)
    try:
        s.connect(f"/proc/self/fd/{dirfd}/{os.path.basename(path)}")
    finally:
        os.close(dirfd)


def _alive(pid: int) -> bool:
    """Whether pid still runs (a zombie counts as gone: it no longer serves anything)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in (b"Z", b"X")

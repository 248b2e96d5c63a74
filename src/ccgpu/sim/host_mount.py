"""A simulated host presented through FUSE: any program that opens the mount point sees Linux's sysfs semantics.

`SimSysfs` gives the kernel's side effects to Python code that holds it. A mount gives them to everyone: an
unmodified agent started with `--host-root DIR`, a shell `echo 0000:18:00.0 > DIR/sys/bus/pci/drivers/vfio-pci/bind`,
or a container with DIR as `/host`. Production code stays plain `Sysfs(root)` and never learns it is simulated.

The host's files live in a backing directory (`backing_dir(DIR)`); the mount shows them as they are, except that
a write to a file under `sys/` is one `SimSysfs.write` (bind, unbind, driver_override, reset, ... with the
kernel's errno on failure, EACCES on reading a write-only attribute, O_TRUNC ignored as sysfs does) and files
under `sys/` cannot be created or removed. Everything else (`run/`, `var/run/cdi`, `etc/`, `dev/`) passes through.

One server process per mount (`python -m ccgpu.sim.host_mount MOUNTPOINT BACKING`), single-threaded so kernel
changes happen one at a time, with no attribute or entry caching so a change is visible to the next lookup.
Needs `/dev/fuse`, libfuse 3 (Debian: fuse3) and mfusepy (`pip install 'ccgpu[fuse]'`); `unavailable()` says
which is missing.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ccgpu.hw.sysfs import PathEscapeError
from ccgpu.sim.host import SimSysfs

MOUNT_TIMEOUT_S = 15.0
_KERNEL_TREE = "sys"
STATE_DIR = ".sim"
_SERVER_LOG = "mount.log"


class MountError(RuntimeError):
    """The host could not be mounted or unmounted; says why and what to do."""


def unavailable() -> str | None:
    """Why a FUSE mount cannot be made here, or None when it can."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist (load the fuse kernel module)"
    try:
        import mfusepy  # noqa: F401
    except ImportError:
        return "the Python package mfusepy is not installed (pip install 'ccgpu[fuse]')"
    except OSError as e:  # mfusepy loads libfuse at import
        return f"libfuse is not installed ({e}; Debian: apt-get install fuse3)"
    return None


def backing_dir(mountpoint: str | os.PathLike[str]) -> Path:
    """Where the files of the host mounted at `mountpoint` live: one directory per mount point."""
    key = hashlib.sha256(os.path.realpath(mountpoint).encode()).hexdigest()[:16]
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"ccgpu-sim-hosts-{os.getuid()}"
    return base / key


def is_mounted(mountpoint: str | os.PathLike[str]) -> bool:
    """Whether a FUSE file system is mounted at `mountpoint` (per /proc/self/mountinfo)."""
    target = os.path.realpath(mountpoint)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            mount_at = fields[4].encode().decode("unicode_escape")  # octal escapes such as \040
            if mount_at == target and fields[sep + 1].startswith("fuse"):
                return True
    return False


def mount(mountpoint: str | os.PathLike[str], backing: str | os.PathLike[str]) -> int:
    """Start the server for `backing` at `mountpoint` (an empty directory) and return its pid once the mount is
    there; raise MountError with the server's own words if it does not come up."""
    reason = unavailable()
    if reason:
        raise MountError(f"cannot mount a simulated host: {reason}")
    mountpoint, backing = Path(mountpoint), Path(backing)
    mountpoint.mkdir(parents=True, exist_ok=True)
    if any(mountpoint.iterdir()):
        raise MountError(f"{mountpoint} is not empty; give an empty or absent directory")
    log = open(backing / STATE_DIR / _SERVER_LOG, "ab")  # noqa: SIM115 - handed to the server process
    with log:
        server = subprocess.Popen(  # noqa: S603 - our own module, arguments are paths
            [sys.executable, "-m", "ccgpu.sim.host_mount", str(mountpoint), str(backing)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
    deadline = time.monotonic() + MOUNT_TIMEOUT_S
    while not is_mounted(mountpoint):
        if server.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                server.kill()
            said = (backing / STATE_DIR / _SERVER_LOG).read_text(errors="replace").strip().splitlines()[-5:]
            raise MountError(f"the FUSE server for {mountpoint} did not mount it: " + " | ".join(said))
        time.sleep(0.02)
    (backing / STATE_DIR / "mount.pid").write_text(f"{server.pid}\n")
    return server.pid


def unmount(mountpoint: str | os.PathLike[str], *, remove_backing: bool = True) -> None:
    """Unmount, wait for the server to exit, and (by default) delete the host's files."""
    mountpoint = Path(mountpoint)
    backing = backing_dir(mountpoint)
    if is_mounted(mountpoint):
        tool = shutil.which("fusermount3") or shutil.which("fusermount")
        command = [tool, "-u", str(mountpoint)] if tool else ["umount", str(mountpoint)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0:
            raise MountError(f"could not unmount {mountpoint}: {done.stderr.strip() or done.stdout.strip()}")
    pid_file = backing / STATE_DIR / "mount.pid"
    if pid_file.exists():
        _wait_gone(int(pid_file.read_text()))
    if remove_backing and backing.exists():
        shutil.rmtree(backing)


def _wait_gone(pid: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)


# --- the file system ---------------------------------------------------------------------------------------
def _operations_base() -> type:
    import mfusepy

    return mfusepy.Operations


def _fuse_error(e: OSError) -> OSError:
    import mfusepy

    return mfusepy.FuseOSError(e.errno or errno.EIO)


class HostOperations:
    """FUSE callbacks over a backing tree; kernel attribute writes go through `SimSysfs`."""

    use_ns = True

    def __init__(self, backing: str | os.PathLike[str]) -> None:
        self.backing = os.path.realpath(backing)
        self.kernel = SimSysfs(self.backing)

    # paths arrive as "/sys/bus/..." relative to the mount; the kernel has already removed "." and "..".
    # The simulator's own state (`.sim/`) is the hardware, not part of the host's tree: it is not shown.
    def _full(self, path: str) -> str:
        rel = path.lstrip("/")
        if rel.split("/", 1)[0] == STATE_DIR:
            raise _fuse_error(FileNotFoundError(errno.ENOENT, "no such file"))
        return os.path.join(self.backing, rel)

    @staticmethod
    def _rel(path: str) -> str:
        return path.lstrip("/")

    def _is_kernel_file(self, path: str) -> bool:
        rel = self._rel(path)
        if rel.split("/", 1)[0] != _KERNEL_TREE:
            return False
        try:
            return stat.S_ISREG(os.stat(self.kernel.path(rel)).st_mode)
        except (OSError, PathEscapeError):
            return False

    def _refuse_in_kernel_tree(self, path: str) -> None:
        if self._rel(path).split("/", 1)[0] == _KERNEL_TREE:
            raise _fuse_error(PermissionError(errno.EPERM, "sysfs files are made by the kernel"))

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        try:
            st = os.lstat(self._full(path))
        except OSError as e:
            raise _fuse_error(e) from None
        keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_rdev", "st_ino")
        attrs: dict[str, Any] = {k: getattr(st, k) for k in keys}
        attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        return attrs

    def readlink(self, path: str) -> str:
        try:
            return os.readlink(self._full(path))
        except OSError as e:
            raise _fuse_error(e) from None

    def readdir(self, path: str, fh: int) -> list[str]:
        try:
            names = sorted(os.listdir(self._full(path)))
            return [".", "..", *(n for n in names if not (path == "/" and n == STATE_DIR))]
        except OSError as e:
            raise _fuse_error(e) from None

    def open(self, path: str, flags: int) -> int:
        reading = flags & os.O_ACCMODE in (os.O_RDONLY, os.O_RDWR)
        try:
            if self._is_kernel_file(path):
                mode = os.stat(self._full(path)).st_mode
                if reading and not mode & 0o444:
                    raise PermissionError(errno.EACCES, "write-only attribute")
                flags &= ~(os.O_TRUNC | os.O_APPEND | os.O_CREAT)
            return os.open(self._full(path), flags)
        except OSError as e:
            raise _fuse_error(e) from None

    def create(self, path: str, mode: int, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
        self._refuse_in_kernel_tree(path)
        try:
            return os.open(self._full(path), flags | os.O_CREAT, mode)
        except OSError as e:
            raise _fuse_error(e) from None

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        try:
            return os.pread(fh, size, offset)
        except OSError as e:
            raise _fuse_error(e) from None

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        try:
            if self._is_kernel_file(path):  # one write(2) is one value, as sysfs takes it
                self.kernel.write(self._rel(path), data.decode())
                return len(data)
            return os.pwrite(fh, data, offset)
        except UnicodeDecodeError:
            raise _fuse_error(OSError(errno.EINVAL, "sysfs values are text")) from None
        except (OSError, PathEscapeError) as e:
            raise _fuse_error(e if isinstance(e, OSError) else OSError(errno.EACCES, str(e))) from None

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        if self._is_kernel_file(path):
            return 0  # `echo x > attr` truncates; sysfs ignores it
        try:
            os.truncate(self._full(path), length)
        except OSError as e:
            raise _fuse_error(e) from None
        return 0

    def release(self, path: str, fh: int) -> int:
        os.close(fh)
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        try:
            (os.fdatasync if datasync else os.fsync)(fh)
        except OSError as e:
            raise _fuse_error(e) from None
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        return 0

    def _plain(self, path: str, call: Any, *args: Any) -> int:
        self._refuse_in_kernel_tree(path)
        try:
            call(self._full(path), *args)
        except OSError as e:
            raise _fuse_error(e) from None
        return 0

    def unlink(self, path: str) -> int:
        return self._plain(path, os.unlink)

    def mkdir(self, path: str, mode: int) -> int:
        return self._plain(path, os.mkdir, mode)

    def rmdir(self, path: str) -> int:
        return self._plain(path, os.rmdir)

    def chmod(self, path: str, mode: int) -> int:
        return self._plain(path, os.chmod, mode)

    def chown(self, path: str, uid: int, gid: int) -> int:
        return self._plain(path, os.lchown, uid, gid)

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        if times is None:  # "now", as touch(1) asks
            return self._plain(path, lambda p: os.utime(p, follow_symlinks=False))
        return self._plain(path, lambda p: os.utime(p, ns=times, follow_symlinks=False))

    def symlink(self, target: str, source: str) -> int:
        self._refuse_in_kernel_tree(target)
        try:
            os.symlink(source, self._full(target))
        except OSError as e:
            raise _fuse_error(e) from None
        return 0

    def rename(self, old: str, new: str) -> int:
        self._refuse_in_kernel_tree(old)
        self._refuse_in_kernel_tree(new)
        try:
            os.rename(self._full(old), self._full(new))
        except OSError as e:
            raise _fuse_error(e) from None
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self.backing)
        keys = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_namemax")
        return {k: getattr(st, k) for k in keys}


def serve(mountpoint: str, backing: str) -> None:
    """Run the file system in this process until it is unmounted."""
    import mfusepy

    operations = type("SimulatedHostFS", (HostOperations, _operations_base()), {})(backing)
    options: dict[str, Any] = dict(
        foreground=True, nothreads=True, fsname="ccgpu-simhost", subtype="ccgpu",
        attr_timeout=0, entry_timeout=0, negative_timeout=0, direct_io=True,
    )
    if os.getuid() == 0:
        options["allow_other"] = True  # a pod or another user reads it as it would read /sys
    mfusepy.FUSE(operations, mountpoint, **options)


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])

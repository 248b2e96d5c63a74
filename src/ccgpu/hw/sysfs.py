"""`Sysfs(root)`: the one seam through which ccgpu touches the host.

Every path is relative to a root (`/` in production, a host mount such as `/host` in a pod, a capture or a
simulated host tree in tests). Paths that would leave the root -- absolute paths, `..` components, NUL bytes,
or symlinks whose target lies outside the root -- are refused before any file is opened, so a hostile or
garbled value (a PCI address read from a label, a link in a capture) can never reach another file.

Writes follow the kernel's sysfs semantics: one `write(2)` of the whole value to an existing attribute, no
create, no truncate-then-write games. The simulated host subclasses this class and applies the kernel's
side effects in `write`; agent code is identical in both.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path


class PathEscapeError(ValueError):
    """A path that would resolve outside the Sysfs root."""


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so a reader sees the old or the new content, never a torn file, and the new
    content survives a power cut: temp file in the same directory, fsync, rename, fsync of the directory
    (intent files depend on the rename being durable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


class Sysfs:
    """Root-relative, escape-proof access to host files."""

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = Path(os.path.realpath(root))
        self._root = str(self.root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    # --- path validation ---------------------------------------------------------------------------
    def path(self, rel: str | os.PathLike[str], follow: bool = True) -> Path:
        """The absolute on-disk path for `rel`, after checking it cannot escape the root.

        With `follow=False` (lstat-like uses: readlink, exists, is_link, remove) only the parent directory must
        resolve inside the root; the last component may be a link to anywhere, since it is not followed.
        """
        return self._resolve(rel, follow)[0]

    def _lexical(self, rel: str | os.PathLike[str]) -> list[str]:
        """The components of `rel` after the checks that need no file system: text, no NUL, relative, no `..`."""
        text = os.fspath(rel)
        if not isinstance(text, str):
            raise PathEscapeError(f"path must be text, got {type(text).__name__}")
        if "\x00" in text:
            raise PathEscapeError(f"path {text!r} contains a NUL byte")
        if text.startswith("/"):
            raise PathEscapeError(f"path {text!r} is absolute; Sysfs paths are relative to the root {self.root}")
        parts = [p for p in text.split("/") if p and p != "."]
        if ".." in parts:
            raise PathEscapeError(f"path {text!r} contains '..'; Sysfs paths may not leave the root")
        return parts

    def _resolve(self, rel: str | os.PathLike[str], follow: bool) -> tuple[Path, str]:
        """(the on-disk path, what it resolves to), refusing a resolution outside the root."""
        parts = self._lexical(rel)
        resolved = _resolve_below(self._root, parts if follow else parts[:-1])
        if not self._inside(resolved):
            raise PathEscapeError(f"path {os.fspath(rel)!r} resolves to {resolved}, outside the root {self.root}")
        return (Path(self._root, *parts) if parts else self.root), resolved

    def _inside(self, resolved: str) -> bool:
        """Whether a resolved absolute path is the root or below it (string prefix: cheap on hot paths)."""
        root = str(self.root)
        return resolved == root or resolved.startswith(root if root.endswith("/") else root + "/")

    def relative(self, absolute: str | os.PathLike[str]) -> str:
        """Turn an absolute on-disk path under the root back into a root-relative path."""
        resolved = os.path.realpath(absolute)
        if not self._inside(resolved):
            raise PathEscapeError(f"{resolved} is outside the root {self.root}")
        return str(Path(resolved).relative_to(self.root))

    # --- reads -----------------------------------------------------------------------------------------
    def read(self, rel: str) -> str:
        """An attribute's text with the trailing newline removed (sysfs attributes end in one)."""
        return self.read_bytes(rel).decode("utf-8", errors="strict").rstrip("\n")

    def read_bytes(self, rel: str) -> bytes:
        return self._read_path(self.path(rel))

    def read_in(self, real_dir: str, name: str) -> bytes:
        """Read the entry `name` of a directory whose root-relative path `realpath()` returned: only `name`
        itself is looked up again (a link there gets the full check), which makes reading a device's dozen
        attributes one lookup each instead of one per path component. The directory's own resolution has
        the same check-then-open window as `read_bytes`; no more."""
        if not name or "/" in name or name in (".", ".."):
            raise PathEscapeError(f"{name!r} is not a single directory entry name")
        full = os.path.join(self._root, *self._lexical(real_dir), name)
        if os.path.islink(full):
            return self.read_bytes(f"{real_dir}/{name}")
        return self._read_path(Path(full))

    def _read_path(self, path: Path) -> bytes:
        """Read a checked path (the simulated host refuses write-only attributes here, as sysfs does)."""
        with open(path, "rb") as f:
            return f.read()

    def readlink(self, rel: str) -> str:
        """The raw target of a symlink (as the kernel wrote it, usually relative)."""
        return os.readlink(self.path(rel, follow=False))

    def realpath(self, rel: str) -> str:
        """The root-relative path a (chain of) symlink(s) resolves to."""
        resolved = self._resolve(rel, follow=True)[1]
        return "." if resolved == self._root else resolved[len(self._root):].lstrip("/")

    def listdir(self, rel: str) -> list[str]:
        """Directory entries, sorted so callers see a stable order."""
        return sorted(os.listdir(self.path(rel)))

    def exists(self, rel: str) -> bool:
        try:
            return os.path.lexists(self.path(rel, follow=False))
        except PathEscapeError:
            return False

    def is_dir(self, rel: str) -> bool:
        try:
            return os.path.isdir(self.path(rel))
        except PathEscapeError:
            return False

    def is_link(self, rel: str) -> bool:
        try:
            return os.path.islink(self.path(rel, follow=False))
        except PathEscapeError:
            return False

    # --- writes ------------------------------------------------------------------------------------
    def write(self, rel: str, value: str) -> None:
        """Write an attribute the way `echo value > attr` does: one write(2), no create, no truncate."""
        fd = os.open(self.path(rel), os.O_WRONLY)
        try:
            data = value.encode()
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.EIO, f"short write to {rel}: {written} of {len(data)} bytes")
        finally:
            os.close(fd)

    def write_file(self, rel: str, data: str | bytes, mode: int = 0o644) -> None:
        """Create or replace a regular file atomically and durably (see `atomic_write`).

        For files ccgpu owns (readiness files, CDI specs, containerd drop-ins), never for kernel attributes.
        """
        atomic_write(self.path(rel), data.encode() if isinstance(data, str) else data, mode)

    def remove(self, rel: str, missing_ok: bool = True) -> None:
        """Remove a file ccgpu owns."""
        try:
            os.unlink(self.path(rel, follow=False))
        except FileNotFoundError:
            if not missing_ok:
                raise

    def makedirs(self, rel: str) -> None:
        self.path(rel).mkdir(parents=True, exist_ok=True)


def _resolve_below(root: str, parts: list[str]) -> str:
    """`os.path.realpath(root/parts...)` for a `root` that is already resolved: only the components below it
    are looked at (lstat each, follow links, up to 40 like the kernel), which is what makes a hot path of
    many small reads cheap. A missing component ends the lookups and the rest is joined as written, as
    `realpath` does for paths that do not exist. A link may lead outside the root; the caller checks."""
    path = root
    pending = list(reversed(parts))
    links = 0
    while pending:
        name = pending.pop()
        if name in ("", "."):
            continue
        if name == "..":
            path = os.path.dirname(path) or "/"
            continue
        candidate = path + name if path.endswith("/") else f"{path}/{name}"
        try:
            is_link = stat.S_ISLNK(os.lstat(candidate).st_mode)
        except OSError:  # missing (or not a directory): nothing more to resolve
            return os.path.normpath("/".join([candidate, *reversed(pending)]))
        if not is_link:
            path = candidate
            continue
        links += 1
        if links > 40:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), candidate)
        target = os.readlink(candidate)
        if target.startswith("/"):
            path = "/"
        pending.extend(reversed(target.split("/")))
    return path


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

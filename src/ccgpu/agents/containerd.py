"""Configure containerd for ccgpu's Kata runtime classes, and undo it.

`configure` writes a drop-in (default `/etc/containerd/conf.d/ccgpu-kata.toml`) with one runtime per requested
RuntimeClass handler and CDI enabled, adds one `imports` entry to the main file (unless an existing import,
such as containerd 2.2's `conf.d/*.toml`, already loads the drop-in), keeps a byte-exact backup of the main
file and restarts containerd. `cleanup` puts the main file back byte for byte and removes the rest.

Every step is recorded first in an intent file beside the drop-in (`<drop-in>.state.json`: the phase, the
main file's original and written digests, the import entry ccgpu added), so a crash between any two writes is
finished by the next `configure` or rolled back by the next `cleanup`. Both are level-triggered: they
recompute the wanted bytes and write only what differs, so a second run changes no byte and restarts nothing.

All host files are reached through `Sysfs` (the host root), written atomically (temp file + rename).
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import os
import posixpath
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ccgpu import labels
from ccgpu.agents.containerd_restart import (
    DEFAULT_RESTART_OPTIONS,
    RestartError,
    RestartMethod,
    RestartOptions,
    Runner,
    resolve_method,
    restart_containerd,
)
from ccgpu.agents.containerd_toml import (
    DEFAULT_POD_ANNOTATIONS,
    DEFAULT_SHIM_PATH,
    ContainerdConfigError,
    add_import,
    cdi_warnings,
    check_host_path,
    config_version,
    conflicting_runtimes,
    cri_section,
    import_covering,
    import_entry,
    is_ccgpu_dropin,
    kata_runtimes,
    last_cri_section,
    parse_config,
    parse_runtime_version,
    remove_import,
    render_dropin,
    resolved_imports,
    runtime_version_findings,
)
from ccgpu.hw.sysfs import Sysfs

__all__ = [
    "ChangeReport",
    "ContainerdConfigError",
    "RestartError",
    "RestartMethod",
    "RestartOptions",
    "cleanup",
    "configure",
]

DEFAULT_MAIN_CONFIG = "/etc/containerd/config.toml"
DEFAULT_DROPIN = "/etc/containerd/conf.d/ccgpu-kata.toml"
DEFAULT_KATA_CONFIG_DIR = "/opt/kata/share/defaults/kata-containers"
STATE_SUFFIX = ".state.json"
BACKUP_SUFFIX = ".ccgpu-backup"
_STATE_SCHEMA = 1


@dataclass
class ChangeReport:
    """What one `configure` or `cleanup` did (host paths)."""

    action: str
    main_config: str
    dropin: str
    version: int | None = None
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    restart: str | None = None  # what the restart did; None when nothing needed one
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.written or self.removed or self.restart)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "changed": self.changed}


@dataclass(frozen=True)
class _Paths:
    main: str
    dropin: str

    @classmethod
    def of(cls, main: str, dropin: str) -> _Paths:
        check_host_path(main, "main containerd config")
        check_host_path(dropin, "drop-in path")
        if main == dropin:
            raise ContainerdConfigError(f"the drop-in path must differ from the main config ({main})")
        if not dropin.endswith(".toml"):
            raise ContainerdConfigError(
                f"drop-in path {dropin!r} must end in .toml (containerd import globs use it)"
            )
        return cls(main, dropin)

    @property
    def state(self) -> str:
        return self.dropin + STATE_SUFFIX

    @property
    def backup(self) -> str:
        return self.main + BACKUP_SUFFIX


@dataclass(frozen=True)
class _State:
    """The intent record; `phase` is applying → restart-pending → applied, or cleaning."""

    phase: str
    main_config: str
    dropin: str
    original_sha256: str  # the main file before ccgpu touched it (the backup's digest)
    main_sha256: str  # the main file as ccgpu last wrote it
    dropin_sha256: str
    import_entry: str | None  # the entry ccgpu added; None when an existing import covered the drop-in
    created_imports: bool  # the main file had no `imports` key before
    created_dirs: list[str] = field(default_factory=list)  # directories ccgpu made for the drop-in
    schema: int = _STATE_SCHEMA


def _rel(host_path: str) -> str:
    return host_path.lstrip("/")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_or_none(fs: Sysfs, host_path: str) -> bytes | None:
    try:
        return fs.read_bytes(_rel(host_path))
    except FileNotFoundError:
        return None


def _write_main(fs: Sysfs, paths: _Paths, data: bytes) -> None:
    """Replace the main file's bytes; when it is a symlink (config management often links it), the file it
    points to is replaced, never the link (Sysfs still refuses a target outside the host root). Mode and
    owner carry over to the new file."""
    rel = fs.realpath(_rel(paths.main)) if fs.is_link(_rel(paths.main)) else _rel(paths.main)
    before = os.stat(fs.path(rel))
    fs.write_file(rel, data, mode=before.st_mode & 0o7777)
    after = os.stat(fs.path(rel))
    if (after.st_uid, after.st_gid) != (before.st_uid, before.st_gid):
        os.chown(fs.path(rel), before.st_uid, before.st_gid)


def _missing_dirs(fs: Sysfs, host_path: str) -> list[str]:
    """The drop-in's parent directories that do not exist yet, outermost first (cleanup removes them)."""
    missing: list[str] = []
    parent = posixpath.dirname(host_path)
    while parent != "/" and not fs.exists(_rel(parent)):
        missing.insert(0, parent)
        parent = posixpath.dirname(parent)
    return missing


def _mode(fs: Sysfs, host_path: str) -> int:
    return os.stat(fs.path(_rel(host_path))).st_mode & 0o7777


def _load_state(fs: Sysfs, paths: _Paths) -> _State | None:
    raw = _read_or_none(fs, paths.state)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        state = _State(**data)
    except (ValueError, TypeError) as e:
        raise ContainerdConfigError(
            f"ccgpu's intent file {paths.state} is unreadable ({e}); compare {paths.main} with {paths.backup}, "
            "then remove the intent file and run again"
        ) from e
    if state.schema != _STATE_SCHEMA or (state.main_config, state.dropin) != (paths.main, paths.dropin):
        raise ContainerdConfigError(
            f"{paths.state} records main config {state.main_config} and drop-in {state.dropin} (schema "
            f"{state.schema}); run cleanup with those paths before using {paths.main} and {paths.dropin}"
        )
    return state


def _save_state(fs: Sysfs, paths: _Paths, state: _State) -> None:
    fs.write_file(_rel(paths.state), json.dumps(asdict(state), indent=2, sort_keys=True) + "\n", mode=0o600)


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ContainerdConfigError(
            f"{where} is not UTF-8 text ({e}); containerd configs are TOML (UTF-8)"
        ) from e


def _imported_cri_sections(
    fs: Sysfs, doc: Any, paths: _Paths, version: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """The CRI sections of the files the main config imports ahead of ccgpu's drop-in, in the order containerd
    applies them (a glob may appear in the last path component; matches sorted, like Go's Glob), and the
    files imported after the drop-in that carry a CRI section (on containerd 1.x each replaces the drop-in's)."""
    before: list[dict[str, Any]] = []
    after: list[str] = []
    seen_dropin = False
    for pattern in resolved_imports(doc, paths.main, paths.main):
        directory, name = posixpath.split(pattern)
        if "*" in directory:
            raise ContainerdConfigError(
                f"{paths.main}: import {pattern!r} has a glob in a directory name; ccgpu reads imported files to "
                "keep their CRI settings and accepts globs only in the file name"
            )
        if not fs.is_dir(_rel(directory)):
            continue
        entries = set(fs.listdir(_rel(directory)))
        if posixpath.dirname(paths.dropin) == directory:
            entries.add(posixpath.basename(paths.dropin))  # where the drop-in will sit, written or not
        for entry in sorted(entries):
            path = posixpath.join(directory, entry)
            matches = (
                fnmatch.fnmatchcase(entry, name) if "*" in name else entry == name
            )  # containerd: `*` only
            if not matches or fs.is_dir(_rel(path)):
                continue
            if path == paths.dropin:
                seen_dropin = True
                continue
            section = cri_section(parse_config(_decode(fs.read_bytes(_rel(path)), path), path), version)
            if section and seen_dropin:
                after.append(path)
            elif section:
                before.append(section)
    return before, after


def _original_main(fs: Sysfs, paths: _Paths, state: _State | None, main_bytes: bytes) -> bytes:
    """The main file as it would be without ccgpu's `imports` entry: the backup while the file is exactly
    as ccgpu left it, else the current bytes with ccgpu's entry taken out (someone edited it since)."""
    if state is None or _sha(main_bytes) == state.original_sha256:
        return main_bytes
    backup = _read_or_none(fs, paths.backup)
    if _sha(main_bytes) == state.main_sha256 and backup is not None and _sha(backup) == state.original_sha256:
        return backup
    if state.import_entry is None:
        return main_bytes
    text = _decode(main_bytes, paths.main)
    return remove_import(text, state.import_entry, paths.main, drop_empty=state.created_imports).encode()


def _restart(fs: Sysfs, method: RestartMethod, options: RestartOptions, runner: Runner) -> str:
    try:
        return restart_containerd(fs, method, options, runner)
    except RestartError as e:
        raise RestartError(
            f"the config files are updated but containerd was not restarted: {e}; "
            "the intent file keeps the restart pending, so the next run retries it"
        ) from e


def _configure(
    fs: Sysfs,
    *,
    main_config: str,
    dropin: str,
    runtime_classes: Iterable[str],
    kata_config_dir: str,
    restart: RestartMethod,
    restart_options: RestartOptions,
    pod_annotations: Iterable[str],
    shim_path: str | None,
    containerd_version: str | None,
    runner: Runner,
) -> ChangeReport:
    """`configure`'s work, under the lock."""
    paths = _Paths.of(main_config, dropin)
    runtimes = kata_runtimes(runtime_classes, kata_config_dir, pod_annotations, shim_path)
    runtime_version = parse_runtime_version(containerd_version) if containerd_version else None
    restart = resolve_method(fs, restart)  # refuse before writing anything, not after
    state = _load_state(fs, paths)

    main_bytes = _read_or_none(fs, paths.main)
    if main_bytes is None:
        raise ContainerdConfigError(
            f"{paths.main} does not exist under {fs.root}; ccgpu adds a drop-in to an existing containerd config "
            "(create one with `containerd config default`, which declares its version)"
        )
    # Every decision is made on the main file as it would be without ccgpu's edit ("original"), so a run
    # after someone else edited the file keeps their edit and moves the byte-exact restore point to it.
    original = _original_main(fs, paths, state, main_bytes)
    original_text = _decode(original, paths.main)
    doc = parse_config(original_text, paths.main)
    version = config_version(doc, paths.main)
    version_warnings = (
        runtime_version_findings(version, runtime_version, paths.main) if runtime_version else []
    )
    cri = cri_section(doc, version)
    shadowing: list[str] = []
    if version == 2:  # what containerd 1.x will use as the CRI section, which the v2 drop-in must repeat
        imported, shadowing = _imported_cri_sections(fs, doc, paths, version)
        cri = last_cri_section(imported, cri)
    conflicts = conflicting_runtimes(cri, runtimes)
    if conflicts:
        raise ContainerdConfigError(
            f"{paths.main}: "
            + "; ".join(conflicts)
            + ". ccgpu owns these handler names: remove or rename them"
        )
    dropin_now = _read_or_none(fs, paths.dropin)
    if state is None and dropin_now is not None and not is_ccgpu_dropin(dropin_now.decode(errors="replace")):
        raise ContainerdConfigError(
            f"{paths.dropin} exists and ccgpu did not write it; pass another --dropin path"
        )

    covered_by = import_covering(doc, paths.main, paths.dropin, paths.main)
    entry = None if covered_by else import_entry(paths.main, paths.dropin)
    planned_main = original if entry is None else add_import(original_text, entry, paths.main).encode()
    planned_dropin = render_dropin(version, runtimes, cri).encode()

    report = ChangeReport("apply", paths.main, paths.dropin, version=version)
    report.warnings += version_warnings + cdi_warnings(cri)
    report.warnings += [
        f"{path} is imported after {paths.dropin} and, on containerd 1.x, its CRI section replaces the drop-in's "
        "(ccgpu's runtimes would be lost): give the drop-in a name that sorts last or import it after that file"
        for path in shadowing
    ]
    report.warnings += [
        f"{rt.config_path} not found on the host: pods of RuntimeClass {rt.name} fail until Kata is installed"
        for rt in runtimes
        if not fs.exists(_rel(rt.config_path))
    ]
    shims = sorted({rt.runtime_path for rt in runtimes if rt.runtime_path})
    report.warnings += [
        f"Kata shim {shim} not found on the host: pods of the Kata runtime classes fail until Kata is installed"
        for shim in shims
        if not fs.exists(_rel(shim))
    ]
    wanted = _State(
        phase="applied",
        main_config=paths.main,
        dropin=paths.dropin,
        original_sha256=_sha(original),
        main_sha256=_sha(planned_main),
        dropin_sha256=_sha(planned_dropin),
        import_entry=entry,
        created_imports="imports" not in doc,
        created_dirs=state.created_dirs if state else _missing_dirs(fs, paths.dropin),
    )
    if state == wanted and dropin_now == planned_dropin and main_bytes == planned_main:
        return report  # converged: no byte written, no restart

    restart_pending = state is not None and state.phase != "applied"
    _save_state(fs, paths, replace(wanted, phase="applying"))
    if _read_or_none(fs, paths.backup) != original:
        fs.write_file(_rel(paths.backup), original, mode=_mode(fs, paths.main))
        report.written.append(paths.backup)
    if dropin_now != planned_dropin:
        fs.write_file(_rel(paths.dropin), planned_dropin, mode=0o644)
        report.written.append(paths.dropin)
    if main_bytes != planned_main:
        _write_main(fs, paths, planned_main)
        report.written.append(paths.main)
    if report.written or restart_pending:
        _save_state(fs, paths, replace(wanted, phase="restart-pending"))
        report.restart = _restart(fs, restart, restart_options, runner)
    _save_state(fs, paths, wanted)
    return report


def _cleanup(
    fs: Sysfs,
    *,
    main_config: str,
    dropin: str,
    restart: RestartMethod,
    restart_options: RestartOptions,
    runner: Runner,
) -> ChangeReport:
    """`cleanup`'s work, under the lock."""
    paths = _Paths.of(main_config, dropin)
    restart = resolve_method(fs, restart)
    report = ChangeReport("cleanup", paths.main, paths.dropin)
    state = _load_state(fs, paths)
    dropin_now = _read_or_none(fs, paths.dropin)
    if state is None:
        if dropin_now is None:
            return report  # nothing of ccgpu's here
        if not is_ccgpu_dropin(dropin_now.decode(errors="replace")):
            raise ContainerdConfigError(
                f"{paths.dropin} was not written by ccgpu; leaving it and the main file alone"
            )
        # A drop-in without its intent record: remove it and the import entry ccgpu would have added.
        state = _State(
            "applied", paths.main, paths.dropin, "", "", "", import_entry(paths.main, paths.dropin), False
        )
    restart_pending = state.phase == "cleaning"
    _save_state(fs, paths, replace(state, phase="cleaning"))

    main_bytes = _read_or_none(fs, paths.main)
    backup = _read_or_none(fs, paths.backup)
    keep_backup = False
    if main_bytes is not None and _sha(main_bytes) != state.original_sha256:
        if (
            _sha(main_bytes) == state.main_sha256
            and backup is not None
            and _sha(backup) == state.original_sha256
        ):
            _write_main(fs, paths, backup)
            report.written.append(paths.main)
        elif state.import_entry is not None:
            text = _decode(main_bytes, paths.main)
            restored = remove_import(text, state.import_entry, paths.main, drop_empty=state.created_imports)
            if restored != text:
                _write_main(fs, paths, restored.encode())
                report.written.append(paths.main)
            if state.original_sha256:
                keep_backup = backup is not None
                report.warnings.append(
                    f"{paths.main} changed since ccgpu edited it: removed only ccgpu's imports entry "
                    f"{state.import_entry!r} and kept the other edits"
                    + (f"; the pre-ccgpu copy stays at {paths.backup}" if keep_backup else "")
                )
    if dropin_now is not None:
        fs.remove(_rel(paths.dropin))
        report.removed.append(paths.dropin)
    if report.written or report.removed or restart_pending:
        report.restart = _restart(fs, restart, restart_options, runner)
    if backup is not None and not keep_backup:
        fs.remove(_rel(paths.backup))
        report.removed.append(paths.backup)
    fs.remove(_rel(paths.state))
    for directory in reversed(state.created_dirs):
        if fs.is_dir(_rel(directory)) and not fs.listdir(_rel(directory)):
            os.rmdir(fs.path(_rel(directory)))
            report.removed.append(directory)
    return report


def configure(
    fs: Sysfs,
    *,
    main_config: str = DEFAULT_MAIN_CONFIG,
    dropin: str = DEFAULT_DROPIN,
    runtime_classes: Iterable[str] = labels.RUNTIME_CLASSES,
    kata_config_dir: str = DEFAULT_KATA_CONFIG_DIR,
    restart: RestartMethod = RestartMethod.AUTO,
    restart_options: RestartOptions = DEFAULT_RESTART_OPTIONS,
    pod_annotations: Iterable[str] = DEFAULT_POD_ANNOTATIONS,
    shim_path: str | None = DEFAULT_SHIM_PATH,
    containerd_version: str | None = None,
    runner: Runner = subprocess.run,
) -> ChangeReport:
    """Make containerd serve the Kata runtime classes; idempotent, validates everything before the first
    write. `shim_path` is each runtime's `runtime_path` (kata-deploy's shim by default; None or "" lets
    containerd look up `containerd-shim-<handler>-v2` on its PATH). `containerd_version` (the node's `containerRuntimeVersion`, optional) lets ccgpu refuse a
    version-3 file that containerd 1.x would ignore and warn where containerd lacks CDI. Blocking: an asyncio
    agent calls it through `asyncio.to_thread`, since a restart can take up to `restart_options.timeout_s`."""
    with _exclusive(fs, main_config):
        return _configure(
            fs,
            main_config=main_config,
            dropin=dropin,
            runtime_classes=runtime_classes,
            kata_config_dir=kata_config_dir,
            restart=restart,
            restart_options=restart_options,
            pod_annotations=pod_annotations,
            shim_path=shim_path,
            containerd_version=containerd_version,
            runner=runner,
        )


def cleanup(
    fs: Sysfs,
    *,
    main_config: str = DEFAULT_MAIN_CONFIG,
    dropin: str = DEFAULT_DROPIN,
    restart: RestartMethod = RestartMethod.AUTO,
    restart_options: RestartOptions = DEFAULT_RESTART_OPTIONS,
    runner: Runner = subprocess.run,
) -> ChangeReport:
    """Undo `configure`: the main file back byte for byte (or, if someone edited it since, only ccgpu's
    `imports` entry removed), the drop-in, backup and intent file gone, containerd restarted. Blocking."""
    with _exclusive(fs, main_config):
        return _cleanup(
            fs,
            main_config=main_config,
            dropin=dropin,
            restart=restart,
            restart_options=restart_options,
            runner=runner,
        )


@contextlib.contextmanager
def _exclusive(fs: Sysfs, main_config: str) -> Iterator[None]:
    """One configure/cleanup at a time per containerd config (the kata-manager loop and an operator's CLI run
    may meet): an flock on the main file's directory, which exists whenever there is anything to do."""
    check_host_path(main_config, "main containerd config")
    try:
        fd = os.open(fs.path(_rel(posixpath.dirname(main_config)) or "."), os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        yield  # nothing to protect: the call refuses the missing main file
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock

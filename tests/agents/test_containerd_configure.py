"""configure/cleanup on a host tree: files written, idempotence, byte-exact cleanup, refusals, crash recovery."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest
from containerd_hosts import (
    DEBIAN_V2,
    DROPIN,
    KATA_DIR,
    KUBEADM_V2,
    MAIN,
    SPACED_IMPORTS_V2,
    V3,
    V3_CONF_D,
    WITH_IMPORTS_V2,
    RecordingRunner,
    host_id,
    make_host,
    snapshot,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccgpu.agents.containerd import (
    ChangeReport,
    ContainerdConfigError,
    RestartError,
    RestartMethod,
    cleanup,
    configure,
)
from ccgpu.hw.sysfs import Sysfs

STATE = DROPIN + ".state.json"
BACKUP = MAIN + ".ccgpu-backup"


def _apply(root: Path, runner: RecordingRunner | None = None, **kw: object) -> ChangeReport:
    kw.setdefault("restart", RestartMethod.SYSTEMD)
    return configure(Sysfs(root), kata_config_dir=KATA_DIR, runner=runner or RecordingRunner(), **kw)  # type: ignore[arg-type]


def _cleanup(root: Path, runner: RecordingRunner | None = None, **kw: object) -> ChangeReport:
    kw.setdefault("restart", RestartMethod.SYSTEMD)
    return cleanup(Sysfs(root), runner=runner or RecordingRunner(), **kw)  # type: ignore[arg-type]


def _file(root: Path, host_path: str) -> Path:
    return root / host_path.lstrip("/")


@pytest.mark.parametrize("main_text", [KUBEADM_V2, DEBIAN_V2, WITH_IMPORTS_V2, V3], ids=host_id)
def test_apply_writes_dropin_import_and_backup_then_restarts_once(tmp_path: Path, main_text: str) -> None:
    root = make_host(tmp_path, main_text)
    runner = RecordingRunner()
    report = _apply(root, runner)
    assert report.written == [BACKUP, DROPIN, MAIN]
    assert report.warnings == []
    assert runner.calls == [
        ["nsenter", "--target", "1", "--mount", "--", "systemctl", "restart", "containerd.service"]
    ]
    assert _file(root, BACKUP).read_text() == main_text
    assert _file(root, MAIN).stat().st_mode & 0o777 == 0o640  # the main file keeps its mode
    assert tomllib.loads(_file(root, MAIN).read_text())["imports"][-1] == "conf.d/ccgpu-kata.toml"
    dropin = tomllib.loads(_file(root, DROPIN).read_text())
    plugin = "io.containerd.grpc.v1.cri" if dropin["version"] == 2 else "io.containerd.cri.v1.runtime"
    runtimes = dropin["plugins"][plugin]["containerd"]["runtimes"]
    assert {"kata-qemu-nvidia-gpu", "kata-qemu-nvidia-gpu-snp", "kata-qemu-nvidia-gpu-tdx"} <= set(runtimes)
    assert json.loads(_file(root, STATE).read_text())["phase"] == "applied"


@pytest.mark.parametrize("main_text", [KUBEADM_V2, V3, V3_CONF_D], ids=host_id)
def test_second_apply_changes_no_byte_and_restarts_nothing(tmp_path: Path, main_text: str) -> None:
    root = make_host(tmp_path, main_text)
    _apply(root)
    before = snapshot(root)
    runner = RecordingRunner()
    report = _apply(root, runner)
    assert snapshot(root) == before
    assert not report.changed and runner.calls == []


@pytest.mark.parametrize(
    "main_text", [KUBEADM_V2, DEBIAN_V2, WITH_IMPORTS_V2, SPACED_IMPORTS_V2, V3, V3_CONF_D], ids=host_id
)
def test_cleanup_restores_the_main_file_byte_for_byte_and_removes_the_rest(
    tmp_path: Path, main_text: str
) -> None:
    root = make_host(tmp_path, main_text)
    original = snapshot(root)
    _apply(root)
    runner = RecordingRunner()
    report = _cleanup(root, runner)
    assert _file(root, MAIN).read_bytes() == main_text.encode()
    assert {k: v[0] for k, v in snapshot(root).items()} == {k: v[0] for k, v in original.items()}
    assert DROPIN in report.removed and len(runner.calls) == 1
    assert report.warnings == []
    again = RecordingRunner()
    assert not _cleanup(root, again).changed and again.calls == []


def test_conf_d_already_imported_leaves_the_main_file_untouched(tmp_path: Path) -> None:
    """containerd 2.2's default config imports /etc/containerd/conf.d/*.toml: no edit, no backup needed."""
    root = make_host(tmp_path, V3_CONF_D)
    report = _apply(root)
    assert MAIN not in report.written
    assert _file(root, MAIN).read_text() == V3_CONF_D


def test_main_file_change_is_carried_into_the_version2_dropin_and_the_restore_point(tmp_path: Path) -> None:
    """containerd#5837: the v2 drop-in repeats the CRI section, so it must follow edits to the main file; and
    a later cleanup must keep that edit rather than restore the file from before it."""
    root = make_host(tmp_path, KUBEADM_V2)
    _apply(root)
    main = _file(root, MAIN)
    main.write_text(main.read_text().replace("SystemdCgroup = true", "SystemdCgroup = false"))
    report = _apply(root)
    assert report.written == [BACKUP, DROPIN]
    runc = tomllib.loads(_file(root, DROPIN).read_text())["plugins"]["io.containerd.grpc.v1.cri"][
        "containerd"
    ]
    assert runc["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    cleaned = _cleanup(root)
    assert main.read_text() == KUBEADM_V2.replace("SystemdCgroup = true", "SystemdCgroup = false")
    assert cleaned.warnings == []


def test_dropping_the_covering_glob_makes_the_next_apply_add_ccgpus_own_import(tmp_path: Path) -> None:
    root = make_host(tmp_path, V3_CONF_D)
    _apply(root)
    main = _file(root, MAIN)
    main.write_text("version = 3\n")
    assert MAIN in _apply(root).written
    assert tomllib.loads(main.read_text())["imports"] == ["conf.d/ccgpu-kata.toml"]
    _cleanup(root)
    assert main.read_text() == "version = 3\n"


@pytest.mark.parametrize(
    "main_text,needle",
    [
        ("version = 2\n[plugins\n", "is not valid TOML"),
        ('root = "/var/lib/containerd"\n', "no `version` key"),
        ("version = 7\n", "declares version = 7"),
        (
            'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata-qemu-nvidia-gpu]\n'
            '  runtime_type = "io.containerd.kata.v2"\n',
            "runtime 'kata-qemu-nvidia-gpu' already has runtime_type='io.containerd.kata.v2'",
        ),
    ],
    ids=["not-toml", "no-version", "version-7", "conflicting-runtime"],
)
def test_bad_main_file_is_refused_and_nothing_is_written(tmp_path: Path, main_text: str, needle: str) -> None:
    root = make_host(tmp_path, main_text)
    before = snapshot(root)
    runner = RecordingRunner()
    with pytest.raises(ContainerdConfigError) as e:
        _apply(root, runner)
    assert needle in str(e.value)
    assert snapshot(root) == before and runner.calls == []


@pytest.mark.parametrize(
    "kw,needle",
    [
        ({"main_config": "etc/containerd/config.toml"}, "must be an absolute host path"),
        ({"dropin": "/etc/containerd/conf.d/../x.toml"}, "must be a normalised file path"),
        ({"dropin": "/etc/containerd/conf.d/kata.conf"}, "must end in .toml"),
        (
            {"runtime_classes": ["kata-qemu-nvidia-gpu-sev"]},
            "unknown runtime class(es) 'kata-qemu-nvidia-gpu-sev'",
        ),
    ],
)
def test_bad_arguments_are_refused_before_any_write(tmp_path: Path, kw: dict, needle: str) -> None:
    root = make_host(tmp_path, KUBEADM_V2)
    before = snapshot(root)
    with pytest.raises(ContainerdConfigError) as e:
        _apply(root, **kw)
    assert needle in str(e.value)
    assert snapshot(root) == before


def test_missing_main_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ContainerdConfigError, match="does not exist"):
        _apply(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_foreign_file_at_the_dropin_path_is_not_overwritten(tmp_path: Path) -> None:
    root = make_host(tmp_path, V3)
    _file(root, DROPIN).parent.mkdir(parents=True)
    _file(root, DROPIN).write_text("# the site's own\nversion = 3\n")
    before = snapshot(root)
    with pytest.raises(ContainerdConfigError, match="ccgpu did not write it"):
        _apply(root)
    with pytest.raises(ContainerdConfigError, match="not written by ccgpu"):
        _cleanup(root)
    assert snapshot(root) == before


def test_auto_restart_on_a_host_without_systemd_is_refused_before_any_write(tmp_path: Path) -> None:
    root = make_host(tmp_path, KUBEADM_V2)
    before = snapshot(root)
    with pytest.raises(RestartError, match="choose a restart method"):
        _apply(root, restart=RestartMethod.AUTO)
    assert snapshot(root) == before


def test_auto_restart_uses_systemd_on_a_systemd_host(tmp_path: Path) -> None:
    root = make_host(tmp_path, KUBEADM_V2)
    (root / "run/systemd/system").mkdir(parents=True)
    runner = RecordingRunner()
    _apply(root, runner, restart=RestartMethod.AUTO)
    assert runner.calls[0][-3:] == ["systemctl", "restart", "containerd.service"]


def test_missing_kata_configs_are_reported_as_warnings(tmp_path: Path) -> None:
    root = make_host(tmp_path, V3, kata_configs=False)
    report = _apply(root, runtime_classes=["kata-qemu-nvidia-gpu-snp"])
    assert report.warnings == [
        f"{KATA_DIR}/configuration-qemu-nvidia-gpu-snp.toml not found on the host: "
        "pods of RuntimeClass kata-qemu-nvidia-gpu-snp fail until Kata is installed",
        "Kata shim /opt/kata/bin/containerd-shim-kata-v2 not found on the host: "
        "pods of the Kata runtime classes fail until Kata is installed",
    ]


def test_runtime_path_names_the_shim_given_or_is_left_out_when_the_shim_is_on_path(tmp_path: Path) -> None:
    """Without `runtime_path` containerd looks for `containerd-shim-<handler>-v2` on its PATH, which a
    kata-deploy install (shim under /opt/kata) does not put there."""
    root = make_host(tmp_path, V3)
    _apply(root, shim_path="/usr/local/bin/containerd-shim-kata-v2")
    dropin = tomllib.loads((root / "etc/containerd/conf.d/ccgpu-kata.toml").read_text())
    runtimes = dropin["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]
    assert {rt["runtime_path"] for rt in runtimes.values()} == {"/usr/local/bin/containerd-shim-kata-v2"}
    report = _apply(root, shim_path=None)
    assert report.changed
    dropin = tomllib.loads((root / "etc/containerd/conf.d/ccgpu-kata.toml").read_text())
    runtimes = dropin["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]
    assert all("runtime_path" not in rt for rt in runtimes.values())


class CrashAt:
    """A Sysfs whose write_file dies (like a killed process) when it reaches one path."""

    def __init__(self, root: Path, host_path: str) -> None:
        self.fs = Sysfs(root)
        self.rel = host_path.lstrip("/")
        real = self.fs.write_file

        def write_file(rel: str, data: str | bytes, mode: int = 0o644) -> None:
            if rel == self.rel:
                raise KeyboardInterrupt(f"crash before writing {rel}")
            real(rel, data, mode)

        self.fs.write_file = write_file  # type: ignore[method-assign]


@pytest.mark.parametrize("crash_at", [BACKUP, DROPIN, MAIN])
def test_apply_interrupted_at_any_write_is_finished_by_the_next_apply(tmp_path: Path, crash_at: str) -> None:
    root = make_host(tmp_path, KUBEADM_V2)
    first = RecordingRunner()
    with pytest.raises(KeyboardInterrupt):
        configure(
            CrashAt(root, crash_at).fs, kata_config_dir=KATA_DIR, restart=RestartMethod.SYSTEMD, runner=first
        )
    assert first.calls == []
    assert json.loads(_file(root, STATE).read_text())["phase"] == "applying"
    runner = RecordingRunner()
    _apply(root, runner)
    assert len(runner.calls) == 1
    clean = tmp_path.parent / (tmp_path.name + "-clean")
    _apply(make_host(clean, KUBEADM_V2))
    assert {k: v[0] for k, v in snapshot(root).items()} == {k: v[0] for k, v in snapshot(clean).items()}


@pytest.mark.parametrize("crash_at", [BACKUP, DROPIN, MAIN])
def test_apply_interrupted_at_any_write_is_rolled_back_by_cleanup(tmp_path: Path, crash_at: str) -> None:
    root = make_host(tmp_path, KUBEADM_V2)
    original = {k: v[0] for k, v in snapshot(root).items()}
    with pytest.raises(KeyboardInterrupt):
        configure(CrashAt(root, crash_at).fs, kata_config_dir=KATA_DIR, restart=RestartMethod.SYSTEMD)
    _cleanup(root)
    assert {k: v[0] for k, v in snapshot(root).items()} == original


def test_failed_restart_stays_pending_and_the_next_apply_retries_only_the_restart(tmp_path: Path) -> None:
    root = make_host(tmp_path, KUBEADM_V2)
    with pytest.raises(RestartError, match="intent file keeps the restart pending") as e:
        _apply(
            root, RecordingRunner(returncode=1, stderr="Failed to restart containerd.service: Access denied")
        )
    assert "Access denied" in str(e.value)
    assert json.loads(_file(root, STATE).read_text())["phase"] == "restart-pending"
    before = {k: v[0] for k, v in snapshot(root).items() if k != STATE.lstrip("/")}
    runner = RecordingRunner()
    report = _apply(root, runner)
    assert report.written == [] and len(runner.calls) == 1
    assert {k: v[0] for k, v in snapshot(root).items() if k != STATE.lstrip("/")} == before
    assert json.loads(_file(root, STATE).read_text())["phase"] == "applied"


def test_cleanup_after_the_main_file_was_edited_removes_only_ccgpus_import(tmp_path: Path) -> None:
    root = make_host(tmp_path, KUBEADM_V2)
    _apply(root)
    main = _file(root, MAIN)
    main.write_text(main.read_text().replace("pause:3.9", "pause:3.10"))
    report = _cleanup(root)
    assert main.read_text() == KUBEADM_V2.replace("pause:3.9", "pause:3.10")
    assert "removed only ccgpu's imports entry" in report.warnings[0]
    assert _file(root, BACKUP).read_text() == KUBEADM_V2  # the pre-ccgpu copy is kept for the operator
    assert not _file(root, DROPIN).exists() and not _file(root, STATE).exists()


def test_state_from_other_paths_is_refused(tmp_path: Path) -> None:
    root = make_host(tmp_path, V3)
    _apply(root)
    other_main = root / "etc/containerd/other.toml"
    other_main.write_text(V3)
    with pytest.raises(ContainerdConfigError, match="run cleanup with those paths"):
        _apply(root, main_config="/etc/containerd/other.toml")


def test_version3_file_with_containerd_1x_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    root = make_host(tmp_path, V3)
    before = snapshot(root)
    with pytest.raises(ContainerdConfigError, match="would silently ignore ccgpu's drop-in"):
        _apply(root, containerd_version="containerd://1.7.27")
    assert snapshot(root) == before


def test_cleanup_removes_the_directories_apply_created_and_keeps_existing_ones(tmp_path: Path) -> None:
    fresh = make_host(tmp_path / "fresh", KUBEADM_V2)
    _apply(fresh)
    assert _cleanup(fresh).removed[-1] == "/etc/containerd/conf.d"
    assert not (fresh / "etc/containerd/conf.d").exists()
    existing = make_host(tmp_path / "existing", KUBEADM_V2)
    (existing / "etc/containerd/conf.d").mkdir()
    _apply(existing)
    _cleanup(existing)
    assert (existing / "etc/containerd/conf.d").is_dir()


def test_a_symlinked_main_file_stays_a_link_and_its_target_is_edited_and_restored(tmp_path: Path) -> None:
    root = make_host(tmp_path, KUBEADM_V2)
    managed = root / "etc/site/containerd.toml"
    managed.parent.mkdir(parents=True)
    (root / MAIN.lstrip("/")).rename(managed)
    (root / MAIN.lstrip("/")).symlink_to("../site/containerd.toml")
    _apply(root)
    assert (root / MAIN.lstrip("/")).is_symlink()
    assert "conf.d/ccgpu-kata.toml" in managed.read_text()
    _cleanup(root)
    assert (root / MAIN.lstrip("/")).is_symlink() and managed.read_text() == KUBEADM_V2


def test_a_version2_import_sorting_after_the_dropin_is_reported(tmp_path: Path) -> None:
    """containerd#5837: on 1.x a CRI section imported after ccgpu's drop-in replaces it whole."""
    root = make_host(tmp_path, 'version = 2\nimports = ["/etc/containerd/conf.d/*.toml"]\n')
    conf_d = root / "etc/containerd/conf.d"
    conf_d.mkdir()
    (conf_d / "zz-registry.toml").write_text(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n'
    )
    (conf_d / "00-cni.toml").write_text(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".cni]\n  bin_dir = "/x"\n'
    )
    report = _apply(root)
    assert report.warnings == [
        "/etc/containerd/conf.d/zz-registry.toml is imported after /etc/containerd/conf.d/ccgpu-kata.toml and, on "
        "containerd 1.x, its CRI section replaces the drop-in's (ccgpu's runtimes would be lost): give the drop-in "
        "a name that sorts last or import it after that file"
    ]
    cri = tomllib.loads(_file(root, DROPIN).read_text())["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["cni"] == {"bin_dir": "/x"}  # the section ahead of the drop-in is the one it repeats


def test_concurrent_runs_take_turns_on_the_main_files_directory(tmp_path: Path) -> None:
    """The kata-manager loop and an operator's CLI run must not interleave their writes."""
    import fcntl
    import threading

    root = make_host(tmp_path, KUBEADM_V2)
    fd = os.open(root / "etc/containerd", os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    reports: list[ChangeReport] = []
    worker = threading.Thread(target=lambda: reports.append(_apply(root)))
    worker.start()
    try:
        worker.join(timeout=0.3)
        assert worker.is_alive() and not _file(root, DROPIN).exists()  # waiting for the lock, nothing written
    finally:
        os.close(fd)
    worker.join(timeout=30)
    assert not worker.is_alive() and reports[0].written == [BACKUP, DROPIN, MAIN]


_keys = st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True)
_scalars = st.one_of(st.booleans(), st.integers(-5, 5000), st.text("abc/:._-", max_size=12))
_cri_tables = st.dictionaries(
    _keys.filter(lambda k: k not in ("containerd", "enable_cdi", "cdi_spec_dirs")),
    st.one_of(_scalars, st.dictionaries(_keys, _scalars, max_size=3)),
    max_size=5,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cri=_cri_tables, version=st.sampled_from([2, 3]), comment=st.booleans())
def test_any_main_file_round_trips_and_its_cri_settings_survive(
    cri: dict, version: int, comment: bool
) -> None:
    """Property: for any CRI settings, apply keeps them in force (v2: repeated in the drop-in, containerd#5837),
    a second apply changes nothing, and cleanup restores the main file byte for byte."""
    import tempfile

    import tomlkit

    plugin = "io.containerd.grpc.v1.cri" if version == 2 else "io.containerd.cri.v1.runtime"
    doc = tomlkit.document()
    if comment:
        doc.add(tomlkit.comment("site config"))
    doc["version"] = version
    doc["plugins"] = {plugin: cri} if cri else {}
    main_text = tomlkit.dumps(doc)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_host(Path(tmp), main_text)
        _apply(root)
        dropin_cri = tomllib.loads(_file(root, DROPIN).read_text())["plugins"][plugin]
        kept = {k: v for k, v in dropin_cri.items() if k not in ("containerd", "enable_cdi")}
        assert kept == (tomllib.loads(main_text)["plugins"].get(plugin, {}) if version == 2 else {})
        before = snapshot(root)
        assert not _apply(root).changed and snapshot(root) == before
        _cleanup(root)
        assert _file(root, MAIN).read_text() == main_text
        assert not _file(root, DROPIN).exists() and not _file(root, BACKUP).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_the_main_file_keeps_its_owner(tmp_path: Path) -> None:
    root = make_host(tmp_path, KUBEADM_V2)
    os.chown(_file(root, MAIN), 1234, 4321)
    _apply(root)
    st_main = _file(root, MAIN).stat()
    assert (st_main.st_uid, st_main.st_gid, st_main.st_mode & 0o777) == (1234, 4321, 0o640)

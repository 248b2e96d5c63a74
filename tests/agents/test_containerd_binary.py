"""The real containerd binary loads what ccgpu writes: `containerd --config <main> config dump`.

Debian's containerd 1.6 (`.ci/run` installs it) reads version-2 files; it silently ignores a version-3 file, so
version-3 output is checked with a containerd 2.x binary only when one is on PATH (the plugin paths themselves
are pinned against reference §C in test_containerd_toml.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from containerd_hosts import (
    DEBIAN_V2,
    KATA_DIR,
    KUBEADM_V2,
    MAIN,
    V3,
    WITH_IMPORTS_V2,
    RecordingRunner,
    make_host,
)

from ccgpu.agents.containerd import RestartMethod, configure
from ccgpu.hw.sysfs import Sysfs

pytestmark = pytest.mark.containerd

CONTAINERD = shutil.which("containerd")
CLASSES = ("kata-qemu-nvidia-gpu", "kata-qemu-nvidia-gpu-snp", "kata-qemu-nvidia-gpu-tdx")


def _major_minor() -> tuple[int, int]:
    if CONTAINERD is None:
        return (0, 0)
    argv = [CONTAINERD, "--version"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout  # noqa: S603
    match = re.search(r" v?(\d+)\.(\d+)\.", out)
    assert match, f"cannot read containerd's version from {out!r}"
    return int(match.group(1)), int(match.group(2))


VERSION = _major_minor()
needs_binary = pytest.mark.skipif(
    CONTAINERD is None, reason="no containerd binary on PATH (.ci/run installs it)"
)
needs_1x = pytest.mark.skipif(
    not (1, 6) <= VERSION < (2, 0), reason=f"needs containerd 1.6/1.7, found {VERSION}"
)
needs_2x = pytest.mark.skipif(
    VERSION < (2, 0), reason=f"no containerd 2.x on PATH (found {VERSION}); v3 checked vs §C"
)


def _dump(main: Path) -> dict:
    """The merged config containerd would run with (no daemon needed)."""
    assert CONTAINERD is not None
    done = subprocess.run(  # noqa: S603 - fixed argv
        [CONTAINERD, "--config", str(main), "config", "dump"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return tomllib.loads(done.stdout)


def _apply(root: Path) -> None:
    configure(Sysfs(root), kata_config_dir=KATA_DIR, restart=RestartMethod.SYSTEMD, runner=RecordingRunner())


@needs_binary
@needs_1x
@pytest.mark.parametrize(
    "main_text", [KUBEADM_V2, DEBIAN_V2, WITH_IMPORTS_V2], ids=["kubeadm", "debian", "imports"]
)
def test_containerd_1x_loads_each_kata_runtime_with_its_shim_and_config_path(
    tmp_path: Path, main_text: str
) -> None:
    root = make_host(tmp_path, main_text)
    _apply(root)
    dumped = _dump(root / MAIN.lstrip("/"))
    assert str(root / "etc/containerd/conf.d/ccgpu-kata.toml") in dumped["imports"]
    cri = dumped["plugins"]["io.containerd.grpc.v1.cri"]
    for name in CLASSES:
        runtime = cri["containerd"]["runtimes"][name]
        assert runtime["runtime_type"] == f"io.containerd.{name}.v2"
        assert runtime["runtime_path"] == "/opt/kata/bin/containerd-shim-kata-v2"  # kata-deploy's shim
        assert (
            runtime["options"]["ConfigPath"] == f"{KATA_DIR}/configuration-{name.removeprefix('kata-')}.toml"
        )
        assert runtime["privileged_without_host_devices"] is True
        assert runtime["pod_annotations"] == ["io.katacontainers.*"]
    if VERSION >= (1, 7):  # containerd 1.6 has no CDI and drops the key; 1.7 added enable_cdi
        assert cri["enable_cdi"] is True


@needs_binary
@needs_1x
def test_containerd_1x_keeps_the_main_files_cri_settings_with_ccgpus_dropin(tmp_path: Path) -> None:
    """containerd#5837: 1.x replaces a whole plugin section on import; ccgpu's v2 drop-in must not cost the
    node its SystemdCgroup, sandbox image, CNI paths or default runtime."""
    root = make_host(tmp_path, KUBEADM_V2)
    before = _dump(root / MAIN.lstrip("/"))["plugins"]["io.containerd.grpc.v1.cri"]
    _apply(root)
    after = _dump(root / MAIN.lstrip("/"))["plugins"]["io.containerd.grpc.v1.cri"]
    assert after["containerd"]["runtimes"]["runc"] == before["containerd"]["runtimes"]["runc"]
    assert after["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    assert after["sandbox_image"] == before["sandbox_image"] == "registry.example/pause:3.9"
    assert after["cni"] == before["cni"]
    for key in before:
        if key not in ("containerd", "enable_cdi"):
            assert after[key] == before[key], key


@needs_binary
@needs_1x
def test_containerd_1x_really_replaces_plugin_sections_on_import(tmp_path: Path) -> None:
    """The containerd behaviour the v2 drop-in design rests on (containerd#5837): a drop-in naming only a
    runtime wipes the main file's other CRI settings. If this starts failing, the copy is no longer needed."""
    main = tmp_path / "config.toml"
    main.write_text(KUBEADM_V2.replace("version = 2\n", 'version = 2\nimports = ["only-runtime.toml"]\n'))
    (tmp_path / "only-runtime.toml").write_text(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.x]\n  runtime_type = "io.containerd.x.v2"\n'
    )
    cri = _dump(main)["plugins"]["io.containerd.grpc.v1.cri"]
    assert (
        "runc" not in cri["containerd"]["runtimes"] or cri["containerd"]["runtimes"]["runc"]["options"] == {}
    )
    assert cri["sandbox_image"] != "registry.example/pause:3.9"


@needs_binary
@needs_2x
def test_containerd_2x_loads_the_version3_dropin(tmp_path: Path) -> None:
    root = make_host(tmp_path, V3)
    _apply(root)
    plugin = _dump(root / MAIN.lstrip("/"))["plugins"]["io.containerd.cri.v1.runtime"]
    assert plugin["enable_cdi"] is True
    assert plugin["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    for name in CLASSES:
        runtime = plugin["containerd"]["runtimes"][name]
        assert runtime["runtime_type"] == f"io.containerd.{name}.v2"
        assert (
            runtime["options"]["ConfigPath"] == f"{KATA_DIR}/configuration-{name.removeprefix('kata-')}.toml"
        )


@needs_binary
@needs_1x
def test_containerd_1x_keeps_cri_settings_from_files_the_main_config_already_imports(tmp_path: Path) -> None:
    """containerd#5837 again: the last imported CRI section wins whole, so ccgpu's drop-in (imported last)
    repeats the site drop-in's section rather than the main file's."""
    # relative, so the binary reads the file under tmp_path rather than this machine's /etc (and no glob:
    # containerd 1.6 resolves a relative glob against its working directory, not the main file's)
    root = make_host(
        tmp_path, WITH_IMPORTS_V2.replace("/etc/containerd/site.d/*.toml", "site.d/registry.toml")
    )
    site = root / "etc/containerd/site.d"
    site.mkdir(parents=True)
    (site / "registry.toml").write_text(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n'
    )
    main = root / MAIN.lstrip("/")
    before = _dump(main)["plugins"]["io.containerd.grpc.v1.cri"]
    assert before["registry"]["config_path"] == "/etc/containerd/certs.d"
    _apply(root)
    after = _dump(main)["plugins"]["io.containerd.grpc.v1.cri"]
    assert after["registry"]["config_path"] == "/etc/containerd/certs.d"
    assert after["containerd"]["runtimes"]["kata-qemu-nvidia-gpu"]["runtime_type"] == (
        "io.containerd.kata-qemu-nvidia-gpu.v2"
    )

"""`ccgpu sim host DIR` mounts the simulated host through FUSE: unmodified programs, given DIR as their host root,
see Linux's sysfs behaviour with no setting of any kind (no environment switch, no simulator import)."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ccgpu.cli import app
from ccgpu.sim import host_mount
from ccgpu.sim.host import SimulatedHost
from tests.conftest import ccgpu_command, ccgpu_env, require_fuse

GPUS = ["0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0", "0000:5d:00.0",
        "0000:9a:00.0", "0000:ab:00.0", "0000:ba:00.0", "0000:db:00.0"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in ccgpu_env().items() if not k.startswith("CCGPU_")}
    return subprocess.run(ccgpu_command(*args), env=env, capture_output=True, text=True, timeout=120)  # noqa: S603


@pytest.fixture
def mounted(tmp_path: Path):
    require_fuse()
    directory = tmp_path / "host"
    done = _run("sim", "host", str(directory), "--profile", "8xh100-snp")
    assert done.returncode == 0, done.stderr
    try:
        yield directory
    finally:
        if host_mount.is_mounted(directory):
            host_mount.unmount(directory)


def test_an_unmodified_agent_binds_all_eight_gpus_through_the_mount(mounted: Path) -> None:
    done = _run("agent", "vfio-manager", "bind", "--all", "--host-root", str(mounted))
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()] == GPUS
    for bdf in GPUS:
        assert os.readlink(mounted / f"sys/bus/pci/devices/{bdf}/driver").endswith("/vfio-pci")
        group = os.readlink(mounted / f"sys/bus/pci/devices/{bdf}/iommu_group").rsplit("/", 1)[1]
        assert (mounted / "dev/vfio" / group).exists()


def test_a_shell_write_gets_the_kernels_answer(mounted: Path) -> None:
    bind = mounted / "sys/bus/pci/drivers/nvidia/bind"
    busy = subprocess.run(["bash", "-c", f"echo {GPUS[0]} > {bind}"], capture_output=True, text=True)  # noqa: S603,S607
    assert busy.returncode == 1 and "Device or resource busy" in busy.stderr  # already bound to nvidia
    unbind = mounted / f"sys/bus/pci/devices/{GPUS[0]}/driver/unbind"
    freed = subprocess.run(["bash", "-c", f"echo {GPUS[0]} > {unbind}"], capture_output=True, text=True)  # noqa: S603,S607
    assert freed.returncode == 0, freed.stderr
    assert not (mounted / f"sys/bus/pci/devices/{GPUS[0]}/driver").exists()
    with pytest.raises(OSError) as missing:
        (mounted / "sys/bus/pci/drivers/nvidia/bind").write_text("0000:77:00.0\n")
    assert missing.value.errno == errno.ENODEV


def test_sysfs_rules_hold_through_the_mount(mounted: Path) -> None:
    with pytest.raises(PermissionError):
        (mounted / f"sys/bus/pci/devices/{GPUS[0]}/reset").read_text()  # write-only attribute
    with pytest.raises(PermissionError):
        (mounted / "sys/bus/pci/devices/new-file").write_text("x")  # sysfs files are the kernel's
    with pytest.raises(PermissionError):
        (mounted / f"sys/bus/pci/devices/{GPUS[0]}/vendor").unlink()
    assert (mounted / f"sys/bus/pci/devices/{GPUS[0]}/vendor").read_text() == "0x10de\n"


def test_files_outside_sys_behave_like_a_plain_file_system(mounted: Path) -> None:
    """What agents write on a host (readiness files, CDI specs) with the atomic write-and-rename they use."""
    from ccgpu.hw.sysfs import Sysfs

    fs = Sysfs(mounted)
    fs.makedirs("run/nvidia/validations")
    fs.write_file("run/nvidia/validations/workload-type", "vm-passthrough\n")
    assert (mounted / "run/nvidia/validations/workload-type").read_text() == "vm-passthrough\n"
    fs.remove("run/nvidia/validations/workload-type")
    assert not fs.exists("run/nvidia/validations/workload-type")


def test_the_simulators_state_is_not_part_of_the_hosts_tree(mounted: Path) -> None:
    assert ".sim" not in os.listdir(mounted)
    assert not (mounted / ".sim/state.json").exists()
    state = SimulatedHost.open(host_mount.backing_dir(mounted)).state()
    assert state.profile == "8xh100-snp"


def test_unmount_removes_the_mount_and_the_hosts_files(tmp_path: Path) -> None:
    require_fuse()
    directory = tmp_path / "host"
    assert _run("sim", "host", str(directory), "-p", "1xh200-snp").returncode == 0
    assert host_mount.is_mounted(directory)
    done = _run("sim", "host", "--unmount", str(directory))
    assert done.returncode == 0, done.stderr
    assert not host_mount.is_mounted(directory)
    assert not host_mount.backing_dir(directory).exists()
    assert os.listdir(directory) == []
    again = _run("sim", "host", "--unmount", str(directory))
    assert again.returncode == 2 and "no simulated host is mounted" in again.stderr


def test_a_non_empty_directory_is_refused_and_left_alone(tmp_path: Path) -> None:
    require_fuse()
    (tmp_path / "mine.txt").write_text("keep")
    done = _run("sim", "host", str(tmp_path))
    assert done.returncode == 2 and "must be an empty or absent directory" in done.stderr
    assert os.listdir(tmp_path) == ["mine.txt"] and not host_mount.is_mounted(tmp_path)


def test_without_fuse_a_plain_tree_is_written_and_the_user_is_told(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(host_mount, "unavailable", lambda: "/dev/fuse does not exist")
    runner = CliRunner()
    plain = runner.invoke(app, ["sim", "host", str(tmp_path / "a")])
    assert plain.exit_code == 0 and "is a plain tree (/dev/fuse does not exist)" in plain.stderr
    assert (tmp_path / "a/sys/bus/pci/devices").is_dir()
    quiet = runner.invoke(app, ["sim", "host", str(tmp_path / "b"), "--no-mount"])
    assert quiet.exit_code == 0 and "plain tree" not in quiet.stderr
    refused = runner.invoke(app, ["sim", "host", str(tmp_path / "c"), "--mount"])
    assert refused.exit_code == 2 and "--mount: /dev/fuse does not exist" in refused.stderr
    assert not (tmp_path / "c").exists()

"""kata-manager's CDI half and the two agents' command lines, on a fake VFIO host."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import threading
import types
from pathlib import Path

import pytest
import yaml
from fakehost import H100_SXM5, H200_SXM, FakeVfioHost
from typer.testing import CliRunner

from ccgpu.agents import cdi, kata_manager
from ccgpu.cli import app
from ccgpu.hw.sysfs import Sysfs
from ccgpu.sim.kubelet import FakeKubelet
from tests.conftest import ccgpu_command, ccgpu_env

SPEC = "var/run/cdi/nvidia.com-pgpu.yaml"


def _host(tmp_path: Path) -> FakeVfioHost:
    host = FakeVfioHost(tmp_path)
    host.add("0000:3a:00.0", group=12)
    host.add("0000:3b:00.0", group=13, device_id=H200_SXM)
    return host


def _kata(tmp_path: Path, *args: str, **env: str):
    """Run the kata-manager command in-process (typer's CliRunner), with extra environment variables."""
    return CliRunner().invoke(app, ["agent", "kata-manager", "--host-root", str(tmp_path), *args], env=env)


def test_kata_manager_once_writes_a_valid_spec_and_a_second_run_changes_no_byte(tmp_path):
    _host(tmp_path)
    first = _kata(tmp_path, "--once")
    assert first.exit_code == 0, first.output
    spec_path = tmp_path / SPEC
    spec = yaml.safe_load(spec_path.read_text())
    cdi.validate_spec(spec)
    assert [d["name"] for d in spec["devices"]] == ["12", "13"]
    before = (spec_path.read_bytes(), spec_path.stat().st_ino, spec_path.stat().st_mtime_ns)
    second = _kata(tmp_path, "--once")
    assert second.exit_code == 0, second.output
    assert (spec_path.read_bytes(), spec_path.stat().st_ino, spec_path.stat().st_mtime_ns) == before


def test_empty_p_gpu_alias_gives_per_model_spec_files(tmp_path):
    _host(tmp_path)
    result = _kata(tmp_path, "--once", P_GPU_ALIAS="")
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path / "var/run/cdi")) == [
        "nvidia.com-GH100_H100_SXM5_80GB.yaml", "nvidia.com-GH100_H200_SXM_141GB.yaml"
    ]


def test_bad_alias_exits_2_with_the_accepted_form_and_writes_nothing(tmp_path):
    _host(tmp_path)
    result = CliRunner().invoke(app, ["agent", "kata-manager", "--host-root", str(tmp_path), "--once",
                                      "--gpu-alias", "p/gpu"])
    assert result.exit_code == 2
    assert "must start with a letter" in result.output
    assert not (tmp_path / "var/run/cdi").exists()


@pytest.mark.parametrize("interval", ["0", "nan", "inf"])
def test_an_interval_that_is_not_a_positive_finite_number_exits_2_and_writes_nothing(tmp_path, interval):
    """inf used to be accepted and made the agent never look at the devices again; nan likewise slipped past."""
    _host(tmp_path)
    result = _kata(tmp_path, "--interval", interval)
    assert result.exit_code == 2
    assert "--interval must be a positive, finite number of seconds" in result.output
    assert not (tmp_path / "var/run/cdi").exists()


@pytest.mark.parametrize("args", [["--once"], ["--cleanup"]])
@pytest.mark.parametrize("cdi_dir", ["/var/run/../../etc", "var/run/cdi"])
def test_a_cdi_dir_that_is_relative_or_climbs_out_exits_2_and_changes_nothing(tmp_path, cdi_dir, args):
    """--cleanup used to accept such a path and silently remove nothing."""
    _host(tmp_path)
    result = _kata(tmp_path, "--cdi-dir", cdi_dir, *args)
    assert result.exit_code == 2
    assert "must be an absolute host path without '..'" in result.output
    assert not (tmp_path / "var/run/cdi").exists()


def test_device_plugin_refuses_a_cdi_dir_that_climbs_out(tmp_path):
    _host(tmp_path)
    result = CliRunner().invoke(app, ["agent", "device-plugin", "--host-root", str(tmp_path), "--once",
                                      "--cdi-dir", "/var/../../etc", "--device-plugin-dir", str(tmp_path / "dp")])
    assert result.exit_code == 2
    assert "must be an absolute host path without '..'" in result.output


def test_a_cdi_dir_that_cannot_be_created_exits_1_naming_the_path_not_a_traceback(tmp_path):
    _host(tmp_path)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/file").write_text("x")
    result = _kata(tmp_path, "--cdi-dir", "/etc/file/cdi", "--once")
    assert result.exit_code == 1
    assert "error: Not a directory:" in result.output and "etc/file/cdi" in result.output
    assert "Traceback" not in result.output


def test_missing_host_root_is_refused(tmp_path):
    result = CliRunner().invoke(app, ["agent", "kata-manager", "--host-root", str(tmp_path / "nope"), "--once"])
    assert result.exit_code == 2
    assert "is not a directory" in result.output


def test_configure_containerd_calls_the_containerd_module_with_the_options(tmp_path, monkeypatch):
    _host(tmp_path)
    calls = []
    fake = types.ModuleType("ccgpu.agents.containerd")
    fake.configure = lambda fs, **kw: calls.append((fs.root, kw))
    monkeypatch.setitem(sys.modules, "ccgpu.agents.containerd", fake)
    result = CliRunner().invoke(app, ["agent", "kata-manager", "--host-root", str(tmp_path), "--once",
                                      "--configure-containerd", "--containerd-config", "/etc/k3s/config.toml"])
    assert result.exit_code == 0, result.output
    assert calls == [(Path(os.path.realpath(tmp_path)), {"main_config": "/etc/k3s/config.toml", "restart": "auto"})]
    assert (tmp_path / SPEC).exists()


async def test_configure_containerd_runs_off_the_event_loop_so_a_slow_restart_does_not_freeze_the_agent(
    tmp_path, monkeypatch
):
    _host(tmp_path)
    entered, loop_ran = threading.Event(), threading.Event()
    seen = []

    def slow_configure(fs, **kw):  # a restart waiting on containerd; only the event loop can release it
        entered.set()
        seen.append(loop_ran.wait(timeout=3))

    fake = types.ModuleType("ccgpu.agents.containerd")
    fake.configure = slow_configure
    monkeypatch.setitem(sys.modules, "ccgpu.agents.containerd", fake)
    config = kata_manager.KataManagerConfig(host_root=str(tmp_path), configure_containerd=True)
    task = asyncio.get_running_loop().create_task(kata_manager.run(config, once=True))
    await _until(entered.is_set)
    loop_ran.set()
    await asyncio.wait_for(task, 5)
    assert seen == [True]


def test_configure_containerd_refusals_exit_with_their_message_not_a_traceback(tmp_path):
    _host(tmp_path)
    (tmp_path / "etc/containerd").mkdir(parents=True)
    (tmp_path / "etc/containerd/config.toml").write_text("version = 9\n")
    args = ["agent", "kata-manager", "--host-root", str(tmp_path), "--once", "--configure-containerd"]
    unsupervised = CliRunner().invoke(app, args)  # no run/systemd/system: no way to restart containerd
    assert unsupervised.exit_code == 1, unsupervised.output
    assert "cannot tell how containerd is supervised" in unsupervised.output
    (tmp_path / "run/systemd/system").mkdir(parents=True)
    bad_config = CliRunner().invoke(app, args)
    assert bad_config.exit_code == 2, bad_config.output
    assert "declares version = 9" in bad_config.output
    assert (tmp_path / "etc/containerd/config.toml").read_text() == "version = 9\n"


def test_configure_containerd_without_the_module_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    _host(tmp_path)
    monkeypatch.setitem(sys.modules, "ccgpu.agents.containerd", None)  # import fails as if absent
    result = CliRunner().invoke(app, ["agent", "kata-manager", "--host-root", str(tmp_path), "--once",
                                      "--configure-containerd"])
    assert result.exit_code == 2
    assert "needs ccgpu.agents.containerd" in result.output
    assert not (tmp_path / "var/run/cdi").exists()


def test_cleanup_removes_only_ccgpu_specs(tmp_path):
    _host(tmp_path)
    assert _kata(tmp_path, "--once").exit_code == 0
    (tmp_path / "var/run/cdi/nvidia.com-gpu.yaml").write_text("cdiVersion: 0.5.0\n")
    result = CliRunner().invoke(app, ["agent", "kata-manager", "--host-root", str(tmp_path), "--cleanup"])
    assert result.exit_code == 0, result.output
    assert "removed /var/run/cdi/nvidia.com-pgpu.yaml" in result.output
    assert os.listdir(tmp_path / "var/run/cdi") == ["nvidia.com-gpu.yaml"]


async def test_running_kata_manager_rewrites_the_spec_when_devices_change(tmp_path):
    host = _host(tmp_path)
    fs = Sysfs(tmp_path)
    config = kata_manager.KataManagerConfig(host_root=str(tmp_path), interval_s=0.02)
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(kata_manager.run(config, stop))
    try:
        await _until(lambda: cdi.spec_device_names(fs, "/var/run/cdi", "nvidia.com/pgpu") == {"12", "13"})
        host.unbind("0000:3a:00.0")
        await _until(lambda: cdi.spec_device_names(fs, "/var/run/cdi", "nvidia.com/pgpu") == {"13"})
        host.add("0000:3c:00.0", group=30, device_id=H100_SXM5)
        await _until(lambda: cdi.spec_device_names(fs, "/var/run/cdi", "nvidia.com/pgpu") == {"13", "30"})
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def _until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_device_plugin_command_registers_with_the_kubelet_over_the_real_socket(tmp_path):
    host = _host(tmp_path)
    host.write_readiness()
    kata_manager.reconcile(Sysfs(tmp_path), kata_manager.KataManagerConfig(host_root=str(tmp_path)))
    plugin_dir = Path(tempfile.mkdtemp(prefix="ccgpu-cli-"))
    try:
        async with FakeKubelet(plugin_dir) as kubelet:
            proc = await asyncio.create_subprocess_exec(
                *ccgpu_command("agent", "device-plugin", "--host-root", str(tmp_path),
                               "--device-plugin-dir", str(plugin_dir), "--once"),
                env=ccgpu_env(), stderr=asyncio.subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()
            assert [(r.resource_name, r.endpoint) for r in kubelet.registrations] == [
                ("nvidia.com/pgpu", "ccgpu-pgpu.sock")
            ]
    finally:
        shutil.rmtree(plugin_dir, ignore_errors=True)


@pytest.mark.parametrize("cmd", ["kata-manager", "device-plugin"])
def test_agent_help_lists_host_root_and_cdi_dir(cmd):
    result = CliRunner().invoke(app, ["agent", cmd, "--help"])
    assert result.exit_code == 0
    assert "--host-root" in result.output and "--cdi-dir" in result.output


async def test_a_failed_pass_keeps_the_current_spec_and_the_next_pass_recovers(tmp_path):
    host = _host(tmp_path)
    fs = Sysfs(tmp_path)
    failures = {"left": 0}

    def flaky_discover(fs):
        if failures["left"]:
            failures["left"] -= 1
            raise OSError(5, "Input/output error reading sysfs")
        return cdi.discover_devices(fs)

    config = kata_manager.KataManagerConfig(host_root=str(tmp_path), interval_s=0.02)
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(kata_manager.run(config, stop, discover=flaky_discover))
    try:
        await _until(lambda: cdi.spec_device_names(fs, "/var/run/cdi", "nvidia.com/pgpu") == {"12", "13"})
        failures["left"] = 3
        host.unbind("0000:3a:00.0")
        await _until(lambda: failures["left"] == 0)
        assert not task.done()
        await _until(lambda: cdi.spec_device_names(fs, "/var/run/cdi", "nvidia.com/pgpu") == {"13"})
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def _containerd_host(tmp_path):
    _host(tmp_path)
    (tmp_path / "etc/containerd").mkdir(parents=True)
    (tmp_path / "etc/containerd/config.toml").write_text("version = 2\n")


@pytest.mark.parametrize("how", [["--containerd-restart", "none"], []], ids=["flag", "env"])
def test_configure_containerd_on_a_host_without_systemd_works_with_restart_none(tmp_path, how):
    """Without a restart choice the kata-manager always used `auto`, which refuses hosts that lack
    run/systemd/system: `--containerd-restart none` (or $CONTAINERD_RESTART_MODE) must get through."""
    _containerd_host(tmp_path)
    env = {} if how else {"CONTAINERD_RESTART_MODE": "none"}
    result = _kata(tmp_path, "--once", "--configure-containerd", *how, **env)
    assert result.exit_code == 0, result.output
    dropin = (tmp_path / "etc/containerd/conf.d/ccgpu-kata.toml").read_text()
    assert "kata-qemu-nvidia-gpu-snp" in dropin
    assert "conf.d/ccgpu-kata.toml" in (tmp_path / "etc/containerd/config.toml").read_text()


def test_containerd_restart_and_kata_shim_reach_configure_and_cleanup(tmp_path, monkeypatch):
    _host(tmp_path)
    calls = []
    fake = types.ModuleType("ccgpu.agents.containerd")
    fake.configure = lambda fs, **options: calls.append(("configure", options))
    fake.cleanup = lambda fs, **options: calls.append(("cleanup", options))
    monkeypatch.setitem(sys.modules, "ccgpu.agents.containerd", fake)
    flags = ["--configure-containerd", "--containerd-restart", "signal", "--kata-shim", "/usr/bin/shim"]
    assert _kata(tmp_path, "--once", *flags).exit_code == 0
    assert _kata(tmp_path, "--cleanup", *flags).exit_code == 0
    (_, applied), (_, cleaned) = calls
    assert applied["restart"] == "signal" and applied["shim_path"] == "/usr/bin/shim"
    assert cleaned["restart"] == "signal" and "shim_path" not in cleaned


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--containerd-restart", "reload"], "--containerd-restart 'reload' is not a restart method; accepted: auto"),
        (["--kata-shim", "bin/shim"], "--kata-shim 'bin/shim' must be an absolute host path"),
    ],
)
def test_bad_containerd_flags_exit_2_before_anything_is_written(tmp_path, flags, needle):
    _containerd_host(tmp_path)
    result = _kata(tmp_path, "--once", "--configure-containerd", *flags)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert not (tmp_path / "var/run/cdi").exists()
    assert not (tmp_path / "etc/containerd/conf.d").exists()


async def test_both_agent_loops_log_an_unreadable_pci_entry_once_not_every_pass(tmp_path, caplog, monkeypatch):
    """The kata-manager and the device plugin rediscover every pass; a stuck entry is reported once."""
    from ccgpu.agents.device_plugin.server import DevicePluginAgent, DevicePluginConfig

    _host(tmp_path)
    (tmp_path / "sys/bus/pci/devices/not-a-bdf").mkdir()
    scans = []
    real_scan = cdi.scan_devices
    monkeypatch.setattr(cdi, "scan_devices", lambda fs, vendor: scans.append(1) or real_scan(fs, vendor))
    caplog.set_level("INFO", logger="ccgpu.cdi")

    stop = asyncio.Event()
    config = kata_manager.KataManagerConfig(host_root=str(tmp_path), interval_s=0.01)
    task = asyncio.get_running_loop().create_task(kata_manager.run(config, stop))
    await _until(lambda: len(scans) >= 4)
    stop.set()
    await asyncio.wait_for(task, 5)

    plugin = DevicePluginAgent(DevicePluginConfig(
        host_root=str(tmp_path), plugin_dir=str(tmp_path / "plugins"), wait_for_validations=False,
        rediscover_period_s=0.0, cdi_dir="/var/run/no-cdi",  # no spec: nothing advertised, no kubelet needed
    ))  # fmt: skip
    for _ in range(3):
        await plugin.tick()
    assert len(scans) >= 7
    warnings = [r.getMessage() for r in caplog.records if r.name == "ccgpu.cdi" and r.levelname == "WARNING"]
    assert len(warnings) == 2 and all("'not-a-bdf'" in w for w in warnings)  # one per agent

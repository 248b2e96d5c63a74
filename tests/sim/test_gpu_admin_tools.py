"""The production gpu-admin-tools backend, run for real (subprocesses) against the CLI emulator."""

import errno
import subprocess
import sys

import pytest

from ccgpu.hw.ccmode import CCBackendError, GpuAdminToolsBackend, parse_query, reset_all
from ccgpu.hw.pci import BDF
from ccgpu.sim import gpu_admin_tools
from tests.conftest import ccgpu_env


def backend_for(host) -> GpuAdminToolsBackend:
    env = ccgpu_env(**{gpu_admin_tools.HOST_ROOT_ENV: str(host.root)})
    return GpuAdminToolsBackend(gpu_admin_tools.__file__, env=env, timeout_s=60)


def run_tool(host, *args):
    env = ccgpu_env(**{gpu_admin_tools.HOST_ROOT_ENV: str(host.root)})
    argv = [sys.executable, gpu_admin_tools.__file__, *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env)  # noqa: S603


def test_emulator_prints_the_real_tools_line_shapes(host):
    gpu = host.gpus()[0]
    out = run_tool(host, f"--devices={gpu}", "--query-cc-mode")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("NVIDIA GPU Tools version")
    line = [ln for ln in out.stdout.splitlines() if "CC mode is" in ln][0]
    assert f" INFO     GPU {gpu} H100-SXM5-80GB 0x2330 BAR0 0x" in line
    assert parse_query(out.stdout, "CC") == {BDF.parse(gpu): "off"}


def test_set_stages_the_mode_and_only_a_reset_applies_it(host):
    gpu = host.gpus()[0]
    out = run_tool(host, f"--devices={gpu}", "--set-cc-mode=on")
    assert "CC mode set to on. It will be active after GPU reset." in out.stdout
    state = host.gpu(gpu).query_cc()
    assert (state.current, state.pending) == ("off", "on")
    out = run_tool(host, f"--devices={gpu}", "--reset-with-os", "--query-cc-mode")
    assert parse_query(out.stdout, "CC") == {BDF.parse(gpu): "on"}


def test_invalid_mode_is_an_argparse_error_exit_2_like_the_real_tool(host):
    out = run_tool(host, f"--devices={host.gpus()[0]}", "--set-cc-mode=On")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_cc_on_an_nvswitch_is_refused_with_the_tools_error_line(host):
    out = run_tool(host, f"--devices={host.nvswitches()[0]}", "--set-cc-mode=on")
    assert out.returncode == 1
    assert "ERROR    Configuring CC not supported on NvSwitch" in out.stdout


async def test_backend_query_set_reset_roundtrip_over_the_emulator(host):
    backend = backend_for(host)
    bdfs = [BDF.parse(b) for b in host.gpus()[:2]]
    for b in bdfs:
        assert await backend.query_cc(b) == "off"
        await backend.set_cc(b, "devtools")
    outcome = await reset_all(backend, bdfs)
    assert outcome == dict.fromkeys(bdfs)
    assert [await backend.query_cc(b) for b in bdfs] == ["devtools", "devtools"]
    sw = BDF.parse(host.nvswitches()[0])
    assert await backend.query_ppcie(sw) == "off"


async def test_a_failing_reset_is_reported_for_that_gpu_only(host):
    backend = backend_for(host)
    good, bad = (BDF.parse(b) for b in host.gpus()[:2])
    host.gpu(str(bad)).fail_resets(errno.EIO)
    outcome = await reset_all(backend, [good, bad])
    assert outcome[good] is None
    assert isinstance(outcome[bad], CCBackendError) and str(bad) in str(outcome[bad])


async def test_a_gpu_that_fell_off_the_bus_is_an_error_naming_it(host):
    backend = backend_for(host)
    gone = BDF.parse(host.gpus()[3])
    host.gpu(str(gone)).fall_off_bus()
    with pytest.raises(CCBackendError, match="No devices found"):
        await backend.query_cc(gone)


async def test_apply_stages_resets_and_reports_the_new_mode_in_one_tool_run(host):
    backend = backend_for(host)
    gpu, switch = BDF.parse(host.gpus()[0]), BDF.parse(host.nvswitches()[0])
    assert await backend.apply_cc(gpu, "on") == "on"
    state = host.gpu(str(gpu)).query_cc()
    assert (state.current, state.pending) == ("on", "on") and host.gpu(str(gpu)).resets == 1
    assert await backend.apply_ppcie(switch, "on") == "on"
    with pytest.raises(CCBackendError, match="Configuring CC not supported on NvSwitch"):
        await backend.apply_cc(switch, "on")


async def test_batch_queries_answer_for_every_gpu_and_switch_in_one_run_each(host):
    backend = backend_for(host)
    cc = await backend.query_cc_all()
    assert set(cc) == {BDF.parse(b) for b in host.gpus()} and set(cc.values()) == {"off"}
    ppcie = await backend.query_ppcie_all()
    assert set(ppcie) == {BDF.parse(b) for b in host.gpus() + host.nvswitches()}

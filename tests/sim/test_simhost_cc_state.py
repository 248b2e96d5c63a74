"""Per-GPU CC/PPCIe state, the Python API the gpu-admin-tools emulator drives, and sharing across processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ccgpu
from ccgpu.sim.host import SimHostError, SimulatedHost

GPU = "0000:18:00.0"


def run_python(code: str, *args: str) -> subprocess.Popen:
    """Run `code` in a second Python process that imports this same ccgpu."""
    env = dict(os.environ, PYTHONPATH=str(Path(ccgpu.__file__).resolve().parents[1]))
    argv = [sys.executable, "-c", textwrap.dedent(code), *args]  # fixed test code, no shell
    return subprocess.Popen(argv, env=env)  # noqa: S603


def test_gpus_start_with_cc_off_and_nothing_pending(host):
    state = host.gpu(GPU).query_cc()
    assert (state.current, state.pending, state.ppcie_current, state.ppcie_pending) == ("off",) * 4
    assert state.cc_capable and state.ppcie_capable


def test_pending_cc_mode_takes_effect_only_at_reset(host):
    gpu = host.gpu(GPU)
    gpu.set_pending_cc("devtools")
    assert gpu.query_cc().current == "off" and gpu.query_cc().pending == "devtools"
    gpu.reset()
    assert gpu.query_cc().current == "devtools"
    assert host.gpu("0000:2a:00.0").query_cc().current == "off"  # other GPUs keep theirs


def test_enabling_cc_clears_a_pending_ppcie_mode_and_enabling_ppcie_clears_cc(host):
    gpu = host.gpu(GPU)
    gpu.set_pending_ppcie("on")
    gpu.set_pending_cc("on")
    assert gpu.query_cc().ppcie_pending == "off"
    gpu.set_pending_ppcie("on")
    assert gpu.query_cc().pending == "off"
    gpu.reset()
    assert gpu.query_cc().ppcie_current == "on"


def test_nvswitch_takes_ppcie_but_not_cc(host):
    switch = host.gpu(host.nvswitches()[0])
    with pytest.raises(ValueError, match="not CC capable"):
        switch.set_pending_cc("on")
    switch.set_pending_ppcie("on")
    switch.reset()
    assert switch.query_cc().ppcie_current == "on"


def test_blackwell_gpu_takes_cc_but_not_ppcie(make_host):
    host = make_host("8xb200-tdx")
    gpu = host.gpu(host.gpus()[0])
    assert gpu.query_cc().cc_capable and not gpu.query_cc().ppcie_capable
    with pytest.raises(ValueError, match="not PPCIe capable"):
        gpu.set_pending_ppcie("on")


@pytest.mark.parametrize(
    ("method", "mode"),
    [("set_pending_cc", "ON"), ("set_pending_cc", "ppcie"), ("set_pending_ppcie", "devtools")],
)
def test_unknown_modes_are_refused_naming_the_accepted_ones_and_change_nothing(host, method, mode):
    gpu = host.gpu(GPU)
    with pytest.raises(ValueError, match="is not one of"):
        getattr(gpu, method)(mode)
    assert gpu.query_cc().pending == "off" and gpu.query_cc().ppcie_pending == "off"


def test_device_handles_validate_the_address(host):
    with pytest.raises(ValueError, match="not a PCI address"):
        host.gpu("../../etc")
    with pytest.raises(SimHostError, match="no simulated device"):
        host.gpu("0000:99:00.0")


def test_reset_duration_knob_refuses_nonsense(host):
    with pytest.raises(SimHostError, match="milliseconds"):
        host.gpu(GPU).set_reset_duration(-5)


def test_a_second_process_sees_and_changes_the_same_host(host):
    host.gpu(GPU).set_pending_cc("on")
    proc = run_python(
        """
        import sys
        from ccgpu.sim.host import SimulatedHost
        host = SimulatedHost.open(sys.argv[1])
        assert host.gpu(sys.argv[2]).query_cc().pending == "on", "parent's change not visible"
        host.gpu(sys.argv[2]).reset()
        host.sysfs.write("sys/bus/pci/drivers/nvidia/unbind", sys.argv[2])
        """,
        str(host.root),
        GPU,
    )
    assert proc.wait(timeout=60) == 0
    assert host.gpu(GPU).query_cc().current == "on"
    assert host.gpu(GPU).driver is None


def test_concurrent_writers_in_two_processes_lose_no_update(host):
    """Each process rebinds four GPUs to vfio-pci; the file lock keeps every read-modify-write whole."""
    code = """
        import sys
        from ccgpu.sim.host import SimulatedHost
        fs = SimulatedHost.open(sys.argv[1]).sysfs
        for bdf in sys.argv[2:]:
            fs.write(f"sys/bus/pci/devices/{bdf}/driver_override", "vfio-pci")
            fs.write("sys/bus/pci/drivers/nvidia/unbind", bdf)
            fs.write("sys/bus/pci/drivers/vfio-pci/bind", bdf)
        """
    gpus = host.gpus()
    procs = [run_python(code, str(host.root), *gpus[:4]), run_python(code, str(host.root), *gpus[4:])]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    reopened = SimulatedHost.open(host.root)
    assert {reopened.device(b).driver for b in gpus} == {"vfio-pci"}
    assert len([n for n in os.listdir(host.root / "dev/vfio") if n.isdigit()]) == 8


def test_device_handle_gives_catalog_model_and_bar0_for_the_emulator(host):
    gpu = host.gpu(GPU)
    assert gpu.model.short_name == "H100 SXM5 80GB" and gpu.model.cc_capable
    first_line = (host.root / f"sys/bus/pci/devices/{GPU}/resource").read_text().split()[0]
    assert gpu.bar0 == int(first_line, 16) != 0
    assert host.gpu(host.nvswitches()[0]).model.kind.value == "nvswitch"


def test_profiles_can_boot_gpus_in_cc_or_ppcie_mode(make_host):
    on = make_host("8xh100-snp", cc_mode="on")
    assert {on.gpu(b).query_cc().current for b in on.gpus()} == {"on"}
    assert {on.gpu(b).query_cc().ppcie_current for b in on.nvswitches()} == {"off"}
    ppcie = make_host("8xh100-snp", ppcie_mode="on")
    states = [ppcie.gpu(b).query_cc() for b in ppcie.gpus() + ppcie.nvswitches()]
    assert {(s.current, s.ppcie_current, s.ppcie_pending) for s in states} == {("off", "on", "on")}


def test_force_modes_sets_current_and_pending_as_if_booted_that_way(host):
    gpu = host.gpu(GPU)
    gpu.force_modes(cc="devtools")
    state = gpu.query_cc()
    assert (state.current, state.pending) == ("devtools", "devtools")
    assert gpu.resets == 0


@pytest.mark.parametrize("bad", [0, -5, "EIO", 100000])
def test_reset_fault_knob_accepts_only_real_errnos(host, bad):
    with pytest.raises(SimHostError, match="must be an errno"):
        host.gpu(GPU).fail_resets(bad)

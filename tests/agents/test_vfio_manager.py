"""vfio-manager on simulated hosts: binds, unbinds, driver choice, aux functions, busy groups, the journal that
lets a restart finish an interrupted change, and the long-running loop."""

from __future__ import annotations

import asyncio

import pytest

from ccgpu import labels
from ccgpu.agents import vfio_manager
from ccgpu.agents.vfio_manager import JOURNAL, VfioManager
from ccgpu.hw.sysfs import Sysfs
from tests.agents.simnode import Killed, eventually, host_tree, nvidia_drivers, other_drivers, sim_node

READY = f"{labels.VALIDATIONS_DIR}/{labels.READY_VFIO_PCI}"


class FaultyFs(Sysfs):
    """The simulated host's Sysfs with one injected fault: `fail(path, value)` decides per write."""

    def __init__(self, inner, fail) -> None:
        super().__init__(inner.root)
        self.inner, self.fail, self.writes = inner, fail, []

    def write(self, rel: str, value: str) -> None:
        self.fail(rel, value)
        self.writes.append((rel, value))
        self.inner.write(rel, value)


def test_bind_all_then_unbind_all_gpus_on_hgx_h100_leaves_nvswitches_unless_asked():
    with host_tree() as host:
        nic = other_drivers(host)
        assert nic == {"0000:c1:00.0": "mlx5_core"}
        mgr = VfioManager(host.sysfs)
        report = mgr.bind(mgr.devices())
        assert report.ok and [o.action for o in report.outcomes] == ["bound"] * 8
        assert all(host.device(b).driver == "vfio-pci" for b in host.gpus())
        assert all(host.device(b).driver == "nvidia" for b in host.nvswitches())
        assert all(host.sysfs.exists(f"dev/vfio/{host.device(b).iommu_group}") for b in host.gpus())
        assert not host.sysfs.exists(JOURNAL)

        with_switches = VfioManager(host.sysfs, include_nvswitches=True)
        report = with_switches.bind(with_switches.devices())
        assert sorted(o.action for o in report.outcomes) == ["already-bound"] * 8 + ["bound"] * 4
        report = with_switches.unbind(with_switches.devices())
        assert report.ok and {o.action for o in report.outcomes} == {"unbound"}
        assert set(nvidia_drivers(host).values()) == {None}
        assert all(host.sysfs.read(f"sys/bus/pci/devices/{b}/driver_override").strip() == "(null)"
                   for b in nvidia_drivers(host))
        assert other_drivers(host) == nic  # the NIC is never touched


def test_already_bound_devices_are_left_alone_without_a_single_write():
    with host_tree() as host:
        VfioManager(host.sysfs).bind(VfioManager(host.sysfs).devices())
        fs = FaultyFs(host.sysfs, lambda rel, value: None)
        mgr = VfioManager(fs)
        report = mgr.bind(mgr.devices())
        assert {o.action for o in report.outcomes} == {"already-bound"} and fs.writes == []


def test_grace_hopper_gets_the_most_specific_vfio_variant_driver_from_modules_alias():
    with host_tree("1xgh200-notee") as host:
        mgr = VfioManager(host.sysfs)
        (outcome,) = mgr.bind(mgr.devices()).outcomes
        assert (outcome.action, outcome.driver) == ("bound", "nvgrace_gpu_vfio_pci")
        assert host.device(host.gpus()[0]).driver == "nvgrace_gpu_vfio_pci"


def test_a_vga_gpus_audio_function_is_bound_and_unbound_with_it():
    """gpu-operator#1328: a VFIO group is usable only when every function in it is on a vfio driver."""
    with host_tree("1xh100-pcie-snp") as host:
        (gpu,), (audio,) = host.gpus(), host.devices("audio")
        mgr = VfioManager(host.sysfs)
        (outcome,) = mgr.bind(mgr.devices()).outcomes
        assert outcome.aux == (audio,)
        assert nvidia_drivers(host) == {gpu: "vfio-pci", audio: "vfio-pci"}
        assert host.sysfs.exists(f"dev/vfio/{host.device(gpu).iommu_group}")
        mgr.unbind(mgr.devices())
        assert nvidia_drivers(host) == {gpu: None, audio: None}


@pytest.mark.parametrize("profile,cdev", [("8xh100-snp", False), ("8xh100-snp-iommufd", True)])
def test_unbind_refuses_a_device_whose_vfio_group_or_cdev_a_vm_holds_open(profile, cdev):
    """The upstream rollout bug (operands.md §8, k8s-driver-manager#146): never pull a GPU from a running VM."""
    with host_tree(profile) as host:
        mgr = VfioManager(host.sysfs)
        mgr.bind(mgr.devices())
        busy = host.gpus()[2]
        pid = host.gpu(busy).hold_busy(cdev=cdev)
        report = mgr.unbind(mgr.devices())
        assert not report.ok
        (failed,) = report.failed()
        assert failed.bdf == busy and failed.action == "busy" and str(pid) in failed.error
        assert host.device(busy).driver == "vfio-pci"
        assert all(host.device(b).driver is None for b in host.gpus() if b != busy)


def test_one_device_failing_to_bind_is_reported_by_name_and_the_others_are_bound():
    with host_tree() as host:
        bad = host.gpus()[5]

        def fail(rel, value):
            if rel.endswith("vfio-pci/bind") and value == bad:
                raise OSError(19, "No such device")

        mgr = VfioManager(FaultyFs(host.sysfs, fail))
        report = mgr.bind(mgr.devices())
        (failed,) = report.failed()
        assert failed.bdf == bad and "No such device" in failed.error
        assert all(host.device(b).driver == "vfio-pci" for b in host.gpus() if b != bad)
        assert bad in report.summary().splitlines()[-1]


def test_a_crash_after_unbind_and_before_bind_is_finished_by_the_next_start():
    with host_tree() as host:
        victim = host.gpus()[3]

        def die(rel, value):
            if rel.endswith("driver_override") and victim in rel:
                raise Killed("killed after unbind")

        with pytest.raises(Killed):
            crashing = VfioManager(FaultyFs(host.sysfs, die))
            crashing.bind(crashing.devices())
        assert host.device(victim).driver is None and host.sysfs.exists(JOURNAL)
        journal = VfioManager(host.sysfs).pending()
        assert journal.op == "bind" and victim in journal.bdfs

        report = VfioManager(host.sysfs).resume()
        assert report.ok and host.device(victim).driver == "vfio-pci"
        assert all(host.device(b).driver == "vfio-pci" for b in host.gpus())
        assert not host.sysfs.exists(JOURNAL)


def test_a_crash_midway_through_unbind_is_finished_by_the_next_start():
    with host_tree("1xh100-pcie-snp") as host:
        VfioManager(host.sysfs).bind(VfioManager(host.sysfs).devices())
        (gpu,), (audio,) = host.gpus(), host.devices("audio")

        def die(rel, value):
            if rel.endswith("vfio-pci/unbind") and value == audio:
                raise Killed("killed between the GPU and its audio function")

        with pytest.raises(Killed):
            crashing = VfioManager(FaultyFs(host.sysfs, die))
            crashing.unbind(crashing.devices())
        assert nvidia_drivers(host) == {gpu: None, audio: "vfio-pci"}
        VfioManager(host.sysfs).resume()
        assert nvidia_drivers(host) == {gpu: None, audio: None} and not host.sysfs.exists(JOURNAL)


@pytest.mark.parametrize("text", ["{not json", '{"op": "bind", "devices": ["../../etc"]}', '{"op": "rm"}'])
def test_a_garbled_journal_is_removed_and_changes_nothing(text, caplog):
    with host_tree() as host:
        host.sysfs.write_file(JOURNAL, text)
        before = nvidia_drivers(host)
        assert VfioManager(host.sysfs).resume() is None
        assert nvidia_drivers(host) == before and not host.sysfs.exists(JOURNAL)
        assert "not a valid intent record" in caplog.text


async def test_run_writes_ready_when_all_bound_and_binds_a_gpu_that_appears_later():
    with host_tree() as host:
        mgr = VfioManager(host.sysfs)
        stop = asyncio.Event()
        passes = []
        task = asyncio.create_task(vfio_manager.run(mgr, stop, interval_s=0.05, on_pass=passes.append))
        await eventually(lambda: host.sysfs.exists(READY))
        gpu = host.gpus()[0]
        host.sysfs.write(f"sys/bus/pci/devices/{gpu}/remove", "1")  # hot-unplug, then a rescan brings it back
        host.sysfs.write("sys/bus/pci/rescan", "1")
        assert host.device(gpu).driver == "nvidia"
        await eventually(lambda: host.device(gpu).driver == "vfio-pci")
        await eventually(lambda: host.sysfs.exists(READY))
        stop.set()
        await asyncio.wait_for(task, 5)
        assert all(host.device(b).driver == "vfio-pci" for b in host.gpus())  # never unbound on stop
        assert not host.sysfs.exists(READY)


async def test_run_does_not_write_ready_while_a_gpu_cannot_be_bound():
    with host_tree() as host:
        bad = host.gpus()[1]

        def fail(rel, value):
            if rel.endswith("vfio-pci/bind") and value == bad:
                raise OSError(16, "Device or resource busy")

        mgr = VfioManager(FaultyFs(host.sysfs, fail))
        stop = asyncio.Event()
        passes = []
        task = asyncio.create_task(vfio_manager.run(mgr, stop, interval_s=0.02, on_pass=passes.append))
        await eventually(lambda: len(passes) >= 2)
        assert not host.sysfs.exists(READY)
        stop.set()
        await asyncio.wait_for(task, 5)


@pytest.mark.parametrize("workload,unbound", [("vm-passthrough", False), ("container", True)])
async def test_on_stop_devices_are_unbound_only_when_the_node_left_vm_passthrough(workload, unbound):
    async with sim_node() as n:
        mgr = VfioManager(n.host.sysfs)
        busy_vm_gpu = n.host.gpus()[0]
        stop = asyncio.Event()
        passes = []
        task = asyncio.create_task(vfio_manager.run(mgr, stop, node=n.handle("nvidia-vfio-manager"),
                                                    interval_s=0.05, on_pass=passes.append))
        await eventually(lambda: passes and passes[-1].ok)
        n.host.gpu(busy_vm_gpu).hold_busy()
        await n.set_label(labels.WORKLOAD_CONFIG, workload)
        stop.set()
        await asyncio.wait_for(task, 5)
        assert n.host.device(busy_vm_gpu).driver == "vfio-pci"  # a running VM keeps its GPU, always
        others = {n.host.device(b).driver for b in n.host.gpus()[1:]}
        assert others == ({None} if unbound else {"vfio-pci"})


async def test_run_logs_a_device_that_keeps_failing_once_per_reason_not_every_pass(caplog):
    """A GPU that cannot be bound is retried every pass (2 s in a pod); saying so each time floods the log."""
    with host_tree() as host:
        bad = host.gpus()[1]
        reason = ["Device or resource busy"]

        def fail(rel, value):
            if rel.endswith("vfio-pci/bind") and value == bad:
                raise OSError(16, reason[0])

        mgr = VfioManager(FaultyFs(host.sysfs, fail))
        stop = asyncio.Event()
        passes = []
        caplog.set_level("ERROR", logger="ccgpu.agents.vfio_manager")
        task = asyncio.create_task(vfio_manager.run(mgr, stop, interval_s=0.01, on_pass=passes.append))
        await eventually(lambda: len(passes) >= 4)
        reason[0] = "Invalid argument"  # a new reason is news
        seen = len(passes)
        await eventually(lambda: len(passes) >= seen + 3)
        stop.set()
        await asyncio.wait_for(task, 5)
        errors = [r.getMessage() for r in caplog.records if bad in r.getMessage()]
        assert len(errors) == 2, errors
        assert "Device or resource busy" in errors[0] and "Invalid argument" in errors[1]

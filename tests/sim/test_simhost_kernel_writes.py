"""The simulated kernel's write paths mirror Linux (function names are the kernel's, drivers/base and drivers/pci).

Each test says which kernel behaviour it pins. All run against `SimSysfs`, the same `Sysfs` API agents use.
"""

from __future__ import annotations

import errno
import os
import time

import pytest

from ccgpu.hw.sysfs import PathEscapeError
from ccgpu.sim.host import SimHostError

GPU = "0000:18:00.0"
GPU2 = "0000:2a:00.0"
SWITCHES = ["0000:05:00.0", "0000:06:00.0", "0000:07:00.0", "0000:08:00.0"]


def dev(bdf: str, attr: str = "") -> str:
    return f"sys/bus/pci/devices/{bdf}/{attr}".rstrip("/")


def errno_of(fn, *args) -> int:
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno


def driver_of(fs, bdf: str) -> str | None:
    link = dev(bdf, "driver")
    return os.path.basename(fs.readlink(link)) if fs.is_link(link) else None


def to_vfio(fs, bdf: str) -> None:
    """What vfio-manager does: override, unbind from the current driver, bind to vfio-pci."""
    fs.write(dev(bdf, "driver_override"), "vfio-pci")
    current = driver_of(fs, bdf)
    if current:
        fs.write(f"sys/bus/pci/drivers/{current}/unbind", bdf)
    fs.write("sys/bus/pci/drivers/vfio-pci/bind", bdf)


# --- unbind_store -------------------------------------------------------------------------------------------------
def test_unbind_store_removes_driver_link_back_link_and_uevent_driver_line(host):
    fs = host.sysfs
    assert driver_of(fs, GPU) == "nvidia"
    fs.write("sys/bus/pci/drivers/nvidia/unbind", GPU)
    assert driver_of(fs, GPU) is None
    assert not fs.exists(f"sys/bus/pci/drivers/nvidia/{GPU}")
    assert "DRIVER=" not in fs.read(dev(GPU, "uevent"))
    assert fs.exists(f"sys/bus/pci/drivers/nvidia/{GPU2}")  # other devices untouched


def test_unbind_store_gives_ENODEV_when_device_is_bound_to_another_driver(host):
    fs = host.sysfs
    assert errno_of(fs.write, "sys/bus/pci/drivers/vfio-pci/unbind", GPU) == errno.ENODEV
    assert driver_of(fs, GPU) == "nvidia"


@pytest.mark.parametrize(
    "value",
    ["0000:99:00.0", "18:00.0", "0000:18:00.0 ", "0000:18:00.0\n\n", "garbage", "", "\x000000:18:00.0"],
    ids=["unknown", "short-form", "trailing-space", "two-newlines", "garbage", "empty", "leading-nul"],
)
def test_unbind_store_bus_find_device_by_name_needs_the_exact_name_else_ENODEV(host, value):
    fs = host.sysfs
    assert errno_of(fs.write, "sys/bus/pci/drivers/nvidia/unbind", value) == errno.ENODEV
    assert driver_of(fs, GPU) == "nvidia"


def test_written_values_end_at_the_first_nul_as_c_strings_do(host):
    fs = host.sysfs
    fs.write(dev(GPU, "driver_override"), "vfio-pci\x00nvidia")
    assert fs.read(dev(GPU, "driver_override")) == "vfio-pci"
    fs.write("sys/bus/pci/drivers/nvidia/unbind", GPU + "\x00junk")
    assert driver_of(fs, GPU) is None


def test_sysfs_streq_ignores_one_trailing_newline_as_echo_writes_it(host):
    fs = host.sysfs
    fs.write("sys/bus/pci/drivers/nvidia/unbind", GPU + "\n")
    assert driver_of(fs, GPU) is None


# --- bind_store / pci_match_device ----------------------------------------------------------------------------------
def test_bind_store_gives_EBUSY_when_the_device_already_has_a_driver(host):
    fs = host.sysfs
    fs.write(dev(GPU, "driver_override"), "vfio-pci")  # so vfio-pci matches; the device is still on nvidia
    assert errno_of(fs.write, "sys/bus/pci/drivers/vfio-pci/bind", GPU) == errno.EBUSY
    assert driver_of(fs, GPU) == "nvidia"


def test_bind_store_to_vfio_pci_without_override_or_new_id_is_ENODEV_because_its_ids_are_override_only(host):
    fs = host.sysfs
    fs.write("sys/bus/pci/drivers/nvidia/unbind", GPU)
    assert errno_of(fs.write, "sys/bus/pci/drivers/vfio-pci/bind", GPU) == errno.ENODEV
    assert driver_of(fs, GPU) is None


def test_bind_store_is_ENODEV_when_driver_override_names_another_driver_the_override_wins(host):
    fs = host.sysfs
    fs.write(dev(GPU, "driver_override"), "vfio-pci")
    fs.write("sys/bus/pci/drivers/nvidia/unbind", GPU)
    assert errno_of(fs.write, "sys/bus/pci/drivers/nvidia/bind", GPU) == errno.ENODEV
    fs.write("sys/bus/pci/drivers/vfio-pci/bind", GPU)
    assert driver_of(fs, GPU) == "vfio-pci"
    assert fs.readlink(dev(GPU, "driver")) == "../../../bus/pci/drivers/vfio-pci"


def test_bind_store_of_an_unknown_device_is_ENODEV(host):
    assert errno_of(host.sysfs.write, "sys/bus/pci/drivers/nvidia/bind", "0000:77:00.0") == errno.ENODEV


def test_vfio_pci_probe_fails_with_EINVAL_when_the_device_has_no_iommu_group(make_host):
    """vfio_group_find_or_alloc: no IOMMU group and no noiommu mode -> EINVAL; the device stays unbound."""
    host = make_host("1xh200-snp", iommu=False)
    fs = host.sysfs
    bdf = host.gpus()[0]
    fs.write(dev(bdf, "driver_override"), "vfio-pci")
    fs.write("sys/bus/pci/drivers/nvidia/unbind", bdf)
    assert errno_of(fs.write, "sys/bus/pci/drivers/vfio-pci/bind", bdf) == errno.EINVAL
    assert driver_of(fs, bdf) is None
    assert not fs.exists(dev(bdf, "iommu_group"))


# --- driver_override (driver_set_override) ------------------------------------------------------------------------
def test_driver_override_reads_null_when_unset_and_a_lone_newline_clears_it(host):
    fs = host.sysfs
    assert fs.read(dev(GPU, "driver_override")) == "(null)"
    fs.write(dev(GPU, "driver_override"), "vfio-pci\n")
    assert fs.read(dev(GPU, "driver_override")) == "vfio-pci"
    fs.write(dev(GPU, "driver_override"), "\n")
    assert fs.read(dev(GPU, "driver_override")) == "(null)"


def test_driver_override_keeps_only_the_text_before_the_first_newline(host):
    fs = host.sysfs
    fs.write(dev(GPU, "driver_override"), "vfio-pci\nnvidia\n")
    assert fs.read(dev(GPU, "driver_override")) == "vfio-pci"


def test_driver_override_of_a_page_or_more_is_EINVAL_and_changes_nothing(host):
    fs = host.sysfs
    assert errno_of(fs.write, dev(GPU, "driver_override"), "x" * 4095) == errno.EINVAL
    assert fs.read(dev(GPU, "driver_override")) == "(null)"


def test_driver_override_alone_does_not_rebind_the_device(host):
    fs = host.sysfs
    fs.write(dev(GPU, "driver_override"), "vfio-pci")
    assert driver_of(fs, GPU) == "nvidia"


# --- drivers_probe ----------------------------------------------------------------------------------------------
def test_drivers_probe_binds_an_unbound_device_to_its_driver_override(host):
    fs = host.sysfs
    fs.write(dev(GPU, "driver_override"), "vfio-pci")
    fs.write("sys/bus/pci/drivers/nvidia/unbind", GPU)
    fs.write("sys/bus/pci/drivers_probe", GPU)
    assert driver_of(fs, GPU) == "vfio-pci"


def test_drivers_probe_without_override_binds_the_default_driver_and_leaves_bound_devices_alone(host):
    fs = host.sysfs
    fs.write("sys/bus/pci/drivers/nvidia/unbind", GPU)
    fs.write("sys/bus/pci/drivers_probe", GPU)
    assert driver_of(fs, GPU) == "nvidia"
    fs.write(dev(GPU2, "driver_override"), "vfio-pci")
    fs.write("sys/bus/pci/drivers_probe", GPU2)  # bound: bus_rescan_devices_helper skips it
    assert driver_of(fs, GPU2) == "nvidia"


def test_drivers_probe_of_an_unknown_device_is_ENODEV(host):
    assert errno_of(host.sysfs.write, "sys/bus/pci/drivers_probe", "nonsense") == errno.ENODEV


# --- new_id / remove_id -----------------------------------------------------------------------------------------
def test_new_id_adds_a_dynamic_id_and_binds_every_unbound_matching_device(host):
    fs = host.sysfs
    for bdf in (GPU, GPU2):
        fs.write("sys/bus/pci/drivers/nvidia/unbind", bdf)
    fs.write("sys/bus/pci/drivers/vfio-pci/new_id", "10de 2330")
    assert driver_of(fs, GPU) == driver_of(fs, GPU2) == "vfio-pci"
    assert driver_of(fs, "0000:3a:00.0") == "nvidia"  # bound devices are not stolen


@pytest.mark.parametrize("value", ["10de", "", "zz 2330", "10de\n"])
def test_new_id_with_fewer_than_two_hex_fields_is_EINVAL(host, value):
    assert errno_of(host.sysfs.write, "sys/bus/pci/drivers/vfio-pci/new_id", value) == errno.EINVAL


def test_new_id_for_an_id_the_static_table_already_matches_is_EEXIST(host):
    value = "10de 2330 ffffffff ffffffff 030200 ffffff"
    assert errno_of(host.sysfs.write, "sys/bus/pci/drivers/nvidia/new_id", value) == errno.EEXIST


def test_remove_id_of_an_id_never_added_is_ENODEV(host):
    fs = host.sysfs
    assert errno_of(fs.write, "sys/bus/pci/drivers/vfio-pci/remove_id", "10de 2330") == errno.ENODEV
    fs.write("sys/bus/pci/drivers/vfio-pci/new_id", "10de 2330")
    fs.write("sys/bus/pci/drivers/vfio-pci/remove_id", "10de 2330")
    fs.write("sys/bus/pci/drivers/nvidia/unbind", GPU)
    assert errno_of(fs.write, "sys/bus/pci/drivers/vfio-pci/bind", GPU) == errno.ENODEV


# --- VFIO nodes -------------------------------------------------------------------------------------------------
def test_bind_to_vfio_pci_creates_dev_vfio_group_and_unbind_removes_it_on_a_legacy_host(host):
    fs = host.sysfs
    group = os.path.basename(fs.readlink(dev(GPU, "iommu_group")))
    assert not fs.exists(f"dev/vfio/{group}")
    to_vfio(fs, GPU)
    assert fs.exists(f"dev/vfio/{group}")
    assert not fs.exists(dev(GPU, "vfio-dev")) and not fs.exists("dev/vfio/devices")  # legacy: no cdevs
    fs.write("sys/bus/pci/drivers/vfio-pci/unbind", GPU)
    assert not fs.exists(f"dev/vfio/{group}")


def test_iommufd_host_gives_each_vfio_device_a_cdev_numbered_from_the_lowest_free_minor(make_host):
    host = make_host("8xh100-snp-iommufd")
    fs = host.sysfs
    assert fs.exists("dev/iommu")
    to_vfio(fs, GPU)
    to_vfio(fs, GPU2)
    assert fs.listdir(dev(GPU, "vfio-dev")) == ["vfio0"]
    assert fs.listdir(dev(GPU2, "vfio-dev")) == ["vfio1"]
    assert fs.listdir("dev/vfio/devices") == ["vfio0", "vfio1"]
    fs.write("sys/bus/pci/drivers/vfio-pci/unbind", GPU)
    assert fs.listdir("dev/vfio/devices") == ["vfio1"]
    assert not fs.exists(dev(GPU, "vfio-dev"))
    to_vfio(fs, "0000:3a:00.0")
    assert fs.listdir(dev("0000:3a:00.0", "vfio-dev")) == ["vfio0"]


def test_group_node_appears_only_once_every_device_of_the_group_is_on_vfio_or_unbound(host):
    """The four NVSwitches share one IOMMU group (as on HGX boards); the group is usable only as a whole."""
    fs = host.sysfs
    group = os.path.basename(fs.readlink(dev(SWITCHES[0], "iommu_group")))
    assert sorted(fs.listdir(f"sys/kernel/iommu_groups/{group}/devices")) == SWITCHES
    for bdf in SWITCHES[:3]:
        to_vfio(fs, bdf)
        assert not fs.exists(f"dev/vfio/{group}")
    fs.write("sys/bus/pci/drivers/nvidia/unbind", SWITCHES[3])  # unbound counts as viable
    assert fs.exists(f"dev/vfio/{group}")
    fs.write("sys/bus/pci/drivers_probe", SWITCHES[3])  # back on nvidia: not viable any more
    assert driver_of(fs, SWITCHES[3]) == "nvidia"
    assert not fs.exists(f"dev/vfio/{group}")


def test_gpu_and_its_audio_function_share_a_group_and_both_must_leave_their_host_drivers(make_host):
    host = make_host("1xh100-pcie-snp")
    fs = host.sysfs
    gpu, audio = "0000:41:00.0", "0000:41:00.1"
    assert driver_of(fs, audio) == "snd_hda_intel"
    to_vfio(fs, gpu)
    assert fs.listdir("dev/vfio") == ["vfio"]
    to_vfio(fs, audio)
    assert fs.listdir("dev/vfio") == ["20", "vfio"]


# --- reset_store ------------------------------------------------------------------------------------------------
def test_reset_store_applies_the_pending_cc_mode(host):
    gpu = host.gpu(GPU)
    gpu.set_pending_cc("on")
    assert gpu.query_cc().current == "off"
    host.sysfs.write(dev(GPU, "reset"), "1\n")
    assert gpu.query_cc().current == "on"
    assert gpu.resets == 1


@pytest.mark.parametrize("value", ["0", "2", "yes", "", "1 ", "-1"])
def test_reset_store_accepts_only_the_number_1_else_EINVAL(host, value):
    gpu = host.gpu(GPU)
    gpu.set_pending_cc("on")
    assert errno_of(host.sysfs.write, dev(GPU, "reset"), value) == errno.EINVAL
    assert gpu.query_cc().current == "off" and gpu.resets == 0


@pytest.mark.parametrize("value", ["0x1", "01"])
def test_reset_store_parses_with_kstrtoul_base_0(host, value):
    host.sysfs.write(dev(GPU, "reset"), value)
    assert host.gpu(GPU).resets == 1


def test_reset_method_written_empty_disables_resets_and_reset_then_fails_with_ENOTTY(host):
    """reset_method_store: "" disables every method; pci_reset_function then has none to try (ENOTTY)."""
    fs = host.sysfs
    fs.write(dev(GPU, "reset_method"), "\n")
    assert fs.read(dev(GPU, "reset_method")) == ""
    assert errno_of(fs.write, dev(GPU, "reset"), "1") == errno.ENOTTY
    fs.write(dev(GPU, "reset_method"), "default")
    fs.write(dev(GPU, "reset"), "1")


def test_reset_method_accepts_supported_methods_or_default_and_refuses_others_with_EINVAL(host):
    fs = host.sysfs
    assert errno_of(fs.write, dev(GPU, "reset_method"), "bus") == errno.EINVAL  # H100 capture: flr only
    assert errno_of(fs.write, dev(GPU, "reset_method"), "warp") == errno.EINVAL
    fs.write(dev(GPU, "reset_method"), "default")
    assert fs.read(dev(GPU, "reset_method")) == "flr"


def test_injected_reset_fault_fails_with_EIO_and_leaves_the_pending_mode_pending(host):
    gpu = host.gpu(GPU)
    gpu.set_pending_cc("on")
    gpu.fail_resets()
    assert errno_of(host.sysfs.write, dev(GPU, "reset"), "1") == errno.EIO
    assert gpu.query_cc().current == "off" and gpu.query_cc().pending == "on"
    gpu.fail_resets(errno.ETIMEDOUT)
    assert errno_of(gpu.reset) == errno.ETIMEDOUT
    gpu.fail_resets(None)
    gpu.reset()
    assert gpu.query_cc().current == "on"


def test_reset_takes_the_configured_simulated_duration(host):
    gpu = host.gpu(GPU)
    gpu.set_reset_duration(60)
    start = time.monotonic()
    gpu.reset()
    assert time.monotonic() - start >= 0.06
    assert gpu.resets == 1


# --- faults: fallen off the bus, busy VFIO group ----------------------------------------------------------------
def test_device_that_falls_off_the_bus_disappears_and_reads_give_ENOENT(host):
    fs = host.sysfs
    to_vfio(fs, GPU)
    group = os.path.basename(fs.readlink(dev(GPU, "iommu_group")))
    host.gpu(GPU).fall_off_bus()
    assert GPU not in fs.listdir("sys/bus/pci/devices")
    assert errno_of(fs.read, dev(GPU, "vendor")) == errno.ENOENT
    assert errno_of(fs.write, "sys/bus/pci/drivers/vfio-pci/unbind", GPU) == errno.ENODEV
    assert not fs.exists(f"dev/vfio/{group}")
    assert not fs.exists(f"sys/kernel/iommu_groups/{group}")
    assert GPU not in host.gpus()
    assert errno_of(host.gpu(GPU).query_cc) == errno.ENODEV


def test_busy_gpu_holds_its_group_open_as_a_proc_fd_link_and_unbind_is_EBUSY(host):
    """Linux blocks the unbind until the holder closes the group; the simulator refuses with EBUSY instead."""
    fs = host.sysfs
    to_vfio(fs, GPU)
    group = os.path.basename(fs.readlink(dev(GPU, "iommu_group")))
    pid = host.gpu(GPU).hold_busy()
    fds = fs.listdir(f"proc/{pid}/fd")
    assert [fs.readlink(f"proc/{pid}/fd/{fd}") for fd in fds] == [f"/dev/vfio/{group}"]
    assert errno_of(fs.write, "sys/bus/pci/drivers/vfio-pci/unbind", GPU) == errno.EBUSY
    assert driver_of(fs, GPU) == "vfio-pci"
    host.gpu(GPU).release_busy()
    assert not fs.exists(f"proc/{pid}")
    fs.write("sys/bus/pci/drivers/vfio-pci/unbind", GPU)
    assert driver_of(fs, GPU) is None


# --- remove / rescan ---------------------------------------------------------------------------------------------
def test_remove_then_bus_rescan_brings_the_device_back_on_its_default_driver(host):
    fs = host.sysfs
    fs.write(dev(GPU, "remove"), "1")
    assert not fs.exists(dev(GPU))
    fs.write("sys/bus/pci/rescan", "1")
    assert driver_of(fs, GPU) == "nvidia"


# --- plain attributes ---------------------------------------------------------------------------------------------
def test_write_only_attributes_cannot_be_read_EACCES_and_read_only_ones_cannot_be_written(host):
    fs = host.sysfs
    assert errno_of(fs.read, dev(GPU, "reset")) == errno.EACCES
    assert errno_of(fs.read, "sys/bus/pci/drivers/nvidia/bind") == errno.EACCES
    assert errno_of(fs.write, dev(GPU, "vendor"), "0x8086") == errno.EACCES
    assert fs.read(dev(GPU, "vendor")) == "0x10de"
    assert errno_of(fs.write, dev(GPU, "no_such_attr"), "1") == errno.ENOENT
    assert errno_of(fs.write, dev(GPU), "1") == errno.EISDIR


def test_writable_plain_attribute_keeps_the_written_value(host):
    fs = host.sysfs
    fs.write(dev(GPU, "d3cold_allowed"), "0")
    assert fs.read(dev(GPU, "d3cold_allowed")) == "0"
    fs.write("sys/bus/pci/drivers/nvidia/unbind", GPU)  # a re-render keeps it
    assert fs.read(dev(GPU, "d3cold_allowed")) == "0"


def test_refused_writes_change_nothing(host):
    before = host.state().to_json()
    fs = host.sysfs
    for path, value in [
        ("sys/bus/pci/drivers/vfio-pci/bind", GPU),
        ("sys/bus/pci/drivers/vfio-pci/unbind", GPU),
        (dev(GPU, "reset"), "2"),
        (dev(GPU, "driver_override"), "y" * 5000),
        ("sys/bus/pci/drivers/vfio-pci/new_id", "10de"),
    ]:
        with pytest.raises(OSError):
            fs.write(path, value)
    assert host.state().to_json() == before


def test_paths_that_leave_the_root_are_refused_by_the_simulated_sysfs_too(host):
    with pytest.raises(PathEscapeError):
        host.sysfs.write("../outside", "1")


def test_driver_override_must_name_the_driver_exactly_vfio_pci_with_an_underscore_matches_nothing(host):
    """The driver is `vfio-pci` (the module is `vfio_pci`); pci_match_device compares the name verbatim."""
    fs = host.sysfs
    fs.write(dev(GPU, "driver_override"), "vfio_pci")
    fs.write("sys/bus/pci/drivers/nvidia/unbind", GPU)
    assert errno_of(fs.write, "sys/bus/pci/drivers/vfio-pci/bind", GPU) == errno.ENODEV
    fs.write("sys/bus/pci/drivers_probe", GPU)
    assert driver_of(fs, GPU) is None


def test_busy_iommufd_device_is_held_through_its_cdev_and_unbind_is_EBUSY(make_host):
    host = make_host("8xh100-snp-iommufd")
    fs = host.sysfs
    to_vfio(fs, GPU)
    pid = host.gpu(GPU).hold_busy(cdev=True)
    assert fs.readlink(f"proc/{pid}/fd/3") == "/dev/vfio/devices/vfio0"
    assert fs.read(f"proc/{pid}/comm") == "qemu-system-x86_64"
    assert errno_of(fs.write, "sys/bus/pci/drivers/vfio-pci/unbind", GPU) == errno.EBUSY
    to_vfio(fs, GPU2)
    fs.write("sys/bus/pci/drivers/vfio-pci/unbind", GPU2)  # other devices are free
    host.gpu(GPU).release_busy()
    fs.write("sys/bus/pci/drivers/vfio-pci/unbind", GPU)


def test_holding_a_gpu_busy_needs_its_vfio_node(host):
    with pytest.raises(SimHostError, match="bind it to vfio-pci first"):
        host.gpu(GPU).hold_busy()
    to_vfio(host.sysfs, GPU)
    with pytest.raises(SimHostError, match="only iommufd hosts"):
        host.gpu(GPU).hold_busy(cdev=True)


def test_host_wide_reset_duration_applies_to_every_device(make_host):
    host = make_host("1xh200-snp", reset_ms=40)
    start = time.monotonic()
    host.gpu(host.gpus()[0]).reset()
    assert time.monotonic() - start >= 0.04


def test_runtime_pm_control_keeps_what_a_tool_wrote(host):
    fs = host.sysfs
    fs.write(dev(GPU, "power/control"), "auto")
    fs.write("sys/bus/pci/drivers/nvidia/unbind", GPU)  # re-renders the device
    assert fs.read(dev(GPU, "power/control")) == "auto"


def test_kernel_file_systems_refuse_create_EACCES_and_unlink_or_mkdir_EPERM(host):
    """sysfs/procfs have no ->create/->unlink/->mkdir: vfs_create gives EACCES, vfs_unlink and vfs_mkdir EPERM."""
    fs = host.sysfs
    assert errno_of(fs.write_file, f"sys/bus/pci/devices/{GPU}/new_attr", "1") == errno.EACCES
    assert errno_of(fs.remove, f"sys/bus/pci/devices/{GPU}/vendor") == errno.EPERM
    assert errno_of(fs.makedirs, "sys/bus/pci/drivers/mydriver") == errno.EPERM
    assert errno_of(fs.write_file, "proc/modules", "x") == errno.EACCES
    assert fs.read(f"sys/bus/pci/devices/{GPU}/vendor") == "0x10de"
    fs.write_file("run/nvidia/validations/workload-type", "vm-passthrough")  # ordinary files work
    assert fs.read("run/nvidia/validations/workload-type") == "vm-passthrough"
    fs.remove("run/nvidia/validations/workload-type")

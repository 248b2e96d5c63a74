import os

import pytest

from ccgpu.hw import catalog
from ccgpu.hw.catalog import Arch
from ccgpu.hw.pci import (
    BDF,
    BDFError,
    SysfsFormatError,
    enumerate_devices,
    iommu_group_members,
    is_vfio_driver,
    nvidia_gpus,
    nvidia_nvswitches,
    read_device,
    scan_devices,
)
from ccgpu.hw.sysfs import Sysfs


def test_real_h100_capture_enumerates_as_h100_sxm5_hopper_cc_capable_on_nvidia(host, h100_capture):
    host.capture(h100_capture)
    [gpu] = nvidia_gpus(Sysfs(host.root))
    assert gpu.bdf == BDF.parse("0000:00:06.0")
    assert (gpu.vendor, gpu.device, gpu.subsystem_vendor, gpu.subsystem_device) == (0x10DE, 0x2330, 0x10DE, 0x16C1)
    assert gpu.class_code == 0x030200 and gpu.revision == 0xA1
    assert gpu.modalias == "pci:v000010DEd00002330sv000010DEsd000016C1bc03sc02i00"
    assert gpu.driver == "nvidia"
    assert gpu.driver_override is None and gpu.numa_node is None
    assert gpu.iommu_group is None and gpu.vfio_dev is None and gpu.physfn is None and gpu.consumers == ()
    model = gpu.model
    assert model.name == "GH100 [H100 SXM5 80GB]" and model.arch is Arch.HOPPER
    assert model.cc_capable and model.ppcie_capable
    assert model.resource_name == "GH100_H100_SXM5_80GB"


def test_real_h200_capture_is_cc_capable_hopper_gpu_operator_1851(host, h200_capture):
    """gpu-operator#1851: the cc-manager allowlist left H200 (0x2335) out of CC; here it is CC capable."""
    host.capture(h200_capture)
    [gpu] = nvidia_gpus(Sysfs(host.root))
    assert gpu.device == 0x2335 and gpu.subsystem_device == 0x18BF and gpu.driver == "nvidia"
    assert gpu.model.name == "GH100 [H200 SXM 141GB]" and gpu.model.cc_capable
    assert gpu.model.resource_name == "GH100_H200_SXM_141GB"


def test_enumeration_is_sorted_by_bdf_and_filters_by_vendor(host, h100_capture):
    host.capture(h100_capture, bdf="0000:c1:00.0")
    host.capture(h100_capture, bdf="0000:1a:00.0")
    host.device("0000:00:1f.0", attrs={"vendor": "0x8086"}, cls="0x060100", driver=None)
    fs = Sysfs(host.root)
    assert [str(d.bdf) for d in enumerate_devices(fs)] == ["0000:00:1f.0", "0000:1a:00.0", "0000:c1:00.0"]
    assert [str(d.bdf) for d in enumerate_devices(fs, vendor=0x10DE)] == ["0000:1a:00.0", "0000:c1:00.0"]


def test_gpus_and_nvswitches_are_told_apart_by_class_and_vfs_are_skipped(host):
    host.device("0000:01:00.0", cls="0x030000", device="0x2331")  # VGA-class GPU
    host.device("0000:02:00.0", cls="0x068000", device="0x22a3")  # NVSwitch
    host.device("0000:03:00.0", cls="0x040300", device="0x22ba")  # HDMI audio
    vf = host.device("0000:01:00.4", cls="0x030200", device="0x2331")
    host.link(f"sys/devices/pci0000:01/{vf}/physfn", "../0000:01:00.0")
    fs = Sysfs(host.root)
    assert [str(d.bdf) for d in nvidia_gpus(fs)] == ["0000:01:00.0"]
    [sw] = nvidia_nvswitches(fs)
    assert sw.model.kind is catalog.Kind.NVSWITCH and sw.model.ppcie_capable
    assert read_device(fs, "0000:01:00.4").physfn == BDF.parse("0000:01:00.0")


def test_links_give_driver_iommu_group_vfio_cdev_and_aux_consumers_gpu_operator_1328(host):
    """gpu-operator#1328: vfio-manage handled one `consumer` link only; every aux function is listed here."""
    b = host.device("0000:41:00.0", cls="0x030000", driver="vfio-pci", iommu_group=17,
                    attrs={"driver_override": "vfio-pci", "numa_node": "1"})
    d = f"sys/devices/pci0000:41/{b}"
    host.link(f"{d}/consumer:pci:0000:41:00.1", "../../../virtual/devlink/pci:0000:41:00.0--pci:0000:41:00.1")
    host.link(f"{d}/consumer:pci:0000:41:00.2", "../../../virtual/devlink/pci:0000:41:00.0--pci:0000:41:00.2")
    (host.root / d / "vfio-dev/vfio3").mkdir(parents=True)
    dev = read_device(Sysfs(host.root), b)
    assert dev.driver == "vfio-pci" and dev.driver_override == "vfio-pci"
    assert dev.iommu_group == 17 and dev.numa_node == 1 and dev.vfio_dev == "vfio3"
    assert dev.consumers == (BDF.parse("0000:41:00.1"), BDF.parse("0000:41:00.2"))
    assert iommu_group_members(Sysfs(host.root), 17) == (b,)


@pytest.mark.parametrize(
    "attr,value,expected",
    [
        ("vendor", "", "0x followed by 4 hex digits"),
        ("vendor", "0x10dg", "0x followed by 4 hex digits"),
        ("device", "0x23", "0x followed by 4 hex digits"),
        ("device", "2330", "0x followed by 4 hex digits"),
        ("class", "0x0302", "0x followed by 6 hex digits"),
        ("revision", "a1", "0x followed by 2 hex digits"),
        ("numa_node", "-2", "NUMA node"),
        ("numa_node", "x", "NUMA node"),
        ("driver_override", "../../evil", "not a driver name"),
        ("modalias", "pci:v000010DEd00002330", "not a PCI modalias"),
    ],
)
def test_garbled_attribute_names_device_file_and_what_the_kernel_writes(host, attr, value, expected):
    b = host.device("0000:01:00.0", attrs={attr: value})
    with pytest.raises(SysfsFormatError) as e:
        read_device(Sysfs(host.root), b)
    msg = str(e.value)
    assert "0000:01:00.0" in msg and f"/{attr}" in msg and expected in msg


def test_attribute_without_the_kernels_trailing_newline_is_reported_truncated(host):
    b = host.device("0000:01:00.0")
    (host.root / f"sys/devices/pci0000:01/{b}/class").write_text("0x0302")
    with pytest.raises(SysfsFormatError, match="truncated"):
        read_device(Sysfs(host.root), b)


def test_missing_required_attribute_is_named(host):
    b = host.device("0000:01:00.0")
    (host.root / f"sys/devices/pci0000:01/{b}/revision").unlink()
    with pytest.raises(SysfsFormatError, match="revision: missing"):
        read_device(Sysfs(host.root), b)


def test_bad_iommu_group_and_driver_link_targets_are_format_errors(host):
    b = host.device("0000:01:00.0", driver=None)
    host.link(f"sys/devices/pci0000:01/{b}/iommu_group", "../../../kernel/iommu_groups/twelve")
    with pytest.raises(SysfsFormatError, match="iommu_group: link target"):
        read_device(Sysfs(host.root), b)


def test_read_device_rejects_a_bad_address_before_touching_files(host):
    with pytest.raises(BDFError, match="domain:bus:device.function"):
        read_device(Sysfs(host.root), "../../../etc")
    with pytest.raises(FileNotFoundError, match="no PCI device 0000:09:00.0"):
        read_device(Sysfs(host.root), "0000:09:00.0")


def test_entries_that_are_not_bdfs_are_reported_never_followed(host, tmp_path):
    host.device("0000:01:00.0")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "vendor").write_text("0x10de\n")
    os.symlink(outside, host.root / "sys/bus/pci/devices/evil")
    os.symlink(outside, host.root / "sys/bus/pci/devices/0000:02:00.0")  # a BDF name pointing out of the root
    scan = scan_devices(Sysfs(host.root))
    assert [str(d.bdf) for d in scan.devices] == ["0000:01:00.0"]
    assert any("'evil'" in e and "domain:bus:device.function" in e for e in scan.errors)
    assert any("0000:02:00.0" in e and "outside the root" in e for e in scan.errors)
    with pytest.raises(SysfsFormatError, match="evil"):
        enumerate_devices(Sysfs(host.root))


def test_root_without_pci_tree_is_reported_as_not_a_host(tmp_path):
    scan = scan_devices(Sysfs(tmp_path))
    assert scan.devices == () and "is this a host root" in scan.errors[0]


@pytest.mark.parametrize(
    ("driver", "vfio"),
    [
        ("vfio-pci", True),
        ("nvgrace_gpu_vfio_pci", True),  # Grace Hopper's variant driver, which NVIDIA's sandbox plugin skips
        ("mlx5_vfio_pci", True),
        ("nvidia", False),
        ("nouveau", False),
        (None, False),
        ("vfio_pci_core", False),  # a library module, never a bound driver
        ("vfio-platform", False),  # VFIO, but not for PCI functions
    ],
)
def test_is_vfio_driver_accepts_vfio_pci_and_its_variants_only(driver, vfio):
    assert is_vfio_driver(driver) is vfio

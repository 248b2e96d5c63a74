"""The simulated host tree looks to production code like a real host under `Sysfs(root)`."""

from __future__ import annotations

import os
import re

import pytest

from ccgpu.hw import catalog
from ccgpu.hw.sysfs import Sysfs
from ccgpu.sim.host import SimHostError, SimulatedHost
from ccgpu.sim.profiles import (
    HOST_PROFILES,
    REPLACED_ATTRS,
    ProfileError,
    device_profiles,
    get_profile,
    list_profiles,
)

REQUIRED_PROFILES = {
    "2xh100-nvl-snp",
    "8xh100-snp",
    "8xh100-snp-iommufd",
    "1xh200-snp",
    "4xh100-notee",
    "8xb200-tdx",
    "1xh100-pcie-snp",
}


def capture_files(shared, name: str) -> dict[str, str]:
    sysfs = shared / "fixtures" / name / "sysfs"
    return {
        p.name: p.read_text()
        for p in sysfs.iterdir()
        if not p.name.startswith("_") and p.name != "config.hex"
    }


def bar_shapes(resource: str) -> list[tuple[int, int]]:
    """(size, flags) per resource line: what stays when a device's BARs are placed elsewhere."""
    out = []
    for line in resource.splitlines():
        start, end, flags = (int(x, 16) for x in line.split())
        out.append((end - start + 1 if end else 0, flags))
    return out


@pytest.mark.parametrize(
    ("profile", "capture"), [("8xh100-snp", "h100-sxm5-80gb"), ("1xh200-snp", "h200-sxm-141gb")]
)
def test_gpu_attribute_files_equal_the_real_capture_modulo_replaced_identifiers(
    make_host, shared, profile, capture
):
    host = make_host(profile)
    real = capture_files(shared, capture)
    assert REPLACED_ATTRS <= set(real)
    assert host.gpus(), f"profile {profile} has no GPUs to compare"
    for bdf in host.gpus():
        devdir = host.root / "sys/bus/pci/devices" / bdf
        for name, content in real.items():
            simulated = (devdir / name).read_text()
            if name not in REPLACED_ATTRS:
                assert simulated == content, name
            elif name == "uevent":
                assert simulated == content.replace("PCI_SLOT_NAME=0000:00:06.0", f"PCI_SLOT_NAME={bdf}")
            elif name == "resource":
                assert bar_shapes(simulated) == bar_shapes(content)
            elif name == "serial_number":
                assert re.fullmatch(r"([0-9a-f]{2}-){7}[0-9a-f]{2}\n", simulated)
            elif name == "local_cpus":
                assert re.fullmatch(r"[0-9a-f]{1,8}(,[0-9a-f]{8})*\n", simulated)
            elif name == "local_cpulist":
                assert re.fullmatch(r"\d+-\d+\n", simulated)
            else:  # irq, numa_node
                assert re.fullmatch(r"-?\d+\n", simulated), name


def test_config_space_header_is_the_capture_s(host, shared):
    dump = (shared / "fixtures/h100-sxm5-80gb/sysfs/config.hex").read_text().splitlines()
    first_64 = bytes(int(b, 16) for line in dump[:4] for b in line.split())
    assert (host.root / "sys/bus/pci/devices/0000:18:00.0/config").read_bytes()[:64] == first_64


def test_attribute_permissions_follow_the_capture_listing(host, shared):
    listing = (shared / "fixtures/h100-sxm5-80gb/sysfs/_ls.txt").read_text().splitlines()
    devdir = host.root / "sys/bus/pci/devices/0000:18:00.0"
    checked = 0
    for line in listing:
        parts = line.split()
        if len(parts) >= 9 and parts[0].startswith("-") and (devdir / parts[-1]).exists():
            mode = os.stat(devdir / parts[-1]).st_mode & 0o777
            assert oct(mode) == oct(int("".join("0" if c == "-" else "1" for c in parts[0][1:10]), 2)), parts[
                -1
            ]
            checked += 1
    assert checked >= 30


def test_device_directory_links_are_laid_out_like_the_kernel(host):
    fs = Sysfs(host.root)
    bdf = "0000:18:00.0"
    assert fs.readlink(f"sys/bus/pci/devices/{bdf}") == f"../../../devices/pci0000:18/{bdf}"
    assert fs.realpath(f"sys/bus/pci/devices/{bdf}") == f"sys/devices/pci0000:18/{bdf}"
    assert fs.readlink(f"sys/bus/pci/devices/{bdf}/driver") == "../../../bus/pci/drivers/nvidia"
    assert fs.realpath(f"sys/bus/pci/drivers/nvidia/{bdf}") == f"sys/devices/pci0000:18/{bdf}"
    assert fs.readlink(f"sys/bus/pci/devices/{bdf}/iommu_group") == "../../../kernel/iommu_groups/20"
    assert fs.realpath(f"sys/kernel/iommu_groups/20/devices/{bdf}") == f"sys/devices/pci0000:18/{bdf}"
    assert fs.read(f"sys/bus/pci/devices/{bdf}/driver_override") == "(null)"
    for attr in ("bind", "unbind", "new_id"):
        assert fs.exists(f"sys/bus/pci/drivers/vfio-pci/{attr}")
    assert fs.exists("sys/bus/pci/drivers_probe")
    assert fs.listdir("run/nvidia/validations") == []


def test_hgx_host_has_one_iommu_group_per_gpu_and_the_nvswitches_share_one(host):
    fs = Sysfs(host.root)
    groups = {
        bdf: fs.readlink(f"sys/bus/pci/devices/{bdf}/iommu_group").rsplit("/", 1)[1] for bdf in host.devices()
    }
    gpu_groups = [groups[b] for b in host.gpus()]
    assert len(set(gpu_groups)) == 8
    assert len({groups[b] for b in host.nvswitches()}) == 1
    assert not set(gpu_groups) & {groups[b] for b in host.nvswitches()}


def test_every_device_modalias_class_and_model_agree_with_the_catalog(make_host):
    for profile in ("8xh100-snp", "8xb200-tdx", "1xh100-pcie-snp", "1xh200-snp"):
        host = make_host(profile)
        fs = Sysfs(host.root)
        assert host.devices(), f"profile {profile} has no devices"
        for bdf in host.devices():
            base = f"sys/bus/pci/devices/{bdf}"
            vendor, device = int(fs.read(f"{base}/vendor"), 16), int(fs.read(f"{base}/device"), 16)
            cls = int(fs.read(f"{base}/class"), 16)
            sv, sd = (
                int(fs.read(f"{base}/subsystem_vendor"), 16),
                int(fs.read(f"{base}/subsystem_device"), 16),
            )
            assert fs.read(f"{base}/modalias") == (
                f"pci:v{vendor:08X}d{device:08X}sv{sv:08X}sd{sd:08X}bc{cls >> 16:02X}sc{(cls >> 8) & 0xFF:02X}i{cls & 0xFF:02X}"
            )
            kind = host.device(bdf).kind
            if kind in ("gpu", "nvswitch"):
                assert catalog.lookup(device, cls).kind.value == kind
                assert catalog.lookup(device, cls).known


def test_derived_profiles_carry_catalog_ids_and_classes(make_host):
    host = make_host("8xb200-tdx")
    fs = Sysfs(host.root)
    assert {fs.read(f"sys/bus/pci/devices/{b}/device") for b in host.gpus()} == {"0x2901"}
    hgx = make_host("8xh100-snp")
    fs = Sysfs(hgx.root)
    for bdf in hgx.nvswitches():
        assert fs.read(f"sys/bus/pci/devices/{bdf}/device") == "0x22a3"
        assert fs.read(f"sys/bus/pci/devices/{bdf}/class") == "0x068000"


def test_bar_addresses_irqs_and_serials_differ_between_devices(host):
    fs = Sysfs(host.root)
    for attr in ("resource", "irq", "serial_number"):
        values = [fs.read(f"sys/bus/pci/devices/{b}/{attr}") for b in host.devices()]
        assert len(set(values)) == len(values), attr


def test_numa_locality_splits_the_eight_gpus_over_two_nodes(host):
    fs = Sysfs(host.root)
    nodes = [fs.read(f"sys/bus/pci/devices/{b}/numa_node") for b in host.gpus()]
    assert nodes == ["0"] * 4 + ["1"] * 4
    assert fs.read(f"sys/bus/pci/devices/{host.gpus()[0]}/local_cpulist") == "0-31"
    assert fs.read(f"sys/bus/pci/devices/{host.gpus()[0]}/local_cpus") == "00000000,ffffffff"


def test_vga_mode_gpu_has_an_audio_function_linked_as_consumer_and_3d_controllers_have_none(make_host):
    host = make_host("1xh100-pcie-snp")
    fs = Sysfs(host.root)
    gpu, audio = "0000:41:00.0", "0000:41:00.1"
    assert fs.read(f"sys/bus/pci/devices/{gpu}/class") == "0x030000"
    assert fs.read(f"sys/bus/pci/devices/{audio}/class") == "0x040300"
    assert fs.realpath(f"sys/bus/pci/devices/{gpu}/consumer:pci:{audio}/consumer") == fs.realpath(
        f"sys/bus/pci/devices/{audio}"
    )
    assert fs.is_link(f"sys/bus/pci/devices/{audio}/supplier:pci:{gpu}")
    hgx = make_host("8xh100-snp")
    assert not any(
        n.startswith("consumer:") for n in Sysfs(hgx.root).listdir(f"sys/bus/pci/devices/{hgx.gpus()[0]}")
    )


@pytest.mark.parametrize(
    ("profile", "files"),
    [
        (
            "8xh100-snp",
            {"sys/module/kvm_amd/parameters/sev_snp": "Y", "sys/module/kvm_amd/parameters/sev": "Y"},
        ),
        (
            "4xh100-notee",
            {"sys/module/kvm_amd/parameters/sev_snp": "N", "sys/fs/cgroup/misc.capacity": "sev 0\nsev_es 0"},
        ),
        ("8xb200-tdx", {"sys/module/kvm_intel/parameters/tdx": "Y"}),
    ],
)
def test_cpu_tee_module_parameters_follow_the_profile(make_host, profile, files):
    fs = Sysfs(make_host(profile).root)
    for path, value in files.items():
        assert fs.read(path) == value


def test_snp_host_shows_sev_snp_in_cpuinfo_asids_in_misc_cgroup_and_iommu_on_the_cmdline(host):
    fs = Sysfs(host.root)
    assert "sev_snp" in fs.read("proc/cpuinfo").split("flags\t\t: ", 1)[1].splitlines()[0].split()
    assert fs.read("sys/fs/cgroup/misc.capacity").splitlines()[0].startswith("sev ")
    cmdline = fs.read("proc/cmdline").split()
    assert "amd_iommu=on" in cmdline and "iommu=pt" in cmdline
    assert "vfio_pci" in [line.split()[0] for line in fs.read("proc/modules").splitlines()]
    release = fs.read("proc/sys/kernel/osrelease")
    assert (
        "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci"
        in fs.read(f"lib/modules/{release}/modules.alias").splitlines()
    )
    assert fs.exists("dev/vfio/vfio") and not fs.exists("dev/iommu")


def test_notee_host_has_no_sev_flags_and_iommu_off_variant_has_no_groups(make_host):
    fs = Sysfs(make_host("4xh100-notee").root)
    assert "sev" not in fs.read("proc/cpuinfo")
    off = make_host("8xh100-snp", iommu=False)
    fs = Sysfs(off.root)
    assert fs.listdir("sys/kernel/iommu_groups") == []
    assert not fs.exists(f"sys/bus/pci/devices/{off.gpus()[0]}/iommu_group")
    assert "amd_iommu=on" not in fs.read("proc/cmdline")


def test_grace_host_modules_alias_names_nvgrace_gpu_vfio_pci(make_host):
    fs = Sysfs(make_host("1xgh200-notee").root)
    release = fs.read("proc/sys/kernel/osrelease")
    lines = fs.read(f"lib/modules/{release}/modules.alias").splitlines()
    assert "alias vfio_pci:v000010DEd00002342sv*sd*bc*sc*i* nvgrace_gpu_vfio_pci" in lines
    assert fs.exists("sys/bus/pci/drivers/nvgrace_gpu_vfio_pci/bind")


def test_profiles_can_start_gpus_unbound_or_on_vfio_pci(make_host):
    unbound = make_host("8xh100-snp", gpu_driver=None)
    assert len(unbound.gpus()) == 8 and len(unbound.nvswitches()) == 4
    assert all(unbound.device(b).driver is None for b in unbound.gpus() + unbound.nvswitches())
    vfio = make_host("8xh100-snp-iommufd", gpu_driver="vfio-pci")
    fs = Sysfs(vfio.root)
    assert len(fs.listdir("dev/vfio/devices")) == 12
    assert sorted(fs.listdir("dev/vfio")) == sorted(
        [str(g) for g in range(20, 28)] + ["60", "devices", "vfio"]
    )


def test_required_profiles_exist_and_list_profiles_is_sorted():
    names = [p.name for p in list_profiles()]
    assert REQUIRED_PROFILES <= set(names)
    assert names == sorted(names)
    assert all(HOST_PROFILES[n].description for n in names)


@pytest.mark.parametrize("bad", ["8xh100", "../etc", "", "8XH100-SNP"])
def test_unknown_profile_names_are_refused_naming_the_known_ones(bad):
    with pytest.raises(ProfileError, match="known profiles: .*8xh100-snp"):
        get_profile(bad)


def test_create_refuses_a_non_empty_directory_and_changes_nothing(host_dir):
    target = host_dir / "busy"
    target.mkdir()
    (target / "keep").write_text("mine")
    with pytest.raises(SimHostError, match="not an empty directory"):
        SimulatedHost.create(target, "1xh200-snp")
    assert os.listdir(target) == ["keep"]


def test_create_refuses_unknown_overrides_and_impossible_variants(host_dir):
    with pytest.raises(SimHostError, match="unknown host profile field"):
        SimulatedHost.create(host_dir / "a", "1xh200-snp", gpus=3)
    with pytest.raises(SimHostError, match="no IOMMU group"):
        SimulatedHost.create(host_dir / "b", "1xh200-snp", iommu=False, gpu_driver="vfio-pci")
    with pytest.raises(SimHostError, match="not loaded"):
        SimulatedHost.create(host_dir / "c", "1xh200-snp", nvidia_loaded=False)
    assert not (host_dir / "a").exists() and not (host_dir / "b").exists()


def test_opening_a_directory_that_is_not_a_simulated_host_is_refused(host_dir):
    with pytest.raises(SimHostError, match="not a simulated host tree"):
        SimulatedHost.open(host_dir)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tee": "tdx"}, "tee 'tdx' on a amd CPU; accepted: snp, None"),
        ({"cpu_vendor": "sparc"}, "cpu_vendor 'sparc'"),
        ({"gpu_driver": "nouveau"}, "accepted: nvidia, vfio-pci, None"),
        ({"reset_ms": -1}, "reset_ms -1"),
    ],
)
def test_impossible_profile_variants_are_refused_saying_what_is_accepted(host_dir, overrides, message):
    with pytest.raises(ProfileError, match=re.escape(message)):
        SimulatedHost.create(host_dir / "v", "8xh100-snp", **overrides)
    assert not (host_dir / "v").exists()


def test_other_vendors_devices_stay_on_their_own_driver_whatever_the_gpus_start_on(make_host):
    host = make_host("8xh100-snp", gpu_driver="vfio-pci")
    fs = Sysfs(host.root)
    nic = "0000:c1:00.0"
    assert fs.read(f"sys/bus/pci/devices/{nic}/vendor") == "0x15b3"
    assert fs.readlink(f"sys/bus/pci/devices/{nic}/driver") == "../../../bus/pci/drivers/mlx5_core"
    assert nic not in host.gpus() + host.nvswitches()
    assert host.device(nic).kind == "other"


def test_h100_nvl_host_shows_device_0x2321_which_the_catalog_calls_cc_capable(make_host):
    """gpu-operator#1851: NVIDIA's allowlist left H100 NVL (0x2321) out of CC; the simulated host carries one."""
    host = make_host("2xh100-nvl-snp")
    fs = Sysfs(host.root)
    assert len(host.gpus()) == 2
    for bdf in host.gpus():
        assert fs.read(f"sys/bus/pci/devices/{bdf}/device") == "0x2321"
        assert host.gpu(bdf).query_cc().cc_capable


def test_tdx_host_reports_its_private_key_ids_in_the_misc_cgroup(make_host):
    fs = Sysfs(make_host("8xb200-tdx").root)
    assert fs.read("sys/fs/cgroup/misc.capacity") == "tdx 63"
    assert "tdx_host_platform" in fs.read("proc/cpuinfo")
    assert "intel_iommu=on" in fs.read("proc/cmdline").split()


def test_every_device_profile_attribute_files_agree_with_its_ids(shared):
    """derive() rewrites every identifying file together: ids, class, modalias, config-space header."""
    for name, p in device_profiles(str(shared / "fixtures")).items():
        assert p.attrs["modalias"].strip() == p.modalias, name
        assert int(p.attrs["vendor"], 16) == p.vendor == int.from_bytes(p.config[0:2], "little"), name
        assert int(p.attrs["device"], 16) == p.device == int.from_bytes(p.config[2:4], "little"), name
        assert int(p.attrs["class"], 16) == p.class_code == int.from_bytes(p.config[9:12], "little"), name
        assert int(p.attrs["subsystem_device"], 16) == int.from_bytes(p.config[0x2E:0x30], "little"), name

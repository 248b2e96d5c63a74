import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccgpu.hw.pci import BDF, SysfsFormatError
from ccgpu.hw.platform import (
    PlatformFacts,
    parse_bool_param,
    parse_cmdline,
    parse_misc_capacity,
    read_platform,
    vfio_driver_for,
)
from ccgpu.hw.sysfs import Sysfs

GRACE_ALIAS = (
    "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n"
    "alias vfio_pci:v000010DEd00002342sv*sd*bc*sc*i* nvgrace_gpu_vfio_pci\n"
    "alias vfio_pci:v000010DEd*sv*sd*bc*sc*i* nvidia_vfio_pci_variant\n"
    "alias pci:v000010DEd*sv*sd*bc03sc02i00* nvidia\n"
)


def test_snp_host_reads_like_nfd_and_cc_manager_read_it(host):
    host.snp_host()
    host.device("0000:01:00.0", iommu_group=12)
    f = read_platform(Sysfs(host.root))
    assert f.cpu_vendor == "AuthenticAMD" and "sev_snp" in f.cpu_flags and not f.hypervisor
    assert (f.sev, f.sev_es, f.sev_snp, f.tdx) == (True, True, True, None)
    assert f.tee == "sev-snp"
    assert (f.sev_asids, f.sev_es_asids) == (410, 99)
    assert f.iommu_groups == {12: (BDF.parse("0000:01:00.0"),)} and f.iommu_units == ("ivhd0",)
    assert f.vfio_container and not f.iommufd
    assert f.kernel_release == "6.17.0-5-generic"
    assert f.cmdline_value("amd_iommu") == "on" and f.cmdline_value("iommu") == "pt"
    assert f.cmdline_list("modprobe.blacklist") == ("nouveau",)
    assert f.module_present("vfio-pci") and f.module_present("vfio") and not f.module_present("nouveau")
    assert f.modules_alias_found and f.vfio_driver_for("pci:v000010DEd00002330sv000010DEsd000016C1bc03sc02i00") == "vfio-pci"


def test_absent_files_mean_unknown_not_an_error(tmp_path):
    f = read_platform(Sysfs(tmp_path))
    assert f == PlatformFacts()
    assert f.tee is None and f.iommu_groups == {} and not f.modules_alias_found


def test_tdx_host_is_recognised_from_kvm_intel(host):
    host.file("sys/module/kvm_intel/parameters/tdx", "Y\n")
    host.file("sys/fs/cgroup/misc.capacity", "tdx 31\n")
    f = read_platform(Sysfs(host.root))
    assert f.tee == "tdx" and f.tdx_keys == 31


@pytest.mark.parametrize(
    "rel,text,problem",
    [
        ("sys/module/kvm_amd/parameters/sev_snp", "maybe\n", "not a module boolean"),
        ("sys/module/kvm_amd/parameters/sev_snp", "\n", "not a module boolean"),
        ("sys/fs/cgroup/misc.capacity", "sev ninety\n", "'<resource> <count>'"),
        ("proc/modules", "vfio_pci\n", "name size refcount"),
        ("proc/sys/kernel/osrelease", "../../etc\n", "not a kernel release"),
        ("proc/sys/kernel/osrelease", "\n", "not a kernel release"),
        ("sys/kernel/security/lockdown", "integrity\n", "brackets"),
    ],
)
def test_garbled_platform_file_is_refused_naming_the_file_and_the_accepted_form(host, rel, text, problem):
    host.file(rel, text)
    with pytest.raises(SysfsFormatError) as e:
        read_platform(Sysfs(host.root))
    assert rel in str(e.value) and problem in str(e.value)


def test_kernel_release_cannot_steer_module_paths_outside_lib_modules(host):
    host.file("proc/sys/kernel/osrelease", "6.8/../../../etc\n")
    with pytest.raises(SysfsFormatError, match="not a kernel release"):
        read_platform(Sysfs(host.root))


def test_vfio_driver_is_the_match_with_fewest_wildcards_like_vfio_manage():
    gh200 = "pci:v000010DEd00002342sv000010DEsd000016EBbc03sc02i00"
    h100 = "pci:v000010DEd00002330sv000010DEsd000016C1bc03sc02i00"
    nic = "pci:v000015B3d0000101Dsv000015B3sd00000016bc02sc00i00"
    assert vfio_driver_for(gh200, GRACE_ALIAS) == "nvgrace_gpu_vfio_pci"
    assert vfio_driver_for(h100, GRACE_ALIAS) == "nvidia_vfio_pci_variant"
    assert vfio_driver_for(nic, GRACE_ALIAS) == "vfio-pci"
    assert vfio_driver_for(h100, "") == "vfio-pci"


def test_cmdline_last_value_wins_and_quotes_group():
    words = parse_cmdline('root=/dev/sda1 iommu=off iommu=pt dyndbg="file vfio* +p" quiet')
    assert words == ("root=/dev/sda1", "iommu=off", "iommu=pt", "dyndbg=file vfio* +p", "quiet")
    assert PlatformFacts(cmdline=words).cmdline_value("iommu") == "pt"
    assert PlatformFacts(cmdline=words).cmdline_value("quiet") == ""


@given(st.text(max_size=6))
def test_module_boolean_accepts_exactly_the_kernels_spellings(text):
    if text in ("Y", "N", "1", "0"):
        assert parse_bool_param(text) is (text in ("Y", "1"))
    else:
        with pytest.raises(ValueError, match="Y, N, 1 or 0"):
            parse_bool_param(text)


@given(st.text(max_size=30))
def test_misc_capacity_parses_or_names_the_bad_line(text):
    try:
        parsed = parse_misc_capacity(text)
    except ValueError as e:
        assert "is not '<resource> <count>'" in str(e)
    else:
        assert all(isinstance(v, int) and v >= 0 for v in parsed.values())

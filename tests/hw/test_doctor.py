import json
import subprocess

import pytest
from typer.testing import CliRunner

from ccgpu.cli import app
from ccgpu.hw.doctor import Status, Workload, diagnose, run_checks
from ccgpu.hw.doctor_output import report_json
from ccgpu.hw.pci import BDF, PCIDevice
from ccgpu.hw.platform import PlatformFacts
from ccgpu.labels import WorkloadConfig
from tests.conftest import ccgpu_command, ccgpu_env

H100_BDFS = ["0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0", "0000:5d:00.0",
             "0000:9a:00.0", "0000:ab:00.0", "0000:ba:00.0", "0000:db:00.0"]


@pytest.fixture
def snp_8xh100(host, h100_capture):
    """A bare-metal SEV-SNP host with 8 real-capture H100 SXM5 GPUs, each unbound in its own IOMMU group."""
    host.snp_host()
    for n, bdf in enumerate(H100_BDFS):
        b = host.capture(h100_capture, bdf=bdf, iommu_group=20 + n)
        (host.root / f"sys/devices/pci0000:{b.bus:02x}/{b}/driver").unlink()
    return host


def by_id(report):
    return {c.id: c for c in report.checks}


def gpu(bdf="0000:18:00.0", device=0x2330, driver=None, group=20, cls=0x030200, **kw):
    return PCIDevice(
        bdf=BDF.parse(bdf), vendor=0x10DE, device=device, subsystem_vendor=0x10DE, subsystem_device=0x16C1,
        class_code=cls, revision=0xA1,
        modalias=f"pci:v000010DEd0000{device:04X}sv000010DEsd000016C1bc{cls >> 16:02X}sc{(cls >> 8) & 0xFF:02X}i00",
        driver=driver, driver_override=None, iommu_group=group, numa_node=0, vfio_dev=None, physfn=None, **kw,
    )


SNP = PlatformFacts(
    cpu_vendor="AuthenticAMD", cpu_flags=frozenset({"sev_snp", "svm"}), sev=True, sev_es=True, sev_snp=True,
    sev_es_asids=99, iommu_groups={20: (BDF.parse("0000:18:00.0"),)}, vfio_container=True,
    kernel_release="6.17.0", cmdline=("amd_iommu=on", "iommu=pt", "modprobe.blacklist=nouveau"),
    modules_loaded=frozenset({"vfio_pci", "kvm_amd"}), modules_alias_found=True,
)


def test_snp_host_with_8_h100_is_ready(snp_8xh100):
    report = diagnose(str(snp_8xh100.root))
    assert report.ready, [c for c in report.checks if c.status is not Status.PASS]
    assert all(c.status is Status.PASS for c in report.checks)
    assert [str(d.bdf) for d in report.devices] == H100_BDFS
    assert by_id(report)["gpus"].finding == "8 × GH100 [H100 SXM5 80GB]"


def test_host_without_snp_fails_naming_the_bios_and_kernel_fix(snp_8xh100):
    snp_8xh100.file("sys/module/kvm_amd/parameters/sev_snp", "N\n")
    snp_8xh100.file("proc/cpuinfo", "vendor_id\t: AuthenticAMD\nflags\t\t: fpu sev svm\n")
    report = diagnose(str(snp_8xh100.root))
    assert not report.ready and [c.id for c in report.failed] == ["cpu-tee"]
    tee = by_id(report)["cpu-tee"]
    assert "sev_snp=N" in tee.finding
    assert "SEV-SNP support" in tee.remedy and "kvm_amd.sev_snp=1" in tee.remedy


def test_host_without_iommu_fails_naming_the_cmdline_fix(snp_8xh100):
    import shutil

    shutil.rmtree(snp_8xh100.root / "sys/kernel/iommu_groups")
    for bdf in H100_BDFS:
        b = BDF.parse(bdf)
        (snp_8xh100.root / f"sys/devices/pci0000:{b.bus:02x}/{b}/iommu_group").unlink()
    snp_8xh100.file("proc/cmdline", "root=/dev/sda1 amd_iommu=off modprobe.blacklist=nouveau\n")
    report = diagnose(str(snp_8xh100.root))
    assert not report.ready
    iommu = by_id(report)["iommu"]
    assert iommu.status is Status.FAIL and "amd_iommu=off" in iommu.finding
    assert "Remove amd_iommu=off" in iommu.remedy and "amd_iommu=on iommu=pt" in iommu.remedy
    assert by_id(report)["kernel-cmdline"].status is Status.FAIL


def test_gpus_bound_to_nvidia_fail_vm_passthrough_naming_vfio_manager_and_manual_rebind(host, h100_capture):
    host.snp_host()
    for n, bdf in enumerate(H100_BDFS[:2]):
        host.capture(h100_capture, bdf=bdf, iommu_group=20 + n)
    report = diagnose(str(host.root))
    assert [c.id for c in report.failed] == ["gpu-drivers"]
    drivers = by_id(report)["gpu-drivers"]
    assert "nvidia driver holds 2 GPU(s)" in drivers.finding and "0000:2a:00.0" in drivers.finding
    assert "vfio-manager" in drivers.remedy and "/sys/bus/pci/drivers/nvidia/unbind" in drivers.remedy


def test_container_workload_accepts_nvidia_and_refuses_vfio(host, h100_capture):
    host.capture(h100_capture)
    assert diagnose(str(host.root), "container").ready
    report = run_checks(SNP, [gpu(driver="vfio-pci")], Workload.CONTAINER)
    assert [c.id for c in report.failed] == ["gpu-drivers"]
    assert "driver_override" in report.failed[0].remedy
    # unbinding and clearing the override leaves the GPU on no driver: the remedy must also re-probe it
    assert "echo <bdf> > /sys/bus/pci/drivers_probe" in report.failed[0].remedy


def test_real_capture_vm_is_not_ready_for_passthrough_gpu_operator_650(host, h100_capture):
    """gpu-operator#650: operands were run inside a VM; doctor says bare metal is needed, before anything else."""
    host.capture(h100_capture)
    host.file("proc/cpuinfo", "vendor_id\t: AuthenticAMD\nflags\t\t: fpu hypervisor\n")
    report = diagnose(str(host.root))
    failed = [c.id for c in report.failed]
    assert failed[:2] == ["bare-metal", "cpu-tee"] and "iommu" in failed and "gpu-drivers" in failed
    assert "gpu-operator#650" in by_id(report)["bare-metal"].finding


def test_ampere_gpu_fails_cc_and_h200_passes_gpu_operator_1851():
    """gpu-operator#1851: H200 (0x2335) was left out of CC by an allowlist; Ampere truly cannot do CC."""
    facts = PlatformFacts(**{**SNP.__dict__, "iommu_groups": {20: (BDF.parse("0000:18:00.0"),),
                                                              21: (BDF.parse("0000:19:00.0"),)}})
    report = run_checks(facts, [gpu(device=0x2335), gpu("0000:19:00.0", device=0x20B5, group=21)])
    checks = by_id(report)
    assert checks["gpu/0000:18:00.0"].status is Status.PASS and "H200" in checks["gpu/0000:18:00.0"].finding
    a100 = checks["gpu/0000:19:00.0"]
    assert a100.status is Status.FAIL and "Hopper or newer" in a100.finding and "workload.config=container" in a100.remedy


def test_a_driver_merely_named_like_vfio_is_not_vfio_for_doctor_as_for_the_device_plugin():
    """doctor, the CDI spec and the device plugin share one predicate; doctor used to accept any name with 'vfio'."""
    report = run_checks(SNP, [gpu(driver="vfio-platform")])
    assert [c.id for c in report.failed] == ["gpu-drivers"]
    assert "0000:18:00.0 (vfio-platform)" in report.failed[0].finding


def test_gpu_sharing_its_iommu_group_with_a_stranger_is_a_warning_naming_acs():
    facts = PlatformFacts(**{**SNP.__dict__, "iommu_groups": {20: (BDF.parse("0000:17:00.0"), BDF.parse("0000:18:00.0"))}})
    c = by_id(run_checks(facts, [gpu()]))["gpu/0000:18:00.0"]
    assert c.status is Status.WARN and "0000:17:00.0" in c.finding and "ACS" in c.remedy


def test_zero_snp_asids_fails_and_missing_vfio_module_fails_with_install_hint():
    facts = PlatformFacts(**{**SNP.__dict__, "sev_es_asids": 0, "modules_loaded": frozenset({"kvm_amd"})})
    checks = by_id(run_checks(facts, [gpu()]))
    assert checks["tee-capacity"].status is Status.FAIL and "SEV-ES ASID Space Limit" in checks["tee-capacity"].remedy
    assert checks["vfio-modules"].status is Status.FAIL and "linux-modules-extra-6.17.0" in checks["vfio-modules"].remedy


def test_nouveau_loaded_fails_with_blacklist_remedy():
    facts = PlatformFacts(**{**SNP.__dict__, "modules_loaded": SNP.modules_loaded | {"nouveau"}})
    report = run_checks(facts, [gpu(driver="nouveau")])
    assert {c.id for c in report.failed} == {"nouveau", "gpu-drivers"}
    assert "modprobe.blacklist=nouveau" in by_id(report)["nouveau"].remedy


def test_nvswitches_on_nvidia_warn_for_ppcie_but_do_not_block():
    sw = [gpu(f"0000:0{n}:00.0", device=0x22A3, cls=0x068000, driver="nvidia", group=None) for n in range(4)]
    report = run_checks(SNP, [gpu(), *sw])
    c = by_id(report)["nvswitches"]
    assert report.ready and c.status is Status.WARN
    assert "4 × GH100 [H100 NVSwitch], PPCIe capable" in c.finding


def test_lockdown_warns_that_cc_mode_cannot_change_gpu_admin_tools_12():
    """gpu-admin-tools#12: kernel lockdown makes GPUs look broken to the CC-mode tool."""
    facts = PlatformFacts(**{**SNP.__dict__, "lockdown": "integrity"})
    c = by_id(run_checks(facts, [gpu()]))["lockdown"]
    assert c.status is Status.WARN and "gpu-admin-tools#12" in c.finding


def test_garbled_host_file_is_a_failed_check_not_a_crash(snp_8xh100):
    snp_8xh100.file("sys/module/kvm_amd/parameters/sev_snp", "yes please\n")
    report = diagnose(str(snp_8xh100.root))
    [bad] = report.failed
    assert bad.id == "host-files" and "sys/module/kvm_amd/parameters/sev_snp" in bad.finding


def test_cli_exit_code_is_0_only_when_ready_and_json_is_the_documented_object(snp_8xh100):
    runner = CliRunner()
    ok = runner.invoke(app, ["doctor", "--root", str(snp_8xh100.root), "--json"])
    assert ok.exit_code == 0, ok.output
    doc = json.loads(ok.output)
    assert doc["schemaVersion"] == 1 and doc["ready"] is True and doc["workload"] == "vm-passthrough"
    assert doc["host"]["tee"] == "sev-snp" and doc["host"]["iommuGroups"] == 8
    d0 = doc["devices"][0]
    assert d0["bdf"] == "0000:18:00.0" and d0["model"] == "GH100 [H100 SXM5 80GB]" and d0["arch"] == "hopper"
    assert d0["ccCapable"] is True and d0["resourceName"] == "nvidia.com/GH100_H100_SXM5_80GB"
    assert d0["driver"] is None and d0["vfioDriver"] == "vfio-pci"
    snp_8xh100.file("sys/module/kvm_amd/parameters/sev_snp", "N\n")
    bad = runner.invoke(app, ["doctor", "--root", str(snp_8xh100.root)])
    assert bad.exit_code == 1 and "NOT READY" in bad.output and "cpu-tee" in bad.output


def test_doctor_workloads_are_label_values_of_nvidia_com_gpu_workload_config():
    assert {w.value for w in Workload} <= {w.value for w in WorkloadConfig}


def test_cli_refuses_a_bad_workload_and_a_missing_root_and_lists_accepted_values(tmp_path):
    runner = CliRunner(env={"COLUMNS": "300"})
    r = runner.invoke(app, ["doctor", "--root", str(tmp_path), "--workload", "kata"])
    assert r.exit_code == 2 and "vm-passthrough, container" in r.output
    r = runner.invoke(app, ["doctor", "--root", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "not a directory" in r.output


def test_json_keys_are_exactly_the_ones_readme_documents(snp_8xh100, shared):
    from tests.conftest import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## ccgpu doctor", 1)[1].split("\n## ", 1)[0]
    doc = report_json(diagnose(str(snp_8xh100.root)))
    keys = set(doc) | {f"host.{k}" for k in doc["host"]} | {f"checks[].{k}" for k in doc["checks"][0]} | {
        f"devices[].{k}" for k in doc["devices"][0]}
    documented = {k for k in keys if f"`{k}`" in section}
    assert documented == keys, f"undocumented in README: {sorted(keys - documented)}"


def test_doctor_runs_as_a_subprocess_against_a_host_root(snp_8xh100):
    out = subprocess.run(  # noqa: S603 - argv list of our own CLI, no shell
        ccgpu_command("doctor", "--root", str(snp_8xh100.root), "--json"), env=ccgpu_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["ready"] is True


def test_tdx_host_passes_the_tee_check_and_intel_without_tdx_names_the_bios_settings():
    tdx = PlatformFacts(**{**SNP.__dict__, "cpu_vendor": "GenuineIntel", "sev": None, "sev_es": None,
                           "sev_snp": None, "sev_es_asids": None, "tdx": True, "tdx_keys": 63,
                           "cmdline": ("intel_iommu=on", "iommu=pt", "modprobe.blacklist=nouveau")})
    report = run_checks(tdx, [gpu()])
    assert report.ready and by_id(report)["cpu-tee"].finding.startswith("Intel TDX is enabled")
    assert by_id(report)["tee-capacity"].finding.startswith("63 TDX private keys")
    off = by_id(run_checks(PlatformFacts(**{**tdx.__dict__, "tdx": False}), [gpu()]))
    assert off["cpu-tee"].status is Status.FAIL and "tdx=N" in off["cpu-tee"].finding
    assert "SEAM loader" in off["cpu-tee"].remedy and "kvm_intel" in off["cpu-tee"].remedy
    assert "tee-capacity" not in off

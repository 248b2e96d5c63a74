"""`ccgpu doctor` against simulated hosts (ccgpu.sim.host): the ready host passes, each broken variant fails
with its remedy named, and following the printed remedy on the simulated kernel makes the host ready."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ccgpu.cli import app
from ccgpu.hw.doctor import Status, diagnose
from ccgpu.hw.doctor_output import report_json
from ccgpu.sim.host import SimulatedHost


@pytest.fixture
def make_host(tmp_path, shared):
    """`make_host("8xh100-snp", iommu=False)`: a fresh simulated host (on tmpfs when there is one)."""
    base = Path(tempfile.mkdtemp(prefix="ccgpu-hw-", dir="/dev/shm")) if os.access("/dev/shm", os.W_OK) else tmp_path
    count = 0

    def make(profile="8xh100-snp", **overrides):
        nonlocal count
        count += 1
        return SimulatedHost.create(base / f"h{count}", profile, fixtures=shared / "fixtures", **overrides)

    yield make
    if base != tmp_path:
        shutil.rmtree(base, ignore_errors=True)


def checks(report):
    return {c.id: c for c in report.checks}


def test_snp_host_with_8_h100_on_vfio_passes_with_exit_code_0(make_host):
    host = make_host("8xh100-snp", gpu_driver="vfio-pci")
    result = CliRunner().invoke(app, ["doctor", "--root", str(host.root), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["ready"] is True and doc["host"]["tee"] == "sev-snp"
    gpus = [d for d in doc["devices"] if d["kind"] == "gpu"]
    assert len(gpus) == 8 and {d["driver"] for d in gpus} == {"vfio-pci"}
    assert all(d["ccCapable"] and d["model"] == "GH100 [H100 SXM5 80GB]" for d in gpus)
    assert [d["bdf"] for d in doc["devices"] if d["kind"] == "nvswitch"] == [
        "0000:05:00.0", "0000:06:00.0", "0000:07:00.0", "0000:08:00.0"]
    assert not [c for c in doc["checks"] if c["status"] == "fail"]


def test_snp_host_with_unbound_gpus_is_ready_because_vfio_manager_binds_them(make_host):
    assert diagnose(str(make_host("8xh100-snp", gpu_driver=None).root)).ready


def test_host_without_snp_fails_on_cpu_tee_with_the_bios_remedy(make_host):
    report = diagnose(str(make_host("4xh100-notee", gpu_driver=None).root))
    assert [c.id for c in report.failed] == ["cpu-tee"]
    tee = checks(report)["cpu-tee"]
    assert "sev_snp" in tee.finding and "BIOS" in tee.remedy and "kvm_amd.sev_snp=1" in tee.remedy
    result = CliRunner(env={"COLUMNS": "400"}).invoke(app, ["doctor", "--root", str(make_host("4xh100-notee").root)])
    assert result.exit_code == 1 and "NOT READY" in result.output and "cpu-tee" in result.output


def test_host_without_iommu_fails_naming_amd_iommu_on_and_iommu_pt(make_host):
    report = diagnose(str(make_host("8xh100-snp", iommu=False, gpu_driver=None).root))
    iommu = checks(report)["iommu"]
    assert iommu.status is Status.FAIL and "amd_iommu=on iommu=pt" in iommu.remedy and "BIOS" in iommu.remedy
    assert not report.ready


def test_host_with_nvidia_bound_fails_naming_the_vfio_rebind(make_host):
    report = diagnose(str(make_host("8xh100-snp").root))
    assert [c.id for c in report.failed] == ["gpu-drivers"]
    fix = checks(report)["gpu-drivers"]
    assert "nvidia driver holds 8 GPU(s)" in fix.finding
    assert "vfio-manager" in fix.remedy and "driver_override" in fix.remedy


def test_following_the_printed_manual_remedy_on_the_simulated_kernel_makes_the_host_ready(make_host):
    host = make_host("1xh200-snp")
    report = diagnose(str(host.root))
    assert not report.ready and "echo vfio-pci > /sys/bus/pci/devices/<bdf>/driver_override" in (
        checks(report)["gpu-drivers"].remedy)
    fs = host.sysfs
    [bdf] = host.gpus()
    fs.write("sys/bus/pci/drivers/nvidia/unbind", bdf)
    fs.write(f"sys/bus/pci/devices/{bdf}/driver_override", "vfio-pci")
    fs.write("sys/bus/pci/drivers/vfio-pci/bind", bdf)
    after = diagnose(str(host.root))
    assert after.ready, after.failed
    assert after.devices[0].driver == "vfio-pci" and after.devices[0].model.name == "GH100 [H200 SXM 141GB]"


def test_tdx_host_with_8_b200_passes_on_vfio(make_host):
    report = diagnose(str(make_host("8xb200-tdx", gpu_driver="vfio-pci").root))
    assert report.ready, report.failed
    assert checks(report)["cpu-tee"].finding.startswith("Intel TDX is enabled")
    assert {d.model.name for d in report.devices} == {"GB100 [B200]"}


def test_grace_hopper_gets_the_nvgrace_variant_driver_from_modules_alias(make_host):
    doc = report_json(diagnose(str(make_host("1xgh200-notee").root)))
    [gh200] = [d for d in doc["devices"] if d["kind"] == "gpu"]
    assert gh200["vfioDriver"] == "nvgrace_gpu_vfio_pci"


def test_vga_mode_h100_pcie_lists_its_hdmi_audio_consumer(make_host):
    doc = report_json(diagnose(str(make_host("1xh100-pcie-snp").root)))
    [gpu] = [d for d in doc["devices"] if d["kind"] == "gpu"]
    assert gpu["classCode"] == "0x030000" and len(gpu["consumers"]) == 1


def test_table_prints_bdfs_and_model_brackets_verbatim_not_as_emoji_or_markup(make_host):
    host = make_host("8xh100-snp")
    result = CliRunner(env={"COLUMNS": "400"}).invoke(app, ["doctor", "--root", str(host.root)])
    assert "gpu/0000:ab:00.0" in result.output and "GH100 [H100 SXM5 80GB]" in result.output
    assert "\N{NEGATIVE SQUARED AB}" not in result.output


def test_doctor_only_reads_the_host_tree_is_byte_identical_afterwards(make_host):
    host = make_host("8xh100-snp-iommufd")

    def snapshot():
        out = {}
        for dirpath, dirnames, filenames in os.walk(host.root):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                rel = str(p.relative_to(host.root))
                out[rel] = os.readlink(p) if p.is_symlink() else (p.read_bytes() if p.is_file() else "dir")
        return out

    before = snapshot()
    CliRunner().invoke(app, ["doctor", "--root", str(host.root), "--json"])
    CliRunner().invoke(app, ["doctor", "--root", str(host.root)])
    assert snapshot() == before

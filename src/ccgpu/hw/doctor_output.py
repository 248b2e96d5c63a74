"""How `ccgpu doctor` shows a Report: the stable JSON object (documented in README.md) and the rich table."""

from __future__ import annotations

from typing import Any

from ccgpu.hw.doctor import Report, Status
from ccgpu.hw.pci import PCIDevice
from ccgpu.hw.platform import PlatformFacts

SCHEMA_VERSION = 1

MODULES_OF_INTEREST = (
    "kvm_amd", "kvm_intel", "vfio", "vfio_pci", "vfio_iommu_type1", "iommufd", "nvgrace_gpu_vfio_pci", "nvidia",
    "nouveau",
)


def host_json(f: PlatformFacts) -> dict[str, Any]:
    return {
        "cpuVendor": f.cpu_vendor,
        "hypervisor": f.hypervisor,
        "tee": f.tee,
        "sev": f.sev,
        "sevEs": f.sev_es,
        "sevSnp": f.sev_snp,
        "tdx": f.tdx,
        "sevAsids": f.sev_asids,
        "sevEsAsids": f.sev_es_asids,
        "tdxKeys": f.tdx_keys,
        "iommuGroups": len(f.iommu_groups),
        "iommuUnits": list(f.iommu_units),
        "iommufd": f.iommufd,
        "vfioContainer": f.vfio_container,
        "kernelRelease": f.kernel_release,
        "cmdline": list(f.cmdline),
        "lockdown": f.lockdown,
        "modules": {m: f.module_state(m) for m in MODULES_OF_INTEREST},
    }


def device_json(d: PCIDevice, facts: PlatformFacts) -> dict[str, Any]:
    model = d.model
    return {
        "bdf": str(d.bdf),
        "kind": model.kind.value if model else "other",
        "vendorId": f"0x{d.vendor:04x}",
        "deviceId": f"0x{d.device:04x}",
        "subsystemVendorId": f"0x{d.subsystem_vendor:04x}",
        "subsystemDeviceId": f"0x{d.subsystem_device:04x}",
        "classCode": f"0x{d.class_code:06x}",
        "revision": f"0x{d.revision:02x}",
        "model": model.name if model else None,
        "arch": model.arch.value if model else None,
        "knownModel": model.known if model else False,
        "ccCapable": model.cc_capable if model else False,
        "ppcieCapable": model.ppcie_capable if model else False,
        "resourceName": f"nvidia.com/{model.resource_name}" if model else None,
        "driver": d.driver,
        "driverOverride": d.driver_override,
        "vfioDriver": facts.vfio_driver_for(d.modalias),
        "iommuGroup": d.iommu_group,
        "numaNode": d.numa_node,
        "vfioDev": d.vfio_dev,
        "physfn": str(d.physfn) if d.physfn else None,
        "consumers": [str(c) for c in d.consumers],
    }


def report_json(report: Report) -> dict[str, Any]:
    """The stable `--json` object (README.md, "ccgpu doctor"): fields are only added within a schemaVersion."""
    return {
        "schemaVersion": SCHEMA_VERSION,
        "ready": report.ready,
        "workload": report.workload.value,
        "root": report.root,
        "host": host_json(report.facts),
        "checks": [
            {"id": c.id, "status": c.status.value, "finding": c.finding, "remedy": c.remedy} for c in report.checks
        ],
        "devices": [device_json(d, report.facts) for d in report.devices],
    }


_STYLE = {Status.PASS: ("green", "PASS"), Status.WARN: ("yellow", "WARN"), Status.FAIL: ("bold red", "FAIL")}


def render_table(report: Report, console) -> None:
    """A rich table of the checks, then a one-line verdict."""
    from rich.table import Table
    from rich.text import Text

    # Cells are Text, never markup: findings hold "[H100 SXM5 80GB]" and BDFs like "0000:ab:00.0", which rich
    # would otherwise read as a style tag and an :ab: emoji code.
    table = Table(title=Text(f"ccgpu doctor: {report.root} for {report.workload.value}"), show_lines=True)
    for col in ("Status", "Check", "Finding", "Remedy"):
        table.add_column(col, overflow="fold")
    for c in report.checks:
        style, word = _STYLE[c.status]
        table.add_row(Text(word, style=style), Text(c.id), Text(c.finding), Text(c.remedy or ""))
    console.print(table)
    if report.ready:
        verdict = Text.assemble(("READY", "green"), f": this host can run {report.workload.value} GPU pods.")
    else:
        ids = ", ".join(c.id for c in report.failed)
        verdict = Text.assemble(("NOT READY", "bold red"), f": {len(report.failed)} check(s) failed: {ids}.")
    console.print(verdict)

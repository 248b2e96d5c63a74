"""What a simulated host looks like at boot: its initial state and the files that never change afterwards.

Pure functions of a `HostProfile` (and the device captures): `build_state` gives the `HostState` with every
device on the profile's driver, `static_files` the CPU/TEE/kernel files (cpuinfo, cmdline, module parameters,
modules.alias, misc cgroup capacity, /dev/vfio/vfio, /dev/iommu).
"""

from __future__ import annotations

from pathlib import Path

from ccgpu import labels
from ccgpu.hw.pci import BDF
from ccgpu.sim import kernel
from ccgpu.sim.kernel import KernelError
from ccgpu.sim.profiles import DeviceProfile, HostProfile, ProfileError, device_profiles, fixtures_dir
from ccgpu.sim.state import DeviceState, HostState, PciDriver

NVIDIA = 0x10DE
_GRACE_VFIO_IDS = (0x2342, 0x2345, 0x2348)


class SimHostError(ValueError):
    """A request the simulated host cannot carry out (bad profile, unknown device, not-empty directory...)."""


# Id tables of the non-NVIDIA drivers a profile's devices may need (pci_device_id: vendor, device, class, mask).
_OTHER_DRIVERS = {
    "snd_hda_intel": [[None, None, 0x040300, 0xFFFF00, False]],
    "mlx5_core": [[0x15B3, None, 0, 0, False]],
}


def _pci_drivers(profile: HostProfile, others: set[str]) -> dict[str, PciDriver]:
    """The PCI drivers loaded at boot: nvidia (unless the profile says not), what `others` need, the VFIO ones."""
    drivers = {}
    if profile.nvidia_loaded:
        drivers["nvidia"] = PciDriver(
            "nvidia",
            "nvidia",
            ids=[[NVIDIA, None, 0x030000, 0xFF0000, False], [NVIDIA, None, 0x068000, 0xFFFFFF, False]],
        )
    for name in sorted(others):
        drivers[name] = PciDriver(name, name, ids=_OTHER_DRIVERS[name])
    if profile.grace:
        drivers["nvgrace_gpu_vfio_pci"] = PciDriver(
            "nvgrace_gpu_vfio_pci",
            "nvgrace_gpu_vfio_pci",
            ids=[[NVIDIA, d, 0, 0, True] for d in _GRACE_VFIO_IDS],
            vfio=True,
            needs_iommu=True,
        )
    drivers["vfio-pci"] = PciDriver(
        "vfio-pci", "vfio_pci", ids=[[None, None, 0, 0, True]], vfio=True, needs_iommu=True
    )
    return drivers


def _modules(profile: HostProfile, drivers: dict[str, PciDriver]) -> list[str]:
    mods = [d.module for d in drivers.values()]
    mods += ["vfio_pci_core", "vfio_iommu_type1", "vfio"]
    if profile.iommufd:
        mods.append("iommufd")
    if profile.cpu_vendor == "amd":
        mods += ["kvm_amd", "ccp", "kvm"]
    elif profile.cpu_vendor == "intel":
        mods += ["kvm_intel", "kvm"]
    return mods


def _cpu_lists(profile: HostProfile, numa: int) -> tuple[str, str]:
    """(local_cpus mask, local_cpulist) of a NUMA node; -1 means every CPU."""
    per = profile.cpus // max(profile.numa_nodes, 1)
    first, last = (0, profile.cpus - 1) if numa < 0 else (numa * per, numa * per + per - 1)
    mask = sum(1 << c for c in range(first, last + 1))
    digits = f"{mask:0{(profile.cpus + 3) // 4}x}"  # the kernel prints nr_cpu_ids bits, 32 per comma group
    groups = [digits[max(i - 8, 0) : i] for i in range(len(digits), 0, -8)]
    return ",".join(reversed(groups)), f"{first}-{last}"


def _device_state(
    profile: HostProfile, dp: DeviceProfile, bdf: BDF, index: int, group: int | None, numa: int
) -> DeviceState:
    attrs = dict(dp.attrs)
    base = 0x100000000000 + index * dp.window
    lines = []
    for bar in dp.bars:
        if bar.size:
            lines.append(
                f"0x{base + bar.offset:016x} 0x{base + bar.offset + bar.size - 1:016x} 0x{bar.flags:016x}"
            )
        else:
            lines.append(f"0x{0:016x} 0x{0:016x} 0x{bar.flags:016x}")
    attrs["resource"] = "\n".join(lines) + "\n"
    attrs["irq"] = f"{dp.irq + index}\n"
    attrs["serial_number"] = f"00-00-00-00-00-00-{(index + 1) >> 8:02x}-{(index + 1) & 0xFF:02x}\n"
    attrs["numa_node"] = f"{numa}\n"
    cpus, cpulist = _cpu_lists(profile, numa)
    attrs["local_cpus"], attrs["local_cpulist"] = cpus + "\n", cpulist + "\n"
    model = dp.model
    dev = DeviceState(
        bdf=str(bdf),
        kind=dp.kind,
        profile=dp.name,
        devdir=f"sys/devices/pci{bdf.domain:04x}:{bdf.bus:02x}/{bdf}",
        vendor=dp.vendor,
        device=dp.device,
        subsystem_vendor=dp.subsystem_vendor,
        subsystem_device=dp.subsystem_device,
        class_code=dp.class_code,
        attrs=attrs,
        modes=dict(dp.modes),
        config_hex=dp.config.hex(),
        iommu_group=group if profile.iommu else None,
        numa_node=numa,
        cc_capable=dp.kind == "gpu" and model.cc_capable,
        ppcie_capable=dp.kind in ("gpu", "nvswitch") and model.ppcie_capable,
        reset_method=attrs.get("reset_method", "flr\n").strip(),
        reset_ms=profile.reset_ms,
        default_driver=dp.default_driver,
    )
    if dev.cc_capable:
        dev.cc_current = dev.cc_pending = profile.cc_mode
    if dev.ppcie_capable:  # HostProfile refuses CC and PPCIe both on
        dev.ppcie_current = dev.ppcie_pending = profile.ppcie_mode
    return dev


def build_state(profile: HostProfile, fixtures: Path | None = None) -> HostState:
    """The initial state of a host built from `profile` (pure apart from reading the device captures)."""
    profiles = device_profiles(str(fixtures or fixtures_dir()))
    devices: dict[str, DeviceState] = {}
    index = 0
    for slot in profile.slots:
        if slot.profile not in profiles:
            raise ProfileError(
                f"slot {slot.bdf}: unknown device profile {slot.profile!r}; known: {', '.join(profiles)}"
            )
        dp = profiles[slot.profile]
        bdf = BDF.parse(slot.bdf)
        numa = slot.numa_node if profile.numa_nodes > 1 else -1
        devices[str(bdf)] = _device_state(profile, dp, bdf, index, slot.iommu_group, numa)
        index += 1
        if dp.audio is not None:
            aux = BDF(bdf.domain, bdf.bus, bdf.device, 1)
            devices[str(aux)] = _device_state(profile, dp.audio, aux, index, slot.iommu_group, numa)
            devices[str(aux)].supplier = str(bdf)
            index += 1
    others = {d.default_driver for d in devices.values() if d.kind in ("audio", "other")}
    drivers = _pci_drivers(profile, others)
    state = HostState(
        profile=profile.name,
        kernel_release=profile.kernel_release,
        cpu_vendor=profile.cpu_vendor,
        tee=profile.tee,
        iommu=profile.iommu,
        iommufd=profile.iommufd and profile.iommu,
        devices=devices,
        drivers=drivers,
        modules=_modules(profile, drivers),
    )
    _initial_binding(state, profile)
    return state


def _initial_binding(state: HostState, profile: HostProfile) -> None:
    """GPUs and NVSwitches on the profile's driver (their audio functions follow them onto VFIO, else stay on
    their own driver); other vendors' devices on their own driver."""
    want = profile.gpu_driver
    if want is not None and want not in state.drivers:
        raise SimHostError(
            f"profile {profile.name}: GPUs cannot start on {want!r}: that driver is not loaded "
            f"(loaded: {', '.join(state.drivers)})"
        )
    for dev in state.devices.values():
        target: str | None = dev.default_driver
        if dev.kind in ("gpu", "nvswitch"):
            target = want
        elif dev.kind == "audio":
            target = None if want is None else want if state.drivers[want].vfio else dev.default_driver
        if target is None:
            continue
        drv = state.drivers[target]
        if drv.vfio:
            dev.driver_override = target  # as vfio-manager leaves it
        try:
            kernel.probe(state, drv, dev)
        except KernelError as e:
            raise SimHostError(
                f"profile {profile.name}: cannot start {dev.bdf} on {target}: {e.reason}"
            ) from None


def _cpuinfo(profile: HostProfile) -> str:
    common = (
        "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht"
    )
    if profile.cpu_vendor == "arm":
        return "".join(
            f"processor\t: {c}\nBogoMIPS\t: 2000.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"
            f"CPU implementer\t: 0x41\nCPU part\t: 0xd4f\n\n"
            for c in range(profile.cpus)
        )
    if profile.cpu_vendor == "amd":
        vendor, model = "AuthenticAMD", "AMD EPYC 9554 64-Core Processor"
        flags = common + " syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc svm"
        if profile.tee == "snp":
            flags += " sme sev sev_es sev_snp"
    else:
        vendor, model = "GenuineIntel", "Intel(R) Xeon(R) Platinum 8580"
        flags = common + " syscall nx pdpe1gb rdtscp lm constant_tsc vmx tme"
        if profile.tee == "tdx":
            flags += " tdx_host_platform"
    return "".join(
        f"processor\t: {c}\nvendor_id\t: {vendor}\nmodel name\t: {model}\nphysical id\t: "
        f"{c * profile.numa_nodes // profile.cpus}\nflags\t\t: {flags}\n\n"
        for c in range(profile.cpus)
    )


def _cmdline(profile: HostProfile) -> str:
    args = [f"BOOT_IMAGE=/boot/vmlinuz-{profile.kernel_release}", "root=/dev/mapper/vg0-root", "ro"]
    if profile.iommu:
        args += {"amd": ["amd_iommu=on"], "intel": ["intel_iommu=on"], "arm": []}[profile.cpu_vendor] + [
            "iommu=pt"
        ]
    if profile.tee == "snp":
        args += ["mem_encrypt=on", "kvm_amd.sev=1"]
    elif profile.tee == "tdx":
        args += ["kvm_intel.tdx=1", "nohibernate"]
    return " ".join(args + list(profile.extra_cmdline)) + "\n"


def _modules_alias(profile: HostProfile) -> str:
    lines = [
        "# Aliases extracted from modules themselves.",
        "alias pci:v000010DEd*sv*sd*bc03sc00i00* nvidia",
        "alias pci:v000010DEd*sv*sd*bc03sc02i00* nvidia",
        "alias pci:v000010DEd*sv*sd*bc06sc80i00* nvidia",
        "alias pci:v*d*sv*sd*bc04sc03i00* snd_hda_intel",
        "alias pci:v000015B3d00001021sv*sd*bc*sc*i* mlx5_core",
        "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci",
    ]
    if profile.grace:
        lines += [
            f"alias vfio_pci:v000010DEd0000{d:04X}sv*sd*bc*sc*i* nvgrace_gpu_vfio_pci"
            for d in _GRACE_VFIO_IDS
        ]
    return "\n".join(lines) + "\n"


def _containerd_config(version: int) -> str:
    """A node's containerd main config as its installer writes it (the CRI plugin's id moved in version 3)."""
    cri = '"io.containerd.grpc.v1.cri"' if version == 2 else '"io.containerd.cri.v1.runtime"'
    return (f"version = {version}\n\n[plugins.{cri}.containerd]\n  default_runtime_name = \"runc\"\n"
            f"[plugins.{cri}.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n")


def static_files(profile: HostProfile) -> dict[str, tuple[str, int]]:
    """Root-relative path -> (content, mode) of the files that never change after boot."""
    files: dict[str, tuple[str, int]] = {
        "proc/cpuinfo": (_cpuinfo(profile), 0o444),
        "proc/cmdline": (_cmdline(profile), 0o444),
        "proc/sys/kernel/osrelease": (profile.kernel_release + "\n", 0o444),
        f"lib/modules/{profile.kernel_release}/modules.alias": (_modules_alias(profile), 0o644),
        f"lib/modules/{profile.kernel_release}/modules.builtin": ("kernel/drivers/pci/pci-stub.ko\n", 0o644),
        "sys/bus/pci/drivers_probe": ("", 0o200),
        "sys/bus/pci/rescan": ("", 0o200),
        "sys/bus/pci/drivers_autoprobe": ("1\n", 0o644),
        "dev/vfio/vfio": ("", 0o666),
        "etc/containerd/config.toml": (_containerd_config(profile.containerd_config_version), 0o644),
        # what kata-deploy installs: the shim and one configuration per Kata NVIDIA runtime class
        "opt/kata/bin/containerd-shim-kata-v2": ("#!/bin/sh\nexit 1  # simulated host: no real shim\n", 0o755),
        **{f"opt/kata/share/defaults/kata-containers/configuration-{rc.removeprefix('kata-')}.toml":
           ("# simulated Kata configuration\n", 0o644) for rc in labels.RUNTIME_CLASSES},
    }
    snp = profile.tee == "snp"
    if profile.cpu_vendor == "amd":
        for p in ("sev", "sev_es", "sev_snp"):
            files[f"sys/module/kvm_amd/parameters/{p}"] = ("Y\n" if snp else "N\n", 0o444)
        files["sys/fs/cgroup/misc.capacity"] = ("sev 410\nsev_es 99\n" if snp else "sev 0\nsev_es 0\n", 0o444)
    elif profile.cpu_vendor == "intel":
        files["sys/module/kvm_intel/parameters/tdx"] = ("Y\n" if profile.tee == "tdx" else "N\n", 0o444)
        # MISC_CG_RES_TDX: the TDX private key ids KVM can hand to TDs (Linux 6.16+ TDX host support)
        files["sys/fs/cgroup/misc.capacity"] = ("tdx 63\n" if profile.tee == "tdx" else "", 0o444)
    if profile.iommu:
        unit = {"amd": "ivhd0", "intel": "dmar0", "arm": "smmu3.0x0000000016000000"}[profile.cpu_vendor]
        files[f"sys/class/iommu/{unit}/uevent"] = ("", 0o644)
    if profile.iommufd and profile.iommu:
        files["dev/iommu"] = ("", 0o666)
    return files

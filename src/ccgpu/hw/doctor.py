"""`ccgpu doctor`: is this host ready for confidential GPU pods, and if not, exactly what to fix.

`run_checks(facts, devices, workload)` is pure: it turns platform facts and the NVIDIA PCI devices into a
`Report` of checks (`pass`/`warn`/`fail`, a finding, and a remedy naming the exact fix). `diagnose(root)` is
the thin collector around it; `doctor_output` presents it (table, JSON). The host is ready when no check
fails; warnings name things worth fixing that do not stop a confidential pod.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from ccgpu import labels
from ccgpu.hw import catalog
from ccgpu.hw.pci import PCIDevice, SysfsFormatError, is_vfio_driver, scan_devices
from ccgpu.hw.platform import PlatformFacts, module_key, read_platform
from ccgpu.hw.sysfs import PathEscapeError, Sysfs


class Status(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


class Workload(StrEnum):
    """What the node is checked for (the values of nvidia.com/gpu.workload.config that doctor knows)."""

    VM_PASSTHROUGH = labels.WorkloadConfig.VM_PASSTHROUGH.value
    CONTAINER = labels.WorkloadConfig.CONTAINER.value

    @classmethod
    def parse(cls, text: str) -> Workload:
        try:
            return cls(text)
        except ValueError:
            accepted = ", ".join(w.value for w in cls)
            raise ValueError(f"unknown workload {text!r}; accepted: {accepted}") from None


@dataclass(frozen=True)
class Check:
    id: str  # stable identifier, e.g. "cpu-tee", "gpu/0000:1a:00.0"
    status: Status
    finding: str  # what the host shows
    remedy: str | None = None  # the exact fix; None when nothing is to be done


@dataclass(frozen=True)
class Report:
    workload: Workload
    checks: tuple[Check, ...]
    facts: PlatformFacts
    devices: tuple[PCIDevice, ...] = ()
    root: str = "/"

    @property
    def ready(self) -> bool:
        return all(c.status is not Status.FAIL for c in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status is Status.FAIL)


# --- the checks (pure) --------------------------------------------------------------------------------------

_NOUVEAU_REMEDY = (
    "Blacklist nouveau: add modprobe.blacklist=nouveau to GRUB_CMDLINE_LINUX_DEFAULT (or write 'blacklist nouveau' "
    "and 'options nouveau modeset=0' to /etc/modprobe.d/blacklist-nouveau.conf), run update-initramfs -u and "
    "update-grub, then reboot."
)


def _is_amd(f: PlatformFacts) -> bool:
    return f.cpu_vendor == "AuthenticAMD" or f.sev_snp is not None


def _is_intel(f: PlatformFacts) -> bool:
    return f.cpu_vendor == "GenuineIntel" or f.tdx is not None


def check_pci_scan(errors: Sequence[str]) -> Check:
    if errors:
        return Check(
            "pci-devices", Status.FAIL,
            f"{len(errors)} entries of sys/bus/pci/devices could not be read: " + "; ".join(errors),
            "These files do not hold what the kernel writes there. On a live host this is a kernel or "
            "firmware fault (check dmesg); with --root, point it at a complete host mount or capture.",
        )
    return Check("pci-devices", Status.PASS, "every entry of sys/bus/pci/devices read cleanly")


def check_bare_metal(f: PlatformFacts) -> Check:
    if f.hypervisor:
        return Check(
            "bare-metal", Status.FAIL,
            "this kernel runs under a hypervisor (cpuinfo flag 'hypervisor'); confidential GPU passthrough "
            "needs the host's own kernel to start the Kata confidential VMs (gpu-operator#650)",
            "Run vm-passthrough nodes on bare metal. Inside a VM, label the node "
            "nvidia.com/gpu.workload.config=container instead.",
        )
    return Check("bare-metal", Status.PASS, "the kernel runs on bare metal (no 'hypervisor' cpuinfo flag)")


def check_cpu_tee(f: PlatformFacts) -> Check:
    if f.sev_snp:
        return Check("cpu-tee", Status.PASS, "AMD SEV-SNP is enabled (kvm_amd parameter sev_snp=Y)")
    if f.tdx:
        return Check("cpu-tee", Status.PASS, "Intel TDX is enabled (kvm_intel parameter tdx=Y)")
    if _is_amd(f):
        if f.sev_snp is None:
            return Check(
                "cpu-tee", Status.FAIL,
                "kvm_amd is not loaded (sys/module/kvm_amd/parameters/sev_snp is absent), so SEV-SNP is not usable",
                "Load it with SEV-SNP on: modprobe kvm_amd sev_snp=1 (persist with 'options kvm_amd sev_snp=1' in "
                "/etc/modprobe.d/kvm-amd.conf); AMD-V (SVM) must be enabled in BIOS.",
            )
        if "sev_snp" not in f.cpu_flags:
            return Check(
                "cpu-tee", Status.FAIL,
                "SEV-SNP is off: kvm_amd sev_snp=N and the CPU does not report the sev_snp flag",
                "Enable in BIOS/UEFI: SMEE (Secure Memory Encryption), SEV-SNP support, SNP memory coverage (RMP "
                "table) and an 'SEV-ES ASID Space Limit' above 1; boot a host kernel with SEV-SNP host support "
                "(Linux 6.11 or newer) and kvm_amd.sev_snp=1.",
            )
        return Check(
            "cpu-tee", Status.FAIL,
            "the CPU supports SEV-SNP (cpuinfo flag sev_snp) but kvm_amd runs with sev_snp=N",
            "Reload kvm_amd with SNP on: modprobe -r kvm_amd && modprobe kvm_amd sev_snp=1 (persist with 'options "
            "kvm_amd sev_snp=1' in /etc/modprobe.d/kvm-amd.conf); if it stays N, dmesg names the SNP firmware "
            "initialisation error (update the SEV firmware / BIOS).",
        )
    if _is_intel(f):
        why = "kvm_intel has no tdx parameter (not loaded, or a kernel without TDX host support)" if f.tdx is None \
            else "kvm_intel parameter tdx=N"
        return Check(
            "cpu-tee", Status.FAIL, f"Intel TDX is off: {why}",
            "Enable in BIOS: Memory Encryption (TME), TME-MT, Trust Domain Extension (TDX), the SEAM loader and a "
            "non-zero TME-MT/TDX key split; boot a host kernel with TDX host support (Linux 6.16 or newer) and "
            "load kvm_intel with tdx=1 ('options kvm_intel tdx=1' in /etc/modprobe.d/kvm-intel.conf).",
        )
    return Check(
        "cpu-tee", Status.FAIL,
        "no CPU TEE found: neither sys/module/kvm_amd/parameters/sev_snp nor kvm_intel/parameters/tdx is Y",
        "Use a host with AMD SEV-SNP (EPYC Milan, Genoa, Turin) or Intel TDX (Xeon Emerald Rapids, Granite "
        "Rapids) and enable it in BIOS and the kernel (kvm_amd.sev_snp=1 or kvm_intel.tdx=1).",
    )


def check_tee_capacity(f: PlatformFacts, gpu_count: int) -> Check | None:
    if f.tee == "sev-snp":
        count, what, remedy = f.sev_es_asids, "SEV-ES/SNP ASIDs (misc.capacity sev_es)", (
            "Raise 'SEV-ES ASID Space Limit' (AMD CBS > CPU Common Options > SEV) in BIOS; SNP guests use the "
            "SEV-ES ASID range."
        )
    elif f.tee == "tdx":
        count, what, remedy = f.tdx_keys, "TDX private keys (misc.capacity tdx)", (
            "Raise the TME-MT/TDX key split in BIOS so TDX gets private keys."
        )
    else:
        return None
    if count is None:
        return Check(
            "tee-capacity", Status.WARN, f"the number of {what} is unknown: sys/fs/cgroup/misc.capacity does "
            "not list it",
            "Mount cgroup v2 at /sys/fs/cgroup (systemd does by default) so the misc controller reports the count.",
        )
    if count == 0:
        return Check("tee-capacity", Status.FAIL, f"0 {what}: no confidential VM can start", remedy)
    if count < gpu_count:
        return Check(
            "tee-capacity", Status.WARN,
            f"{count} {what} for {gpu_count} GPUs: not every GPU can be given to its own confidential VM", remedy,
        )
    return Check("tee-capacity", Status.PASS, f"{count} {what}: room for {count} confidential VMs")


def _iommu_remedy(f: PlatformFacts) -> str:
    if _is_intel(f) and not _is_amd(f):
        return ("Enable VT-d in BIOS; add intel_iommu=on iommu=pt to GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, "
                "run update-grub and reboot.")
    return ("Enable IOMMU (AMD-Vi) and ACS in BIOS (ACS may sit under AER/NBIO settings); add amd_iommu=on iommu=pt "
            "to GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, run update-grub and reboot.")


def _iommu_off_words(f: PlatformFacts) -> list[str]:
    out = []
    for key in ("amd_iommu", "intel_iommu", "iommu"):
        v = f.cmdline_value(key)
        if v is not None and "off" in v.split(","):
            out.append(f"{key}={v}")
    return out


def check_iommu(f: PlatformFacts) -> Check:
    if f.iommu_groups:
        units = f" ({', '.join(f.iommu_units)})" if f.iommu_units else ""
        return Check("iommu", Status.PASS, f"IOMMU is on: {len(f.iommu_groups)} IOMMU groups{units}")
    off = _iommu_off_words(f)
    finding = "IOMMU is off: sys/kernel/iommu_groups is empty, so no device can be passed to a VM"
    remedy = _iommu_remedy(f)
    if off:
        finding += f"; the kernel command line turns it off ({' '.join(off)})"
        remedy = f"Remove {' '.join(off)} from the kernel command line. " + remedy
    return Check("iommu", Status.FAIL, finding, remedy)


def check_cmdline(f: PlatformFacts) -> Check:
    fails, warns, remedies = [], [], []
    off = _iommu_off_words(f)
    if off:
        fails.append(f"turns the IOMMU off ({' '.join(off)})")
        remedies.append(f"remove {' '.join(off)}")
    if f.cmdline_value("iommu") != "pt":
        warns.append("lacks iommu=pt")
        remedies.append("add iommu=pt (host devices skip DMA translation; passthrough devices are unaffected)")
    if _is_intel(f) and not _is_amd(f) and f.cmdline_value("intel_iommu") != "on" and not off:
        warns.append("lacks intel_iommu=on")
        remedies.append("add intel_iommu=on (many kernels leave VT-d off without it)")
    blacklisted = "nouveau" in f.cmdline_list("modprobe.blacklist") or "nouveau" in f.cmdline_list(
        "rd.driver.blacklist") or f.cmdline_value("nouveau.modeset") == "0"
    if not blacklisted:
        warns.append("does not blacklist nouveau")
        remedies.append("add modprobe.blacklist=nouveau")
    if not f.cmdline:
        return Check("kernel-cmdline", Status.WARN, "proc/cmdline is absent; the kernel command line is unknown",
                     "Run doctor on the host itself or give --root a mount that includes /proc.")
    if not fails and not warns:
        return Check("kernel-cmdline", Status.PASS, "the kernel command line sets iommu=pt and blacklists nouveau")
    status = Status.FAIL if fails else Status.WARN
    return Check(
        "kernel-cmdline", status, "the kernel command line " + ", ".join(fails + warns),
        "In /etc/default/grub GRUB_CMDLINE_LINUX_DEFAULT: " + "; ".join(remedies) + "; then update-grub and reboot.",
    )


def check_vfio_modules(f: PlatformFacts, gpus: Sequence[PCIDevice]) -> Check:
    needed = sorted({f.vfio_driver_for(g.modalias) for g in gpus} | {"vfio-pci"})
    states = {m: f.module_state(m) for m in needed}
    backend = ", ".join(b for b, on in (("iommufd /dev/iommu", f.iommufd), ("legacy /dev/vfio/vfio",
                                                                          f.vfio_container)) if on)
    summary = ", ".join(f"{m} {s}" for m, s in states.items()) + (f"; VFIO backend: {backend}" if backend else "")
    absent = [m for m, s in states.items() if s == "absent"]
    if absent and f.modules_alias_found:
        return Check(
            "vfio-modules", Status.FAIL, f"the kernel has no {', '.join(absent)} module ({summary})",
            f"Install the kernel's extra modules (e.g. linux-modules-extra-{f.kernel_release or '$(uname -r)'}) or "
            f"build the kernel with CONFIG_VFIO_PCI; then modprobe {' '.join(absent)}.",
        )
    if absent:
        return Check(
            "vfio-modules", Status.WARN,
            f"cannot tell whether {', '.join(absent)} exists: lib/modules/<release>/modules.alias was not found "
            f"({summary})",
            "Run doctor on the host itself, or give --root a mount that includes /lib/modules and /proc.",
        )
    unloaded = [m for m, s in states.items() if s == "available"]
    if unloaded:
        return Check(
            "vfio-modules", Status.WARN, f"{', '.join(unloaded)} is available but not loaded ({summary})",
            f"ccgpu's vfio-manager loads it when it binds the GPUs; to load it at boot: modprobe {unloaded[0]} and "
            f"echo {unloaded[0]} > /etc/modules-load.d/{unloaded[0]}.conf.",
        )
    if not backend:
        return Check(
            "vfio-modules", Status.WARN, f"neither /dev/vfio/vfio nor /dev/iommu exists ({summary})",
            "modprobe vfio_iommu_type1 (legacy VFIO) or iommufd, so VFIO devices can be opened.",
        )
    return Check("vfio-modules", Status.PASS, summary)


def check_nouveau(f: PlatformFacts, devices: Sequence[PCIDevice]) -> Check:
    held = [str(d.bdf) for d in devices if d.driver == "nouveau"]
    if module_key("nouveau") in f.modules_loaded or held:
        extra = f" and holds {', '.join(held)}" if held else ""
        return Check("nouveau", Status.FAIL, f"the nouveau driver is loaded{extra}", _NOUVEAU_REMEDY)
    return Check("nouveau", Status.PASS, "nouveau is not loaded")


def _describe(d: PCIDevice, facts: PlatformFacts) -> str:
    m = d.model
    assert m is not None
    caps = ", ".join(x for x in ("CC capable" if m.cc_capable else "not CC capable",
                                 "PPCIe capable" if m.ppcie_capable else "") if x)
    group = f"IOMMU group {d.iommu_group}" if d.iommu_group is not None else "no IOMMU group"
    return (f"{m.name} (10de:{d.device:04x}), {m.arch.value}, {caps}; driver {d.driver or 'none'}; {group}; "
            f"resource nvidia.com/{m.resource_name}; vfio driver {facts.vfio_driver_for(d.modalias)}")


def check_gpu(d: PCIDevice, f: PlatformFacts, workload: Workload) -> Check:
    m = d.model
    assert m is not None
    cid = f"gpu/{d.bdf}"
    text = _describe(d, f)
    if workload is Workload.VM_PASSTHROUGH:
        if not m.cc_capable:
            return Check(
                cid, Status.FAIL, f"{text}: confidential computing needs a Hopper or newer GPU",
                "Use Hopper (H100, H200, GH200) or Blackwell (B200, RTX PRO 6000 Blackwell) GPUs for confidential "
                "pods, or label this node nvidia.com/gpu.workload.config=container.",
            )
        if d.iommu_group is None and f.iommu_groups:
            return Check(cid, Status.FAIL, f"{text}: the GPU has no IOMMU group although the IOMMU is on",
                         "Enable ACS for this slot in BIOS, or move the GPU to a slot behind an ACS-capable port.")
        group = f.iommu_groups.get(d.iommu_group, ()) if d.iommu_group is not None else ()
        own = {d.bdf, *d.consumers}
        strangers = [str(b) for b in group if b not in own and (b.domain, b.bus, b.device) != (
            d.bdf.domain, d.bdf.bus, d.bdf.device)]
        if strangers:
            return Check(
                cid, Status.WARN, f"{text}; its IOMMU group also holds {', '.join(strangers)}, which would go to "
                "the same VM", "Enable ACS in BIOS so each GPU gets its own IOMMU group, or move the GPU to "
                "another slot.",
            )
    if not m.known:
        return Check(cid, Status.WARN, f"{text}; the device id is not in ccgpu's catalog, so its model was "
                     "classified by id range", "Nothing blocks it; report the id so the catalog names it.")
    return Check(cid, Status.PASS, text)


def check_gpu_drivers(gpus: Sequence[PCIDevice], f: PlatformFacts, workload: Workload) -> Check:
    by_driver = Counter(d.driver or "none" for d in gpus)
    summary = ", ".join(f"{drv} ×{n}" for drv, n in sorted(by_driver.items()))
    if workload is Workload.CONTAINER:
        vfio = [str(d.bdf) for d in gpus if is_vfio_driver(d.driver)]
        if vfio:
            return Check(
                "gpu-drivers", Status.FAIL, f"vfio holds GPUs that container workloads need on nvidia: "
                f"{', '.join(vfio)} ({summary})",
                "Give them back to nvidia, for each GPU: echo <bdf> > /sys/bus/pci/devices/<bdf>/driver/unbind; "
                "echo > /sys/bus/pci/devices/<bdf>/driver_override; echo <bdf> > /sys/bus/pci/drivers_probe (the "
                "nvidia module must be loaded); or label the node "
                "nvidia.com/gpu.workload.config=vm-passthrough if it is meant for confidential pods.",
            )
        return Check("gpu-drivers", Status.PASS, f"GPU drivers: {summary}")
    on_nvidia = [d for d in gpus if d.driver == "nvidia"]
    if on_nvidia:
        bdfs = ", ".join(str(d.bdf) for d in on_nvidia)
        return Check(
            "gpu-drivers", Status.FAIL,
            f"the host nvidia driver holds {len(on_nvidia)} GPU(s) that vm-passthrough needs on vfio: {bdfs}",
            "Label the node nvidia.com/gpu.workload.config=vm-passthrough and let ccgpu's vfio-manager move them "
            "to vfio, or by hand for each GPU: echo <bdf> > /sys/bus/pci/drivers/nvidia/unbind; echo vfio-pci > "
            "/sys/bus/pci/devices/<bdf>/driver_override; echo <bdf> > /sys/bus/pci/drivers/vfio-pci/bind. "
            "Confidential nodes need no host NVIDIA driver: stop it loading (blacklist nvidia).",
        )
    other = [d for d in gpus if d.driver is not None and not is_vfio_driver(d.driver)]
    if other:
        listed = ", ".join(f"{d.bdf} ({d.driver})" for d in other)
        return Check(
            "gpu-drivers", Status.FAIL, f"GPUs held by a driver other than vfio: {listed}",
            "Unbind them (echo <bdf> > /sys/bus/pci/devices/<bdf>/driver/unbind) and let ccgpu's vfio-manager "
            "bind them to vfio.",
        )
    wrong_variant = [d for d in gpus if d.driver is not None and module_key(d.driver) != module_key(
        f.vfio_driver_for(d.modalias))]
    if wrong_variant:
        listed = ", ".join(f"{d.bdf} ({d.driver}, expected {f.vfio_driver_for(d.modalias)})" for d in wrong_variant)
        return Check("gpu-drivers", Status.WARN, f"GPUs on a generic vfio driver although the kernel has a "
                     f"variant for them: {listed}", "Let ccgpu's vfio-manager rebind them to the variant driver.")
    if module_key("nvidia") in f.modules_loaded:
        return Check("gpu-drivers", Status.WARN, f"no GPU is on nvidia ({summary}), but the nvidia module is "
                     "loaded", "Confidential nodes need no host NVIDIA driver: rmmod nvidia and blacklist it.")
    return Check("gpu-drivers", Status.PASS, f"no GPU is held by a host driver ({summary}); vfio-manager binds "
                 "unbound ones")


def check_gpus_present(gpus: Sequence[PCIDevice]) -> Check:
    if not gpus:
        return Check(
            "gpus", Status.FAIL, "no NVIDIA GPU (vendor 0x10de, class 0x0300/0x0302) under sys/bus/pci/devices",
            "Check that the GPUs are seated and powered and that 'lspci -d 10de:' lists them.",
        )
    models = Counter(d.model.name for d in gpus if d.model)
    return Check("gpus", Status.PASS, ", ".join(f"{n} × {name}" for name, n in sorted(models.items())))


def check_nvswitches(switches: Sequence[PCIDevice], workload: Workload) -> Check:
    if not switches:
        return Check("nvswitches", Status.PASS, "no NVSwitches: GPUs are passed through one per VM (multi-GPU "
                     "PPCIe needs an HGX board's NVSwitches)")
    models = Counter(d.model.name for d in switches if d.model)
    ppcie = all(d.model and d.model.ppcie_capable for d in switches)
    drivers = Counter(d.driver or "none" for d in switches)
    text = (", ".join(f"{n} × {name}" for name, n in sorted(models.items()))
            + (", PPCIe capable" if ppcie else ", not PPCIe capable")
            + "; drivers: " + ", ".join(f"{k} ×{v}" for k, v in sorted(drivers.items())))
    held = [d for d in switches if d.driver is not None and not is_vfio_driver(d.driver)]
    if workload is Workload.VM_PASSTHROUGH and held:
        return Check(
            "nvswitches", Status.WARN, text + "; multi-GPU (PPCIe) passthrough needs the NVSwitches on vfio too",
            "For PPCIe, turn on NVSwitch binding in the ClusterPolicy (vfioManager bind NVSwitches) so vfio-manager "
            "moves them to vfio-pci; single-GPU passthrough works as is.",
        )
    return Check("nvswitches", Status.PASS, text)


def check_lockdown(f: PlatformFacts) -> Check | None:
    if f.lockdown is None:
        return None
    if f.lockdown == "none":
        return Check("lockdown", Status.PASS, "kernel lockdown is off")
    return Check(
        "lockdown", Status.WARN,
        f"kernel lockdown is '{f.lockdown}': it forbids mapping a GPU's BAR0 from user space, which the CC-mode "
        "tool needs; GPUs then look broken with 'Operation not permitted' (gpu-admin-tools#12)",
        "Disable Secure Boot in firmware (or mokutil --disable-validation) on nodes whose GPUs' CC mode must change.",
    )


def run_checks(
    facts: PlatformFacts,
    devices: Iterable[PCIDevice],
    workload: Workload | str = Workload.VM_PASSTHROUGH,
    errors: Sequence[str] = (),
    root: str = "/",
) -> Report:
    """Every check for a node, in a fixed order. Pure: no I/O."""
    wl = workload if isinstance(workload, Workload) else Workload.parse(workload)
    devs = tuple(sorted((d for d in devices if d.model is not None), key=lambda d: d.bdf))
    gpus = [d for d in devs if d.is_gpu and not d.is_virtual_function]
    switches = [d for d in devs if d.is_nvswitch and not d.is_virtual_function]
    checks: list[Check | None] = [check_pci_scan(errors)]
    if wl is Workload.VM_PASSTHROUGH:
        checks += [
            check_bare_metal(facts),
            check_cpu_tee(facts),
            check_tee_capacity(facts, len(gpus)),
            check_iommu(facts),
            check_cmdline(facts),
            check_vfio_modules(facts, gpus),
        ]
    checks.append(check_nouveau(facts, devs))
    checks.append(check_gpus_present(gpus))
    checks += [check_gpu(g, facts, wl) for g in gpus]
    if gpus:
        checks.append(check_gpu_drivers(gpus, facts, wl))
    checks.append(check_nvswitches(switches, wl))
    if wl is Workload.VM_PASSTHROUGH:
        checks.append(check_lockdown(facts))
    return Report(wl, tuple(c for c in checks if c is not None), facts, devs, root)


# --- the thin collector -------------------------------------------------------------------------------------


@dataclass
class _Collected:
    facts: PlatformFacts = field(default_factory=PlatformFacts)
    devices: tuple[PCIDevice, ...] = ()
    errors: tuple[str, ...] = ()
    host_error: str | None = None


def _collect(fs: Sysfs) -> _Collected:
    c = _Collected()
    scan = scan_devices(fs, catalog.NVIDIA_VENDOR_ID)
    c.devices, c.errors = scan.devices, scan.errors
    try:
        c.facts = read_platform(fs)
    except (SysfsFormatError, PathEscapeError, OSError) as e:
        c.host_error = str(e)
    return c


def diagnose(root: str = "/", workload: Workload | str = Workload.VM_PASSTHROUGH) -> Report:
    """Read a host (or a host mount, a capture, a simulated host) and check it."""
    fs = Sysfs(root)
    c = _collect(fs)
    wl = workload if isinstance(workload, Workload) else Workload.parse(workload)
    if c.host_error is not None:
        bad = Check(
            "host-files", Status.FAIL, f"a host file is garbled: {c.host_error}",
            "That file does not hold what the kernel writes there. On a live host this is a kernel fault (check "
            "dmesg); with --root, re-take the capture.",
        )
        return Report(wl, (check_pci_scan(c.errors), bad), c.facts, c.devices, str(fs.root))
    return run_checks(c.facts, c.devices, wl, c.errors, str(fs.root))

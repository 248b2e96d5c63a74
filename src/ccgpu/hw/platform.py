"""Host confidential-computing facts, read the way NFD and NVIDIA's cc-manager read them.

`read_platform(fs)` collects a frozen `PlatformFacts`. Each reader tolerates an absent file (the fact is
unknown, `None`, or false) but refuses garbled content with `SysfsFormatError`: a host that prints `maybe`
for `sev_snp` is broken, and saying so beats guessing.

Sources: `sys/module/kvm_amd/parameters/{sev,sev_es,sev_snp}` and `kvm_intel/parameters/tdx` (what cc-manager
checks), `sys/fs/cgroup/misc.capacity` (SEV/SEV-ES ASIDs, TDX keys, as NFD reports them), `proc/cpuinfo`,
`sys/kernel/iommu_groups`, `sys/class/iommu`, `dev/iommu` (iommufd), `dev/vfio/vfio` (legacy container),
`proc/modules`, `lib/modules/<release>/{modules.builtin,modules.alias}`, `proc/cmdline`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ccgpu.hw.pci import BDF, SysfsFormatError, iommu_group_members, parse_iommu_group
from ccgpu.hw.sysfs import Sysfs

KVM_AMD_PARAMS = "sys/module/kvm_amd/parameters"
KVM_INTEL_PARAMS = "sys/module/kvm_intel/parameters"
MISC_CAPACITY = "sys/fs/cgroup/misc.capacity"
IOMMU_GROUPS = "sys/kernel/iommu_groups"
IOMMU_CLASS = "sys/class/iommu"
DEFAULT_VFIO_DRIVER = "vfio-pci"


@dataclass(frozen=True)
class VfioAlias:
    """One `alias vfio_pci:<pattern> <module>` line of modules.alias."""

    pattern: str  # glob over the modalias without its `pci:` prefix, e.g. `v000010DEd*sv*sd*bc03sc02i00*`
    module: str

    @property
    def wildcards(self) -> int:
        return self.pattern.count("*") + self.pattern.count("?")

    def matches(self, modalias: str) -> bool:
        body = modalias[4:] if modalias.startswith("pci:") else modalias
        return _glob_regex(self.pattern).fullmatch(body) is not None


@dataclass(frozen=True)
class PlatformFacts:
    """What the host offers confidential GPU pods. `None` means the host does not say (file absent)."""

    cpu_vendor: str | None = None  # "AuthenticAMD", "GenuineIntel"
    cpu_flags: frozenset[str] = frozenset()
    sev: bool | None = None  # kvm_amd parameters; None when kvm_amd is not loaded
    sev_es: bool | None = None
    sev_snp: bool | None = None
    tdx: bool | None = None  # kvm_intel parameter; None when kvm_intel is not loaded or predates TDX
    sev_asids: int | None = None  # misc cgroup capacity
    sev_es_asids: int | None = None  # SEV-ES and SEV-SNP guests share this range
    tdx_keys: int | None = None
    iommu_groups: dict[int, tuple[BDF, ...]] = field(default_factory=dict, hash=False)
    iommu_units: tuple[str, ...] = ()  # sys/class/iommu entries: ivhd0 (AMD-Vi), dmar0 (VT-d)
    iommufd: bool = False  # /dev/iommu exists
    vfio_container: bool = False  # /dev/vfio/vfio exists (legacy VFIO)
    kernel_release: str | None = None
    cmdline: tuple[str, ...] = ()
    modules_loaded: frozenset[str] = frozenset()  # names with `_`, as proc/modules prints them
    modules_builtin: frozenset[str] = frozenset()
    modules_alias_found: bool = False
    vfio_aliases: tuple[VfioAlias, ...] = ()
    lockdown: str | None = None  # "none", "integrity", "confidentiality"

    @property
    def hypervisor(self) -> bool:
        """True when this kernel itself runs in a VM (cpuinfo flag `hypervisor`)."""
        return "hypervisor" in self.cpu_flags

    @property
    def tee(self) -> str | None:
        """The CPU TEE that can host confidential VMs now: `sev-snp`, `tdx`, or None."""
        if self.sev_snp:
            return "sev-snp"
        if self.tdx:
            return "tdx"
        return None

    def module_present(self, name: str) -> bool:
        """Loaded or built in (`-` and `_` are the same to the kernel)."""
        n = module_key(name)
        return n in self.modules_loaded or n in self.modules_builtin

    def module_available(self, name: str) -> bool:
        """Present, or loadable: modules.alias names it."""
        n = module_key(name)
        return self.module_present(name) or any(module_key(a.module) == n for a in self.vfio_aliases)

    def module_state(self, name: str) -> str:
        """`loaded`, `builtin`, `available` (modules.alias names it) or `absent`."""
        key = module_key(name)
        if key in self.modules_loaded:
            return "loaded"
        if key in self.modules_builtin:
            return "builtin"
        if self.module_available(name):
            return "available"
        return "absent"

    def cmdline_value(self, key: str) -> str | None:
        """The last `key=value` on the kernel command line (the kernel honours the last), None if absent."""
        value = None
        for tok in self.cmdline:
            k, sep, v = tok.partition("=")
            if k == key:
                value = v if sep else ""
        return value

    def cmdline_list(self, key: str) -> tuple[str, ...]:
        """Every comma-separated value of a repeatable key such as `modprobe.blacklist`."""
        out: list[str] = []
        for tok in self.cmdline:
            k, sep, v = tok.partition("=")
            if k == key and sep:
                out.extend(x for x in v.split(",") if x)
        return tuple(out)

    def vfio_driver_for(self, modalias: str) -> str:
        return best_vfio_driver(modalias, self.vfio_aliases)


# --- pure parsers --------------------------------------------------------------------------------------


def module_key(name: str) -> str:
    return name.replace("-", "_")


def _glob_regex(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern))


def parse_bool_param(text: str) -> bool:
    """A kernel module boolean parameter: `Y`/`N` (bool) or `1`/`0` (int)."""
    if text in ("Y", "1"):
        return True
    if text in ("N", "0"):
        return False
    raise ValueError(f"{text!r} is not a module boolean (Y, N, 1 or 0)")


def parse_misc_capacity(text: str) -> dict[str, int]:
    """`misc.capacity` lines `<resource> <count>`."""
    out: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = re.fullmatch(r"([a-z_][a-z0-9_]*) (0|[1-9][0-9]{0,9})", line)
        if m is None:
            raise ValueError(f"line {n} {line!r} is not '<resource> <count>' (e.g. 'sev_es 99')")
        out[m[1]] = int(m[2])
    return out


def parse_cpuinfo(text: str) -> tuple[str | None, frozenset[str]]:
    """(vendor_id, flags) of the first CPU in /proc/cpuinfo."""
    vendor = None
    flags: frozenset[str] | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and vendor is None:
            vendor = value.strip() or None
        elif key == "flags" and flags is None:
            if not sep:
                raise ValueError(f"flags line {line!r} has no ':'")
            flags = frozenset(value.split())
        if vendor is not None and flags is not None:
            break
    return vendor, flags or frozenset()


def parse_proc_modules(text: str) -> frozenset[str]:
    """Module names from /proc/modules (`name size refcount deps state address`)."""
    names = set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) < 3 or not re.fullmatch(r"[A-Za-z0-9_]+", parts[0]) or not parts[1].isdigit():
            raise ValueError(f"line {n} {line!r} is not 'name size refcount deps state address'")
        names.add(parts[0])
    return frozenset(names)


def parse_modules_builtin(text: str) -> frozenset[str]:
    """Module names from modules.builtin (`kernel/drivers/vfio/pci/vfio-pci.ko` → `vfio_pci`)."""
    names = set()
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        m = re.fullmatch(r"(?:[^\s/]+/)*([A-Za-z0-9_-]+)\.ko", line)
        if m is None:
            raise ValueError(f"line {n} {line!r} is not a module path ending in .ko")
        names.add(module_key(m[1]))
    return frozenset(names)


def parse_vfio_aliases(modules_alias_text: str) -> tuple[VfioAlias, ...]:
    """The `alias vfio_pci:<pattern> <module>` lines of modules.alias (other lines are skipped)."""
    out = []
    for line in modules_alias_text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "alias" and parts[1].startswith("vfio_pci:"):
            out.append(VfioAlias(parts[1][len("vfio_pci:") :], parts[2]))
    return tuple(out)


def best_vfio_driver(modalias: str, aliases: tuple[VfioAlias, ...]) -> str:
    """The vfio variant driver for a device: the matching alias with the fewest wildcards, else `vfio-pci`.

    The same choice libvirt and NVIDIA's vfio-manage make (e.g. `nvgrace_gpu_vfio_pci` on Grace Hopper).
    Ties keep the first line, as modules.alias order does.
    """
    best: VfioAlias | None = None
    for a in aliases:
        if a.matches(modalias) and (best is None or a.wildcards < best.wildcards):
            best = a
    if best is None or module_key(best.module) == "vfio_pci":
        return DEFAULT_VFIO_DRIVER
    return best.module


def vfio_driver_for(modalias: str, modules_alias_text: str) -> str:
    """Most specific `alias vfio_pci:` match for a device's modalias in modules.alias text; `vfio-pci` if none."""
    return best_vfio_driver(modalias, parse_vfio_aliases(modules_alias_text))


def parse_cmdline(text: str) -> tuple[str, ...]:
    """Kernel command line words; double quotes group a value with spaces, as the kernel parses them."""
    return tuple(t.replace('"', "") for t in re.findall(r'(?:[^\s"]+|"[^"]*")+', text))


def parse_lockdown(text: str) -> str:
    """`none [integrity] confidentiality` → the bracketed mode."""
    m = re.search(r"\[(none|integrity|confidentiality)\]", text)
    if m is None:
        raise ValueError(f"{text!r} does not mark the active mode in brackets, e.g. '[none] integrity confidentiality'")
    return m[1]


_RELEASE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}")


def parse_release(text: str) -> str:
    """A kernel release (`6.17.0-5-generic`); it becomes a path component, so `/` and `..` are refused."""
    if not _RELEASE_RE.fullmatch(text) or ".." in text:
        raise ValueError(f"{text!r} is not a kernel release (letters, digits, '.', '-', '_', '+', '~'; no '..')")
    return text


# --- thin readers ----------------------------------------------------------------------------------------


def _read(fs: Sysfs, rel: str, parse):
    """Parse a file if it exists; None if absent; SysfsFormatError naming the file if garbled."""
    try:
        raw = fs.read_bytes(rel)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SysfsFormatError(f"{rel}: not UTF-8 text ({raw[:32]!r})") from None
    try:
        return parse(text.rstrip("\n"))
    except ValueError as e:
        raise SysfsFormatError(f"{rel}: {e}") from None


def _read_iommu_groups(fs: Sysfs) -> dict[int, tuple[BDF, ...]]:
    if not fs.is_dir(IOMMU_GROUPS):
        return {}
    groups: dict[int, tuple[BDF, ...]] = {}
    for name in fs.listdir(IOMMU_GROUPS):
        try:
            group = parse_iommu_group(name)
        except ValueError as e:
            raise SysfsFormatError(f"{IOMMU_GROUPS}: entry {e}") from None
        groups[group] = iommu_group_members(fs, group)
    return dict(sorted(groups.items()))


def read_platform(fs: Sysfs) -> PlatformFacts:
    """Collect every platform fact from a host root."""
    vendor, flags = _read(fs, "proc/cpuinfo", parse_cpuinfo) or (None, frozenset())
    misc = _read(fs, MISC_CAPACITY, parse_misc_capacity) or {}
    release = _read(fs, "proc/sys/kernel/osrelease", parse_release)
    modules_alias_text = None
    builtin: frozenset[str] = frozenset()
    if release is not None:
        modules_alias_text = _read(fs, f"lib/modules/{release}/modules.alias", lambda t: t)
        builtin = _read(fs, f"lib/modules/{release}/modules.builtin", parse_modules_builtin) or frozenset()
    return PlatformFacts(
        cpu_vendor=vendor,
        cpu_flags=flags,
        sev=_read(fs, f"{KVM_AMD_PARAMS}/sev", parse_bool_param),
        sev_es=_read(fs, f"{KVM_AMD_PARAMS}/sev_es", parse_bool_param),
        sev_snp=_read(fs, f"{KVM_AMD_PARAMS}/sev_snp", parse_bool_param),
        tdx=_read(fs, f"{KVM_INTEL_PARAMS}/tdx", parse_bool_param),
        sev_asids=misc.get("sev"),
        sev_es_asids=misc.get("sev_es"),
        tdx_keys=misc.get("tdx"),
        iommu_groups=_read_iommu_groups(fs),
        iommu_units=tuple(fs.listdir(IOMMU_CLASS)) if fs.is_dir(IOMMU_CLASS) else (),
        iommufd=fs.exists("dev/iommu"),
        vfio_container=fs.exists("dev/vfio/vfio"),
        kernel_release=release,
        cmdline=_read(fs, "proc/cmdline", parse_cmdline) or (),
        modules_loaded=_read(fs, "proc/modules", parse_proc_modules) or frozenset(),
        modules_builtin=builtin,
        modules_alias_found=modules_alias_text is not None,
        vfio_aliases=parse_vfio_aliases(modules_alias_text or ""),
        lockdown=_read(fs, "sys/kernel/security/lockdown", parse_lockdown),
    )

"""Device and host profiles for simulated hosts.

A `DeviceProfile` is the set of sysfs attribute files one PCI function shows. The H100 SXM5 and H200 profiles
are read from the real captures in shared/fixtures (their identifiers are replaced per simulated device: slot,
serial number, IRQ, BAR addresses, NUMA locality); the others are derived from the H100 capture and
`ccgpu.hw.catalog` facts (device id, class, model). Subsystem ids, BAR sizes and link speeds of derived
profiles are representative values, not captures.

A `HostProfile` says what a whole host looks like: its devices and slots, CPU TEE, IOMMU, VFIO flavour,
loaded modules and kernel. `HOST_PROFILES` holds the named ones (`8xh100-snp`, ...); `dataclasses.replace`
makes variants (no IOMMU, GPUs unbound, ...).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ccgpu.hw import catalog

# Attribute files the kernel does not let anyone read (write-only) that captures leave out.
_WRITE_ONLY = {"remove": 0o220, "rescan": 0o200, "reset": 0o200}
# Attributes whose value identifies one device (or its place in the host); replaced per simulated device.
REPLACED_ATTRS = frozenset(
    {"serial_number", "irq", "resource", "uevent", "numa_node", "local_cpus", "local_cpulist"}
)
_CAPTURE_BAR_BASE = 0x100000000000


class ProfileError(ValueError):
    """An unknown profile name or a capture that cannot be read."""


@dataclass(frozen=True)
class Bar:
    """One line of the `resource` file, as an offset from the device's window base (0,0,0 for unused)."""

    offset: int
    size: int
    flags: int


@dataclass(frozen=True)
class DeviceProfile:
    """One PCI function's attribute files, before per-device identifiers are filled in."""

    name: str
    kind: str  # "gpu", "nvswitch", "audio" (a GPU's HDMI function) or "other" (not NVIDIA's)
    vendor: int
    device: int
    subsystem_vendor: int
    subsystem_device: int
    class_code: int
    revision: int
    attrs: dict[str, str]  # file name -> content as the kernel shows it (trailing newline included)
    modes: dict[str, int]  # file name -> permission bits
    config: bytes  # the first 256 bytes of config space
    bars: tuple[Bar, ...]
    window: int  # address space one device's BARs occupy; devices are laid out one window apart
    irq: int
    default_driver: str  # the driver that matches this device by id (bound at boot when loaded)
    audio: DeviceProfile | None = None  # HDMI audio function at .1 (VGA-mode cards only)

    @property
    def model(self) -> catalog.Model:
        return catalog.lookup(self.device, self.class_code)

    @property
    def modalias(self) -> str:
        return modalias(
            self.vendor, self.device, self.subsystem_vendor, self.subsystem_device, self.class_code
        )


def modalias(vendor: int, device: int, sub_vendor: int, sub_device: int, class_code: int) -> str:
    """The kernel's `modalias` for a PCI function (drivers/pci/pci-sysfs.c format)."""
    return (
        f"pci:v{vendor:08X}d{device:08X}sv{sub_vendor:08X}sd{sub_device:08X}"
        f"bc{class_code >> 16:02X}sc{(class_code >> 8) & 0xFF:02X}i{class_code & 0xFF:02X}"
    )


def _parse_mode(perms: str) -> int:
    bits = 0
    for i, ch in enumerate(perms[1:10]):
        if ch != "-":
            bits |= 1 << (8 - i)
    return bits


def _parse_ls(text: str) -> dict[str, int]:
    """Regular files and their permission bits from an `ls -la` listing."""
    modes = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 9 and parts[0].startswith("-"):
            modes[parts[-1]] = _parse_mode(parts[0])
    return modes


def _parse_config_hex(text: str) -> bytes:
    """The first 256 bytes (the standard header) of a config-space hex dump.

    The dump writes `*` for repeated lines, without offsets, so only what comes before the first `*` is known
    exactly; a `*` after a line of zeros before offset 256 means zeros up to the extended space, anything else
    cannot be rebuilt.
    """
    out = bytearray()
    for line in text.splitlines():
        if line.strip() == "*":
            if any(out[-16:]):
                raise ProfileError(
                    "config.hex repeats a non-zero line in the standard header; cannot rebuild it"
                )
            break
        out += bytes(int(b, 16) for b in line.split())
        if len(out) >= 256:
            break
    return bytes(out[:256]).ljust(256, b"\0")


def _parse_resource(text: str, base: int) -> tuple[Bar, ...]:
    bars = []
    for line in text.splitlines():
        start, end, flags = (int(x, 16) for x in line.split())
        if start == 0 and end == 0:
            bars.append(Bar(0, 0, flags))
        else:
            bars.append(Bar(start - base, end - start + 1, flags))
    return tuple(bars)


def _hex(value: int, width: int = 4) -> str:
    return f"0x{value:0{width}x}\n"


def load_capture(capture_dir: Path, name: str) -> DeviceProfile:
    """A device profile from a real capture (shared/fixtures/<name>/sysfs)."""
    sysfs = Path(capture_dir) / "sysfs"
    if not sysfs.is_dir():
        raise ProfileError(f"{capture_dir} holds no sysfs/ capture")
    modes = _parse_ls((sysfs / "_ls.txt").read_text())
    attrs = {
        p.name: p.read_text()
        for p in sorted(sysfs.iterdir())
        if p.is_file() and not p.name.startswith("_") and p.name != "config.hex"
    }
    for fname, mode in _WRITE_ONLY.items():
        modes.setdefault(fname, mode)
    vendor, device = int(attrs["vendor"], 16), int(attrs["device"], 16)
    class_code = int(attrs["class"], 16)
    model = catalog.lookup(device, class_code)
    window = 1 << (2 * max(_parse_bar_sizes(attrs["resource"])) - 1).bit_length()
    return DeviceProfile(
        name=name,
        kind=model.kind.value,
        vendor=vendor,
        device=device,
        subsystem_vendor=int(attrs["subsystem_vendor"], 16),
        subsystem_device=int(attrs["subsystem_device"], 16),
        class_code=class_code,
        revision=int(attrs["revision"], 16),
        attrs=attrs,
        modes={k: v for k, v in modes.items() if k in attrs or k in _WRITE_ONLY},
        config=_parse_config_hex((sysfs / "config.hex").read_text()),
        bars=_parse_resource(attrs["resource"], _CAPTURE_BAR_BASE),
        window=window,
        irq=int(attrs["irq"]),
        default_driver="nvidia",
    )


def _parse_bar_sizes(resource: str) -> list[int]:
    sizes = [0]
    for line in resource.splitlines():
        start, end, _ = (int(x, 16) for x in line.split())
        if end:
            sizes.append(end - start + 1)
    return sizes


def derive(
    base: DeviceProfile,
    name: str,
    device: int,
    subsystem_device: int,
    class_code: int | None = None,
    bars: tuple[Bar, ...] | None = None,
    link_speed: str | None = None,
    revision: int | None = None,
    vendor: int | None = None,
) -> DeviceProfile:
    """A profile for another device id: the base's attribute files with the identifying ones rewritten."""
    class_code = base.class_code if class_code is None else class_code
    revision = base.revision if revision is None else revision
    vendor = base.vendor if vendor is None else vendor
    kind = catalog.lookup(device, class_code).kind.value if vendor == catalog.NVIDIA_VENDOR_ID else "other"
    attrs = dict(base.attrs)
    attrs["vendor"] = attrs["subsystem_vendor"] = _hex(vendor)
    attrs["device"] = _hex(device)
    attrs["subsystem_device"] = _hex(subsystem_device)
    attrs["class"] = _hex(class_code, 6)
    attrs["revision"] = _hex(revision, 2)
    attrs["modalias"] = modalias(vendor, device, vendor, subsystem_device, class_code) + "\n"
    if link_speed:
        attrs["current_link_speed"] = attrs["max_link_speed"] = f"{link_speed}\n"
    config = bytearray(base.config)
    config[0:2] = config[0x2C:0x2E] = vendor.to_bytes(2, "little")
    config[2:4] = device.to_bytes(2, "little")
    config[8] = revision
    config[9:12] = class_code.to_bytes(3, "little")
    config[0x2E:0x30] = subsystem_device.to_bytes(2, "little")
    bars = base.bars if bars is None else bars
    window = 1 << (2 * max(b.size for b in bars) - 1).bit_length()
    return replace(
        base,
        name=name,
        kind=kind,
        vendor=vendor,
        subsystem_vendor=vendor,
        device=device,
        subsystem_device=subsystem_device,
        class_code=class_code,
        revision=revision,
        attrs=attrs,
        config=bytes(config),
        bars=bars,
        window=window,
    )


def _bars(*sizes: int) -> tuple[Bar, ...]:
    """64-bit prefetchable BARs at 0, 2, 4 packed from the window start (largest first), like the captures."""
    flags = 0x14220C
    out: list[Bar] = []
    offset = 0
    placed: dict[int, Bar] = {}
    for idx, size in sorted(enumerate(sizes), key=lambda t: -t[1]):
        placed[idx] = Bar(offset, size, flags)
        offset += size
    for idx in range(len(sizes)):
        out += [placed[idx], Bar(0, 0, 0)]
    out += [Bar(0, 0, 0)] * (7 - len(out))
    return tuple(out[:7])


def audio_function(gpu: DeviceProfile, device: int) -> DeviceProfile:
    """An HDMI audio function (class 0x0403) for a VGA-mode card: synthetic, to exercise aux-device handling."""
    base = derive(
        gpu,
        f"{gpu.name}-audio",
        device,
        gpu.subsystem_device,
        catalog.CLASS_AUDIO,
        bars=_bars(0x4000),
        revision=gpu.revision,
    )
    attrs = dict(base.attrs)
    attrs["reset_method"] = "flr bus\n"
    return replace(base, kind="audio", default_driver="snd_hda_intel", attrs=attrs)


@functools.cache
def device_profiles(fixtures: str) -> dict[str, DeviceProfile]:
    """Every device profile, keyed by name, built from the captures under `fixtures`."""
    root = Path(fixtures)
    h100 = load_capture(root / "h100-sxm5-80gb", "h100-sxm5-80gb")
    h200 = load_capture(root / "h200-sxm-141gb", "h200-sxm-141gb")
    gib = 1 << 30
    h100_pcie = derive(h100, "h100-pcie", 0x2331, 0x1626, bars=_bars(16 << 20, 128 * gib, 32 << 20))
    h100_pcie_vga = derive(h100_pcie, "h100-pcie-vga", 0x2331, 0x1626, class_code=catalog.CLASS_VGA)
    h100_pcie_vga = replace(h100_pcie_vga, audio=audio_function(h100_pcie_vga, 0x22BE))
    h100_nvl = derive(h100, "h100-nvl", 0x2321, 0x1839, bars=_bars(16 << 20, 128 * gib, 32 << 20))
    b200 = derive(
        h100,
        "b200",
        0x2901,
        0x1999,
        bars=_bars(64 << 20, 256 * gib, 32 << 20),
        link_speed="64.0 GT/s PCIe",
        revision=0xA1,
    )
    nvswitch = derive(
        h100, "h100-nvswitch", 0x22A3, 0x1796, class_code=catalog.CLASS_BRIDGE_OTHER, bars=_bars(32 << 20)
    )
    nvswitch_attrs = dict(nvswitch.attrs)
    nvswitch_attrs["current_link_width"] = nvswitch_attrs["max_link_width"] = "4\n"
    nvswitch = replace(nvswitch, attrs=nvswitch_attrs)
    gh200 = derive(h100, "gh200", 0x2342, 0x16EB, bars=_bars(16 << 20, 512 * gib, 32 << 20))
    nic = derive(
        h100,
        "connectx7",
        0x1021,
        0x0023,
        class_code=0x020700,
        bars=_bars(32 << 20),
        vendor=0x15B3,
        revision=0,
    )
    nic = replace(nic, default_driver="mlx5_core")
    return {p.name: p for p in (h100, h200, h100_pcie, h100_pcie_vga, h100_nvl, b200, nvswitch, gh200, nic)}


@dataclass(frozen=True)
class Slot:
    """Where one device sits: its BDF, IOMMU group and NUMA node."""

    bdf: str
    profile: str
    iommu_group: int
    numa_node: int


@dataclass(frozen=True)
class HostProfile:
    """A whole simulated host."""

    name: str
    description: str
    slots: tuple[Slot, ...]
    cpu_vendor: str = "amd"  # "amd", "intel" or "arm" (Grace)
    tee: str | None = "snp"  # "snp", "tdx" or None
    iommu: bool = True
    iommufd: bool = False  # /dev/iommu and vfio cdevs (/dev/vfio/devices/vfioN) besides the legacy groups
    gpu_driver: str | None = "nvidia"  # driver GPUs and NVSwitches start bound to; None = unbound
    nvidia_loaded: bool = True  # whether the nvidia module (and its pci driver) is loaded
    kernel_release: str = "6.17.0-1004-ccgpu-sim"  # new enough for SEV-SNP (6.11) and TDX (6.16) hosts
    cpus: int = 64
    numa_nodes: int = 2
    extra_cmdline: tuple[str, ...] = ()
    reset_ms: int = 0  # how long every device's reset takes (per-device knob: SimDevice.set_reset_duration)
    cc_mode: str = "off"  # CC mode the CC-capable GPUs booted in ("off", "on", "devtools")
    ppcie_mode: str = "off"  # PPCIe mode the PPCIe-capable devices booted in ("off", "on")
    containerd_config_version: int = 2  # /etc/containerd/config.toml as containerd 1.7/2.0 (2) or 2.x (3) ship it

    def __post_init__(self) -> None:
        tees = {"amd": ("snp", None), "intel": ("tdx", None), "arm": (None,)}
        if self.cpu_vendor not in tees:
            raise ProfileError(f"cpu_vendor {self.cpu_vendor!r}; accepted: {', '.join(tees)}")
        if self.tee not in tees[self.cpu_vendor]:
            accepted = ", ".join(str(t) for t in tees[self.cpu_vendor])
            raise ProfileError(f"tee {self.tee!r} on a {self.cpu_vendor} CPU; accepted: {accepted}")
        if self.gpu_driver not in ("nvidia", "vfio-pci", None):
            raise ProfileError(f"gpu_driver {self.gpu_driver!r}; accepted: nvidia, vfio-pci, None (unbound)")
        if self.containerd_config_version not in (2, 3):
            raise ProfileError(f"containerd_config_version {self.containerd_config_version!r}; accepted: 2, 3")
        if self.cc_mode not in ("off", "on", "devtools") or self.ppcie_mode not in ("off", "on"):
            raise ProfileError(
                f"cc_mode {self.cc_mode!r} / ppcie_mode {self.ppcie_mode!r}; accepted: off, on, devtools / off, on"
            )
        if self.cc_mode != "off" and self.ppcie_mode != "off":
            raise ProfileError("a GPU boots in CC mode or in PPCIe mode, not both")
        if not isinstance(self.reset_ms, int) or self.reset_ms < 0:
            raise ProfileError(f"reset_ms {self.reset_ms!r}; accepted: a whole number of milliseconds >= 0")
        if self.cpus < 1 or self.numa_nodes < 1 or self.cpus % self.numa_nodes:
            raise ProfileError(f"{self.cpus} CPUs do not split evenly over {self.numa_nodes} NUMA nodes")
        if len({s.bdf for s in self.slots}) != len(self.slots):
            raise ProfileError(f"profile {self.name}: two slots share one PCI address")

    @property
    def grace(self) -> bool:
        return self.cpu_vendor == "arm"


def _hgx_slots(gpu: str, gpu_buses: tuple[int, ...], switch_buses: tuple[int, ...] = ()) -> tuple[Slot, ...]:
    """One IOMMU group per GPU; the NVSwitches share one group (they sit behind one PCIe switch without ACS)."""
    slots = [
        Slot(f"0000:{bus:02x}:00.0", gpu, iommu_group=20 + i, numa_node=0 if i < len(gpu_buses) / 2 else 1)
        for i, bus in enumerate(gpu_buses)
    ]
    slots += [
        Slot(f"0000:{bus:02x}:00.0", "h100-nvswitch", iommu_group=60, numa_node=0) for bus in switch_buses
    ]
    slots.append(Slot("0000:c1:00.0", "connectx7", iommu_group=70, numa_node=1))  # not NVIDIA's: left alone
    return tuple(slots)


_HGX_GPU_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)
_HGX_SWITCH_BUSES = (0x05, 0x06, 0x07, 0x08)

HOST_PROFILES: dict[str, HostProfile] = {
    p.name: p
    for p in (
        HostProfile(
            "8xh100-snp",
            "HGX H100: 8 H100 SXM5 80GB + 4 NVSwitches, AMD SEV-SNP, IOMMU on, legacy VFIO groups",
            _hgx_slots("h100-sxm5-80gb", _HGX_GPU_BUSES, _HGX_SWITCH_BUSES),
        ),
        HostProfile(
            "8xh100-snp-iommufd",
            "HGX H100 like 8xh100-snp, with iommufd (/dev/iommu, /dev/vfio/devices/vfioN)",
            _hgx_slots("h100-sxm5-80gb", _HGX_GPU_BUSES, _HGX_SWITCH_BUSES),
            iommufd=True,
        ),
        HostProfile(
            "1xh200-snp",
            "One H200 SXM 141GB, AMD SEV-SNP, IOMMU on",
            _hgx_slots("h200-sxm-141gb", (0x41,)),
            numa_nodes=1,
            cpus=32,
        ),
        HostProfile(
            "4xh100-notee",
            "4 H100 SXM5 80GB, AMD host with SEV disabled in firmware (no TEE), IOMMU on",
            _hgx_slots("h100-sxm5-80gb", _HGX_GPU_BUSES[:4]),
            tee=None,
        ),
        HostProfile(
            "8xb200-tdx",
            "HGX B200: 8 B200, Intel TDX, IOMMU on",
            _hgx_slots("b200", _HGX_GPU_BUSES),
            cpu_vendor="intel",
            tee="tdx",
        ),
        HostProfile(
            "1xh100-pcie-snp",
            "One H100 PCIe in VGA mode with its HDMI audio function, AMD SEV-SNP, IOMMU on",
            _hgx_slots("h100-pcie-vga", (0x41,)),
            numa_nodes=1,
            cpus=32,
        ),
        HostProfile(
            "2xh100-nvl-snp",
            "Two H100 NVL (0x2321, missing from NVIDIA's CC allowlist: gpu-operator#1851), AMD SEV-SNP, IOMMU on",
            _hgx_slots("h100-nvl", (0x41, 0xC2)),
        ),
        HostProfile(
            "1xgh200-notee",
            "One GH200 (Grace Hopper, arm64), no CPU TEE; modules.alias has nvgrace_gpu_vfio_pci",
            _hgx_slots("gh200", (0x01,)),
            cpu_vendor="arm",
            tee=None,
            numa_nodes=1,
            cpus=72,
        ),
    )
}

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def list_profiles() -> list[HostProfile]:
    """The named host profiles, in a stable order."""
    return [HOST_PROFILES[name] for name in sorted(HOST_PROFILES)]


def get_profile(name: str) -> HostProfile:
    """The host profile called `name`, or a ProfileError naming the ones that exist."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name not in HOST_PROFILES:
        raise ProfileError(
            f"unknown host profile {name!r}; known profiles: {', '.join(sorted(HOST_PROFILES))}"
        )
    return HOST_PROFILES[name]


def fixtures_dir() -> Path:
    """shared/fixtures: $CCGPU_SHARED/fixtures, else ../shared/fixtures beside the checkout, else the copy of the
    two captures vendored in the package (so an installed ccgpu finds them)."""
    import os

    env = os.environ.get("CCGPU_SHARED")
    here = Path(__file__).resolve()
    candidates = [Path(env) / "fixtures"] if env else []
    candidates += [p / "shared" / "fixtures" for p in here.parents]
    candidates.append(here.parent / "captures")  # the copy shipped in the package (captures/README.md)
    for c in candidates:
        if (c / "h100-sxm5-80gb" / "sysfs").is_dir():
            return c
    raise ProfileError(
        "the real device captures (shared/fixtures/h100-sxm5-80gb) were not found; set CCGPU_SHARED "
        f"(looked at {', '.join(str(c) for c in candidates[:3])} ...)"
    )


__all__ = [
    "Bar",
    "DeviceProfile",
    "HostProfile",
    "HOST_PROFILES",
    "ProfileError",
    "REPLACED_ATTRS",
    "Slot",
    "derive",
    "device_profiles",
    "fixtures_dir",
    "get_profile",
    "list_profiles",
    "load_capture",
    "modalias",
]

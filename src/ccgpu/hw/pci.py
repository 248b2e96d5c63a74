"""PCI addresses (BDFs) and devices as sysfs shows them.

BDF parsing lives here and only here: every PCI address that becomes a path goes through `BDF.parse`, which
accepts `DDDD:BB:DD.F` (domain 4-8 hex digits) or the short `BB:DD.F` (domain 0) and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ccgpu.hw import catalog
from ccgpu.hw.sysfs import PathEscapeError, Sysfs

_BDF_RE = re.compile(r"^(?:(?P<domain>[0-9a-fA-F]{4,8}):)?(?P<bus>[0-9a-fA-F]{2}):(?P<dev>[0-9a-fA-F]{2})\.(?P<fn>[0-7])")

MAX_DEVICE = 0x1F

T = TypeVar("T")


class BDFError(ValueError):
    """A PCI address that is not of the form domain:bus:device.function."""


@dataclass(frozen=True, order=True)
class BDF:
    """A PCI function address. `str()` gives the kernel's form, `0000:3a:00.0`."""

    domain: int
    bus: int
    device: int
    function: int

    def __post_init__(self) -> None:
        if not 0 <= self.domain <= 0xFFFFFFFF:
            raise BDFError(f"PCI domain {self.domain:#x} out of range 0..0xffffffff")
        if not 0 <= self.bus <= 0xFF:
            raise BDFError(f"PCI bus {self.bus:#x} out of range 0..0xff")
        if not 0 <= self.device <= MAX_DEVICE:
            raise BDFError(f"PCI device {self.device:#x} out of range 0..0x1f")
        if not 0 <= self.function <= 7:
            raise BDFError(f"PCI function {self.function} out of range 0..7")

    @classmethod
    def parse(cls, text: str) -> BDF:
        if not isinstance(text, str):
            raise BDFError(f"PCI address must be text, got {type(text).__name__}")
        m = _BDF_RE.fullmatch(text)
        if m is None:
            raise BDFError(
                f"{text!r} is not a PCI address; expected domain:bus:device.function in hex, "
                "e.g. 0000:3a:00.0 (or the short form 3a:00.0)"
            )
        try:
            return cls(
                domain=int(m["domain"] or "0", 16),
                bus=int(m["bus"], 16),
                device=int(m["dev"], 16),
                function=int(m["fn"], 16),
            )
        except BDFError as e:
            raise BDFError(f"{text!r} is not a PCI address: {e} (form domain:bus:device.function)") from None

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.device:02x}.{self.function}"

    @property
    def sysfs_path(self) -> str:
        """Root-relative sysfs directory of this function."""
        return f"sys/bus/pci/devices/{self}"


class SysfsFormatError(ValueError):
    """A sysfs attribute whose content is not what the kernel writes there (empty, non-hex, truncated)."""


PCI_DEVICES_DIR = "sys/bus/pci/devices"


@dataclass(frozen=True)
class PCIDevice:
    """One PCI function as sysfs shows it. Built by `read_device`/`enumerate_devices`; never mutated."""

    bdf: BDF
    vendor: int
    device: int
    subsystem_vendor: int
    subsystem_device: int
    class_code: int  # 24-bit class, e.g. 0x030200 (3D controller)
    revision: int
    modalias: str
    driver: str | None  # name of the bound driver (basename of the `driver` link), None if unbound
    driver_override: str | None  # None when the kernel shows "(null)"
    iommu_group: int | None
    numa_node: int | None  # None when the kernel shows -1
    vfio_dev: str | None  # e.g. "vfio3" from `vfio-dev/` (iommufd cdev), None without one
    physfn: BDF | None  # the PF of an SR-IOV VF, None for a physical function
    consumers: tuple[BDF, ...] = ()  # aux functions linked as `consumer:pci:<bdf>` (e.g. HDMI audio)

    @property
    def is_virtual_function(self) -> bool:
        return self.physfn is not None

    @property
    def is_nvidia(self) -> bool:
        return self.vendor == catalog.NVIDIA_VENDOR_ID

    @property
    def is_gpu(self) -> bool:
        """An NVIDIA display controller (class 0x0300 VGA or 0x0302 3D, any programming interface)."""
        return self.is_nvidia and (self.class_code >> 8) in _GPU_BASE_SUBCLASSES

    @property
    def is_nvswitch(self) -> bool:
        """An NVIDIA bridge of class 0x0680 (NVSwitch)."""
        return self.is_nvidia and (self.class_code >> 8) == _NVSWITCH_BASE_SUBCLASS

    @property
    def model(self) -> catalog.Model | None:
        """Catalog facts for an NVIDIA GPU or NVSwitch; None for every other device."""
        if not (self.is_gpu or self.is_nvswitch):
            return None
        return catalog.lookup(self.device, self.class_code)


_GPU_BASE_SUBCLASSES = frozenset(c >> 8 for c in catalog.GPU_CLASSES)
_NVSWITCH_BASE_SUBCLASS = catalog.CLASS_BRIDGE_OTHER >> 8


# --- strict parsers for what the kernel writes (pure; raise ValueError saying what is accepted) ------------

_HEX_RE = {4: re.compile(r"0x[0-9a-fA-F]{4}"), 6: re.compile(r"0x[0-9a-fA-F]{6}"), 2: re.compile(r"0x[0-9a-fA-F]{2}")}
_HEX_EXAMPLE = {4: "0x10de", 6: "0x030200", 2: "0xa1"}
_MODALIAS_RE = re.compile(
    r"pci:v[0-9A-F]{8}d[0-9A-F]{8}sv[0-9A-F]{8}sd[0-9A-F]{8}bc[0-9A-F]{2}sc[0-9A-F]{2}i[0-9A-F]{2}"
)
_DRIVER_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_VFIO_DEV_RE = re.compile(r"vfio(0|[1-9][0-9]{0,8})")
_CONSUMER_PREFIX = "consumer:pci:"


def parse_hex(text: str, digits: int) -> int:
    """`0x` followed by exactly `digits` hex digits, as the kernel prints vendor/device (4), class (6), revision (2)."""
    if not _HEX_RE[digits].fullmatch(text):
        raise ValueError(f"{text!r} is not 0x followed by {digits} hex digits (e.g. {_HEX_EXAMPLE[digits]})")
    return int(text, 16)


def parse_numa_node(text: str) -> int | None:
    """A NUMA node number, or -1 (no affinity) → None."""
    if text == "-1":
        return None
    if not re.fullmatch(r"0|[1-9][0-9]{0,5}", text):
        raise ValueError(f"{text!r} is not a NUMA node (a decimal number >= 0, or -1 for none)")
    return int(text)


def parse_driver_override(text: str) -> str | None:
    """`(null)` (no override) → None, otherwise a driver name."""
    if text in ("(null)", ""):
        return None
    return parse_driver_name(text)


def parse_driver_name(text: str) -> str:
    """A kernel driver name: letters, digits, `_`, `-`, `.`; never a path."""
    if not _DRIVER_NAME_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not a driver name (letters, digits, '_', '-', '.'; at most 64)")
    return text


def parse_modalias(text: str) -> str:
    """`pci:v<8>d<8>sv<8>sd<8>bc<2>sc<2>i<2>` in uppercase hex, as the kernel builds it."""
    if not _MODALIAS_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not a PCI modalias (pci:vXXXXXXXXdXXXXXXXXsvXXXXXXXXsdXXXXXXXXbcXXscXXiXX)")
    return text


def parse_iommu_group(text: str) -> int:
    """An IOMMU group number (the basename of the `iommu_group` link)."""
    if not re.fullmatch(r"0|[1-9][0-9]{0,8}", text):
        raise ValueError(f"{text!r} is not an IOMMU group number (decimal >= 0)")
    return int(text)


def is_vfio_driver(name: str | None) -> bool:
    """Whether a bound driver hands the function to VFIO: `vfio-pci` or one of its vendor variants, which the
    kernel registers as `<vendor>_vfio_pci` (`nvgrace_gpu_vfio_pci`, `mlx5_vfio_pci`). The one place this is
    decided, so doctor, the CDI spec and the device plugin's health check cannot disagree about a device."""
    return name is not None and (name == "vfio-pci" or name.endswith("_vfio_pci"))


def _link_basename(target: str) -> str:
    return target.rstrip("/").rsplit("/", 1)[-1]


# --- reading one device -------------------------------------------------------------------------------


class _DeviceReader:
    """Reads one device's attributes, turning any garbled value into a SysfsFormatError naming device + file."""

    def __init__(self, fs: Sysfs, bdf: BDF) -> None:
        self.fs = fs
        self.bdf = bdf
        self.dir = bdf.sysfs_path  # named in messages: the path users know
        self.real = fs.realpath(self.dir)  # read from: the link resolved once (PathEscapeError if it leaves the root)
        self._entries: frozenset[str] | None = None

    @property
    def entries(self) -> frozenset[str]:
        if self._entries is None:
            self._entries = frozenset(self.fs.listdir(self.real))
        return self._entries

    def _fail(self, name: str, problem: str) -> SysfsFormatError:
        return SysfsFormatError(f"PCI device {self.bdf}: {self.dir}/{name}: {problem}")

    def optional_attr(self, name: str, parse: Callable[[str], T]) -> T | None:
        """`attr` for a file the kernel may not create: None when it is absent."""
        if name not in self.entries:
            return None
        return self.attr(name, parse)

    def attr(self, name: str, parse: Callable[[str], T]) -> T:
        try:
            raw = self.fs.read_in(self.real, name)
        except FileNotFoundError:
            raise self._fail(name, "missing; the kernel always creates it for a PCI function") from None
        except (IsADirectoryError, NotADirectoryError):
            raise self._fail(name, "is not a file; the kernel makes it an attribute file") from None
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise self._fail(name, f"not ASCII text ({raw[:32]!r})") from None
        if not text.endswith("\n"):
            raise self._fail(name, f"truncated: {text!r} lacks the newline the kernel ends every attribute with")
        try:
            return parse(text[:-1])
        except ValueError as e:
            raise self._fail(name, str(e)) from None

    def link(self, name: str) -> str | None:
        """The basename of a link's target, None when the link is absent."""
        if name not in self.entries:
            return None
        try:
            target = self.fs.readlink(f"{self.real}/{name}")
        except OSError:
            raise self._fail(name, "is not a symlink; the kernel makes it a link") from None
        return _link_basename(target)

    def parsed_link(self, name: str, parse: Callable[[str], T]) -> T | None:
        base = self.link(name)
        if base is None:
            return None
        try:
            return parse(base)
        except ValueError as e:
            raise self._fail(name, f"link target: {e}") from None

    def vfio_dev(self) -> str | None:
        if "vfio-dev" not in self.entries:
            return None
        names = self.fs.listdir(f"{self.real}/vfio-dev")
        for n in names:
            if not _VFIO_DEV_RE.fullmatch(n):
                raise self._fail("vfio-dev", f"entry {n!r} is not a vfio cdev name (vfioN)")
        if len(names) > 1:
            raise self._fail("vfio-dev", f"holds {names}; the kernel creates one vfioN per device")
        return names[0] if names else None

    def consumers(self) -> tuple[BDF, ...]:
        out = []
        for n in self.entries:
            if n.startswith(_CONSUMER_PREFIX):
                try:
                    out.append(BDF.parse(n[len(_CONSUMER_PREFIX) :]))
                except BDFError as e:
                    raise self._fail(n, f"device link to a bad PCI address: {e}") from None
        return tuple(sorted(out))


def read_device(fs: Sysfs, bdf: BDF | str) -> PCIDevice:
    """One PCI function from `sys/bus/pci/devices/<bdf>`.

    Raises BDFError for a bad address (before any file access), FileNotFoundError when no such device exists,
    SysfsFormatError when an attribute is garbled, PathEscapeError when the device's links leave the root.
    """
    if not isinstance(bdf, BDF):
        bdf = BDF.parse(bdf)
    fs.path(bdf.sysfs_path)  # a device link that leaves the root raises PathEscapeError here
    if not fs.is_dir(bdf.sysfs_path):
        raise FileNotFoundError(f"no PCI device {bdf} ({bdf.sysfs_path} does not exist under {fs.root})")
    r = _DeviceReader(fs, bdf)
    return PCIDevice(
        bdf=bdf,
        vendor=r.attr("vendor", lambda t: parse_hex(t, 4)),
        device=r.attr("device", lambda t: parse_hex(t, 4)),
        subsystem_vendor=r.attr("subsystem_vendor", lambda t: parse_hex(t, 4)),
        subsystem_device=r.attr("subsystem_device", lambda t: parse_hex(t, 4)),
        class_code=r.attr("class", lambda t: parse_hex(t, 6)),
        revision=r.attr("revision", lambda t: parse_hex(t, 2)),
        modalias=r.attr("modalias", parse_modalias),
        driver=r.parsed_link("driver", parse_driver_name),
        driver_override=r.optional_attr("driver_override", parse_driver_override),
        iommu_group=r.parsed_link("iommu_group", parse_iommu_group),
        numa_node=r.optional_attr("numa_node", parse_numa_node),
        vfio_dev=r.vfio_dev(),
        physfn=r.parsed_link("physfn", BDF.parse),
        consumers=r.consumers(),
    )


# --- enumeration --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PCIScan:
    """Everything `sys/bus/pci/devices` held: the devices that read cleanly and one message per entry that did not."""

    devices: tuple[PCIDevice, ...]
    errors: tuple[str, ...]


def scan_devices(fs: Sysfs, vendor: int | None = None) -> PCIScan:
    """Read every PCI function; entries that are not BDFs or do not read cleanly become errors, never paths.

    With `vendor`, devices of other vendors are skipped after reading only their `vendor` attribute.
    """
    if not fs.is_dir(PCI_DEVICES_DIR):
        return PCIScan((), (f"{PCI_DEVICES_DIR} does not exist under {fs.root}; is this a host root?",))
    devices: list[PCIDevice] = []
    errors: list[str] = []
    for name in fs.listdir(PCI_DEVICES_DIR):
        try:
            bdf = BDF.parse(name)
        except BDFError as e:
            errors.append(f"{PCI_DEVICES_DIR}: entry {name!r} ignored: {e}")
            continue
        try:
            if vendor is not None:
                if _DeviceReader(fs, bdf).attr("vendor", lambda t: parse_hex(t, 4)) != vendor:
                    continue
            devices.append(read_device(fs, bdf))
        except (SysfsFormatError, PathEscapeError, OSError) as e:
            errors.append(str(e))
    return PCIScan(tuple(sorted(devices, key=lambda d: d.bdf)), tuple(errors))


def enumerate_devices(fs: Sysfs, vendor: int | None = None) -> list[PCIDevice]:
    """Every PCI function (optionally of one vendor), sorted by BDF. Any bad entry raises SysfsFormatError."""
    scan = scan_devices(fs, vendor)
    if scan.errors:
        raise SysfsFormatError("; ".join(scan.errors))
    return list(scan.devices)


def nvidia_gpus(fs: Sysfs) -> list[PCIDevice]:
    """NVIDIA GPUs (class 0x0300/0x0302), physical functions only, sorted by BDF."""
    return [d for d in enumerate_devices(fs, catalog.NVIDIA_VENDOR_ID) if d.is_gpu and not d.is_virtual_function]


def nvidia_nvswitches(fs: Sysfs) -> list[PCIDevice]:
    """NVIDIA NVSwitches (class 0x0680), physical functions only, sorted by BDF."""
    return [d for d in enumerate_devices(fs, catalog.NVIDIA_VENDOR_ID) if d.is_nvswitch and not d.is_virtual_function]


def iommu_group_members(fs: Sysfs, group: int) -> tuple[BDF, ...]:
    """The PCI functions in an IOMMU group (`sys/kernel/iommu_groups/<n>/devices`), sorted."""
    rel = f"sys/kernel/iommu_groups/{int(group)}/devices"
    if not fs.is_dir(rel):
        return ()
    out = []
    for n in fs.listdir(rel):
        try:
            out.append(BDF.parse(n))
        except BDFError as e:
            raise SysfsFormatError(f"{rel}: entry {n!r} is not a PCI address: {e}") from None
    return tuple(sorted(out))

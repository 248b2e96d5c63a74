"""PCI addresses (BDFs) and devices as sysfs shows them.

BDF parsing lives here and only here: every PCI address that becomes a path goes through `BDF.parse`, which
accepts `DDDD:BB:DD.F` (domain 4-8 hex digits) or the short `BB:DD.F` (domain 0) and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BDF_RE = re.compile(r"^(?:(?P<domain>[0-9a-fA-F]{4,8}):)?(?P<bus>[0-9a-fA-F]{2}):(?P<dev>[0-9a-fA-F]{2})\.(?P<fn>[0-7])")

MAX_DEVICE = 0x1F


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

"""NVIDIA PCI device ids → model facts: name, architecture, CC and PPCIe capability, resource name.

Names are pci.ids' (reference/operands.md §7). Capability follows gpu-admin-tools, not an allowlist: every
Hopper or newer GPU can be queried and set for CC (`is_cc_query_supported`), PPCIe exists on Hopper GPUs and
the H100-generation NVSwitch only. An id missing from the table is classified by its architecture range, never
dropped: the allowlist approach is what left H200 (0x2335) and H100 NVL (0x2321) out of CC (gpu-operator#1851).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

NVIDIA_VENDOR_ID = 0x10DE

CLASS_VGA = 0x030000
CLASS_3D = 0x030200
CLASS_BRIDGE_OTHER = 0x068000  # NVSwitch
CLASS_AUDIO = 0x040300

GPU_CLASSES = (CLASS_VGA, CLASS_3D)


class Arch(StrEnum):
    AMPERE = "ampere"
    HOPPER = "hopper"
    BLACKWELL = "blackwell"
    UNKNOWN = "unknown"


class Kind(StrEnum):
    GPU = "gpu"
    NVSWITCH = "nvswitch"


@dataclass(frozen=True)
class Model:
    """What ccgpu knows about one NVIDIA PCI device id."""

    device_id: int
    name: str  # pci.ids style, e.g. "GH100 [H100 SXM5 80GB]"
    arch: Arch
    kind: Kind
    known: bool  # False when classified by id range only

    @property
    def cc_capable(self) -> bool:
        return self.kind is Kind.GPU and self.arch in (Arch.HOPPER, Arch.BLACKWELL)

    @property
    def ppcie_capable(self) -> bool:
        if self.kind is Kind.NVSWITCH:
            return self.device_id in _PPCIE_NVSWITCHES
        return self.arch is Arch.HOPPER

    @property
    def resource_name(self) -> str:
        return resource_name(self.name)

    @property
    def short_name(self) -> str:
        """The marketing name inside the brackets, e.g. `H100 SXM5 80GB`."""
        m = re.search(r"\[(.*)\]", self.name)
        return m.group(1) if m else self.name


def resource_name(pci_ids_name: str) -> str:
    """The sandbox device plugin's per-model resource name for a pci.ids device name.

    Uppercased; `/`, `.` and spaces become `_`; every other character outside [A-Z0-9_] is removed:
    `GH100 [H100 SXM5 80GB]` → `GH100_H100_SXM5_80GB`, `GH100 [H100 PCIe]` → `GH100_H100_PCIE`.
    """
    upper = pci_ids_name.upper()
    replaced = re.sub(r"[/. ]", "_", upper)
    return re.sub(r"[^A-Z0-9_]", "", replaced)


# (first, last) device-id ranges per architecture (gpu-admin-tools devid_chips; Hopper fallback 0x22f0-0x237f).
_ARCH_RANGES: tuple[tuple[int, int, Arch], ...] = (
    (0x20B0, 0x20FF, Arch.AMPERE),  # GA100
    (0x22F0, 0x237F, Arch.HOPPER),  # GH100
    (0x2900, 0x297F, Arch.BLACKWELL),  # GB100
    (0x2980, 0x29FF, Arch.BLACKWELL),  # GB102
    (0x2B80, 0x2BFF, Arch.BLACKWELL),  # GB202
    (0x2C00, 0x2C7F, Arch.BLACKWELL),  # GB203
    (0x2D00, 0x2D7F, Arch.BLACKWELL),  # GB206
    (0x2D80, 0x2DFF, Arch.BLACKWELL),  # GB207
    (0x2F00, 0x2F7F, Arch.BLACKWELL),  # GB205
    (0x3180, 0x31FF, Arch.BLACKWELL),  # GB110
    (0x3200, 0x327F, Arch.BLACKWELL),  # GB112
)

_PPCIE_NVSWITCHES = frozenset({0x22A3})

_GPUS: dict[int, tuple[str, Arch]] = {
    # Hopper GH100
    0x2313: ("GH100 [H100 CNX]", Arch.HOPPER),
    0x2321: ("GH100 [H100L 94GB]", Arch.HOPPER),  # H100 NVL
    0x2322: ("GH100 [H800 PCIe]", Arch.HOPPER),
    0x2324: ("GH100 [H800]", Arch.HOPPER),
    0x2328: ("GH100 [H20B]", Arch.HOPPER),
    0x2329: ("GH100 [H20]", Arch.HOPPER),
    0x232C: ("GH100 [H20 HBM3e]", Arch.HOPPER),
    0x230E: ("GH100 [H20 NVL16]", Arch.HOPPER),
    0x2330: ("GH100 [H100 SXM5 80GB]", Arch.HOPPER),
    0x2331: ("GH100 [H100 PCIe]", Arch.HOPPER),
    0x2335: ("GH100 [H200 SXM 141GB]", Arch.HOPPER),
    0x2336: ("GH100 [H100]", Arch.HOPPER),
    0x2337: ("GH100 [H100 SXM5 64GB]", Arch.HOPPER),
    0x2338: ("GH100 [H100 SXM5 96GB]", Arch.HOPPER),
    0x2339: ("GH100 [H100 SXM5 94GB]", Arch.HOPPER),
    0x233A: ("GH100 [H800L 94GB]", Arch.HOPPER),
    0x233B: ("GH100 [H200 NVL]", Arch.HOPPER),
    0x233D: ("GH100 [H100 96GB]", Arch.HOPPER),
    0x2342: ("GH100 [GH200 120GB / 480GB]", Arch.HOPPER),
    0x2343: ("GH100 [GH200]", Arch.HOPPER),
    0x2348: ("GH100 [GH200 144G HBM3e]", Arch.HOPPER),
    # Blackwell
    0x2901: ("GB100 [B200]", Arch.BLACKWELL),
    0x2920: ("GB100 [TS4 / B100]", Arch.BLACKWELL),
    0x2941: ("GB100 [HGX GB200]", Arch.BLACKWELL),
    0x29BC: ("GB102 [B100]", Arch.BLACKWELL),
    0x2BB5: ("GB202GL [RTX PRO 6000 Blackwell Server Edition]", Arch.BLACKWELL),
    # Ampere, for contrast (not CC capable)
    0x20B0: ("GA100 [A100 SXM4 40GB]", Arch.AMPERE),
    0x20B5: ("GA100 [A100 PCIe 80GB]", Arch.AMPERE),
}

_NVSWITCHES: dict[int, tuple[str, Arch]] = {
    0x22A3: ("GH100 [H100 NVSwitch]", Arch.HOPPER),
    0x1AF1: ("GA100 [A100 NVSwitch]", Arch.AMPERE),
}


def arch_of(device_id: int) -> Arch:
    """Architecture from the device-id range (used for ids not in the table)."""
    for first, last, arch in _ARCH_RANGES:
        if first <= device_id <= last:
            return arch
    return Arch.UNKNOWN


def lookup(device_id: int, class_code: int = CLASS_3D) -> Model:
    """Facts for an NVIDIA device id. `class_code` decides GPU vs NVSwitch for ids not in the table."""
    if device_id in _NVSWITCHES:
        name, arch = _NVSWITCHES[device_id]
        return Model(device_id, name, arch, Kind.NVSWITCH, known=True)
    if device_id in _GPUS:
        name, arch = _GPUS[device_id]
        return Model(device_id, name, arch, Kind.GPU, known=True)
    kind = Kind.NVSWITCH if class_code == CLASS_BRIDGE_OTHER else Kind.GPU
    arch = arch_of(device_id)
    label = "NVSwitch" if kind is Kind.NVSWITCH else "GPU"
    return Model(device_id, f"Device {device_id:04x} [{arch.value} {label} {device_id:04x}]", arch, kind, known=False)


def known_models() -> list[Model]:
    """Every model in the table, GPUs first, sorted by device id."""
    return [lookup(d) for d in sorted(_GPUS)] + [lookup(d) for d in sorted(_NVSWITCHES)]

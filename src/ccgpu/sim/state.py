"""The simulated host's kernel and device state, kept in `<root>/.sim/state.json`.

The state file is the truth; the sysfs/dev/proc tree is rendered from it after every change. Keeping it in a
file (not in one Python object) lets a second process that opens the same tree -- an agent subprocess, the
emulated `nvidia_gpu_tools.py` -- see and change the same host. Every change runs under an exclusive `flock`
on `<root>/.sim/lock`, so read-modify-write cycles from several processes never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ccgpu.sim.signals import host_changed

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

STATE_DIR = ".sim"
STATE_FILE = "state.json"
LOCK_FILE = "lock"
FORMAT_VERSION = 1


@dataclass
class PciDriver:
    """A PCI driver the simulated kernel has loaded: how it matches devices (pci_device_id semantics)."""

    name: str  # directory name under sys/bus/pci/drivers ("vfio-pci")
    module: str  # module name in proc/modules ("vfio_pci")
    # static id table: [vendor|None, device|None, class, class_mask, override_only]
    ids: list[list] = field(default_factory=list)
    dynids: list[list] = field(
        default_factory=list
    )  # added through new_id: [vendor, device, sv, sd, class, mask]
    vfio: bool = False  # a VFIO driver: binding creates VFIO nodes
    needs_iommu: bool = False  # probe fails with EINVAL when the device has no IOMMU group


@dataclass
class DeviceState:
    """One PCI function of the simulated host."""

    bdf: str
    kind: str  # gpu | nvswitch | audio | other
    profile: str
    devdir: str  # root-relative sys/devices/... directory
    vendor: int
    device: int
    subsystem_vendor: int
    subsystem_device: int
    class_code: int
    attrs: dict[str, str]  # static attribute file contents (per-device identifiers filled in)
    modes: dict[str, int]
    config_hex: str
    iommu_group: int | None
    numa_node: int
    driver: str | None = None
    driver_override: str | None = None
    present: bool = True  # False once it fell off the bus or was removed
    removed: bool = False  # removed through `remove` (a rescan brings it back), not fallen off
    supplier: str | None = None  # the GPU an aux (audio) function belongs to
    cc_capable: bool = False
    ppcie_capable: bool = False
    cc_current: str = "off"
    cc_pending: str = "off"
    ppcie_current: str = "off"
    ppcie_pending: str = "off"
    vfio_cdev: int | None = None  # N of vfioN while bound to a VFIO driver on an iommufd host
    reset_errno: int | None = None  # fault knob: the errno every reset fails with
    reset_ms: int = 0  # fault/latency knob: how long a reset takes
    resets: int = 0  # how many resets succeeded
    resetting: bool = False
    reset_method: str = "flr"
    default_driver: str = "nvidia"  # the driver whose id table matches it (what a rescan binds)


@dataclass
class Holder:
    """A process holding a VFIO node open (a busy GPU): the group `/dev/vfio/<group>`, or with `cdev` set the
    iommufd device node `/dev/vfio/devices/vfio<cdev>` (what QEMU opens on an iommufd host)."""

    pid: int
    fd: int
    group: int
    comm: str = "qemu-system-x86_64"
    cdev: int | None = None

    @property
    def target(self) -> str:
        """The node as /proc/<pid>/fd/<fd> shows it (absolute, as the kernel writes fd links)."""
        return f"/dev/vfio/devices/vfio{self.cdev}" if self.cdev is not None else f"/dev/vfio/{self.group}"

    def holds(self, dev: DeviceState) -> bool:
        if self.cdev is not None:
            return self.cdev == dev.vfio_cdev
        return self.group == dev.iommu_group


@dataclass
class HostState:
    profile: str
    kernel_release: str
    cpu_vendor: str
    tee: str | None
    iommu: bool
    iommufd: bool
    devices: dict[str, DeviceState]
    drivers: dict[str, PciDriver]
    modules: list[str]  # loaded modules, in proc/modules order
    holders: list[Holder] = field(default_factory=list)
    next_pid: int = 4000
    version: int = FORMAT_VERSION

    def to_json(self) -> str:
        raw = _fields(self)
        raw["devices"] = {k: _fields(v) for k, v in self.devices.items()}
        raw["drivers"] = {k: _fields(v) for k, v in self.drivers.items()}
        raw["holders"] = [_fields(h) for h in self.holders]
        return json.dumps(raw, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> HostState:
        raw = json.loads(text)
        if raw.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"simulated host state version {raw.get('version')!r}; this ccgpu reads {FORMAT_VERSION}"
            )
        raw["devices"] = {k: DeviceState(**v) for k, v in raw["devices"].items()}
        raw["drivers"] = {k: PciDriver(**v) for k, v in raw["drivers"].items()}
        raw["holders"] = [Holder(**h) for h in raw["holders"]]
        return cls(**raw)

    # --- queries ---------------------------------------------------------------------------------
    def group_members(self, group: int) -> list[DeviceState]:
        return [d for d in self.devices.values() if d.present and d.iommu_group == group]

    def group_viable(self, group: int) -> bool:
        """Every present device of the group is on a VFIO driver or unbound, and at least one is on VFIO."""
        members = self.group_members(group)
        on_vfio = [d for d in members if d.driver and self.drivers[d.driver].vfio]
        return bool(on_vfio) and all(d.driver is None or self.drivers[d.driver].vfio for d in members)

    def device_open(self, dev: DeviceState) -> bool:
        """A process holds the device's VFIO group, or its own cdev, open."""
        return any(h.holds(dev) for h in self.holders)


def _fields(obj: DataclassInstance) -> dict:
    """A dataclass's fields as a shallow dict (its values are JSON types already)."""
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


def device_snapshot(dev: DeviceState) -> dict:
    """A copy of a device's state to compare with later (what render needs to redo)."""
    snap = _fields(dev)
    snap["attrs"] = dict(dev.attrs)
    return snap


class StateStore:
    """Locked access to one tree's state file."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.dir = self.root / STATE_DIR

    @property
    def exists(self) -> bool:
        return (self.dir / STATE_FILE).is_file()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def load(self) -> HostState:
        path = self.dir / STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{self.root} is not a simulated host tree (no {STATE_DIR}/{STATE_FILE})")
        return HostState.from_json(path.read_text())

    def save(self, state: HostState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".state.", dir=self.dir)
        with os.fdopen(fd, "w") as f:
            f.write(state.to_json())
        os.replace(tmp, self.dir / STATE_FILE)
        host_changed(self.root)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[HostState]:
        """Lock, load, let the caller change the state, save (only if the block did not raise)."""
        with self.lock():
            state = self.load()
            yield state
            self.save(state)

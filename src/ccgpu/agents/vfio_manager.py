"""The VFIO manager: binds the node's NVIDIA GPUs (and, if asked, NVSwitches) to a vfio driver for VM passthrough.

Per device: pick the most specific vfio driver from modules.alias (e.g. `nvgrace_gpu_vfio_pci` on Grace hosts,
else `vfio-pci`), then unbind from the current driver, set `driver_override`, bind, and re-read sysfs to verify.
Aux functions of VGA-class GPUs (the HDMI audio function, linked as `consumer:pci:<bdf>`) move with their GPU,
because a VFIO group is only usable when every member is on a vfio driver (gpu-operator#1328).

It never pulls a GPU out from under a running VM (the upstream rollout bug, operands.md §8): a device whose
VFIO group or cdev is held open by any process is never unbound, and the agent does not unbind on shutdown
unless the node has left vm-passthrough. Before a bind or unbind touches a device it records its intent in a
journal on the host (`run/nvidia/vfio-manager/intent.json`); every step is idempotent, so a run interrupted
anywhere (say between unbind and bind) is finished by the next start (`resume`): the device is found unbound
and bound, and the journal removed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ccgpu import labels
from ccgpu.agents.pacing import Pace, sleep_or_stop
from ccgpu.hw import pci
from ccgpu.hw.pci import BDF, PCIDevice, is_vfio_driver
from ccgpu.hw.platform import PlatformFacts, read_platform
from ccgpu.hw.sysfs import PathEscapeError, Sysfs

log = logging.getLogger(__name__)

DRIVERS_DIR = "sys/bus/pci/drivers"
JOURNAL = "run/nvidia/vfio-manager/intent.json"




@dataclass(frozen=True)
class Outcome:
    """What happened to one device. `action`: bound, already-bound, unbound, not-bound, busy, failed."""

    bdf: str
    action: str
    driver: str | None = None
    error: str | None = None
    aux: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.action not in ("failed", "busy")


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def summary(self) -> str:
        """One line per device, failures last: what the CLI prints."""
        lines = []
        for o in sorted(self.outcomes, key=lambda o: (not o.ok, o.bdf)):
            aux = f" (with {', '.join(o.aux)})" if o.aux else ""
            where = f" {o.driver}" if o.driver and o.ok else ""
            why = f": {o.error}" if o.error else ""
            lines.append(f"{o.bdf} {o.action}{where}{aux}{why}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Journal:
    """The intent of a bind/unbind in progress: the operation and the devices it covers."""

    op: str  # "bind" or "unbind"
    bdfs: tuple[str, ...]
    started: str = ""

    def to_json(self) -> str:
        return json.dumps({"op": self.op, "devices": list(self.bdfs), "started": self.started}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Journal:
        """Parse a journal; anything malformed (or a device address that is not a BDF) raises ValueError."""
        try:
            data = json.loads(text)
            op = data["op"]
            if op not in ("bind", "unbind"):
                raise ValueError(f"op {op!r} is not bind or unbind")
            bdfs = tuple(str(BDF.parse(str(b))) for b in data["devices"])
            return cls(op, bdfs, str(data.get("started", "")))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"{JOURNAL} is not a valid intent record ({e}); expected JSON "
                '{"op": "bind"|"unbind", "devices": [BDF, ...], "started": time}'
            ) from None


# --- who holds a VFIO device open ---------------------------------------------------------------


def open_vfio_nodes(fs: Sysfs) -> dict[str, list[int]]:
    """`/dev/vfio/...` paths held open, with the pids holding them (from `proc/<pid>/fd/*` links)."""
    held: dict[str, list[int]] = {}
    if not fs.is_dir("proc"):
        return held
    for entry in fs.listdir("proc"):
        if not entry.isdigit():
            continue
        fd_dir = f"proc/{entry}/fd"
        try:
            fds = fs.listdir(fd_dir)
        except OSError:
            continue  # the process exited, or we may not look
        for fd in fds:
            try:
                target = fs.readlink(f"{fd_dir}/{fd}")
            except (OSError, PathEscapeError):
                continue
            if target.startswith("/dev/vfio/") and target != "/dev/vfio/vfio":
                held.setdefault(target, []).append(int(entry))
    return held


def holders(dev: PCIDevice, held: dict[str, list[int]]) -> list[int]:
    """Pids holding this device's VFIO group node or cdev open."""
    pids: list[int] = []
    if dev.iommu_group is not None:
        pids += held.get(f"/dev/vfio/{dev.iommu_group}", [])
    if dev.vfio_dev:
        pids += held.get(f"/dev/vfio/devices/{dev.vfio_dev}", [])
    return sorted(set(pids))


# --- driver choice ----------------------------------------------------------------------------------


def driver_dir_name(fs: Sysfs, module: str) -> str | None:
    """The directory name under sys/bus/pci/drivers for a module (`vfio_pci` registers as `vfio-pci`)."""
    for candidate in (module, module.replace("_", "-"), module.replace("-", "_")):
        if fs.is_dir(f"{DRIVERS_DIR}/{candidate}"):
            return candidate
    return None


def modprobe_argv(host_root: str, module: str) -> list[str]:
    """Load a module in the host's root (the agent runs in a pod with the host mounted)."""
    if host_root in ("", "/"):
        return ["modprobe", module]
    return ["chroot", host_root, "modprobe", module]


def run_modprobe(host_root: str, module: str) -> None:
    subprocess.run(modprobe_argv(host_root, module), check=True, capture_output=True, timeout=60)  # noqa: S603


# --- the manager -----------------------------------------------------------------------------------


class VfioManager:
    """Binds and unbinds one host's NVIDIA devices. `modprobe` loads a missing vfio module (injectable)."""

    def __init__(
        self,
        fs: Sysfs,
        *,
        include_nvswitches: bool = False,
        modprobe: Callable[[str], None] | None = None,
    ) -> None:
        self.fs = fs
        self.include_nvswitches = include_nvswitches
        self.modprobe = modprobe or (lambda module: run_modprobe(str(fs.root), module))

    def devices(self) -> list[PCIDevice]:
        devs = pci.nvidia_gpus(self.fs)
        if self.include_nvswitches:
            devs += pci.nvidia_nvswitches(self.fs)
        return sorted(devs, key=lambda d: d.bdf)

    def select(self, device: str | None) -> list[PCIDevice]:
        """All managed devices, or the one named (validated before it becomes a path)."""
        if device is None:
            return self.devices()
        bdf = BDF.parse(device)
        dev = pci.read_device(self.fs, bdf)
        if not (dev.is_gpu or (dev.is_nvswitch and self.include_nvswitches)):
            kinds = "NVIDIA GPUs and NVSwitches" if self.include_nvswitches else "NVIDIA GPUs"
            raise ValueError(f"{bdf} is not a device the vfio-manager manages ({kinds}); class {dev.class_code:#08x}")
        return [dev]

    def target_driver(self, dev: PCIDevice, platform: PlatformFacts | None = None) -> str:
        module = (platform or read_platform(self.fs)).vfio_driver_for(dev.modalias)
        name = driver_dir_name(self.fs, module)
        if name is None:
            self.modprobe(module)
            name = driver_dir_name(self.fs, module)
        if name is None:
            raise OSError(f"driver {module} is not available ({DRIVERS_DIR}/{module} missing after modprobe)")
        return name

    # bind ------------------------------------------------------------------------------------
    # journal ---------------------------------------------------------------------------------
    def _record(self, op: str, devices: Sequence[PCIDevice]) -> None:
        started = datetime.now(UTC).isoformat(timespec="seconds")
        self.fs.write_file(JOURNAL, Journal(op, tuple(str(d.bdf) for d in devices), started).to_json())

    def _done(self) -> None:
        self.fs.remove(JOURNAL)

    def pending(self) -> Journal | None:
        """The intent left by a run that did not finish, if any."""
        if not self.fs.exists(JOURNAL):
            return None
        return Journal.from_json(self.fs.read(JOURNAL))

    def resume(self) -> Report | None:
        """Finish a bind or unbind that a crash interrupted (devices gone from the bus are skipped)."""
        try:
            journal = self.pending()
        except ValueError as e:
            log.error("%s; removing it", e)
            self._done()
            return None
        if journal is None:
            return None
        present = {str(d.bdf): d for d in self.devices()}
        devices = [present[b] for b in journal.bdfs if b in present]
        log.info("resuming an interrupted %s of %s", journal.op, ", ".join(journal.bdfs))
        return self.bind(devices) if journal.op == "bind" else self.unbind(devices)

    # bind ------------------------------------------------------------------------------------
    def bind(self, devices: Sequence[PCIDevice]) -> Report:
        report = Report()
        if not devices:
            return report
        platform = read_platform(self.fs)
        todo = [d for d in devices if not self._bound(d, platform)]
        if todo:
            self._record("bind", todo)
        for dev in devices:
            report.outcomes.append(self._bind_one(dev, platform))
        if todo:
            self._done()
        return report

    def _bound(self, dev: PCIDevice, platform: PlatformFacts) -> bool:
        """Already where it should be (cheap check, no modprobe): skip journaling it."""
        module = platform.vfio_driver_for(dev.modalias)
        name = driver_dir_name(self.fs, module)
        if name is None or dev.driver != name:
            return False
        return all(pci.read_device(self.fs, b).driver == name for b in dev.consumers)

    def _bind_one(self, dev: PCIDevice, platform: PlatformFacts | None = None) -> Outcome:
        try:
            driver = self.target_driver(dev, platform)
            aux = [pci.read_device(self.fs, b) for b in dev.consumers]
            if dev.driver == driver and all(a.driver == driver for a in aux):
                return Outcome(str(dev.bdf), "already-bound", driver, aux=tuple(str(a.bdf) for a in aux))
            for d in [dev, *aux]:
                self._move(d, driver)
            return Outcome(str(dev.bdf), "bound", driver, aux=tuple(str(a.bdf) for a in aux))
        except (OSError, ValueError) as e:  # reported by the caller: once per reason by `run`, by the CLI
            return Outcome(str(dev.bdf), "failed", dev.driver, error=str(e))

    def _move(self, dev: PCIDevice, driver: str) -> None:
        if dev.driver == driver:
            return
        if dev.driver is not None:
            self.fs.write(f"{DRIVERS_DIR}/{dev.driver}/unbind", str(dev.bdf))
        self.fs.write(f"{dev.bdf.sysfs_path}/driver_override", driver)
        self.fs.write(f"{DRIVERS_DIR}/{driver}/bind", str(dev.bdf))
        now = pci.read_device(self.fs, dev.bdf)
        if now.driver != driver:
            raise OSError(f"{dev.bdf} is on {now.driver or 'no driver'} after binding to {driver}")
        log.info("bound %s to %s (was %s)", dev.bdf, driver, dev.driver or "unbound")

    # unbind ----------------------------------------------------------------------------------
    def unbind(self, devices: Sequence[PCIDevice]) -> Report:
        """Unbind from vfio; a device whose VFIO group is open (a VM uses it) is left alone and reported busy."""
        held = open_vfio_nodes(self.fs)
        report = Report()
        todo = [d for d in devices if not holders(d, held)]
        if todo:
            self._record("unbind", todo)
        for dev in devices:
            pids = holders(dev, held)
            if pids:
                msg = f"VFIO group {dev.iommu_group} is open (pids {', '.join(map(str, pids))}): a VM is using it"
                report.outcomes.append(Outcome(str(dev.bdf), "busy", dev.driver, error=msg))
                continue
            report.outcomes.append(self._unbind_one(dev))
        if todo:
            self._done()
        return report

    def _unbind_one(self, dev: PCIDevice) -> Outcome:
        try:
            aux = [pci.read_device(self.fs, b) for b in dev.consumers]
            was = dev.driver
            for d in [dev, *aux]:
                if d.driver_override is not None:
                    self.fs.write(f"{d.bdf.sysfs_path}/driver_override", "\n")
                if d.driver is not None:
                    self.fs.write(f"{DRIVERS_DIR}/{d.driver}/unbind", str(d.bdf))
            return Outcome(str(dev.bdf), "unbound" if was else "not-bound", None, aux=tuple(str(a.bdf) for a in aux))
        except (OSError, ValueError) as e:
            return Outcome(str(dev.bdf), "failed", dev.driver, error=str(e))

    def all_on_vfio(self) -> bool:
        devs = self.devices()
        return bool(devs) and all(is_vfio_driver(d.driver) for d in devs)


# --- the long-running agent --------------------------------------------------------------------------


def readiness_path() -> str:
    return f"{labels.VALIDATIONS_DIR}/{labels.READY_VFIO_PCI}"


def set_ready(fs: Sysfs, ready: bool) -> bool:
    """Write or remove `vfio-pci-ready`; returns whether it changed."""
    path = readiness_path()
    if ready == fs.exists(path):
        return False
    if ready:
        fs.write_file(path, "true")
    else:
        fs.remove(path)
    log.info("%s %s", labels.READY_VFIO_PCI, "written" if ready else "removed")
    return True


async def node_left_passthrough(node) -> bool:
    """True when the node's workload config is no longer vm-passthrough (the one case to unbind on stop)."""
    view = await node.get()
    return view.labels.get(labels.WORKLOAD_CONFIG) != labels.WorkloadConfig.VM_PASSTHROUGH.value


async def run(
    manager: VfioManager,
    stop: asyncio.Event,
    *,
    node=None,
    interval_s: float = 2.0,
    on_pass: Callable[[Report], None] | None = None,
    pace: Pace = sleep_or_stop,
) -> None:
    """Finish an interrupted change, then bind every managed device and keep doing so for devices that appear
    (hot-plug, a GPU back on the bus), writing `vfio-pci-ready` only while all are on a vfio driver. Between
    passes it waits with `pace` (its interval; a caller that knows when the host changed returns earlier).

    On stop, devices stay bound (a VM may be using them: the upstream rollout bug) unless `node` (a NodeHandle)
    shows the node has left vm-passthrough; then they are unbound, except those a VM still holds open."""
    manager.resume()
    failing: dict[str, str | None] = {}  # said once per device and reason, not on every pass
    while not stop.is_set():
        devices = manager.devices()
        report = await asyncio.to_thread(manager.bind, devices)
        for o in report.outcomes:  # a bind is logged by the manager as it happens
            if o.ok:
                failing.pop(o.bdf, None)
            elif failing.get(o.bdf, "") != o.error:
                failing[o.bdf] = o.error
                log.error("could not bind %s: %s", o.bdf, o.error)
        set_ready(manager.fs, report.ok and manager.all_on_vfio())
        if on_pass is not None:
            on_pass(report)
        await pace(stop, interval_s)
    set_ready(manager.fs, False)
    if node is not None and await node_left_passthrough(node):
        report = manager.unbind(manager.devices())
        log.info("node left vm-passthrough; unbound:\n%s", report.summary())
    else:
        log.info("stopping; devices stay bound (a VM may be using them)")

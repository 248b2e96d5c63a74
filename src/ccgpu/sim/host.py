"""Simulated hosts: a complete fake host tree in a directory, and a `Sysfs` that applies the kernel's side effects.

`SimulatedHost.create(root, "8xh100-snp")` lays out what production code reads under `Sysfs(root)`: PCI
devices under `sys/devices/pci0000:XX/<bdf>/` with their attribute files, `sys/bus/pci/{devices,drivers}`,
IOMMU groups, CPU TEE module parameters, `proc/{cpuinfo,cmdline,modules}`, `modules.alias`, `/dev/vfio`.
`host.sysfs` (a `SimSysfs`) is the same `Sysfs` API with Linux's write semantics: unbind, bind (EBUSY if bound,
driver_override wins), drivers_probe, new_id, reset applying a GPU's pending CC/PPCIe mode, VFIO nodes that
appear and go. `host.gpu(bdf)` is the handle the gpu-admin-tools emulator and tests use for CC state and
fault knobs (reset failure/duration, fall off the bus, VFIO group held open).

All state lives in `<root>/.sim/state.json` under a file lock, so any process that opens the same tree with
`SimulatedHost.open(root)` or `SimSysfs(root)` sees and changes the same host.

Deliberate differences from Linux, each documented where it happens:
- unbinding a vfio-pci device whose group a process holds open blocks in Linux; here it fails with EBUSY;
- `/dev/vfio/<group>` appears once every device of the group is on a VFIO driver or unbound (Linux creates it
  at the first VFIO bind and reports the group not viable on open), so its presence means "usable";
- device nodes are regular files; PCI devices hang directly off their root bus (no switch chain).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from ccgpu.hw import catalog
from ccgpu.hw.pci import BDF
from ccgpu.hw.sysfs import Sysfs
from ccgpu.sim import kernel
from ccgpu.sim.boot import SimHostError, build_state, static_files
from ccgpu.sim.kernel import KernelError
from ccgpu.sim.profiles import HostProfile, get_profile
from ccgpu.sim.render import render
from ccgpu.sim.signals import host_changed
from ccgpu.sim.state import DeviceState, Holder, HostState, StateStore, device_snapshot


@dataclass(frozen=True)
class CCState:
    """A simulated device's confidential-computing state: what runs now and what the next reset applies."""

    current: str
    pending: str
    ppcie_current: str
    ppcie_pending: str
    cc_capable: bool
    ppcie_capable: bool


# --- the host --------------------------------------------------------------------------------------------------
class SimulatedHost:
    """A simulated host tree under `root`. Build one with `create`, reopen one (any process) with `open`."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.realpath(root))
        self._store = StateStore(self.root)
        if not self._store.exists:
            raise SimHostError(
                f"{self.root} is not a simulated host tree (no .sim/state.json); create one first"
            )

    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str],
        profile: str | HostProfile = "8xh100-snp",
        *,
        fixtures: str | os.PathLike[str] | None = None,
        **overrides: object,
    ) -> SimulatedHost:
        """Materialise `profile` (a name or a HostProfile) under `root`, which must be absent or empty.

        `overrides` replace HostProfile fields for a variant, e.g. `iommu=False`, `gpu_driver=None`,
        `tee=None`, `iommufd=True`.
        """
        hp = get_profile(profile) if isinstance(profile, str) else profile
        if overrides:
            unknown = set(overrides) - set(HostProfile.__dataclass_fields__)
            if unknown:
                raise SimHostError(
                    f"unknown host profile field(s) {', '.join(sorted(unknown))}; "
                    f"fields: {', '.join(HostProfile.__dataclass_fields__)}"
                )
            # Override values are the caller's, untyped by design (names are checked above, values by
            # HostProfile.__post_init__), so mypy cannot match them to each field's type.
            hp = replace(hp, **overrides)  # type: ignore[arg-type]
        path = Path(root)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise SimHostError(
                f"{path} exists and is not an empty directory; a simulated host needs a fresh one"
            )
        state = build_state(hp, Path(fixtures) if fixtures else None)
        path.mkdir(parents=True, exist_ok=True)
        for rel, (content, mode) in static_files(hp).items():
            target = path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            os.chmod(target, mode)
        (path / "run/nvidia/validations").mkdir(parents=True, exist_ok=True)
        store = StateStore(path)
        with store.lock():
            store.save(state)
            render(path, state)
        return cls(path)

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> SimulatedHost:
        return cls(root)

    # --- views ---
    @property
    def sysfs(self) -> SimSysfs:
        return SimSysfs(self.root)

    def state(self) -> HostState:
        """A snapshot of the whole state (changing it changes nothing; use the handles)."""
        with self._store.lock():
            return self._store.load()

    @property
    def profile(self) -> str:
        return self.state().profile

    def devices(self, kind: str | None = None, present_only: bool = True) -> list[str]:
        """BDFs of the simulated devices (`kind` = gpu, nvswitch or audio), sorted."""
        return sorted(
            d.bdf
            for d in self.state().devices.values()
            if (kind is None or d.kind == kind) and (d.present or not present_only)
        )

    def gpus(self) -> list[str]:
        return self.devices("gpu")

    def nvswitches(self) -> list[str]:
        return self.devices("nvswitch")

    def device(self, bdf: str) -> SimDevice:
        """The handle of any simulated device (GPU, NVSwitch, audio function)."""
        key = str(BDF.parse(bdf))
        if key not in self.state().devices:
            raise SimHostError(
                f"no simulated device {bdf!r}; devices: {', '.join(self.devices(present_only=False))}"
            )
        return SimDevice(self, key)

    def gpu(self, bdf: str) -> SimDevice:
        """The handle of a simulated GPU or NVSwitch (what gpu-admin-tools works on)."""
        dev = self.device(bdf)
        if dev.kind == "audio":
            raise SimHostError(f"{bdf} is an audio function, not a GPU or NVSwitch")
        return dev

    @contextlib.contextmanager
    def change(self) -> Iterator[HostState]:
        """Lock the state, let the caller change it, save it and re-render the tree (nothing if it raises)."""
        with self._store.lock():
            state = self._store.load()
            before = {bdf: device_snapshot(d) for bdf, d in state.devices.items()}
            yield state
            self._store.save(state)
            changed = {bdf for bdf, d in state.devices.items() if device_snapshot(d) != before.get(bdf)}
            render(self.root, state, changed)


class SimDevice:
    """One simulated device: CC/PPCIe state for the gpu-admin-tools emulator, and fault knobs for tests."""

    def __init__(self, host: SimulatedHost, bdf: str) -> None:
        self.host = host
        self.bdf = bdf

    def __repr__(self) -> str:
        return f"SimDevice({self.bdf!r})"

    def _get(self) -> DeviceState:
        return self.host.state().devices[self.bdf]

    @contextlib.contextmanager
    def _edit(self) -> Iterator[DeviceState]:
        with self.host.change() as state:
            yield state.devices[self.bdf]

    @contextlib.contextmanager
    def _edit_present(self) -> Iterator[DeviceState]:
        with self._edit() as dev:
            if not dev.present:
                raise OSError(errno.ENODEV, f"{self.bdf} is no longer on the PCI bus")
            yield dev

    # --- facts ---
    @property
    def kind(self) -> str:
        return self._get().kind

    @property
    def driver(self) -> str | None:
        return self._get().driver

    @property
    def present(self) -> bool:
        return self._get().present

    @property
    def iommu_group(self) -> int | None:
        return self._get().iommu_group

    @property
    def model(self) -> catalog.Model:
        """Catalog facts for this device (name, arch, CC/PPCIe capability)."""
        d = self._get()
        return catalog.lookup(d.device, d.class_code)

    @property
    def bar0(self) -> int:
        """BAR0's address (gpu-admin-tools prints it in every log line)."""
        return int(self._get().attrs["resource"].split()[0], 16)

    @property
    def resets(self) -> int:
        """How many resets succeeded (lets tests check that a reset did or did not happen)."""
        return self._get().resets

    # --- CC (the API the gpu-admin-tools emulator drives) ---
    def query_cc(self) -> CCState:
        d = self._get()
        if not d.present:
            raise OSError(errno.ENODEV, f"{self.bdf} is no longer on the PCI bus")
        return CCState(
            d.cc_current, d.cc_pending, d.ppcie_current, d.ppcie_pending, d.cc_capable, d.ppcie_capable
        )

    def set_pending_cc(self, mode: str) -> None:
        """Stage a CC mode (off, on, devtools); it becomes current at the next reset."""
        with self._edit_present() as dev:
            kernel.set_pending_cc(dev, mode)

    def set_pending_ppcie(self, mode: str) -> None:
        """Stage a PPCIe mode (off, on); it becomes current at the next reset."""
        with self._edit_present() as dev:
            kernel.set_pending_ppcie(dev, mode)

    def force_modes(self, cc: str | None = None, ppcie: str | None = None) -> None:
        """Put the device in a mode as if it had booted that way (current and pending both): a test set-up knob."""
        with self._edit_present() as dev:
            if cc is not None:
                kernel.set_pending_cc(dev, cc)
            if ppcie is not None:
                kernel.set_pending_ppcie(dev, ppcie)
            dev.cc_current, dev.ppcie_current = dev.cc_pending, dev.ppcie_pending

    def reset(self) -> None:
        """Reset the way gpu-admin-tools' --reset-with-os does: write 1 to the device's sysfs `reset`."""
        self.host.sysfs.write(f"sys/bus/pci/devices/{self.bdf}/reset", "1")

    # --- fault knobs ---
    def fail_resets(self, err: int | None = errno.EIO) -> None:
        """Make every reset of this device fail with `err` (None: resets work again)."""
        if err is not None and (not isinstance(err, int) or err <= 0 or err not in errno.errorcode):
            raise SimHostError(
                f"reset fault must be an errno such as errno.EIO ({errno.EIO}) or None, got {err!r}"
            )
        with self._edit() as dev:
            dev.reset_errno = err

    def set_reset_duration(self, ms: int) -> None:
        """How long a reset of this device takes (the writer of `reset` waits that long)."""
        if not isinstance(ms, int) or ms < 0:
            raise SimHostError(f"reset duration must be a whole number of milliseconds >= 0, got {ms!r}")
        with self._edit() as dev:
            dev.reset_ms = ms

    def fall_off_bus(self) -> None:
        """The device drops off the bus (as after Xid 79): gone from sysfs, its VFIO nodes with it."""
        with self.host.change() as state:
            kernel.fall_off_bus(state, state.devices[self.bdf])

    def hold_busy(self, comm: str = "qemu-system-x86_64", cdev: bool = False) -> int:
        """A process opens this device's VFIO group (`proc/<pid>/fd/<n> -> /dev/vfio/<group>`), or with `cdev`
        its iommufd device node (`-> /dev/vfio/devices/vfioN`). Returns the pid.

        The node must exist (the device bound to a VFIO driver), as open(2) of a missing node would fail."""
        with self.host.change() as state:
            dev = state.devices[self.bdf]
            group = dev.iommu_group
            if not dev.present or group is None or not state.group_viable(group):
                raise SimHostError(
                    f"{self.bdf} has no /dev/vfio group node to hold open (bind it to vfio-pci first)"
                )
            if cdev and dev.vfio_cdev is None:
                raise SimHostError(
                    f"{self.bdf} has no /dev/vfio/devices node (only iommufd hosts give VFIO devices one)"
                )
            pid = state.next_pid
            state.next_pid += 1
            state.holders.append(
                Holder(pid=pid, fd=3, group=group, comm=comm, cdev=dev.vfio_cdev if cdev else None)
            )
            return pid

    def release_busy(self) -> None:
        """Every process holding this device's VFIO group or device node closes it."""
        with self.host.change() as state:
            dev = state.devices[self.bdf]
            state.holders = [h for h in state.holders if not h.holds(dev)]


# --- the kernel's write side -----------------------------------------------------------------------------------
class SimSysfs(Sysfs):
    """`Sysfs` over a simulated host tree whose writes have the kernel's side effects, synchronously.

    Reads behave as on sysfs too: a write-only attribute (`reset`, `bind`) cannot be read (EACCES)."""

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        super().__init__(root)
        self._host = SimulatedHost(self.root)

    def _read_path(self, path: Path) -> bytes:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = 0o444  # let the read below raise what it raises
        if stat.S_ISREG(mode) and not mode & 0o444 and self.relative(path).startswith("sys/"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return super()._read_path(path)

    def write(self, rel: str, value: str) -> None:
        path = self.path(rel)
        if not os.path.lexists(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), rel)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), rel)
        real = self.relative(path)
        if not isinstance(value, str):
            raise TypeError(f"sysfs values are text, got {type(value).__name__}")
        try:
            self._dispatch(real, value)
        except KernelError as e:
            raise OSError(e.errno, f"{e.strerror} ({e.reason})", rel) from None

    def _dispatch(self, real: str, value: str) -> None:
        parts = real.split("/")
        if len(parts) == 6 and parts[:4] == ["sys", "bus", "pci", "drivers"]:
            op = {
                "bind": kernel.bind,
                "unbind": kernel.unbind,
                "new_id": kernel.new_id,
                "remove_id": kernel.remove_id,
            }.get(parts[5])
            if op is not None:
                with self._host.change() as state:
                    op(state, parts[4], value)
                return
        if real == "sys/bus/pci/drivers_probe":
            with self._host.change() as state:
                kernel.drivers_probe(state, value)
            return
        if real == "sys/bus/pci/rescan":
            with self._host.change() as state:
                kernel.rescan(state, value)
            return
        if real.startswith("sys/devices/"):
            devdir, attr = real.rsplit("/", 1)
            bdf = devdir.rsplit("/", 1)[-1]
            with self._host.change() as state:
                dev = state.devices.get(bdf)
                if dev is not None and dev.devdir == devdir and dev.present:
                    if attr == "reset":
                        kernel.check_reset(dev, value)
                        dev.resetting = True
                        duration_ms = dev.reset_ms
                    else:
                        self._device_attr(state, dev, attr, value)
                        return
                else:
                    dev = None
            if dev is not None:
                self._finish_reset(bdf, duration_ms)
                return
        self._plain(real, value)

    def _device_attr(self, state: HostState, dev: DeviceState, attr: str, value: str) -> None:
        if attr == "driver_override":
            kernel.set_driver_override(dev, value)
        elif attr == "reset_method":
            kernel.set_reset_method(dev, dev.attrs.get("reset_method", "flr\n").strip(), value)
        elif attr == "remove":
            kernel.remove_device(state, dev, value)
        elif attr == "rescan":
            kernel.rescan(state, value)
        elif attr in dev.attrs and dev.modes.get(attr, 0o444) & 0o222:
            dev.attrs[attr] = value if value.endswith("\n") else value + "\n"
        else:
            raise KernelError(errno.EACCES, f"{dev.bdf}/{attr} is read-only")

    def _finish_reset(self, bdf: str, duration_ms: int) -> None:
        """The reset itself: takes `duration_ms` (outside the lock, so other devices are not held up)."""
        if duration_ms:
            time.sleep(duration_ms / 1000)
        with self._host.change() as state:
            dev = state.devices[bdf]
            dev.resetting = False
            if dev.present:
                kernel.apply_reset(dev)
        if not dev.present:
            raise KernelError(errno.ENODEV, f"{bdf} fell off the bus during its reset")

    def _plain(self, real: str, value: str) -> None:
        """Any other file: read-only sysfs/proc attributes refuse writes (EACCES), the rest take the value."""
        path = self.root / real
        if real.startswith(("sys/", "proc/")) and not path.stat().st_mode & 0o222:
            raise KernelError(errno.EACCES, f"{real} is read-only")
        super().write(real, value)

    # kernfs and procfs have no create, unlink or mkdir: the VFS refuses them before any file system code runs.
    def _refuse_in_kernel_fs(self, rel: str, err: int, what: str) -> None:
        real = self.relative(self.path(rel, follow=False).parent)
        if real == "sys" or real == "proc" or real.startswith(("sys/", "proc/")):
            raise OSError(err, f"{os.strerror(err)} ({what} in a kernel file system)", rel)

    def write_file(self, rel: str, data: str | bytes, mode: int = 0o644) -> None:
        """Creating a file under sys/ or proc/ fails with EACCES (vfs_create: no ->create), elsewhere works."""
        self._refuse_in_kernel_fs(rel, errno.EACCES, "creating a file")
        super().write_file(rel, data, mode)
        host_changed(self.root, "file")

    def remove(self, rel: str, missing_ok: bool = True) -> None:
        """Removing a file under sys/ or proc/ fails with EPERM (vfs_unlink: no ->unlink), elsewhere works."""
        self._refuse_in_kernel_fs(rel, errno.EPERM, "removing a file")
        super().remove(rel, missing_ok)
        host_changed(self.root, "file")

    def makedirs(self, rel: str) -> None:
        """Making a directory under sys/ or proc/ fails with EPERM (vfs_mkdir: no ->mkdir), elsewhere works."""
        if not self.is_dir(rel):
            self._refuse_in_kernel_fs(rel, errno.EPERM, "making a directory")
        super().makedirs(rel)


def sysfs_for(root: str | os.PathLike[str]) -> Sysfs:
    """A `SimSysfs` if `root` is a simulated host tree, else a plain `Sysfs` (for tools that take --root)."""
    if StateStore(Path(os.path.realpath(root))).exists:
        return SimSysfs(root)
    return Sysfs(root)


def describe(host: SimulatedHost) -> str:
    """A few lines saying what a simulated host holds (for people running `ccgpu sim host`)."""
    state = host.state()
    lines = [f"simulated host {state.profile} at {host.root}"]
    tee = {"snp": "AMD SEV-SNP", "tdx": "Intel TDX", None: "no CPU TEE"}[state.tee]
    vfio = "iommufd + legacy VFIO" if state.iommufd else "legacy VFIO" if state.iommu else "IOMMU off"
    lines.append(f"  kernel {state.kernel_release}, {tee}, {vfio}")
    for dev in sorted(state.devices.values(), key=lambda d: d.bdf):
        group = "-" if dev.iommu_group is None else str(dev.iommu_group)
        lines.append(
            f"  {dev.bdf}  {dev.kind:<8} {dev.profile:<20} group {group:<3} driver {dev.driver or '(none)'}"
        )
    lines.append(
        f"  open it with ccgpu.sim.host.SimulatedHost.open({str(host.root)!r}) or point --root at it"
    )
    return "\n".join(lines)

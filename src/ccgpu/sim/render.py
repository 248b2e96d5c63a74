"""Render the simulated host's state as the files the kernel would show under sys/, dev/ and proc/.

`render(root, state)` is idempotent: it brings the tree to what the state says, writing only what differs, so
it runs after every change. Links are relative the way the kernel makes them (`driver ->
../../../bus/pci/drivers/nvidia`). Device nodes are plain files (creating character devices needs root).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from ccgpu.sim.state import DeviceState, HostState

VFIO_CDEV_MAJOR = 509  # dynamic in Linux; any fixed value will do
DRIVER_ATTRS = {"bind": 0o200, "unbind": 0o200, "new_id": 0o200, "remove_id": 0o200, "uevent": 0o200}


def _write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    payload = data.encode() if isinstance(data, str) else data
    if not path.is_file() or path.is_symlink() or path.read_bytes() != payload:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            path.unlink()
        path.write_bytes(payload)
    if (path.stat().st_mode & 0o777) != mode:
        os.chmod(path, mode)


def _link(root: Path, link_rel: str, target_rel: str) -> None:
    """A relative symlink at `link_rel` pointing at `target_rel` (both root-relative)."""
    link = root / link_rel
    rel = os.path.relpath(target_rel, os.path.dirname(link_rel))
    if link.is_symlink() and os.readlink(link) == rel:
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    _remove(link)
    os.symlink(rel, link)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def uevent(dev: DeviceState) -> str:
    lines = [f"DRIVER={dev.driver}"] if dev.driver else []
    lines += [
        f"PCI_CLASS={dev.class_code:X}",
        f"PCI_ID={dev.vendor:04X}:{dev.device:04X}",
        f"PCI_SUBSYS_ID={dev.subsystem_vendor:04X}:{dev.subsystem_device:04X}",
        f"PCI_SLOT_NAME={dev.bdf}",
        f"MODALIAS={dev.attrs['modalias'].strip()}",
    ]
    return "\n".join(lines) + "\n"


def _device(root: Path, state: HostState, dev: DeviceState) -> None:
    d = root / dev.devdir
    bus_link = f"sys/bus/pci/devices/{dev.bdf}"
    if not dev.present:
        _remove(d)
        _remove(root / bus_link)
        return
    d.mkdir(parents=True, exist_ok=True)
    for name, content in dev.attrs.items():
        if name in ("uevent", "driver_override", "reset_method"):
            continue
        _write(d / name, content, dev.modes.get(name, 0o444))
    _write(d / "uevent", uevent(dev), dev.modes.get("uevent", 0o644))
    override = dev.driver_override if dev.driver_override is not None else "(null)"
    _write(d / "driver_override", override + "\n", 0o644)
    _write(d / "reset_method", dev.reset_method + "\n", 0o644)
    for name in ("remove", "rescan", "reset"):
        _write(d / name, "", dev.modes.get(name, 0o200))
    _write(d / "config", bytes.fromhex(dev.config_hex), 0o644)
    for name, content, mode in (("control", "on\n", 0o644), ("runtime_status", "active\n", 0o444)):
        if not (d / "power" / name).exists():  # runtime PM: written by tools (gpu-admin-tools sets "on")
            _write(d / "power" / name, content, mode)
    _link(root, f"{dev.devdir}/subsystem", "sys/bus/pci")
    _link(root, bus_link, dev.devdir)

    if dev.driver:
        _link(root, f"{dev.devdir}/driver", f"sys/bus/pci/drivers/{dev.driver}")
    else:
        _remove(d / "driver")

    if dev.iommu_group is not None and state.iommu:
        group = f"sys/kernel/iommu_groups/{dev.iommu_group}"
        _link(root, f"{dev.devdir}/iommu_group", group)
        _link(root, f"{group}/devices/{dev.bdf}", dev.devdir)
        _write(root / group / "type", "DMA\n", 0o644)
        _write(root / group / "reserved_regions", "", 0o444)
    else:
        _remove(d / "iommu_group")

    vfio_dev = d / "vfio-dev"
    if dev.vfio_cdev is not None:
        name = f"vfio{dev.vfio_cdev}"
        for stale in vfio_dev.iterdir() if vfio_dev.is_dir() else ():
            if stale.name != name:
                _remove(stale)
        _write(vfio_dev / name / "dev", f"{VFIO_CDEV_MAJOR}:{dev.vfio_cdev}\n", 0o444)
        _write(
            vfio_dev / name / "uevent",
            f"MAJOR={VFIO_CDEV_MAJOR}\nMINOR={dev.vfio_cdev}\nDEVNAME=vfio/devices/{name}\n",
            0o644,
        )
    else:
        _remove(vfio_dev)


def _aux_links(root: Path, state: HostState) -> None:
    """`consumer:pci:<aux>` in the GPU, `supplier:pci:<gpu>` in the aux function, both into a devlink dir."""
    for dev in state.devices.values():
        if dev.supplier is None:
            continue
        gpu = state.devices[dev.supplier]
        devlink = f"sys/devices/virtual/devlink/pci:{gpu.bdf}--pci:{dev.bdf}"
        if dev.present and gpu.present:
            _link(root, f"{gpu.devdir}/consumer:pci:{dev.bdf}", devlink)
            _link(root, f"{dev.devdir}/supplier:pci:{gpu.bdf}", devlink)
            _link(root, f"{devlink}/consumer", dev.devdir)
            _link(root, f"{devlink}/supplier", gpu.devdir)
            _write(
                root / devlink / "status", "active\n" if dev.driver and gpu.driver else "available\n", 0o444
            )
            _write(root / devlink / "sync_state_only", "0\n", 0o444)
        else:
            _remove(root / devlink)
            if gpu.present:
                _remove(root / gpu.devdir / f"consumer:pci:{dev.bdf}")


def _drivers(root: Path, state: HostState) -> None:
    drivers = root / "sys/bus/pci/drivers"
    drivers.mkdir(parents=True, exist_ok=True)
    for entry in drivers.iterdir():
        if entry.name not in state.drivers:
            _remove(entry)
    for name in state.drivers:
        ddir = drivers / name
        for attr, mode in DRIVER_ATTRS.items():
            _write(ddir / attr, "", mode)
        bound = {d.bdf: d for d in state.devices.values() if d.present and d.driver == name}
        for entry in ddir.iterdir():
            if entry.is_symlink() and entry.name not in bound and entry.name != "module":
                entry.unlink()
        for bdf, dev in bound.items():
            _link(root, f"sys/bus/pci/drivers/{name}/{bdf}", dev.devdir)
        _link(root, f"sys/bus/pci/drivers/{name}/module", f"sys/module/{state.drivers[name].module}")
        (root / "sys/module" / state.drivers[name].module).mkdir(parents=True, exist_ok=True)


def _groups_and_nodes(root: Path, state: HostState) -> None:
    groups_dir = root / "sys/kernel/iommu_groups"
    groups_dir.mkdir(parents=True, exist_ok=True)
    present_groups = {
        d.iommu_group for d in state.devices.values() if d.present and d.iommu_group is not None
    }
    if not state.iommu:
        present_groups = set()
    for entry in groups_dir.iterdir():
        if not entry.name.isdigit() or int(entry.name) not in present_groups:
            _remove(entry)
            continue
        members = {d.bdf for d in state.group_members(int(entry.name))}
        for link in (entry / "devices").iterdir():
            if link.name not in members:
                link.unlink()

    vfio = root / "dev/vfio"
    vfio.mkdir(parents=True, exist_ok=True)
    viable = {g for g in present_groups if state.group_viable(g)}
    for entry in vfio.iterdir():
        if entry.name.isdigit() and int(entry.name) not in viable:
            _remove(entry)
    for g in viable:
        _write(vfio / str(g), "", 0o600)

    cdevs = {f"vfio{d.vfio_cdev}" for d in state.devices.values() if d.present and d.vfio_cdev is not None}
    devices = vfio / "devices"
    if state.iommufd:
        devices.mkdir(exist_ok=True)
        for entry in devices.iterdir():
            if entry.name not in cdevs:
                _remove(entry)
        for name in cdevs:
            _write(devices / name, "", 0o600)


def _proc(root: Path, state: HostState) -> None:
    proc = root / "proc"
    lines = [f"{m} 65536 0 - Live 0x0000000000000000" for m in state.modules]
    _write(proc / "modules", "\n".join(lines) + ("\n" if lines else ""), 0o444)
    holders = {str(h.pid) for h in state.holders}
    for entry in proc.iterdir():
        if entry.name.isdigit() and entry.name not in holders:
            _remove(entry)
    for h in state.holders:
        pdir = proc / str(h.pid)
        _write(pdir / "comm", h.comm + "\n", 0o644)
        fd = pdir / "fd" / str(h.fd)
        fd.parent.mkdir(parents=True, exist_ok=True)
        target = h.target
        if not (fd.is_symlink() and os.readlink(fd) == target):
            _remove(fd)
            os.symlink(target, fd)


def render(root: Path, state: HostState, devices: Iterable[str] | None = None) -> None:
    """Bring the tree under `root` to what `state` says; `devices` limits the per-device work to those BDFs
    (the ones a change touched), the host-wide parts are always brought up to date."""
    root = Path(root)
    for dev in state.devices.values():
        if devices is None or dev.bdf in devices:
            _device(root, state, dev)
    _aux_links(root, state)
    _drivers(root, state)
    _groups_and_nodes(root, state)
    _proc(root, state)

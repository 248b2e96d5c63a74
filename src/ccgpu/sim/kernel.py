"""The simulated kernel's decisions: what a sysfs write does to the host state, or which errno it fails with.

Pure functions over `HostState` (no file access); each mirrors the Linux code path named in its docstring
(drivers/base/bus.c, drivers/pci/pci-driver.c, drivers/pci/pci-sysfs.c, drivers/base/driver.c). They validate
everything before changing anything, so a refused write leaves the state as it was.
"""

from __future__ import annotations

import errno
import os
import re

from ccgpu.sim.state import DeviceState, HostState, PciDriver

PCI_ANY_ID = 0xFFFFFFFF
PAGE_SIZE = 4096
CC_MODES = ("off", "on", "devtools")
PPCIE_MODES = ("off", "on")


class KernelError(OSError):
    """A write the kernel refuses; `errno` is what write(2) returns, `reason` says why (for people)."""

    def __init__(self, err: int, reason: str) -> None:
        super().__init__(err, os.strerror(err))
        self.reason = reason


def _c_string(buf: str) -> str:
    """The written bytes as the kernel's C code sees them: up to the first NUL."""
    return buf.split("\x00", 1)[0]


def _one_line(buf: str) -> str:
    """sysfs_streq: compared as a C string, a single trailing newline ignored."""
    text = _c_string(buf)
    return text[:-1] if text.endswith("\n") else text


def find_device(state: HostState, buf: str) -> DeviceState | None:
    """bus_find_device_by_name: exact (case-sensitive) name match, trailing newline ignored, present devices only."""
    dev = state.devices.get(_one_line(buf))
    return dev if dev is not None and dev.present else None


def _id_matches(ident: list, dev: DeviceState) -> bool:
    vendor, device, cls, mask = ident[0], ident[1], ident[2], ident[3]
    return (
        (vendor is None or vendor == dev.vendor)
        and (device is None or device == dev.device)
        and (dev.class_code & mask) == (cls & mask)
    )


def _dynid_matches(dyn: list, dev: DeviceState) -> bool:
    vendor, device, sv, sd, cls, mask = dyn
    return (
        vendor in (PCI_ANY_ID, dev.vendor)
        and device in (PCI_ANY_ID, dev.device)
        and sv in (PCI_ANY_ID, dev.subsystem_vendor)
        and sd in (PCI_ANY_ID, dev.subsystem_device)
        and (dev.class_code & mask) == (cls & mask)
    )


def driver_matches(drv: PciDriver, dev: DeviceState) -> bool:
    """pci_match_device: a driver_override naming another driver wins over every id; dynamic ids first, then
    the static table (override-only entries need the override), and an override naming this driver always
    matches."""
    if dev.driver_override is not None and dev.driver_override != drv.name:
        return False
    if any(_dynid_matches(d, dev) for d in drv.dynids):
        return True
    for ident in drv.ids:
        if ident[4] and dev.driver_override != drv.name:
            continue
        if _id_matches(ident, dev):
            return True
    return dev.driver_override == drv.name


def probe(state: HostState, drv: PciDriver, dev: DeviceState) -> None:
    """really_probe: the driver's probe; vfio-pci refuses a device without an IOMMU group (EINVAL)."""
    if drv.needs_iommu and dev.iommu_group is None:
        raise KernelError(errno.EINVAL, f"{drv.name} probe of {dev.bdf}: no IOMMU group (IOMMU off?)")
    dev.driver = drv.name
    if drv.vfio and state.iommufd:
        used = {d.vfio_cdev for d in state.devices.values() if d.vfio_cdev is not None}
        dev.vfio_cdev = next(n for n in range(len(used) + 1) if n not in used)


def _release(state: HostState, dev: DeviceState) -> None:
    """device_release_driver. vfio-pci's remove waits (in Linux: blocks the writer) until every user closes
    the device; the simulator refuses with EBUSY instead of blocking, so callers see the condition at once."""
    if dev.driver is None:
        return
    drv = state.drivers[dev.driver]
    if drv.vfio and state.device_open(dev):
        raise KernelError(errno.EBUSY, f"{dev.bdf}: a process holds its VFIO group or device open")
    dev.driver = None
    dev.vfio_cdev = None


def _driver(state: HostState, name: str) -> PciDriver:
    drv = state.drivers.get(name)
    if drv is None:  # the attribute file exists only for loaded drivers; callers resolve paths first
        raise KernelError(errno.ENOENT, f"no PCI driver {name!r} is loaded")
    return drv


def bind(state: HostState, driver: str, buf: str) -> None:
    """bind_store: ENODEV unless the device exists and the driver matches it (driver_override honoured);
    EBUSY if it already has a driver; the probe's errno if probing fails."""
    drv = _driver(state, driver)
    dev = find_device(state, buf)
    if dev is None:
        raise KernelError(errno.ENODEV, f"no PCI device named {_one_line(buf)!r}")
    if not driver_matches(drv, dev):
        why = (
            f"driver_override is {dev.driver_override!r}"
            if dev.driver_override is not None
            else f"{driver} has no id matching it (set driver_override or new_id first)"
        )
        raise KernelError(errno.ENODEV, f"{dev.bdf} does not match {driver}: {why}")
    if dev.driver is not None:
        raise KernelError(errno.EBUSY, f"{dev.bdf} is already bound to {dev.driver}")
    probe(state, drv, dev)


def unbind(state: HostState, driver: str, buf: str) -> None:
    """unbind_store: ENODEV unless the named device is bound to this very driver."""
    _driver(state, driver)
    dev = find_device(state, buf)
    if dev is None or dev.driver != driver:
        raise KernelError(errno.ENODEV, f"{_one_line(buf)!r} is not a device bound to {driver}")
    _release(state, dev)


def _attach_first_match(state: HostState, dev: DeviceState) -> None:
    """device_attach: try the loaded drivers in load order; a failing probe leaves the device unbound."""
    for drv in state.drivers.values():
        if driver_matches(drv, dev):
            try:
                probe(state, drv, dev)
            except KernelError:
                continue
            return


def drivers_probe(state: HostState, buf: str) -> None:
    """drivers_probe_store: ENODEV for an unknown device; a bound device is left alone; otherwise the first
    matching driver (the override, if set) binds. No matching driver is not an error."""
    dev = find_device(state, buf)
    if dev is None:
        raise KernelError(errno.ENODEV, f"no PCI device named {_one_line(buf)!r}")
    if dev.driver is None:
        _attach_first_match(state, dev)


def set_driver_override(dev: DeviceState, buf: str) -> None:
    """driver_set_override: EINVAL at PAGE_SIZE-1 bytes or more; the value ends at the first newline; an empty
    value (e.g. "\\n") clears the override. The current binding is not touched."""
    if len(buf.encode()) >= PAGE_SIZE - 1:
        raise KernelError(errno.EINVAL, f"driver_override value of {len(buf)} bytes is too long")
    value = _c_string(buf).split("\n", 1)[0]
    dev.driver_override = value or None


_HEX_FIELD = re.compile(r"(?:0[xX])?[0-9a-fA-F]+")


def _sscanf_hex(buf: str, limit: int) -> list[int]:
    """sscanf("%x %x ..."): hex fields separated by whitespace, stopping at the first that does not parse."""
    out = []
    for tok in buf.split()[:limit]:
        if not _HEX_FIELD.fullmatch(tok):
            break
        out.append(int(tok, 16))
    return out


def new_id(state: HostState, driver: str, buf: str) -> None:
    """new_id_store: "vendor device [subvendor subdevice class class_mask driver_data]" in hex; fewer than two
    fields is EINVAL, an id the static table already matches is EEXIST, driver_data must be one the table
    has (0 here). Then every unbound device the id matches is probed."""
    drv = _driver(state, driver)
    fields = _sscanf_hex(buf, 7)
    if len(fields) < 2:
        raise KernelError(errno.EINVAL, f"new_id wants 'vendor device' in hex, got {buf!r}")
    vendor, device = fields[0], fields[1]
    sv, sd, cls, mask = (fields[2:6] + [PCI_ANY_ID, PCI_ANY_ID, 0, 0][len(fields) - 2 :])[:4]
    if len(fields) == 7 and fields[6] != 0:
        raise KernelError(errno.EINVAL, f"driver_data {fields[6]:#x} is not in {driver}'s id table")
    if len(fields) != 7:
        template = DeviceState(
            bdf="",
            kind="",
            profile="",
            devdir="",
            vendor=vendor,
            device=device,
            subsystem_vendor=sv,
            subsystem_device=sd,
            class_code=cls,
            attrs={},
            modes={},
            config_hex="",
            iommu_group=None,
            numa_node=-1,
        )
        if driver_matches(drv, template):
            raise KernelError(errno.EEXIST, f"{driver} already matches {vendor:04x}:{device:04x}")
    drv.dynids.append([vendor, device, sv, sd, cls, mask])
    for dev in state.devices.values():
        if dev.present and dev.driver is None and driver_matches(drv, dev):
            try:
                probe(state, drv, dev)
            except KernelError:
                pass


def remove_id(state: HostState, driver: str, buf: str) -> None:
    """remove_id_store: "vendor device [subvendor subdevice class class_mask]"; ENODEV if no such dynamic id."""
    drv = _driver(state, driver)
    fields = _sscanf_hex(buf, 6)
    if len(fields) < 2:
        raise KernelError(errno.EINVAL, f"remove_id wants 'vendor device' in hex, got {buf!r}")
    want = (fields + [PCI_ANY_ID, PCI_ANY_ID, 0, 0][len(fields) - 2 :])[:6]
    for dyn in drv.dynids:
        if dyn[:2] == want[:2] and (len(fields) == 2 or dyn == want):
            drv.dynids.remove(dyn)
            return
    raise KernelError(errno.ENODEV, f"{driver} has no dynamic id {buf.strip()!r}")


_KSTRTOUL = re.compile(r"(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


def kstrtoul(buf: str) -> int:
    """kstrtoul(buf, 0): decimal, 0x-hex or 0-octal, one trailing newline allowed, nothing else (EINVAL)."""
    text = _one_line(buf)
    if not _KSTRTOUL.fullmatch(text):
        raise KernelError(errno.EINVAL, f"{buf!r} is not a number")
    return int(text, 0) if not (text.startswith("0") and text[1:2].isdigit()) else int(text, 8)


def check_reset(dev: DeviceState, buf: str) -> None:
    """reset_store: the value must be 1 (EINVAL otherwise); a device without a reset method gives ENOTTY;
    an injected fault gives its errno (EIO by default)."""
    if kstrtoul(buf) != 1:
        raise KernelError(errno.EINVAL, f"reset accepts only 1, got {buf!r}")
    if not dev.reset_method.strip():
        raise KernelError(errno.ENOTTY, f"{dev.bdf} has no reset method (reset_method is empty)")
    if dev.reset_errno is not None:
        raise KernelError(dev.reset_errno, f"{dev.bdf}: injected reset failure")


def apply_reset(dev: DeviceState) -> None:
    """After a successful function reset the GPU boots with the CC/PPCIe mode staged before it."""
    dev.cc_current = dev.cc_pending
    dev.ppcie_current = dev.ppcie_pending
    dev.resets += 1


_RESET_METHODS = ("device_specific", "acpi", "flr", "af_flr", "pm", "bus", "cxl_bus")


def set_reset_method(dev: DeviceState, supported: str, buf: str) -> None:
    """reset_method_store (Linux 6.x): an empty value disables every reset method, "default" restores the probed
    list, otherwise space-separated names each of which the device supports; any other name is EINVAL and
    leaves the methods as they were."""
    text = _one_line(buf)
    if text == "":
        dev.reset_method = ""
        return
    if text == "default":
        dev.reset_method = supported
        return
    names = text.split()
    if not names or any(n not in _RESET_METHODS or n not in supported.split() for n in names):
        raise KernelError(
            errno.EINVAL, f"reset_method {text!r}: supported methods are {supported!r}, 'default' or empty"
        )
    dev.reset_method = " ".join(dict.fromkeys(names))


def remove_device(state: HostState, dev: DeviceState, buf: str) -> None:
    """remove_store: a non-zero number unbinds and removes the device (a later bus rescan finds it again)."""
    if kstrtoul(buf) == 0:
        return
    _release(state, dev)
    dev.present = False
    dev.removed = True


def rescan(state: HostState, buf: str) -> None:
    """bus rescan_store: removed (not fallen-off) devices come back and are probed by their default drivers."""
    if kstrtoul(buf) == 0:
        return
    for dev in state.devices.values():
        if dev.removed:
            dev.present, dev.removed, dev.driver_override = True, False, None
            _attach_first_match(state, dev)


def fall_off_bus(state: HostState, dev: DeviceState) -> None:
    """Surprise removal: the device is gone at once, whatever held it (its VFIO nodes go with it)."""
    dev.present = False
    dev.removed = False
    dev.driver = None
    dev.vfio_cdev = None


def set_pending_cc(dev: DeviceState, mode: str) -> None:
    if not dev.cc_capable:
        raise ValueError(f"{dev.bdf} ({dev.profile}) is not CC capable; only Hopper and newer GPUs are")
    if mode not in CC_MODES:
        raise ValueError(f"CC mode {mode!r} is not one of {', '.join(CC_MODES)}")
    dev.cc_pending = mode
    if mode != "off":  # gpu-admin-tools clears the PPCIe knob when it enables CC
        dev.ppcie_pending = "off"


def set_pending_ppcie(dev: DeviceState, mode: str) -> None:
    if not dev.ppcie_capable:
        raise ValueError(
            f"{dev.bdf} ({dev.profile}) is not PPCIe capable; only Hopper GPUs and H100 NVSwitches are"
        )
    if mode not in PPCIE_MODES:
        raise ValueError(f"PPCIe mode {mode!r} is not one of {', '.join(PPCIE_MODES)}")
    dev.ppcie_pending = mode
    if mode == "on" and dev.cc_capable:
        dev.cc_pending = "off"

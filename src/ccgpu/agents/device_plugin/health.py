"""Is an advertised VFIO device usable right now? Bound to vfio, its nodes present, named in the CDI spec.

Checked by polling (every 50 ms by default) rather than inotify: sysfs does not emit inotify events when a
driver is unbound (the `driver` link vanishes without an event), so a watcher would still need a poll for the
binding. A tick costs one readlink and a few stat() calls per device plus a stat() of each spec file (re-parsed
only when it changed), which is negligible for the at most tens of devices on a node, and bounds the time from
a change to an Unhealthy report by one period -- well inside the 200 ms the kubelet contract here asks for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ccgpu.agents import cdi
from ccgpu.agents.cdi import DeviceIdentity
from ccgpu.hw.pci import BDF
from ccgpu.hw.sysfs import PathEscapeError, Sysfs


def bound_driver(fs: Sysfs, bdf: BDF) -> str | None:
    """The driver a PCI function is bound to (basename of its `driver` link), None when unbound."""
    try:
        return os.path.basename(fs.readlink(f"{bdf.sysfs_path}/driver"))
    except (OSError, PathEscapeError):
        return None


@dataclass
class SpecCache:
    """Device names per CDI kind from the spec files on disk, re-read only when a file's stat changes."""

    fs: Sysfs
    cdi_dir: str

    def __post_init__(self) -> None:
        self._cache: dict[str, tuple[tuple[int, int, int] | None, frozenset[str]]] = {}

    def names(self, kind: str) -> frozenset[str]:
        rel = f"{cdi.host_rel(self.cdi_dir)}/{cdi.spec_file_name(kind)}"
        try:
            st = os.stat(self.fs.path(rel))
            sig: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except (OSError, PathEscapeError):
            sig = None
        cached = self._cache.get(kind)
        if cached is not None and cached[0] == sig:
            return cached[1]
        names = frozenset() if sig is None else cdi.spec_device_names(self.fs, self.cdi_dir, kind)
        self._cache[kind] = (sig, names)
        return names


def problems(fs: Sysfs, ident: DeviceIdentity, specs: SpecCache) -> list[str]:
    """Why `ident` is not usable now (empty list: healthy). Each entry names what is missing."""
    found = []
    for bdf in ident.bdfs:
        driver = bound_driver(fs, bdf)
        if not cdi.is_vfio_driver(driver):
            found.append(
                f"{bdf} is bound to {driver or 'no driver'}, not a VFIO driver (vfio-pci or a *_vfio_pci variant)"
            )
    for node, rel in zip(ident.nodes, ident.node_paths, strict=True):
        if not fs.exists(rel):
            found.append(f"device node {node} is missing")
    if ident.name not in specs.names(ident.kind):
        found.append(f"{ident.cdi_name} is not in the CDI spec {cdi.spec_file_name(ident.kind)}")
    return found

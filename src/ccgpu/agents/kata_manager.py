"""`ccgpu agent kata-manager`: keeps the host CDI spec equal to the node's VFIO devices; optionally containerd.

Each pass recomputes the whole desired state (device identities from `ccgpu.agents.cdi`, one spec per kind)
and writes only differences, atomically, so a restart at any point converges on the next pass and a second
pass changes no byte. The containerd half (Kata runtime drop-in, `imports`, restart, cleanup) lives in
`ccgpu.agents.containerd`; this agent calls it through `configure_containerd` / `cleanup_containerd` when
asked to.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ccgpu.agents import cdi
from ccgpu.agents.cdi import Aliases
from ccgpu.agents.pacing import Pace, sleep_or_stop
from ccgpu.hw.pci import PCIDevice
from ccgpu.hw.sysfs import Sysfs

log = logging.getLogger("ccgpu.kata_manager")


class KataManagerError(RuntimeError):
    """A request the kata-manager cannot carry out; the message says what is missing."""


@dataclass
class KataManagerConfig:
    host_root: str = "/"
    cdi_dir: str = cdi.DEFAULT_CDI_DIR  # host path, resolved under host_root
    aliases: Aliases = field(default_factory=Aliases)
    configure_containerd: bool = False
    containerd_options: dict[str, Any] = field(default_factory=dict)  # keyword arguments for containerd.configure
    interval_s: float = 1.0
    pace: Pace = sleep_or_stop  # how to wait between CDI passes (see agents.pacing)


def _containerd_module() -> Any:
    """`ccgpu.agents.containerd`, or a clear error when this build does not have it."""
    try:
        return importlib.import_module("ccgpu.agents.containerd")
    except ImportError as e:
        raise KataManagerError(
            f"--configure-containerd needs ccgpu.agents.containerd, which this build lacks ({e})"
        ) from None


def configure_containerd(fs: Sysfs, options: dict[str, Any]) -> Any:
    """The seam into the containerd module: add the Kata runtimes to containerd (idempotent)."""
    return _containerd_module().configure(fs, **options)


def cleanup_containerd(fs: Sysfs, options: dict[str, Any]) -> Any:
    """The seam into the containerd module: undo `configure_containerd`."""
    keep = {k: v for k, v in options.items() if k in ("main_config", "dropin", "restart", "restart_options")}
    return _containerd_module().cleanup(fs, **keep)


def reconcile(
    fs: Sysfs, config: KataManagerConfig, discover: Callable[[Sysfs], Iterable[PCIDevice]] | None = None
) -> cdi.WriteResult:
    """One pass: the CDI spec files for exactly the VFIO devices the host shows now."""
    devices = (discover or cdi.discover_devices)(fs)
    identities = cdi.inventory(fs, devices, config.aliases)
    result = cdi.write_specs(fs, config.cdi_dir, identities)
    for name in result.written:
        log.info("wrote CDI spec %s/%s", config.cdi_dir, name)
    for name in result.removed:
        log.info("removed stale CDI spec %s/%s", config.cdi_dir, name)
    return result


def cleanup(fs: Sysfs, config: KataManagerConfig) -> list[str]:
    """Remove the CDI spec files ccgpu wrote (and containerd's changes when configured). Returns removed names."""
    if config.configure_containerd:
        cleanup_containerd(fs, config.containerd_options)
    removed = []
    for name in cdi.owned_spec_files(fs, config.cdi_dir):
        fs.remove(f"{cdi.host_rel(config.cdi_dir)}/{name}")
        removed.append(name)
        log.info("removed CDI spec %s/%s", config.cdi_dir, name)
    return removed


async def run(
    config: KataManagerConfig,
    stop: asyncio.Event | None = None,
    once: bool = False,
    discover: Callable[[Sysfs], Iterable[PCIDevice]] | None = None,
    fs: Sysfs | None = None,
) -> None:
    """Configure containerd once (when asked), then keep the CDI spec current until `stop` is set. `fs` is
    the host root's Sysfs (default: a plain one over `config.host_root`)."""
    fs = fs or Sysfs(config.host_root)
    stop = stop or asyncio.Event()
    discover = discover or cdi.DeviceDiscovery()  # one per loop: each unreadable entry is logged once
    if config.configure_containerd:
        _containerd_module()  # refuse before touching anything when the module is missing
    reconcile(fs, config, discover)
    if config.configure_containerd:
        # In a worker thread: a containerd restart can take up to its timeout, and SIGTERM must still stop us.
        report = await asyncio.to_thread(configure_containerd, fs, config.containerd_options)
        log.info("containerd: %s", getattr(report, "as_dict", lambda: report)())
    while not once and not stop.is_set():
        await config.pace(stop, config.interval_s)
        if stop.is_set():
            break
        try:
            reconcile(fs, config, discover)
        except (OSError, cdi.CDIError) as e:  # the files on disk stay as they were; retry next pass
            log.error("CDI pass failed, keeping the current specs: %s", e)

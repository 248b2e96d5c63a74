"""The sandbox validator: writes the readiness files other operands wait on, only while what they claim holds.

Files under `run/nvidia/validations/` (NVIDIA's names, so NVIDIA's init containers keep working):
- `workload-type`: the node's workload config (`vm-passthrough`, ...), always written;
- `vfio-pci-ready`: every NVIDIA GPU (and NVSwitch, when managed) is on a vfio driver and its VFIO node exists;
- `cc-manager-ready`: the CC manager has applied the desired mode (`cc.mode.state` equals the `cc.mode` label,
  or, without a label, is a mode and not `failed`) and no switch is in progress.
A file whose condition stops holding is removed, so the device plugin stops advertising and a CC switch or an
unbound GPU is never mistaken for readiness.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from ccgpu import labels
from ccgpu.agents.pacing import Pace, sleep_or_stop
from ccgpu.hw import pci
from ccgpu.hw.pci import PCIDevice
from ccgpu.hw.sysfs import Sysfs
from ccgpu.labels import LabelValueError, WorkloadConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Validations:
    """Desired content of each readiness file; None means the file must not exist."""

    files: dict[str, str | None]


def vfio_ready(devices: list[PCIDevice], node_exists) -> tuple[bool, str]:
    """(ready, why not). `node_exists(path)` tells whether a /dev path exists on the host."""
    if not devices:
        return False, "no NVIDIA GPUs found"
    for d in devices:
        if not pci.is_vfio_driver(d.driver):
            return False, f"{d.bdf} is on {d.driver or 'no driver'}, not a vfio driver"
        node = f"dev/vfio/devices/{d.vfio_dev}" if d.vfio_dev else f"dev/vfio/{d.iommu_group}"
        if not node_exists(node):
            return False, f"{d.bdf}: /{node} does not exist"
    return True, ""


def cc_ready(node_labels: dict[str, str], node_annotations: dict[str, str]) -> tuple[bool, str]:
    if labels.CC_SWITCH_INTENT in node_annotations:
        return False, "a CC mode switch is in progress"
    state = node_labels.get(labels.CC_MODE_STATE)
    if not state or state == labels.CCModeState.FAILED:
        return False, f"{labels.CC_MODE_STATE} is {state or 'unset'}"
    wanted = node_labels.get(labels.CC_MODE)
    if wanted is not None and wanted != state:
        return False, f"{labels.CC_MODE}={wanted} but {labels.CC_MODE_STATE}={state}"
    return True, ""


def workload_of(node_labels: dict[str, str], default: str) -> WorkloadConfig:
    try:
        return labels.parse_workload_config(node_labels.get(labels.WORKLOAD_CONFIG))
    except LabelValueError:
        return labels.parse_workload_config(default)


def desired_files(
    *,
    workload: WorkloadConfig,
    vfio: tuple[bool, str],
    cc: tuple[bool, str] | None,
) -> Validations:
    """Pure: the readiness files for a node. `cc` is None when no CC manager runs on the node."""
    files: dict[str, str | None] = {labels.READY_WORKLOAD_TYPE: workload.value}
    passthrough = workload is WorkloadConfig.VM_PASSTHROUGH
    files[labels.READY_VFIO_PCI] = "true" if passthrough and vfio[0] else None
    files[labels.READY_CC_MANAGER] = "true" if cc is not None and cc[0] else None
    return Validations(files)


class Validator:
    """Keeps the readiness files of one node true. `node` is a NodeHandle (or None: no CC check, host only)."""

    def __init__(self, fs: Sysfs, node=None, *, default_workload: str = "container", check_cc: bool = True) -> None:
        self.fs = fs
        self.node = node
        self.default_workload = default_workload
        self.check_cc = check_cc

    async def evaluate(self) -> tuple[Validations, list[str]]:
        node_labels: dict[str, str] = {}
        annotations: dict[str, str] = {}
        if self.node is not None:
            view = await self.node.get()
            node_labels, annotations = view.labels, view.annotations
        workload = workload_of(node_labels, self.default_workload)
        gpus = pci.nvidia_gpus(self.fs)
        vfio = vfio_ready(gpus, self.fs.exists)
        cc = cc_ready(node_labels, annotations) if (self.check_cc and self.node is not None) else None
        reasons = [r for ok, r in (vfio, cc or (True, "")) if not ok and r]
        return desired_files(workload=workload, vfio=vfio, cc=cc), reasons

    def apply(self, wanted: Validations) -> list[str]:
        """Write or remove files so they match; returns the names changed."""
        changed = []
        for name, content in wanted.files.items():
            rel = f"{labels.VALIDATIONS_DIR}/{name}"
            current = self.fs.read(rel) if self.fs.exists(rel) else None
            if content == current:
                continue
            if content is None:
                self.fs.remove(rel)
            else:
                self.fs.write_file(rel, content)
            changed.append(name)
            log.info("validation %s: %s", name, "removed" if content is None else f"written ({content})")
        return changed

    async def once(self, on_pass=None) -> list[str]:
        """One evaluation; returns the names of the files written or removed. `on_pass(files)` sees the result."""
        wanted, reasons = await self.evaluate()
        for r in reasons:
            log.debug("not ready: %s", r)
        changed = self.apply(wanted)
        if on_pass is not None:
            on_pass(wanted.files)
        return changed

    async def run(self, stop: asyncio.Event, interval_s: float = 1.0, on_pass=None, pace: Pace | None = None) -> None:
        """A pass every `interval_s` (or whenever `pace` returns) until `stop`."""
        pace = pace or sleep_or_stop
        while not stop.is_set():
            await self.once(on_pass)
            await pace(stop, interval_s)

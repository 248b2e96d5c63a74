"""The Kata runtime of a simulated node: what containerd + kata-qemu do between Allocate and a Running pod.

For a pod with a Kata RuntimeClass it
1. resolves the kubelet's allocation (CDI device names from the device plugin's Allocate) against the node's CDI
   spec files, failing the pod with containerd's error text (`unresolvable CDI devices ...`) for a missing name;
2. checks the GPUs behind those names are in the CC mode the class needs (`-snp`/`-tdx`: node
   `cc.ready.state=true` and every GPU's CC mode `on` or PPCIe `on`; the plain class: CC `off`);
3. "boots" the VM: opens each GPU's VFIO group for a `qemu-system-x86_64` process on the simulated host (so the
   vfio-manager and cc-manager see the GPU in use, as on a real node) and waits the boot-time knob;
4. for a confidential class with a KBS (`sim.vm_attestation.SimKbs`), runs the guest's attestation and GPU ready
   gate; a refusal stops the VM and fails the pod with the reason (`AttestationFailed`).
Stopping the pod closes the groups. The checks are pure functions over what was read; I/O stays in `KataRuntime`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccgpu import labels
from ccgpu.agents import cdi
from ccgpu.hw.sysfs import Sysfs

log = logging.getLogger(__name__)

CC_RUNTIME_CLASSES = (labels.RUNTIME_CLASS_KATA_GPU_SNP, labels.RUNTIME_CLASS_KATA_GPU_TDX)


class PodStartError(RuntimeError):
    """The pod cannot start; `reason` is the container waiting reason the kubelet would show."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def is_kata(runtime_class: str | None) -> bool:
    return runtime_class in labels.RUNTIME_CLASSES


def unresolvable(requested: Iterable[str], known: Mapping[str, frozenset[str]]) -> list[str]:
    """CDI names (`vendor/class=name`) that no spec on the node describes. `known` maps kind → device names."""
    missing = []
    for name in requested:
        kind, _, dev = name.partition("=")
        if dev not in known.get(kind, frozenset()):
            missing.append(name)
    return missing


def resolve(fs: Sysfs, cdi_dir: str, requested: list[str]) -> None:
    """Raise containerd's error when a CDI name cannot be resolved against the node's spec files."""
    kinds = {n.partition("=")[0] for n in requested}
    known = {k: cdi.spec_device_names(fs, cdi_dir, k) for k in kinds}
    missing = unresolvable(requested, known)
    if missing:
        raise PodStartError(
            "CreateContainerError",
            "failed to create containerd task: failed to create shim task: CDI device injection failed: "
            f"unresolvable CDI devices {', '.join(missing)}",
        )


@dataclass(frozen=True)
class GpuMode:
    bdf: str
    cc: str  # current CC mode: on, off, devtools
    ppcie: str  # current PPCIe mode: on, off


def cc_mismatch(runtime_class: str, node_labels: Mapping[str, str], gpus: list[GpuMode]) -> str | None:
    """Why the GPUs cannot serve this RuntimeClass (None when they can)."""
    if runtime_class in CC_RUNTIME_CLASSES:
        if node_labels.get(labels.CC_READY_STATE) != "true":
            return (f"RuntimeClass {runtime_class} needs a node with {labels.CC_READY_STATE}=true; this node has "
                    f"{node_labels.get(labels.CC_READY_STATE, '(unset)')!r}")
        wrong = [g for g in gpus if g.cc != "on" and g.ppcie != "on"]
        if wrong:
            listed = ", ".join(f"{g.bdf} (cc {g.cc}, ppcie {g.ppcie})" for g in wrong)
            return f"RuntimeClass {runtime_class} needs GPUs in CC mode on or PPCIe on; not so: {listed}"
        return None
    wrong = [g for g in gpus if g.cc != "off" or g.ppcie == "on"]
    if wrong:
        listed = ", ".join(f"{g.bdf} (cc {g.cc})" for g in wrong)
        return f"RuntimeClass {runtime_class} runs a non-confidential VM, which needs GPUs in CC mode off: {listed}"
    return None


class KataRuntime:
    """Starts and stops Kata pods on one simulated host (`host_root`)."""

    def __init__(self, host_root: str, cdi_dir: str = cdi.DEFAULT_CDI_DIR, boot_s: float = 0.0,
                 kbs: Any = None, node: str = "") -> None:
        self.host_root = host_root
        self.cdi_dir = cdi_dir
        self.boot_s = boot_s
        self.kbs = kbs  # sim.vm_attestation.SimKbs, or None: confidential VMs boot unattested (NVIDIA's default)
        self.node = node
        self.running: dict[str, list[str]] = {}  # pod uid → BDFs whose VFIO groups its VM holds open
        self.attestations: dict[str, Any] = {}  # pod uid → its VM's BootAttestation

    def _host(self):
        from ccgpu.sim.host import SimulatedHost

        return SimulatedHost.open(self.host_root)

    def bdfs_of(self, cdi_names: list[str]) -> list[str]:
        """The PCI functions behind CDI names, from the node's current device inventory."""
        fs = Sysfs(self.host_root)
        by_name = {i.cdi_name: i for i in cdi.inventory(fs, cdi.discover_devices(fs))}
        return [str(b) for n in cdi_names if n in by_name for b in by_name[n].bdfs]

    async def start(self, uid: str, runtime_class: str, node_labels: Mapping[str, str], cdi_names: list[str],
                    guest_fault: str | None = None) -> list[str]:
        """Boot the pod's VM; returns the GPUs' BDFs. Raises PodStartError with the reason the pod shows.
        `guest_fault` (sim.vm_attestation.FAULTS) makes the guest's attestation evidence wrong."""
        resolve(Sysfs(self.host_root), self.cdi_dir, cdi_names)
        bdfs = self.bdfs_of(cdi_names)
        host = self._host()
        modes = []
        for b in bdfs:
            st = host.gpu(b).query_cc()
            modes.append(GpuMode(b, st.current, st.ppcie_current))
        why = cc_mismatch(runtime_class, node_labels, modes)
        if why:
            raise PodStartError("RunContainerError", why)
        held = []
        try:
            for b in bdfs:
                host.gpu(b).hold_busy(comm="qemu-system-x86_64")
                held.append(b)
        except Exception as e:
            for b in held:
                host.gpu(b).release_busy()
            raise PodStartError("RunContainerError", f"QEMU could not open the GPU's VFIO group: {e}") from None
        self.running[uid] = held
        if self.boot_s:
            await asyncio.sleep(self.boot_s)  # the VM's boot time (a knob, not a wait for a condition)
        log.info("kata: VM for pod %s booted with %s", uid, ", ".join(bdfs) or "no GPU")
        if self.kbs is not None and runtime_class in CC_RUNTIME_CLASSES and bdfs:
            await self._attest(uid, bdfs, guest_fault)
        return bdfs

    async def _attest(self, uid: str, bdfs: list[str], fault: str | None) -> None:
        """The guest's ready gate; on refusal the VM exits (its GPUs released, never set ready)."""
        from ccgpu.sim.vm_attestation import GuestFaultError

        ready_file = Path(self.host_root) / "run/kata-containers" / uid / "guest-gpus-ready"
        try:
            result = await self.kbs.attest_boot(self.node, bdfs, ready_file, fault)
        except GuestFaultError as e:
            self.stop(uid)
            raise PodStartError("RunContainerError", str(e)) from None
        if not result.ready:
            self.stop(uid)
            self.attestations[uid] = result  # kept for the pod's status, like a failed container's last state
            raise PodStartError("AttestationFailed", f"confidential VM attestation refused, GPUs left not ready: "
                                                     f"{result.reason}")
        self.attestations[uid] = result
        log.info("kata: VM for pod %s attested (%s); GPUs ready", uid, result.ear_status)

    def stop(self, uid: str) -> None:
        """The VM exits: its VFIO groups are closed."""
        bdfs = self.running.pop(uid, [])
        self.attestations.pop(uid, None)
        if not bdfs:
            return
        host = self._host()
        for b in bdfs:
            try:
                host.gpu(b).release_busy()
            except Exception as e:  # noqa: BLE001 - a device that fell off the bus has nothing left to close
                log.info("kata: releasing %s: %s", b, e)

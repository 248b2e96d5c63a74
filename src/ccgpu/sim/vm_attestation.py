"""Attestation at confidential-VM boot in the cluster-in-a-box: the real KBS on loopback, and for each CC pod a
simulated guest whose GPU evidence names the GPUs the kubelet allocated, running the real guest client and
`run_ready_gate`.

The GPU becomes ready only on an affirming verdict (NVIDIA's stack sets it ready at boot without one,
reference attestation.md §2.1); then the guest fetches the sample secret, as a workload would. On a refusal the
ready state stays `0` and the guest's secret request is refused by the KBS too, so nothing is released.

One simulated platform identity (its test RSA/EC keys take about a second) is made per cluster and kept in the
KBS's directory; each VM's guest reuses it with its own GPUs (same device test chain, the allocated GPU's UUID).
A pod annotation `ccgpu.dev/sim-guest-fault` (`debug-policy`, `gpu-measurement`) makes that guest misbehave.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccgpu.attest.snp import GuestPolicy
from ccgpu.sim.guest import SimGpuAttester, SimGuest, load_or_create_guest

log = logging.getLogger(__name__)

FAULT_ANNOTATION = "ccgpu.dev/sim-guest-fault"
FAULTS = ("debug-policy", "gpu-measurement")
ATTESTATION_ANNOTATION = "ccgpu.dev/attestation"  # EAR status of the VM's attestation (affirming, ...)
ATTESTATION_REASON_ANNOTATION = "ccgpu.dev/attestation-reason"
GPU_READY_ANNOTATION = "ccgpu.dev/gpu-ready"
ATTESTED_GPUS_ANNOTATION = "ccgpu.dev/attested-gpus"
ATTESTED_CONDITION = "ccgpu.dev/Attested"
SECRET_URI = "kbs:///default/key/sample-workload"
_SECRET_PATH = ("default", "key", "sample-workload")


class GuestFaultError(ValueError):
    """A `ccgpu.dev/sim-guest-fault` value that names no fault."""


def gpu_uuid(node: str, bdf: str) -> str:
    """A stable NVIDIA-style UUID for a simulated GPU (the simulated host keeps none)."""
    return "GPU-" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"ccgpu-sim://{node}/{bdf}"))


def guest_for(base: SimGuest, gpu_uuids: list[str], fault: str | None = None) -> SimGuest:
    """The guest of one VM: the cluster's simulated platform and device chain, one GPU per allocated UUID,
    with `fault` (one of FAULTS) applied."""
    if fault is not None and fault not in FAULTS:
        raise GuestFaultError(f"{FAULT_ANNOTATION}={fault!r} is not a fault; accepted: {', '.join(FAULTS)}")
    template = base.gpu.gpus[0]
    gpus = []
    for u in gpu_uuids:
        gpu = copy.copy(template)
        gpu.uuid = u
        gpu.measurements = dict(template.measurements)
        if fault == "gpu-measurement":
            gpu.measurements[2] = hashlib.sha384(b"unexpected GPU firmware").digest()
        gpus.append(gpu)
    cpu = base.cpu
    if fault == "debug-policy":
        cpu = dataclasses.replace(cpu, policy=GuestPolicy.build(debug_allowed=True))
    return SimGuest(cpu, SimGpuAttester(gpus))


@dataclass
class BootAttestation:
    """What one VM's boot-time attestation found; `annotations()` is what the pod shows."""

    ear_status: str  # affirming when the gate opened, else the worst submod status or "none"
    ready: bool
    reason: str
    submods: dict[str, str]
    gpus: list[str]
    secret_released: bool

    def annotations(self) -> dict[str, str]:
        return {ATTESTATION_ANNOTATION: self.ear_status, ATTESTATION_REASON_ANNOTATION: self.reason,
                GPU_READY_ANNOTATION: "true" if self.ready else "false",
                ATTESTED_GPUS_ANNOTATION: ",".join(self.gpus)}

    def condition(self) -> dict[str, str]:
        return {"type": ATTESTED_CONDITION, "status": "True" if self.ready else "False",
                "reason": "Affirming" if self.ready else "AttestationRefused", "message": self.reason}


def _overall(submods: dict[str, str], ready: bool) -> str:
    if ready:
        return "affirming"
    for status in ("contraindicated", "warning"):
        if status in submods.values():
            return status
    return "none"


class SimKbs:
    """The real `ccgpu.attest.kbs` server on 127.0.0.1 (a free port), trusting the cluster's simulated guest."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.guest: SimGuest | None = None
        self.server: Any = None
        self.url = ""
        self._runner: Any = None

    async def start(self) -> None:
        import asyncio

        from ccgpu.attest.kbs import serve
        from ccgpu.attest.kbs_cli import build_server

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.guest = await asyncio.to_thread(load_or_create_guest, self.data_dir)
        self.server = build_server(self.data_dir / "kbs", secrets.token_hex(24), self.guest.verifiers(),
                                   reference_values=self.guest.reference_values())
        self.server.resources.put(*_SECRET_PATH, secrets.token_bytes(32))
        self._runner = await serve(self.server, "127.0.0.1", 0)
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        log.info("sim: KBS listening on %s", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def released(self) -> float:
        """How many resources the KBS has released so far (its own metric)."""
        return self.server.m_resource.labels(outcome="released")._value.get()

    async def attest_boot(self, node: str, bdfs: list[str], ready_file: Path,
                          fault: str | None = None) -> BootAttestation:
        """Run one VM's guest: ready gate against this KBS, then the workload's secret request."""
        from ccgpu.attest.client import KbsClient, KbsClientError
        from ccgpu.attest.ready_gate import FileReadyState, run_ready_gate

        assert self.guest is not None, "SimKbs.start() first"
        uuids = [gpu_uuid(node, b) for b in bdfs]
        guest = guest_for(self.guest, uuids, fault)
        backend = FileReadyState(ready_file)
        backend.set_ready(False)  # the VM boots with its GPUs not ready, whatever the boot options say
        async with KbsClient(self.url, guest.cpu, [guest.gpu]) as client:
            result = await run_ready_gate(client, backend, trusted_token_keys=self.server.trusted_token_keys,
                                          min_gpus=len(bdfs))
            released = False
            if client.token is not None:  # a workload asks for its secret whatever the gate said
                try:
                    await client.get_resource(SECRET_URI)
                    released = True
                except KbsClientError as e:
                    log.info("sim: %s: secret refused: %s", node, e)
        ready = result.ready and backend.is_ready()
        return BootAttestation(_overall(result.submods, ready), ready, result.reason, result.submods, uuids,
                               released)


def attestation_summary(pod: dict[str, Any]) -> dict[str, Any]:
    """The attestation result a pod shows (its annotations), for `ccgpu simulate`'s summary and outcomes."""
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    return {"status": ann.get(ATTESTATION_ANNOTATION, "none"), "gpu_ready": ann.get(GPU_READY_ANNOTATION) == "true",
            "reason": ann.get(ATTESTATION_REASON_ANNOTATION, "not attested"),
            "gpus": [g for g in ann.get(ATTESTED_GPUS_ANNOTATION, "").split(",") if g]}

"""Confidential VMs in the cluster-in-a-box attest before their GPU is set ready (issue 7 + 8).

Reference attestation.md §2.1: NVIDIA's stack sets the GPU ready at guest boot without any verdict; here a pod
with a `-snp` RuntimeClass runs only after the real KBS affirmed its guest's CPU and GPU evidence.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lightkube.resources.core_v1 import Pod

from ccgpu.sim.cluster import Cluster, parse_nodes
from ccgpu.sim.host import SimulatedHost
from ccgpu.sim.vm_attestation import (
    ATTESTATION_ANNOTATION,
    ATTESTED_CONDITION,
    ATTESTED_GPUS_ANNOTATION,
    FAULT_ANNOTATION,
    GPU_READY_ANNOTATION,
    GuestFaultError,
    SimKbs,
    gpu_uuid,
    guest_for,
)

pytestmark = pytest.mark.timeout(90)



async def _cluster(workdir: Path) -> Cluster:
    c = Cluster(parse_nodes("1x1xh200-snp"), workdir)
    await c.start()
    await c.apply_policy()
    report = await c.wait_converged(60)
    assert report.ok, report.failed()
    return c


async def _pod(c: Cluster, name: str, fault: str | None = None) -> None:
    meta: dict = {"name": name, "namespace": "default"}
    if fault:
        meta["annotations"] = {FAULT_ANNOTATION: fault}
    await c.client.create(Pod.from_dict({
        "apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": {"runtimeClassName": "kata-qemu-nvidia-gpu-snp",
                 "containers": [{"name": "cuda", "image": "cuda:sim",
                                 "resources": {"limits": {"nvidia.com/pgpu": "1"}}}]}}))


async def test_cc_pod_runs_only_after_affirming_attestation_of_its_own_gpu_then_refusals_fail_the_pod(workdir):
    """attestation.md §2.1 (GPU set ready without a verdict): affirming → Running and GPU ready; a debug-policy
    guest or an unexpected GPU measurement → pod Failed with the reason, GPU not ready, no secret released."""
    c = await _cluster(workdir)
    try:
        node = c.specs[0].name
        await _pod(c, "good")
        pod = await c.wait_pod("good", 20)
        ann = pod["metadata"]["annotations"]
        assert pod["status"]["phase"] == "Running", pod["status"]
        assert ann[ATTESTATION_ANNOTATION] == "affirming" and ann[GPU_READY_ANNOTATION] == "true"
        bdf = ann["ccgpu.dev/gpu-bdfs"]
        assert ann[ATTESTED_GPUS_ANNOTATION] == gpu_uuid(node, bdf), "the evidence named the allocated GPU"
        cond = {x["type"]: x for x in pod["status"]["conditions"]}[ATTESTED_CONDITION]
        assert cond["status"] == "True"
        uid = pod["metadata"]["uid"]
        assert (Path(c.hosts[node]) / "run/kata-containers" / uid / "guest-gpus-ready").read_text() == "1\n"
        assert c.kbs.released() == 1, "the affirmed guest got its secret"
        await c.delete_pod("good")
        host = SimulatedHost.open(c.hosts[node])
        gpu = host.gpu(host.gpus()[0])

        for fault, why in (("debug-policy", "cpu0"), ("gpu-measurement", "gpu0")):
            name = f"bad-{fault}"
            await _pod(c, name, fault)
            pod = await c.wait_pod(name, 20, until=("Failed",))
            status, ann = pod["status"], pod["metadata"]["annotations"]
            assert status["phase"] == "Failed" and status["reason"] == "AttestationFailed", status
            assert "attestation refused" in status["message"] and why in status["message"], status["message"]
            assert ann[GPU_READY_ANNOTATION] == "false" and ann[ATTESTATION_ANNOTATION] in ("warning", "contraindicated")
            ready = Path(c.hosts[node]) / "run/kata-containers" / pod["metadata"]["uid"] / "guest-gpus-ready"
            assert ready.read_text() == "0\n"
            assert c.kbs.released() == 1, f"{fault}: no secret released"
            assert not [h for h in host.state().holders if h.holds(gpu._get())], "the refused VM let go of its GPU"
            await c.delete_pod(name)
    finally:
        await c.stop()


async def test_unknown_guest_fault_is_refused_naming_the_accepted_ones(workdir):
    kbs = SimKbs(workdir)
    await kbs.start()
    try:
        with pytest.raises(GuestFaultError, match="accepted: debug-policy, gpu-measurement"):
            guest_for(kbs.guest, ["GPU-x"], "tampered")
    finally:
        await kbs.stop()


async def test_guest_identity_is_made_once_and_reused_from_the_workdir(workdir):
    first = SimKbs(workdir)
    await first.start()
    await first.stop()
    again = SimKbs(workdir)
    await again.start()
    try:
        assert again.guest.cpu.platform.chip_id == first.guest.cpu.platform.chip_id
        result = await again.attest_boot("n", ["0000:41:00.0"], workdir / "ready")
        assert result.ready and result.ear_status == "affirming", result
    finally:
        await again.stop()


async def test_scenario_pod_with_a_guest_fault_fails_attestation_and_the_next_good_pod_gets_the_gpu(workdir):
    """attestation.md §2.1: a refused guest must not keep (or open) the GPU; the scenario file's `guestFault`."""
    from ccgpu.sim.scenario import run_scenario, validate

    c = await _cluster(workdir)
    try:
        results = await run_scenario(c, validate({"steps": [
            {"pod": {"name": "tampered", "runtimeClass": "kata-qemu-nvidia-gpu-snp", "guestFault": "gpu-measurement"}},
            {"expect": {"pod": "tampered", "phase": "Failed", "message_contains": "attestation refused",
                        "timeout": 20}},
            {"pod": {"name": "good", "runtimeClass": "kata-qemu-nvidia-gpu-snp"}},
            {"expect": {"pod": "good", "phase": "Running", "timeout": 20}},
        ]}))
        assert all(r["ok"] for r in results), results
        assert (await c.pod("good"))["metadata"]["annotations"][ATTESTATION_ANNOTATION] == "affirming"
    finally:
        await c.stop()

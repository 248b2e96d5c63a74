"""cc-manager end to end: the API simulator, a simulated HGX H100 (8 GPUs + 4 NVSwitches) and, unless a test
says otherwise, the production gpu-admin-tools backend running the CLI emulator as subprocesses."""

from __future__ import annotations

import asyncio
import errno

import pytest
from lightkube.core.exceptions import ApiError

from ccgpu import labels
from ccgpu.hw.ccmode import CC_MODE_INVALID
from ccgpu.labels import CC_SWITCH_INTENT
from ccgpu.sim.gpu_admin_tools import InProcessBackend
from tests.agents.simnode import DEPLOY_LABELS, CrashAt, Killed, eventually, sim_node


def assert_converged(labels_now: dict[str, str], annotations: dict[str, str], state: str) -> None:
    assert labels.CC_SWITCH_INTENT not in annotations
    assert labels_now[labels.CC_MODE_STATE] == state
    for key, value in DEPLOY_LABELS.items():
        assert labels_now.get(key) == value, f"{key} not restored"


async def test_mode_switches_off_on_devtools_off_through_the_gpu_admin_tools_cli():
    """Also labels nvidia.com/cc.capable itself, so nobody labels nodes by hand (the Early Access guide's
    workaround, gpu-operator.md §5a)."""
    async with sim_node() as n:
        ccm = n.cc_manager(default_mode="off")
        assert await ccm.reconcile() is None  # already off: nothing to do but label
        got = await n.labels()
        assert got[labels.CC_MODE_STATE] == "off" and got[labels.CC_READY_STATE] == "false"
        assert got[labels.CC_CAPABLE] == "true"
        for mode, ready in (("on", "true"), ("devtools", None), ("off", "false")):
            await n.set_label(labels.CC_MODE, mode)
            result = await ccm.reconcile()
            assert result is not None and result.error is None, result
            got = await n.labels()
            assert_converged(got, await n.annotations(), mode)
            assert got.get(labels.CC_READY_STATE) == ready
            assert set(n.cc_modes().values()) == {mode}
            assert set(n.ppcie_modes().values()) == {"off"}
        switched = [e.message for e in await n.events("CCModeSwitched")]
        assert len(switched) == 3 and any("CC mode devtools" in m for m in switched)
        assert all(n.host.gpu(b).resets == 3 for b in n.host.gpus())


async def test_ppcie_round_trip_turns_cc_off_first_and_ppcie_off_first_on_the_way_back():
    async with sim_node(extra_labels={labels.CC_MODE: "on"}) as n:
        backend = InProcessBackend(n.host)
        ccm = n.cc_manager(backend=backend)
        await ccm.reconcile()
        backend.calls.clear()
        await n.set_label(labels.CC_MODE, "ppcie")
        assert (await ccm.reconcile()).error is None
        assert_converged(await n.labels(), await n.annotations(), "ppcie")
        assert (await n.labels())[labels.CC_READY_STATE] == "true"
        assert set(n.ppcie_modes().values()) == {"on"} and set(n.cc_modes().values()) == {"off"}
        applied = [c[0] for c in backend.calls if c[0].startswith("apply_")]
        assert applied == ["apply_cc"] * 8 + ["apply_ppcie"] * 12  # CC off before PPCIe on
        backend.calls.clear()
        await n.set_label(labels.CC_MODE, "on")
        assert (await ccm.reconcile()).error is None
        assert set(n.ppcie_modes().values()) == {"off"} and set(n.cc_modes().values()) == {"on"}
        applied = [c[0] for c in backend.calls if c[0].startswith("apply_")]
        assert applied == ["apply_ppcie"] * 12 + ["apply_cc"] * 8  # PPCIe off before CC on


async def test_reset_failure_on_one_gpu_fails_the_switch_others_verified_labels_restored():
    async with sim_node(extra_labels={labels.CC_MODE: "on"}) as n:
        bad = n.host.gpus()[3]
        n.host.gpu(bad).fail_resets(errno.EIO)
        result = await n.cc_manager().reconcile()
        assert result.state == "failed" and bad in result.error
        assert_converged(await n.labels(), await n.annotations(), "failed")
        assert labels.CC_READY_STATE not in await n.labels()
        modes = n.cc_modes()
        assert modes.pop(bad) == "off" and set(modes.values()) == {"on"}
        (event,) = await n.events("CCModeSwitchFailed")
        assert event.type == "Warning" and bad in event.message and "reset" in event.message


@pytest.mark.parametrize("value", ["On", "enabled"])
async def test_invalid_label_touches_no_gpu_and_fails_with_an_event_listing_valid_values(value):
    async with sim_node(extra_labels={labels.CC_MODE: value}) as n:
        backend = InProcessBackend(n.host)
        result = await n.cc_manager(backend=backend).reconcile()
        assert result.state == "failed"
        assert backend.calls == [] and all(n.host.gpu(b).resets == 0 for b in n.host.gpus())
        got = await n.labels()
        assert got[labels.CC_MODE_STATE] == "failed" and got[labels.DEPLOY_PREFIX + "vfio-manager"] == "true"
        (event,) = await n.events("CCModeInvalid")
        assert f"'{value}'" in event.message and "accepted values: on, off, devtools, ppcie" in event.message


async def test_ppcie_on_a_host_without_nvswitches_is_refused_naming_what_the_host_accepts():
    async with sim_node("1xh200-snp", extra_labels={labels.CC_MODE: "ppcie"}) as n:
        backend = InProcessBackend(n.host)
        result = await n.cc_manager(backend=backend).reconcile()
        assert result.state == "failed" and backend.calls == []
        (event,) = await n.events("CCModeInvalid")
        assert "no NVSwitch" in event.message and "accepted on this host: on, off, devtools" in event.message


async def test_default_on_without_a_cpu_tee_is_forced_off_with_a_warning_event_and_cc_capable_false():
    async with sim_node("4xh100-notee") as n:
        ccm = n.cc_manager(default_mode="on", backend=InProcessBackend(n.host))
        assert await ccm.reconcile() is None
        assert await ccm.reconcile() is None  # a resync repeats no Event
        got = await n.labels()
        assert got[labels.CC_MODE_STATE] == "off" and got[labels.CC_CAPABLE] == "false"
        (event,) = await n.events("CCModeDefaultForcedOff")
        assert event.type == "Warning" and "neither SEV-SNP nor TDX" in event.message


async def test_operand_pods_on_the_node_are_waited_for_before_any_gpu_is_reset():
    async with sim_node(extra_labels={labels.CC_MODE: "on"}) as n:
        pods = [await n.add_operand_pod(app) for app in
                ("nvidia-vfio-manager", "nvidia-kata-sandbox-device-plugin-daemonset")]
        backend = InProcessBackend(n.host)
        task = asyncio.create_task(n.cc_manager(backend=backend).reconcile())

        async def paused():
            return (await n.labels())[labels.deploy_label("vfio-manager")] == labels.PAUSED_FOR_CC

        await eventually(paused)
        assert labels.CC_SWITCH_INTENT in await n.annotations()
        assert not task.done() and not [c for c in backend.calls if c[0] in ("apply_cc", "reset")]
        for pod in pods:
            await n.delete_pod(pod)
        result = await asyncio.wait_for(task, 10)
        assert result.error is None and set(n.cc_modes().values()) == {"on"}
        assert_converged(await n.labels(), await n.annotations(), "on")


async def test_operand_pods_that_never_leave_fail_the_switch_without_resetting_anything():
    async with sim_node(extra_labels={labels.CC_MODE: "on"}) as n:
        await n.add_operand_pod("nvidia-sandbox-validator", "validator-abc")
        result = await n.cc_manager(backend=InProcessBackend(n.host), pause_timeout_s=0.3).reconcile()
        assert result.state == "failed" and "default/validator-abc" in result.error
        assert all(n.host.gpu(b).resets == 0 for b in n.host.gpus())
        assert_converged(await n.labels(), await n.annotations(), "failed")


# --- crash injection: the agent dies between the protocol's steps; a fresh agent must finish the job ---------

CRASH_POINTS = {
    "after-intent-and-pause-written": ("node", "patch", 1, True),
    "while-waiting-for-operand-pods": ("node", "pods", 1, False),
    "after-phase-applying-written": ("node", "patch", 2, True),
    "before-any-gpu-is-switched": ("backend", "apply_cc", 1, False),
    "midway-through-the-parallel-switches": ("backend", "apply_cc", 5, False),
    "after-the-last-gpu-switched": ("backend", "apply_cc", 8, True),
    "before-restore-patch": ("node", "patch", 3, False),
    "after-restore-before-event": ("node", "patch", 3, True),
}


@pytest.mark.parametrize("point", list(CRASH_POINTS))
async def test_crash_between_protocol_steps_then_restart_ends_converged(point):
    """Kill the agent at each step of the switch protocol (off -> on), start a fresh one: GPUs all on, every
    paused label restored, no intent annotation left behind."""
    where, method, nth, after = CRASH_POINTS[point]
    async with sim_node() as n:
        await n.cc_manager(default_mode="off", backend=InProcessBackend(n.host)).reconcile()
        await n.set_label(labels.CC_MODE, "on")
        backend = InProcessBackend(n.host)
        node = n.handle()
        if where == "node":
            node = CrashAt(node, method, nth, after=after)
        else:
            backend = CrashAt(backend, method, nth, after=after)
        with pytest.raises(Killed):
            await n.cc_manager(node=node, backend=backend).reconcile()

        await n.cc_manager(backend=InProcessBackend(n.host)).reconcile()  # the restarted agent
        assert set(n.cc_modes().values()) == {"on"}
        assert_converged(await n.labels(), await n.annotations(), "on")


@pytest.mark.parametrize("method,nth", [("apply_cc", 3), ("apply_ppcie", 6), ("apply_ppcie", 12)])
async def test_crash_during_a_switch_into_ppcie_then_restart_ends_converged(method, nth):
    async with sim_node(extra_labels={labels.CC_MODE: "on"}) as n:
        await n.cc_manager(backend=InProcessBackend(n.host)).reconcile()
        await n.set_label(labels.CC_MODE, "ppcie")
        with pytest.raises(Killed):
            await n.cc_manager(backend=CrashAt(InProcessBackend(n.host), method, nth)).reconcile()
        await n.cc_manager(backend=InProcessBackend(n.host)).reconcile()
        assert set(n.ppcie_modes().values()) == {"on"} and set(n.cc_modes().values()) == {"off"}
        assert_converged(await n.labels(), await n.annotations(), "ppcie")


async def test_api_error_on_the_restore_patch_leaves_the_intent_for_the_next_pass_to_finish():
    async with sim_node(extra_labels={labels.CC_MODE: "on"}) as n:
        ccm = n.cc_manager(backend=InProcessBackend(n.host))
        real_patch = ccm.node.patch

        async def patch_failing_the_restore(labels=None, annotations=None):
            if annotations == {CC_SWITCH_INTENT: None}:
                n.api.faults.fail("patch", "nodes", count=1, code=500)
            return await real_patch(labels=labels, annotations=annotations)

        ccm.node.patch = patch_failing_the_restore
        with pytest.raises(ApiError):
            await ccm.reconcile()
        assert CC_SWITCH_INTENT in await n.annotations()
        assert (await n.labels())[labels.deploy_label("vfio-manager")] == labels.PAUSED_FOR_CC
        await n.cc_manager(backend=InProcessBackend(n.host)).reconcile()
        assert_converged(await n.labels(), await n.annotations(), "on")


async def test_cancelled_while_waiting_for_pods_then_restarted_resumes_the_recorded_switch():
    async with sim_node(extra_labels={labels.CC_MODE: "devtools"}) as n:
        pod = await n.add_operand_pod("nvidia-kata-manager")
        task = asyncio.create_task(n.cc_manager(backend=InProcessBackend(n.host)).reconcile())
        await eventually(lambda: n.annotations())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await n.delete_pod(pod)
        result = await n.cc_manager(backend=InProcessBackend(n.host)).reconcile()
        assert result.error is None and set(n.cc_modes().values()) == {"devtools"}
        assert_converged(await n.labels(), await n.annotations(), "devtools")


async def test_run_watches_its_node_reacts_to_label_changes_and_survives_a_410(caplog):
    caplog.set_level("INFO", logger="ccgpu.agents.cc_manager")
    async with sim_node() as n:
        stop = asyncio.Event()
        ready = asyncio.Event()
        ccm = n.cc_manager(default_mode="off", backend=InProcessBackend(n.host))
        task = asyncio.create_task(ccm.run(stop, on_ready=ready.set))
        await asyncio.wait_for(ready.wait(), 10)

        async def state_is(mode):
            return (await n.labels()).get(labels.CC_MODE_STATE) == mode

        await n.set_label(labels.CC_MODE, "on")
        await eventually(lambda: state_is("on"))
        n.api.faults.force_gone("nodes")
        n.api.drop_watches()
        await n.set_label(labels.CC_MODE, "devtools")
        await eventually(lambda: state_is("devtools"))
        assert set(n.cc_modes().values()) == {"devtools"}
        assert "expired (410); re-listing" in caplog.text
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_run_retries_failed_watches_and_still_reacts_afterwards():
    """k8s-cc-manager's reconnect path calls time.sleep without importing time (NameError: operands.md §2
    defects), so its first watch error kills it; here errors are retried until MAX_WATCH_FAILURES in a row."""
    async with sim_node() as n:
        stop = asyncio.Event()
        ready = asyncio.Event()
        ccm = n.cc_manager(default_mode="off", backend=InProcessBackend(n.host))
        task = asyncio.create_task(ccm.run(stop, on_ready=ready.set))
        await asyncio.wait_for(ready.wait(), 10)
        n.api.faults.fail("watch", "nodes", count=3, code=500)
        n.api.drop_watches()
        await n.set_label(labels.CC_MODE, "on")

        async def switched():
            return (await n.labels()).get(labels.CC_MODE_STATE) == "on"

        await eventually(switched)
        assert n.api.faults.injected >= 3 and not task.done()
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_a_gpu_left_in_the_invalid_state_by_an_interrupted_switch_is_fixed_by_setting_the_mode():
    """gpu-admin-tools#7: after an interrupted switch a GPU reports invalid-devtools-only-fix-by-setting-cc-mode;
    only setting a mode fixes it, so it is planned like any GPU not in the target mode."""
    async with sim_node(extra_labels={labels.CC_MODE: "on"}) as n:
        stuck = n.host.gpus()[2]
        with n.host.change() as state:
            state.devices[stuck].cc_current = CC_MODE_INVALID
            state.devices[stuck].cc_pending = CC_MODE_INVALID
        result = await n.cc_manager(backend=InProcessBackend(n.host)).reconcile()
        assert result.error is None and set(n.cc_modes().values()) == {"on"}


async def test_a_forbidden_pod_list_fails_the_switch_naming_the_rbac_it_needs_and_touches_no_gpu():
    async with sim_node(extra_labels={labels.CC_MODE: "on"}) as n:
        n.api.faults.fail("list", "pods", code=403)
        result = await n.cc_manager(backend=InProcessBackend(n.host)).reconcile()
        assert result.state == "failed" and "pods list (all namespaces)" in result.error
        assert all(n.host.gpu(b).resets == 0 for b in n.host.gpus())
        assert_converged(await n.labels(), await n.annotations(), "failed")


async def test_a_gpu_held_by_a_running_vm_is_never_reset_the_switch_fails_naming_it_then_resumes_when_free():
    """gpu-operator#1187 / the GA troubleshooting 'mode stuck because a user pod holds the GPU': ccgpu never
    resets a GPU whose VFIO group a VM holds open; it waits, then fails clearly, and a later pass succeeds."""
    from ccgpu.agents.vfio_manager import VfioManager

    async with sim_node() as n:
        fs = n.host.sysfs
        vfio = VfioManager(fs)
        assert vfio.bind(vfio.devices()).ok
        busy = n.host.gpus()[2]
        pid = n.host.gpu(busy).hold_busy()
        ccm = n.cc_manager(default_mode="off", pause_timeout_s=0.3)
        await ccm.reconcile()
        await n.set_label(labels.CC_MODE, "on")
        result = await ccm.reconcile()
        assert result.state == "failed"
        assert f"GPU {busy} is in use" in result.error and str(pid) in result.error
        assert_converged(await n.labels(), await n.annotations(), "failed")
        assert all(n.host.gpu(b).resets == 0 for b in n.host.gpus()), "no GPU may be reset while one is held"
        assert set(n.cc_modes().values()) == {"off"}
        n.host.gpu(busy).release_busy()
        result = await ccm.reconcile()
        assert result.error is None and set(n.cc_modes().values()) == {"on"}


async def test_run_retries_a_switch_that_failed_on_a_transient_api_error_until_it_succeeds():
    """A switch that failed for a passing reason (here the pod list answered 500 once) is tried again with
    backoff; only refusals of invalid requests wait for the label to change."""
    async with sim_node() as n:
        stop = asyncio.Event()
        ready = asyncio.Event()
        ccm = n.cc_manager(default_mode="off", backend=InProcessBackend(n.host), failed_retry_s=0.1)
        task = asyncio.create_task(ccm.run(stop, on_ready=ready.set))
        await asyncio.wait_for(ready.wait(), 10)

        async def state_is(mode):
            return (await n.labels()).get(labels.CC_MODE_STATE) == mode

        n.api.faults.fail("list", "pods", code=500, count=1)
        await n.set_label(labels.CC_MODE, "on")
        await eventually(lambda: state_is("on"))
        assert_converged(await n.labels(), await n.annotations(), "on")
        (failed,) = await n.events("CCModeSwitchFailed")  # the first try failed, the retry succeeded
        assert "500" in failed.message or "pods" in failed.message
        assert set(n.cc_modes().values()) == {"on"}
        stop.set()
        await asyncio.wait_for(task, 5)

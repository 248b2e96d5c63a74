"""The CC-mode manager agent: makes the node's GPUs' CC mode match `nvidia.com/cc.mode` (or the default).

The switch protocol (issue: Node agents I) is crash-safe because every step is recorded on the node first:
  1. one merge patch writes the intent annotation (target, the deploy labels it is about to pause, start time)
     together with the paused deploy labels, so the pause never happens without its undo information;
  2. wait, with a deadline, for the paused operands' pods on this node to be gone;
  3. stage modes and reset the affected GPUs in parallel (PPCIe off first where needed), then verify each;
  4. one merge patch restores the labels, removes the annotation and sets cc.mode.state / cc.ready.state.
A restart finds the annotation and resumes from step 1 (each step is idempotent: pausing paused labels is a
no-op, the plan only touches devices not yet in the target mode), so it always ends with correct GPU modes,
restored labels and no intent annotation. Failures end in state `failed`, labels restored, and an Event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from lightkube.core.exceptions import ApiError

from ccgpu import labels
from ccgpu.agents import cc_switch
from ccgpu.agents.cc_switch import Device, Intent, ModeDecision
from ccgpu.hw.ccmode import CCBackend, CCBackendError, reset_all
from ccgpu.hw.pci import BDF
from ccgpu.kube.nodes import NodeHandle, NodeView, wait_until
from ccgpu.labels import CCMode, CCModeState

log = logging.getLogger(__name__)


@dataclass
class CCManagerConfig:
    default_mode: str = "on"
    evict_operands: bool = True
    pause_timeout_s: float = 300.0


@dataclass(frozen=True)
class SwitchResult:
    state: CCModeState
    error: str | None = None
    duration_s: float = 0.0


class CCManager:
    """One node's CC-mode manager. `devices` and `host_tee` read the host (through Sysfs) when called."""

    def __init__(
        self,
        node: NodeHandle,
        backend: CCBackend,
        *,
        devices: Callable[[], list[Device]],
        host_tee: Callable[[], bool],
        config: CCManagerConfig | None = None,
    ) -> None:
        self.node = node
        self.backend = backend
        self.devices = devices
        self.host_tee = host_tee
        self.config = config or CCManagerConfig()
        self.switches = 0

    # --- one level-triggered pass ------------------------------------------------------------------
    async def reconcile(self) -> SwitchResult | None:
        """Bring the GPUs to the desired mode (resuming a recorded switch first). None when nothing to do."""
        view = await self.node.get()
        devices = self.devices()
        tee = self.host_tee()
        await self._ensure_capable_label(view, tee, devices)

        intent = self._stored_intent(view)
        decision = cc_switch.decide_mode(
            view.labels.get(labels.CC_MODE), self.config.default_mode, host_tee=tee, devices=devices
        )
        for warning in decision.warnings:
            await self.node.event("Warning", "CCModeDefaultForcedOff", warning)
            log.warning("%s", warning)
        if decision.error is not None:
            return await self._refuse(view, intent, decision)
        target = decision.mode
        assert target is not None

        current_cc, current_ppcie = await self._query(devices)
        steps = cc_switch.plan_switch(target, cc=current_cc, ppcie=current_ppcie, devices=devices)
        if not steps and intent is None:
            await self._set_state(view, CCModeState(target.value))
            return None
        return await self._switch(view, intent, target, steps, devices)

    # --- the protocol ----------------------------------------------------------------------------
    async def _switch(
        self, view: NodeView, intent: Intent | None, target: CCMode, steps: list[cc_switch.Step], devices: list[Device]
    ) -> SwitchResult:
        started = time.monotonic()
        self.switches += 1
        resumed = intent is not None
        pause, saved = cc_switch.pause_patch(view.labels) if self.config.evict_operands else ({}, {})
        if intent is None:
            intent = Intent(target=target.value, saved_labels=saved, phase="pausing")
        else:
            intent.target = target.value
            intent.saved_labels = {**saved, **intent.saved_labels}
        log.info("cc mode switch to %s on %s (%s), steps: %s", target.value, self.node.name,
                 "resumed" if resumed else "new", [s.action for s in steps])
        # (1) intent + pause, atomically
        view = await self.node.patch(labels=pause, annotations={labels.CC_SWITCH_INTENT: intent.to_annotation()})
        error: str | None = None
        try:
            # (2) wait for the paused operands to leave the node
            if self.config.evict_operands and intent.saved_labels:
                gone = await wait_until(self._operands_gone, timeout_s=self.config.pause_timeout_s)
                if not gone:
                    still = await self.node.pods(cc_switch.paused_app_names())
                    raise CCBackendError(None, f"operand pods still on the node after {self.config.pause_timeout_s:.0f}s: "
                                         + ", ".join(still))
            intent.phase = "applying"
            view = await self.node.patch(annotations={labels.CC_SWITCH_INTENT: intent.to_annotation()})
            # (3) re-plan from the GPUs' real state (a resumed switch does only what is left)
            current_cc, current_ppcie = await self._query(devices)
            steps = cc_switch.plan_switch(target, cc=current_cc, ppcie=current_ppcie, devices=devices)
            for step in steps:
                await self._run_step(step)
        except (CCBackendError, ApiError, OSError) as e:
            error = str(e)
        # (4) restore labels, clear intent, set state: one patch
        view = await self.node.get()
        state = CCModeState.FAILED if error else CCModeState(target.value)
        restore = cc_switch.restore_patch(view.labels, intent.saved_labels)
        await self.node.patch(
            labels={**restore, **self._state_labels(state)},
            annotations={labels.CC_SWITCH_INTENT: None},
        )
        duration = time.monotonic() - started
        if error:
            await self.node.event("Warning", "CCModeSwitchFailed", f"switch to CC mode {target.value} failed: {error}")
            log.error("cc mode switch to %s failed: %s", target.value, error)
        else:
            await self.node.event(
                "Normal", "CCModeSwitched",
                f"GPUs switched to CC mode {target.value} in {duration:.1f}s ({len(devices)} devices)",
            )
            log.info("cc mode %s applied in %.1fs", target.value, duration)
        return SwitchResult(state, error, duration)

    async def _run_step(self, step: cc_switch.Step) -> None:
        bdfs = [BDF.parse(b) for b in step.bdfs]
        if step.action == "set-cc":
            await asyncio.gather(*(self.backend.set_cc(b, step.mode) for b in bdfs))
        elif step.action == "set-ppcie":
            await asyncio.gather(*(self.backend.set_ppcie(b, step.mode) for b in bdfs))
        elif step.action == "reset":
            outcome = await reset_all(self.backend, bdfs)
            failed = {b: e for b, e in outcome.items() if e is not None}
            problems = [f"reset of {b} failed: {e}" for b, e in failed.items()]
            for b in bdfs:
                if b in failed:
                    continue
                if step.mode is not None and (got := await self.backend.query_cc(b)) != step.mode:
                    problems.append(f"{b} reports CC mode {got} after reset, expected {step.mode}")
                if step.verify_ppcie is not None and (got := await self.backend.query_ppcie(b)) != step.verify_ppcie:
                    problems.append(f"{b} reports PPCIe mode {got} after reset, expected {step.verify_ppcie}")
            if problems:
                raise CCBackendError(None, "; ".join(problems))
        else:  # pragma: no cover - plan_switch only makes the three above
            raise ValueError(f"unknown step {step.action}")

    # --- helpers ---------------------------------------------------------------------------------
    async def _operands_gone(self) -> bool:
        return not await self.node.pods(cc_switch.paused_app_names())

    async def _query(self, devices: list[Device]) -> tuple[dict[str, str], dict[str, str]]:
        gpus = [d for d in devices if not d.is_nvswitch]
        ppcie_devs = [d for d in devices if d.ppcie_capable]
        cc_modes = await asyncio.gather(*(self.backend.query_cc(BDF.parse(d.bdf)) for d in gpus))
        ppcie_modes = await asyncio.gather(*(self.backend.query_ppcie(BDF.parse(d.bdf)) for d in ppcie_devs))
        return (
            {d.bdf: m for d, m in zip(gpus, cc_modes, strict=True)},
            {d.bdf: m for d, m in zip(ppcie_devs, ppcie_modes, strict=True)},
        )

    def _stored_intent(self, view: NodeView) -> Intent | None:
        text = view.annotations.get(labels.CC_SWITCH_INTENT)
        if text is None:
            return None
        try:
            return Intent.from_annotation(text)
        except ValueError as e:
            # A garbled record cannot tell us what to restore; keep going with an empty one (labels that are
            # still paused stay visible as such) and say so.
            log.error("%s", e)
            return Intent(target="off", saved_labels={})

    @staticmethod
    def _state_labels(state: CCModeState) -> dict[str, str | None]:
        ready = labels.cc_ready_state(state)
        return {labels.CC_MODE_STATE: state.value, labels.CC_READY_STATE: ready or None}

    async def _set_state(self, view: NodeView, state: CCModeState) -> None:
        wanted = self._state_labels(state)
        if any(view.labels.get(k) != v for k, v in wanted.items()):
            await self.node.patch(labels=wanted)

    async def _ensure_capable_label(self, view: NodeView, tee: bool, devices: list[Device]) -> None:
        value = cc_switch.cc_capable_label(host_tee=tee, devices=devices)
        if view.labels.get(labels.CC_CAPABLE) != value:
            await self.node.patch(labels={labels.CC_CAPABLE: value})

    async def _refuse(self, view: NodeView, intent: Intent | None, decision: ModeDecision) -> SwitchResult:
        """Invalid request: touch no GPU; state failed, labels of an interrupted switch restored, Event."""
        patch = self._state_labels(CCModeState.FAILED)
        annotations = None
        if intent is not None:
            patch.update(cc_switch.restore_patch(view.labels, intent.saved_labels))
            annotations = {labels.CC_SWITCH_INTENT: None}
        if any(view.labels.get(k) != v for k, v in patch.items()) or annotations:
            await self.node.patch(labels=patch, annotations=annotations)
            await self.node.event("Warning", "CCModeInvalid", decision.error or "")
        log.error("%s", decision.error)
        return SwitchResult(CCModeState.FAILED, decision.error)

    # --- the long-running loop -----------------------------------------------------------------
    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Reconcile, then watch the node and reconcile on every change of the CC label; re-list on 410."""
        stop = stop or asyncio.Event()
        await self.reconcile()
        rv = (await self.node.get()).resource_version
        last_label = (await self.node.get()).labels.get(labels.CC_MODE)
        while not stop.is_set():
            try:
                async for _kind, view in self.node.watch(rv):
                    rv = view.resource_version
                    if view.labels.get(labels.CC_MODE) != last_label:
                        last_label = view.labels.get(labels.CC_MODE)
                        await self.reconcile()
                    if stop.is_set():
                        return
            except ApiError as e:
                if e.status.code != 410:
                    raise
                log.info("watch of node %s expired (410); re-listing", self.node.name)
                await self.reconcile()
                rv = (await self.node.get()).resource_version

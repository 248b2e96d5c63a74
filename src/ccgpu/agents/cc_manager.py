"""The CC-mode manager agent: makes the node's GPUs' CC mode match `nvidia.com/cc.mode` (or the default).

The switch protocol (issue: Node agents I) is crash-safe because every step is recorded on the node first:
  1. one merge patch writes the intent annotation (target, the deploy labels it is about to pause, start time)
     together with the paused deploy labels, so the pause never happens without its undo information;
  2. wait, with a deadline, for the paused operands' pods on this node to be gone;
  3. stage modes and reset the affected GPUs in parallel (PPCIe off first where needed), verifying each;
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
from prometheus_client import CollectorRegistry, Counter, Gauge

from ccgpu import labels
from ccgpu.agents import cc_switch
from ccgpu.agents.cc_switch import Device, Intent
from ccgpu.hw import pci
from ccgpu.hw.ccmode import CCBackend, CCBackendError
from ccgpu.hw.pci import BDF
from ccgpu.hw.platform import read_platform
from ccgpu.hw.sysfs import Sysfs
from ccgpu.kube.nodes import NodeHandle, NodeView, wait_until
from ccgpu.labels import CCMode, CCModeState

log = logging.getLogger(__name__)

MAX_WATCH_FAILURES = 10  # consecutive watch errors before the agent gives up (and its pod restarts), as NVIDIA's


@dataclass
class CCManagerConfig:
    default_mode: str = "on"
    evict_operands: bool = True
    pause_timeout_s: float = 300.0
    watch_retry_s: float = 2.0
    # A switch that failed for a reason that can pass (an API error, a GPU held by a VM, a reset that failed)
    # is tried again after this delay, doubling up to the maximum; refusals of invalid requests are not.
    failed_retry_s: float = 30.0
    failed_retry_max_s: float = 600.0


@dataclass(frozen=True)
class SwitchResult:
    state: CCModeState
    error: str | None = None
    duration_s: float = 0.0


# --- reading the host ------------------------------------------------------------------------------


def host_devices(fs: Sysfs) -> list[Device]:
    """The node's NVIDIA GPUs and NVSwitches with their CC/PPCIe capability (from the catalog, not an id list)."""
    found: list[Device] = []
    for dev in [*pci.nvidia_gpus(fs), *pci.nvidia_nvswitches(fs)]:
        model = dev.model
        assert model is not None  # nvidia_gpus/nvidia_nvswitches return only GPUs and NVSwitches
        found.append(Device(str(dev.bdf), model.short_name, dev.is_nvswitch, model.cc_capable, model.ppcie_capable))
    return found


def host_devices_in_use(fs: Sysfs) -> dict[str, list[int]]:
    """GPUs and NVSwitches whose VFIO group or cdev a process holds open (a running VM), with the pids."""
    from ccgpu.agents.vfio_manager import holders, open_vfio_nodes

    held = open_vfio_nodes(fs)
    if not held:
        return {}
    in_use = {}
    for dev in [*pci.nvidia_gpus(fs), *pci.nvidia_nvswitches(fs)]:
        pids = holders(dev, held)
        if pids:
            in_use[str(dev.bdf)] = pids
    return in_use


def host_has_tee(fs: Sysfs) -> bool:
    """SEV-SNP or TDX enabled in the host kernel (kvm_amd sev_snp / kvm_intel tdx parameters)."""
    return read_platform(fs).tee is not None


class CCManagerMetrics:
    """Prometheus metrics of one cc-manager, in their own registry (the CLI serves it on --metrics-port)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.switches = Counter(
            "ccgpu_cc_mode_switches", "CC mode switches, by result (success, failed, invalid).", ["result"],
            registry=self.registry,
        )
        self.last_switch_seconds = Gauge(
            "ccgpu_cc_mode_last_switch_seconds", "Duration of the last CC mode switch.", registry=self.registry
        )
        self.state = Gauge(
            "ccgpu_cc_mode_state", "1 for the node's current nvidia.com/cc.mode.state value.", ["state"],
            registry=self.registry,
        )

    def set_state(self, state: CCModeState) -> None:
        for s in CCModeState:
            self.state.labels(state=s.value).set(1 if s is state else 0)


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
        metrics: CCManagerMetrics | None = None,
        in_use: Callable[[], dict[str, list[int]]] = dict,
    ) -> None:
        self.node = node
        self.in_use = in_use
        self.backend = backend
        self.devices = devices
        self.host_tee = host_tee
        self.config = config or CCManagerConfig()
        self.metrics = metrics or CCManagerMetrics()
        self.switches = 0
        self._last_refusal: str | None = None
        self._warned: set[str] = set()

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
            if warning not in self._warned:  # once per agent run, not at every resync
                self._warned.add(warning)
                await self.node.event("Warning", "CCModeDefaultForcedOff", warning)
                log.warning("%s", warning)
        if decision.error is not None:
            return await self._refuse(view, intent, decision.error)
        self._last_refusal = None
        target = decision.mode
        assert target is not None
        try:
            current_cc, current_ppcie = await self._query(devices)
        except CCBackendError as e:
            return await self._fail(view, intent, target, f"could not read the GPUs' modes: {e}")
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
            intent.phase = "pausing"
        log.info("cc mode switch to %s on %s (%s), steps: %s", target.value, self.node.name,
                 "resumed" if resumed else "new", [f"{s.action}x{len(s.bdfs)}" for s in steps])
        # (1) intent + pause, atomically: the pause never exists without its undo record
        await self.node.patch(labels=pause, annotations={labels.CC_SWITCH_INTENT: intent.to_annotation()})
        error: str | None = None
        try:
            # (2) wait for the paused operands to leave the node
            if self.config.evict_operands and intent.saved_labels:
                gone = await wait_until(self._operands_gone, timeout_s=self.config.pause_timeout_s)
                if not gone:
                    still = await self.node.pods(cc_switch.paused_app_names())
                    raise CCBackendError(None, f"operand pods still on the node after {self.config.pause_timeout_s:g}s: "
                                         + ", ".join(still))
            # (2b) never reset a GPU out from under a running VM: wait for its VFIO group to close, then give up
            touched = {b for step in steps for b in step.bdfs}
            if not await wait_until(self._devices_free(touched), timeout_s=self.config.pause_timeout_s):
                busy = {b: p for b, p in self.in_use().items() if b in touched}
                raise CCBackendError(None, "; ".join(
                    f"GPU {b} is in use: its VFIO device is held open by pid {', '.join(map(str, p))} (a running "
                    f"VM); not resetting it" for b, p in sorted(busy.items())
                ) + f" (waited {self.config.pause_timeout_s:g}s; stop the workload, then the switch resumes)")
            intent.phase = "applying"
            await self.node.patch(annotations={labels.CC_SWITCH_INTENT: intent.to_annotation()})
            # (3) stage, reset in parallel, verify (steps were planned from the GPUs' state just read)
            for step in steps:
                await self._run_step(step)
        except ApiError as e:
            error = str(e)
            if e.status.code == 403:
                error += ("; cc-manager's ServiceAccount needs: nodes get/list/watch/patch, pods list (all namespaces), "
                          "events create")
        except (CCBackendError, OSError) as e:
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
        self.metrics.set_state(state)
        self.metrics.last_switch_seconds.set(duration)
        if error:
            self.metrics.switches.labels(result="failed").inc()
            await self.node.event("Warning", "CCModeSwitchFailed", f"switch to CC mode {target.value} failed: {error}")
            log.error("cc mode switch to %s failed: %s", target.value, error)
        else:
            self.metrics.switches.labels(result="success").inc()
            await self.node.event(
                "Normal", "CCModeSwitched",
                f"GPUs switched to CC mode {target.value} in {duration:.1f}s ({len(devices)} devices)",
            )
            log.info("cc mode %s applied in %.1fs", target.value, duration)
        return SwitchResult(state, error, duration)

    async def _run_step(self, step: cc_switch.Step) -> None:
        """Apply one step to all its devices concurrently (stage, reset, query each); every device's failure or
        wrong mode is collected, so the error names each GPU that did not make it."""
        bdfs = [BDF.parse(b) for b in step.bdfs]
        apply, what = (
            (self.backend.apply_cc, "CC") if step.action == "apply-cc" else (self.backend.apply_ppcie, "PPCIe")
        )
        results = await asyncio.gather(*(apply(b, step.mode) for b in bdfs), return_exceptions=True)
        problems = []
        for bdf, res in zip(bdfs, results, strict=True):
            if isinstance(res, BaseException) and not isinstance(res, Exception):
                raise res
            if isinstance(res, Exception):
                problems.append(f"GPU {bdf}: switching {what} mode to {step.mode} failed: {res}")
            elif res != step.mode:
                problems.append(f"GPU {bdf} reports {what} mode {res} after reset, expected {step.mode}")
        if problems:
            raise CCBackendError(None, "; ".join(problems))

    # --- helpers ---------------------------------------------------------------------------------
    def _devices_free(self, bdfs: set[str]):
        async def free() -> bool:
            return not (set(self.in_use()) & bdfs)

        return free

    async def _operands_gone(self) -> bool:
        return not await self.node.pods(cc_switch.paused_app_names())

    async def _query(self, devices: list[Device]) -> tuple[dict[str, str], dict[str, str]]:
        gpus = [d for d in devices if not d.is_nvswitch]
        ppcie_devs = [d for d in devices if d.ppcie_capable]
        all_cc, all_ppcie = await asyncio.gather(
            self.backend.query_cc_all(), self.backend.query_ppcie_all() if ppcie_devs else _no_modes()
        )
        # A device missing from the batch answer is asked alone, which raises with the tool's error for it.
        cc_modes = await _gather_all(_known_or(all_cc, d.bdf, self.backend.query_cc) for d in gpus)
        ppcie_modes = await _gather_all(_known_or(all_ppcie, d.bdf, self.backend.query_ppcie) for d in ppcie_devs)
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
        self.metrics.set_state(state)
        if any(view.labels.get(k) != v for k, v in wanted.items()):
            await self.node.patch(labels=wanted)

    async def _ensure_capable_label(self, view: NodeView, tee: bool, devices: list[Device]) -> None:
        value = cc_switch.cc_capable_label(host_tee=tee, devices=devices)
        if view.labels.get(labels.CC_CAPABLE) != value:
            await self.node.patch(labels={labels.CC_CAPABLE: value})

    async def _fail(self, view: NodeView, intent: Intent | None, target: CCMode, error: str) -> SwitchResult:
        """The GPUs could not even be read: state failed, an interrupted switch's labels restored, Event."""
        await self._end_failed(view, intent)
        self.metrics.switches.labels(result="failed").inc()
        await self.node.event("Warning", "CCModeSwitchFailed", f"switch to CC mode {target.value} failed: {error}")
        log.error("cc mode switch to %s failed: %s", target.value, error)
        return SwitchResult(CCModeState.FAILED, error)

    async def _refuse(self, view: NodeView, intent: Intent | None, error: str) -> SwitchResult:
        """Invalid request: touch no GPU; state failed, labels of an interrupted switch restored, one Event per
        distinct refusal (a resync with the same bad label does not repeat it)."""
        changed = await self._end_failed(view, intent)
        if changed or error != self._last_refusal:
            self.metrics.switches.labels(result="invalid").inc()
            await self.node.event("Warning", "CCModeInvalid", error)
            log.error("%s", error)
        self._last_refusal = error
        return SwitchResult(CCModeState.FAILED, error)

    async def _end_failed(self, view: NodeView, intent: Intent | None) -> bool:
        patch = self._state_labels(CCModeState.FAILED)
        annotations = None
        if intent is not None:
            patch.update(cc_switch.restore_patch(view.labels, intent.saved_labels))
            annotations = {labels.CC_SWITCH_INTENT: None}
        self.metrics.set_state(CCModeState.FAILED)
        if any(view.labels.get(k) != v for k, v in patch.items()) or annotations:
            await self.node.patch(labels=patch, annotations=annotations)
            return True
        return False

    # --- the long-running loop -----------------------------------------------------------------
    async def run(self, stop: asyncio.Event, *, on_ready: Callable[[], None] | None = None) -> None:
        """Reconcile, call `on_ready`, then watch the node until `stop`: reconcile on every change of the CC
        label; resume the watch by resourceVersion; on 410 re-list (get + reconcile); give up after
        MAX_WATCH_FAILURES consecutive errors."""
        self._lock = asyncio.Lock()
        await self._reconcile_once()
        if on_ready is not None:
            on_ready()
        watcher = asyncio.create_task(self._watch())
        retrier = asyncio.create_task(self._retry_failed())
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({watcher, retrier, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in (watcher, retrier):
                if task in done:
                    task.result()  # raises what ended it
        finally:
            for running in (watcher, retrier, stopper):
                running.cancel()
            await asyncio.gather(watcher, retrier, stopper, return_exceptions=True)

    async def _reconcile_once(self) -> SwitchResult | None:
        """One reconcile at a time: the watch and the retry timer never run two switches at once."""
        async with self._lock:
            result = await self.reconcile()
            self._last_result = result
            return result

    async def _retry_failed(self) -> None:
        """Try a failed switch again with exponential backoff, unless it failed because the request is invalid
        (that only changes when the label does, and the watch reacts to that)."""
        delay = self.config.failed_retry_s
        while True:
            await asyncio.sleep(delay)
            last = getattr(self, "_last_result", None)
            if last is None or last.state is not CCModeState.FAILED or self._last_refusal is not None:
                delay = self.config.failed_retry_s
                continue
            log.info("retrying the failed CC mode switch (last error: %s)", last.error)
            try:
                result = await self._reconcile_once()
            except Exception as e:  # the API may still be down: keep the backoff going
                log.warning("retry of the CC mode switch failed: %s", e)
                result = last
            failed = result is not None and result.state is CCModeState.FAILED
            delay = min(delay * 2, self.config.failed_retry_max_s) if failed else self.config.failed_retry_s

    async def _watch(self) -> None:
        view = await self.node.get()
        rv, last_label = view.resource_version, view.labels.get(labels.CC_MODE)
        failures, pending = 0, False
        while True:
            try:
                if pending:  # a reconcile that an error interrupted
                    await self._reconcile_once()
                    pending = False
                async for _kind, view in self.node.watch(rv):
                    failures = 0
                    rv = view.resource_version
                    label = view.labels.get(labels.CC_MODE)
                    if label != last_label:
                        last_label, pending = label, True
                        log.info("%s changed to %s", labels.CC_MODE, label)
                        await self._reconcile_once()
                        pending = False
            except ApiError as e:
                if e.status.code != 410:
                    failures = await self._watch_failed(failures, e)
                    continue
                log.info("watch of node %s expired (410); re-listing", self.node.name)
                await self._reconcile_once()
                view = await self.node.get()
                rv, last_label = view.resource_version, view.labels.get(labels.CC_MODE)
            except Exception as e:  # connection errors (lightkube's HTTP client), bad responses: retried, counted
                failures = await self._watch_failed(failures, e)

    async def _watch_failed(self, failures: int, error: Exception) -> int:
        failures += 1
        if failures >= MAX_WATCH_FAILURES:
            raise RuntimeError(f"watching node {self.node.name} failed {failures} times in a row: {error}") from error
        log.warning("watch of node %s failed (%s); retrying in %gs", self.node.name, error, self.config.watch_retry_s)
        await asyncio.sleep(self.config.watch_retry_s)
        return failures


async def _no_modes() -> dict[BDF, str]:
    return {}


async def _known_or(known: dict[BDF, str], bdf: str, ask) -> str:
    parsed = BDF.parse(bdf)
    return known[parsed] if parsed in known else await ask(parsed)


async def _gather_all(awaitables) -> list:
    """Run concurrently; if any fails, wait for the rest to finish (never leave a tool run behind) and raise the
    first error."""
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    for res in results:
        if isinstance(res, BaseException):
            raise res
    return results

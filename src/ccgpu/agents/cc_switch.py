"""Pure decisions of the CC-mode manager: which mode, which labels to pause, which steps to run.

No I/O here: `cc_manager.py` feeds these functions what it read from the node, the host and the GPUs, and
executes what they return. Keeping the decisions pure makes every refusal and every plan a table-driven test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ccgpu import labels
from ccgpu.labels import CCMode, LabelValueError, Operand

PPCIE_ON, PPCIE_OFF = "on", "off"


@dataclass(frozen=True)
class Device:
    """What the decisions need to know about one GPU or NVSwitch."""

    bdf: str
    name: str
    is_nvswitch: bool
    cc_capable: bool
    ppcie_capable: bool


@dataclass(frozen=True)
class ModeDecision:
    """The mode to apply, or why nothing may be applied (`error`); `warnings` become Warning Events."""

    mode: CCMode | None
    source: str  # "label" or "default"
    error: str | None = None
    warnings: tuple[str, ...] = ()


def decide_mode(
    label_value: str | None,
    default_mode: str,
    *,
    host_tee: bool,
    devices: list[Device],
) -> ModeDecision:
    """Desired mode = the node label if valid, else the default; refuse what the host cannot do.

    - An invalid label (`On`, `enabled`) is an error naming the valid values; it is never silently replaced by
      the default, since the user asked for something specific.
    - A host without SNP or TDX forces the *default* to `off` with a warning; an explicit label asking for a CC
      mode on such a host is an error (a GPU in CC mode is useless to a VM that is not confidential).
    - `ppcie` needs every GPU and at least one NVSwitch, all PPCIe-capable (Hopper HGX).
    - Any mode but `off` needs every GPU CC-capable.
    """
    gpus = [d for d in devices if not d.is_nvswitch]
    switches = [d for d in devices if d.is_nvswitch]
    if label_value is not None:
        try:
            mode, source = labels.parse_cc_mode(label_value), "label"
        except LabelValueError as e:
            return ModeDecision(None, "label", error=str(e))
    else:
        try:
            mode, source = labels.parse_cc_mode(default_mode), "default"
        except LabelValueError as e:
            return ModeDecision(None, "default", error=f"DEFAULT_CC_MODE: {e}")
        if mode is CCMode.PPCIE:
            return ModeDecision(None, "default", error="DEFAULT_CC_MODE may not be ppcie; ppcie is set per node by label")

    if mode is not CCMode.OFF and not host_tee:
        if source == "default":
            warning = (
                f"host has neither SEV-SNP nor TDX enabled: default CC mode {mode.value!r} forced to 'off' "
                "(enable SEV-SNP or TDX in the BIOS and the kvm module parameters to use CC mode)"
            )
            return ModeDecision(CCMode.OFF, source, warnings=(warning,))
        return ModeDecision(
            None, source,
            error=f"{labels.CC_MODE}={mode.value} needs a CPU TEE, but this host has neither SEV-SNP nor TDX "
            "enabled; accepted on this host: off",
        )
    if mode is not CCMode.OFF:
        not_capable = [f"{d.bdf} ({d.name})" for d in gpus if not d.cc_capable]
        if not_capable:
            return ModeDecision(
                None, source,
                error=f"CC mode {mode.value!r} needs CC-capable GPUs (Hopper or newer); not capable: "
                + ", ".join(not_capable) + "; accepted on this host: off",
            )
    if mode is CCMode.PPCIE:
        if not switches:
            return ModeDecision(
                None, source,
                error="ppcie needs Hopper GPUs with PPCIe-capable NVSwitches, and this host has no NVSwitch; "
                "accepted on this host: on, off, devtools",
            )
        problems = [f"{d.bdf} ({d.name})" for d in devices if not d.ppcie_capable]
        if problems:
            return ModeDecision(
                None, source,
                error="ppcie needs every GPU and NVSwitch PPCIe-capable; not capable: " + ", ".join(problems)
                + "; accepted on this host: on, off, devtools",
            )
    return ModeDecision(mode, source)


def cc_capable_label(*, host_tee: bool, devices: list[Device]) -> str:
    """`nvidia.com/cc.capable`: the host has a CPU TEE and at least one GPU, all of them CC-capable."""
    gpus = [d for d in devices if not d.is_nvswitch]
    return labels.bool_label(host_tee and bool(gpus) and all(d.cc_capable for d in gpus))


# --- pausing the other operands -------------------------------------------------------------------


def _paused_value(value: str) -> str:
    return labels.PAUSED_FOR_CC if value == "true" else f"{value}_{labels.PAUSED_FOR_CC}"


def pause_patch(node_labels: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(label patch that pauses the operands, the values it replaced).

    `true` becomes `paused-for-cc-mode-change`; another non-empty value gets `_paused-for-cc-mode-change`
    appended; `false`, empty or absent labels are left alone (as NVIDIA's cc-manager does). Labels already
    paused (a resumed switch) are left as they are and not recorded twice.
    """
    patch: dict[str, str] = {}
    saved: dict[str, str] = {}
    for operand in labels.CC_SWITCH_PAUSED_OPERANDS:
        key = labels.deploy_label(operand)
        value = node_labels.get(key)
        if not value or value == "false" or value.endswith(labels.PAUSED_FOR_CC):
            continue
        saved[key] = value
        patch[key] = _paused_value(value)
    return patch, saved


def restore_patch(node_labels: dict[str, str], saved: dict[str, str]) -> dict[str, str]:
    """Label patch putting back the saved values, for labels still showing our paused value.

    A label someone changed meanwhile (the operator swapped the workload config, an admin set `false`) is
    theirs now and is left alone.
    """
    return {key: value for key, value in saved.items() if node_labels.get(key) == _paused_value(value)}


# `app` label of each paused operand's pods: NVIDIA's DaemonSet names, which ccgpu's operator uses too.
OPERAND_APP_NAMES: dict[Operand, str] = {
    Operand.VFIO_MANAGER: "nvidia-vfio-manager",
    Operand.SANDBOX_DEVICE_PLUGIN: "nvidia-sandbox-device-plugin-daemonset",
    Operand.KATA_SANDBOX_DEVICE_PLUGIN: "nvidia-kata-sandbox-device-plugin-daemonset",
    Operand.SANDBOX_VALIDATOR: "nvidia-sandbox-validator",
    Operand.KATA_MANAGER: "nvidia-kata-manager",
    Operand.VGPU_MANAGER: "nvidia-vgpu-manager",
    Operand.VGPU_DEVICE_MANAGER: "nvidia-vgpu-device-manager",
}


def paused_app_names() -> list[str]:
    """`app` label values of the operand pods that must be gone before GPUs are reset."""
    return [OPERAND_APP_NAMES[op] for op in labels.CC_SWITCH_PAUSED_OPERANDS]


# --- the intent record -----------------------------------------------------------------------------


@dataclass
class Intent:
    """What a switch in progress set out to do, stored on the node before anything is touched."""

    target: str
    saved_labels: dict[str, str] = field(default_factory=dict)
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    phase: str = "pausing"  # pausing → applying → restoring

    def to_annotation(self) -> str:
        return json.dumps(
            {"target": self.target, "savedLabels": self.saved_labels, "started": self.started, "phase": self.phase},
            sort_keys=True,
        )

    @classmethod
    def from_annotation(cls, text: str) -> Intent:
        """Parse a stored intent; a garbled one raises ValueError naming the expected shape."""
        try:
            data = json.loads(text)
            return cls(
                target=str(data["target"]),
                saved_labels={str(k): str(v) for k, v in dict(data.get("savedLabels", {})).items()},
                started=str(data.get("started", "")),
                phase=str(data.get("phase", "pausing")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(
                f"annotation {labels.CC_SWITCH_INTENT} is not a valid intent record ({e}); expected JSON "
                '{"target": mode, "savedLabels": {...}, "started": time, "phase": pausing|applying|restoring}'
            ) from None


# --- the switch plan -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One batch over devices: stage `mode` (CC or PPCIe), reset each device, verify it reports `mode`.

    The devices of a step are reset in parallel; one tool run per device does stage + reset + query
    (`--set-cc-mode=X --reset-after-cc-mode-switch --query-cc-mode`), so a step costs one process start-up."""

    action: str  # "apply-cc" or "apply-ppcie"
    bdfs: tuple[str, ...]
    mode: str


def plan_switch(
    target: CCMode,
    *,
    cc: dict[str, str],
    ppcie: dict[str, str],
    devices: list[Device],
) -> list[Step]:
    """Steps to bring every device to `target`. `cc`/`ppcie` hold current modes by BDF.

    PPCIe and CC exclude each other: leaving PPCIe turns it off first (on GPUs and NVSwitches); entering PPCIe
    turns CC off first. Devices already in the target mode are not touched, so a converged node plans
    nothing and a resumed switch does only what is left.
    """
    gpus = [d.bdf for d in devices if not d.is_nvswitch]
    ppcie_devices = [d.bdf for d in devices if d.ppcie_capable]
    steps: list[Step] = []
    if target is CCMode.PPCIE:
        cc_on = tuple(b for b in gpus if cc.get(b) != "off")
        if cc_on:
            steps.append(Step("apply-cc", cc_on, "off"))
        need = tuple(b for b in ppcie_devices if ppcie.get(b) != PPCIE_ON)
        if need:
            steps.append(Step("apply-ppcie", need, PPCIE_ON))
        return steps
    leave = tuple(b for b in ppcie_devices if ppcie.get(b, PPCIE_OFF) != PPCIE_OFF)
    if leave:
        steps.append(Step("apply-ppcie", leave, PPCIE_OFF))
    need = tuple(b for b in gpus if cc.get(b) != target.value)
    if need:
        steps.append(Step("apply-cc", need, target.value))
    return steps

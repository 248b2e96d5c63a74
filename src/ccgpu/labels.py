"""The one vocabulary of ccgpu: label keys and values, CC modes, workload configs, operand names.

Values are NVIDIA's (GPU Operator node labels, k8s-cc-manager, validator file names) so that kata-deploy's
RuntimeClass selectors, GPU feature discovery and NVIDIA's documentation keep working unchanged.
Every parse function rejects a bad value with a message that names the accepted ones.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

DOMAIN = "nvidia.com"
CRD_GROUP = "ccgpu.dev"

# --- node label keys -------------------------------------------------------------------------------
GPU_PRESENT = "nvidia.com/gpu.present"
WORKLOAD_CONFIG = "nvidia.com/gpu.workload.config"
DEPLOY_PREFIX = "nvidia.com/gpu.deploy."
DEPLOY_OPERANDS = "nvidia.com/gpu.deploy.operands"
CC_MODE = "nvidia.com/cc.mode"
CC_MODE_STATE = "nvidia.com/cc.mode.state"
CC_READY_STATE = "nvidia.com/cc.ready.state"
CC_CAPABLE = "nvidia.com/cc.capable"
MIG_CAPABLE = "nvidia.com/mig.capable"
KATA_RUNTIME_CLASS = "nvidia.com/kata-runtime-class"

# NFD labels that mark a node as having an NVIDIA PCI device (bundled NFD whitelists these classes).
NFD_PCI_NVIDIA = (
    "feature.node.kubernetes.io/pci-10de.present",
    "feature.node.kubernetes.io/pci-0302_10de.present",
    "feature.node.kubernetes.io/pci-0300_10de.present",
)
# TEE labels kata-deploy's RuntimeClass selectors use.
NFD_SNP = "amd.feature.node.kubernetes.io/snp"
NFD_TDX = "intel.feature.node.kubernetes.io/tdx"
NFD_BUILTIN_SNP = "feature.node.kubernetes.io/cpu-security.sev.snp.enabled"
NFD_BUILTIN_TDX = "feature.node.kubernetes.io/cpu-security.tdx.enabled"

# Annotation where cc-manager records the intent of a mode switch before touching anything.
CC_SWITCH_INTENT = "ccgpu.dev/cc-mode-switch"

# Value the cc-manager writes into deploy labels while it switches modes.
PAUSED_FOR_CC = "paused-for-cc-mode-change"

# --- enumerations ----------------------------------------------------------------------------------


class CCMode(StrEnum):
    """Desired CC mode of a node's GPUs (label nvidia.com/cc.mode). `ppcie` is label-only, Hopper multi-GPU."""

    ON = "on"
    OFF = "off"
    DEVTOOLS = "devtools"
    PPCIE = "ppcie"


class CCModeState(StrEnum):
    """Applied CC mode (label nvidia.com/cc.mode.state): a mode, or `failed`."""

    ON = "on"
    OFF = "off"
    DEVTOOLS = "devtools"
    PPCIE = "ppcie"
    FAILED = "failed"


class WorkloadConfig(StrEnum):
    """What a GPU node runs (label nvidia.com/gpu.workload.config)."""

    CONTAINER = "container"
    VM_PASSTHROUGH = "vm-passthrough"
    VM_VGPU = "vm-vgpu"


class SandboxMode(StrEnum):
    """ClusterPolicy sandboxWorkloads.mode: which sandbox device plugin a vm-passthrough node gets."""

    KUBEVIRT = "kubevirt"
    KATA = "kata"


class Operand(StrEnum):
    """Operand names as they appear in `nvidia.com/gpu.deploy.<operand>`."""

    # traditional (container) operands, NVIDIA's images
    DRIVER = "driver"
    GPU_FEATURE_DISCOVERY = "gpu-feature-discovery"
    CONTAINER_TOOLKIT = "container-toolkit"
    DEVICE_PLUGIN = "device-plugin"
    DCGM = "dcgm"
    DCGM_EXPORTER = "dcgm-exporter"
    NODE_STATUS_EXPORTER = "node-status-exporter"
    OPERATOR_VALIDATOR = "operator-validator"
    MIG_MANAGER = "mig-manager"
    CLIENT = "client"
    # sandbox operands, ccgpu's own agents
    SANDBOX_DEVICE_PLUGIN = "sandbox-device-plugin"
    KATA_SANDBOX_DEVICE_PLUGIN = "kata-sandbox-device-plugin"
    SANDBOX_VALIDATOR = "sandbox-validator"
    VFIO_MANAGER = "vfio-manager"
    KATA_MANAGER = "kata-manager"
    CC_MANAGER = "cc-manager"
    VGPU_MANAGER = "vgpu-manager"
    VGPU_DEVICE_MANAGER = "vgpu-device-manager"


def deploy_label(operand: Operand | str) -> str:
    """The node label key that schedules an operand's DaemonSet on a node."""
    return DEPLOY_PREFIX + str(Operand(operand))


# Operands that cc-manager pauses while it resets GPUs (NVIDIA's list plus the kata device plugin, which
# k8s-cc-manager forgets: reference/operands.md §2 and §5b).
CC_SWITCH_PAUSED_OPERANDS: tuple[Operand, ...] = (
    Operand.VFIO_MANAGER,
    Operand.SANDBOX_DEVICE_PLUGIN,
    Operand.KATA_SANDBOX_DEVICE_PLUGIN,
    Operand.SANDBOX_VALIDATOR,
    Operand.KATA_MANAGER,
    Operand.VGPU_MANAGER,
    Operand.VGPU_DEVICE_MANAGER,
)

# --- readiness files under /run/nvidia/validations/ -------------------------------------------------
VALIDATIONS_DIR = "run/nvidia/validations"
READY_WORKLOAD_TYPE = "workload-type"
READY_VFIO_PCI = "vfio-pci-ready"
READY_CC_MANAGER = "cc-manager-ready"
READY_CC_MANAGER_CTR = ".cc-manager-ctr-ready"

# --- runtime classes and resources -------------------------------------------------------------------
RUNTIME_CLASS_KATA_GPU = "kata-qemu-nvidia-gpu"
RUNTIME_CLASS_KATA_GPU_SNP = "kata-qemu-nvidia-gpu-snp"
RUNTIME_CLASS_KATA_GPU_TDX = "kata-qemu-nvidia-gpu-tdx"
RUNTIME_CLASSES = (RUNTIME_CLASS_KATA_GPU, RUNTIME_CLASS_KATA_GPU_SNP, RUNTIME_CLASS_KATA_GPU_TDX)
DEFAULT_GPU_ALIAS = "pgpu"
DEFAULT_NVSWITCH_ALIAS = "nvswitch"

# --- parsing -------------------------------------------------------------------------------------------


class LabelValueError(ValueError):
    """A label value outside its vocabulary; the message names the accepted values."""


E = TypeVar("E", bound=StrEnum)


def _parse(enum: type[E], what: str, value: str | None) -> E:
    accepted = ", ".join(m.value for m in enum)
    if value is None:
        raise LabelValueError(f"{what} is missing; accepted values: {accepted}")
    try:
        return enum(value)
    except ValueError:
        raise LabelValueError(f"{what} {value!r} is not valid; accepted values: {accepted}") from None


def parse_cc_mode(value: str | None) -> CCMode:
    """Parse `nvidia.com/cc.mode`. Case matters, as it does for NVIDIA's cc-manager: `On` is rejected."""
    return _parse(CCMode, f"label {CC_MODE}", value)


def parse_cc_mode_state(value: str | None) -> CCModeState:
    return _parse(CCModeState, f"label {CC_MODE_STATE}", value)


def parse_workload_config(value: str | None) -> WorkloadConfig:
    """Parse `nvidia.com/gpu.workload.config` (`kata` is the classic mistake: gpu-operator#1871)."""
    return _parse(WorkloadConfig, f"label {WORKLOAD_CONFIG}", value)


def parse_operand(value: str | None) -> Operand:
    return _parse(Operand, "operand", value)


def parse_sandbox_mode(value: str | None) -> SandboxMode:
    return _parse(SandboxMode, "sandboxWorkloads.mode", value)


def cc_ready_state(state: CCModeState) -> str:
    """`nvidia.com/cc.ready.state` for an applied mode: true for on/ppcie, false for off, empty otherwise."""
    if state in (CCModeState.ON, CCModeState.PPCIE):
        return "true"
    if state is CCModeState.OFF:
        return "false"
    return ""


def bool_label(value: bool) -> str:
    return "true" if value else "false"

"""The operand table: which DaemonSet runs each operand, from which image, and when the policy enables it.

ccgpu's sandbox operands all run the one ccgpu image as `ccgpu agent <name>`; the traditional container-workload
operands run NVIDIA's images (names only: the registry comes from the policy's `repository` or the operator's
`--nvidia-repository`, so no registry host is written in code).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ccgpu.labels import Operand, WorkloadConfig
from ccgpu.operator.policy import ClusterPolicySpec, ImageSpec


@dataclass(frozen=True)
class OperandDef:
    operand: Operand
    daemonset: str  # NVIDIA's DaemonSet name, so `kubectl get pods` looks as NVIDIA's docs say
    spec_field: str  # attribute of ClusterPolicySpec holding its image fields
    agent: str | None  # `ccgpu agent <agent>`; None for NVIDIA's images
    nvidia_image: str = ""  # image:version under the NVIDIA repository, for NVIDIA's operands
    privileged: bool = False

    def image_spec(self, spec: ClusterPolicySpec) -> ImageSpec:
        return getattr(spec, self.spec_field)


def _sandbox(spec: ClusterPolicySpec) -> bool:
    return spec.sandbox_workloads.enabled


def _kata(spec: ClusterPolicySpec) -> bool:
    return _sandbox(spec) and spec.sandbox_workloads.mode == "kata"


OPERANDS: tuple[OperandDef, ...] = (
    # traditional, container workloads
    OperandDef(Operand.DRIVER, "nvidia-driver-daemonset", "driver", None, "driver:580.105.08", True),
    OperandDef(Operand.CONTAINER_TOOLKIT, "nvidia-container-toolkit-daemonset", "toolkit", None,
               "k8s/container-toolkit:v1.18.0", True),
    OperandDef(Operand.DEVICE_PLUGIN, "nvidia-device-plugin-daemonset", "device_plugin", None,
               "k8s-device-plugin:v0.18.0"),
    OperandDef(Operand.DCGM, "nvidia-dcgm", "dcgm", None, "cloud-native/dcgm:4.4.1-1-ubuntu22.04"),
    OperandDef(Operand.DCGM_EXPORTER, "nvidia-dcgm-exporter", "dcgm_exporter", None,
               "k8s/dcgm-exporter:4.4.1-4.6.0-ubuntu22.04"),
    OperandDef(Operand.MIG_MANAGER, "nvidia-mig-manager", "mig_manager", None, "cloud-native/k8s-mig-manager:v0.13.0",
               True),
    OperandDef(Operand.GPU_FEATURE_DISCOVERY, "gpu-feature-discovery", "gfd", None, "k8s-device-plugin:v0.18.0"),
    # sandbox (vm-passthrough), ccgpu's agents
    OperandDef(Operand.SANDBOX_VALIDATOR, "nvidia-sandbox-validator", "validator", "validator"),
    OperandDef(Operand.VFIO_MANAGER, "nvidia-vfio-manager", "vfio_manager", "vfio-manager", privileged=True),
    OperandDef(Operand.CC_MANAGER, "nvidia-cc-manager", "cc_manager", "cc-manager", privileged=True),
    OperandDef(Operand.KATA_MANAGER, "nvidia-kata-manager", "kata_manager", "kata-manager", privileged=True),
    OperandDef(Operand.KATA_SANDBOX_DEVICE_PLUGIN, "nvidia-kata-sandbox-device-plugin-daemonset",
               "sandbox_device_plugin", "device-plugin"),
    OperandDef(Operand.SANDBOX_DEVICE_PLUGIN, "nvidia-sandbox-device-plugin-daemonset", "sandbox_device_plugin",
               None, "kubevirt-gpu-device-plugin:v1.6.0"),
)

BY_OPERAND = {d.operand: d for d in OPERANDS}

_ENABLED: dict[Operand, Callable[[ClusterPolicySpec], bool]] = {
    Operand.DRIVER: lambda s: s.driver.enabled,
    Operand.CONTAINER_TOOLKIT: lambda s: s.toolkit.enabled,
    Operand.DEVICE_PLUGIN: lambda s: s.device_plugin.enabled,
    Operand.DCGM: lambda s: s.dcgm.enabled,
    Operand.DCGM_EXPORTER: lambda s: s.dcgm_exporter.enabled,
    Operand.MIG_MANAGER: lambda s: s.mig_manager.enabled,
    Operand.GPU_FEATURE_DISCOVERY: lambda s: s.gfd.enabled,
    Operand.SANDBOX_VALIDATOR: _sandbox,
    Operand.VFIO_MANAGER: lambda s: _sandbox(s) and s.vfio_manager.enabled,
    Operand.CC_MANAGER: lambda s: _kata(s) and s.cc_manager.enabled,
    Operand.KATA_MANAGER: lambda s: _kata(s) and s.kata_manager.enabled,
    Operand.KATA_SANDBOX_DEVICE_PLUGIN: lambda s: _kata(s) and s.sandbox_device_plugin.enabled,
    Operand.SANDBOX_DEVICE_PLUGIN: lambda s: _sandbox(s)
    and s.sandbox_workloads.mode == "kubevirt"
    and s.sandbox_device_plugin.enabled,
}


def enabled_operands(spec: ClusterPolicySpec) -> list[OperandDef]:
    """Operands whose DaemonSet the policy asks for, in the table's (deploy) order."""
    return [d for d in OPERANDS if _ENABLED[d.operand](spec)]


# Deploy labels per workload config (reference/gpu-operator.md §2, gpuStateLabels).
_CONTAINER_LABELS = (
    Operand.DRIVER,
    Operand.GPU_FEATURE_DISCOVERY,
    Operand.CONTAINER_TOOLKIT,
    Operand.DEVICE_PLUGIN,
    Operand.DCGM,
    Operand.DCGM_EXPORTER,
    Operand.NODE_STATUS_EXPORTER,
    Operand.OPERATOR_VALIDATOR,
    Operand.CLIENT,
)


def deploy_operands(config: WorkloadConfig, sandbox_mode: str, mig_capable: bool) -> tuple[Operand, ...]:
    """The operands whose `nvidia.com/gpu.deploy.<operand>` label a node of this config carries."""
    if config is WorkloadConfig.CONTAINER:
        return _CONTAINER_LABELS + ((Operand.MIG_MANAGER,) if mig_capable else ())
    if config is WorkloadConfig.VM_PASSTHROUGH:
        plugin = Operand.KATA_SANDBOX_DEVICE_PLUGIN if sandbox_mode == "kata" else Operand.SANDBOX_DEVICE_PLUGIN
        return (
            plugin,
            Operand.SANDBOX_VALIDATOR,
            Operand.VFIO_MANAGER,
            Operand.KATA_MANAGER,
            Operand.CC_MANAGER,
            Operand.CLIENT,
        )
    return (
        Operand.SANDBOX_DEVICE_PLUGIN,
        Operand.VGPU_MANAGER,
        Operand.VGPU_DEVICE_MANAGER,
        Operand.SANDBOX_VALIDATOR,
        Operand.CC_MANAGER,
        Operand.CLIENT,
    )

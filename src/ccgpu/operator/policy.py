"""ClusterPolicy (`ccgpu.dev/v1alpha1`): the one object a cluster admin edits, and the CRD generated from it.

Field names and defaults follow NVIDIA's ClusterPolicy (reference/gpu-operator.md §1) so NVIDIA's docs and
habits carry over. The pydantic model is the single source of truth: its JSON schema, made structural
(`structural_schema`), is the CRD's `openAPIV3Schema`, so the API server rejects what the model rejects.
Rules that a schema cannot express (ccManager on while sandboxWorkloads is off, ...) live in `inconsistencies`.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ccgpu import labels

GROUP = labels.CRD_GROUP
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ClusterPolicy"
PLURAL = "clusterpolicies"
SINGULAR = "clusterpolicy"
SINGLETON_NAME = "cluster-policy"
CRD_NAME = f"{PLURAL}.{GROUP}"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


class _Model(BaseModel):
    """camelCase on the wire (NVIDIA's names), snake_case in Python; unknown fields are an error."""

    model_config = ConfigDict(alias_generator=_camel, populate_by_name=True, extra="forbid")


class EnvVar(_Model):
    name: str = Field(min_length=1)
    value: str = ""


class Toleration(_Model):
    key: str = ""
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str = ""
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = ""


class Resources(_Model):
    limits: dict[str, str] = Field(default_factory=dict)
    requests: dict[str, str] = Field(default_factory=dict)


class ImageSpec(_Model):
    """NVIDIA's "image fields". An empty `image` means ccgpu's own image (the operator's, for ccgpu operands)."""

    repository: str = ""
    image: str = ""
    version: str = ""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[str] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    args: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)

    def image_ref(self, default: str) -> str:
        """`repository/image:version`; `default` when no image is named."""
        if not self.image:
            return default
        ref = f"{self.repository.rstrip('/')}/{self.image}" if self.repository else self.image
        return f"{ref}:{self.version}" if self.version else ref


class OperandSpec(ImageSpec):
    """A traditional (container-workload) operand: NVIDIA's image, on by default as in NVIDIA's chart."""

    enabled: bool = True


class SandboxWorkloads(_Model):
    enabled: bool = False
    default_workload: Literal["container", "vm-passthrough", "vm-vgpu"] = "container"
    mode: Literal["kubevirt", "kata"] = Field(
        default="kata",
        description=(
            "Which sandbox stack vm-passthrough nodes get. Default kata (NVIDIA defaults to kubevirt): ccgpu is "
            "the Kata confidential-containers stack, and kubevirt mode is what leaves nvidia.com/pgpu without a "
            "CDI spec (kata-containers#12549)."
        ),
    )


class CCManager(ImageSpec):
    enabled: bool = False
    default_mode: Literal["on", "off", "devtools"] = "on"


class VFIOManager(ImageSpec):
    enabled: bool = False
    bind_nv_switches: bool = False


class RuntimeClassName(_Model):
    name: Literal["kata-qemu-nvidia-gpu", "kata-qemu-nvidia-gpu-snp", "kata-qemu-nvidia-gpu-tdx"]


class KataManager(ImageSpec):
    enabled: bool = False
    configure_containerd: bool = True
    runtime_classes: list[RuntimeClassName] = Field(
        default_factory=list,
        description="RuntimeClasses the operator creates; names equal kata-deploy's handlers (gpu-operator#1906).",
    )


class SandboxDevicePlugin(ImageSpec):
    enabled: bool = False
    resource_alias: str = Field(
        default=labels.DEFAULT_GPU_ALIAS,
        pattern=r"^$|^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        description="nvidia.com/<alias>; empty means per-model names such as nvidia.com/GH100_H100_SXM5_80GB.",
    )
    nvswitch_alias: str = Field(default=labels.DEFAULT_NVSWITCH_ALIAS, pattern=r"^$|^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


class NFD(_Model):
    node_feature_rules: bool = False


class RollingUpdate(_Model):
    max_unavailable: str = "1"


class Daemonsets(_Model):
    tolerations: list[Toleration] = Field(
        default_factory=lambda: [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]
    )
    priority_class_name: str = "system-node-critical"
    update_strategy: Literal["RollingUpdate", "OnDelete"] = "RollingUpdate"
    rolling_update: RollingUpdate = Field(default_factory=RollingUpdate)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ClusterPolicySpec(_Model):
    sandbox_workloads: SandboxWorkloads = Field(default_factory=SandboxWorkloads)
    cc_manager: CCManager = Field(default_factory=CCManager)
    vfio_manager: VFIOManager = Field(default_factory=VFIOManager)
    kata_manager: KataManager = Field(default_factory=KataManager)
    sandbox_device_plugin: SandboxDevicePlugin = Field(default_factory=SandboxDevicePlugin)
    nfd: NFD = Field(default_factory=NFD)
    driver: OperandSpec = Field(default_factory=OperandSpec)
    toolkit: OperandSpec = Field(default_factory=OperandSpec)
    device_plugin: OperandSpec = Field(default_factory=OperandSpec)
    dcgm: OperandSpec = Field(default_factory=OperandSpec)
    dcgm_exporter: OperandSpec = Field(default_factory=OperandSpec)
    mig_manager: OperandSpec = Field(default_factory=OperandSpec)
    gfd: OperandSpec = Field(default_factory=OperandSpec)
    validator: ImageSpec = Field(default_factory=ImageSpec)
    daemonsets: Daemonsets = Field(default_factory=Daemonsets)


class PolicyError(ValueError):
    """A ClusterPolicy spec that does not parse; the message names the field and what is accepted."""


def parse_spec(spec: dict[str, Any] | None) -> ClusterPolicySpec:
    """Validate a ClusterPolicy `.spec` as the CRD would, raising PolicyError with every field's problem."""
    from pydantic import ValidationError

    try:
        return ClusterPolicySpec.model_validate(spec or {})
    except ValidationError as e:
        problems = "; ".join(f"spec.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise PolicyError(f"invalid ClusterPolicy: {problems}") from None


def inconsistencies(spec: ClusterPolicySpec) -> list[str]:
    """Rules beyond the schema. Each message says what is wrong and how to fix it; empty means consistent."""
    out: list[str] = []
    sandbox = spec.sandbox_workloads
    sandbox_parts = {
        "ccManager": spec.cc_manager.enabled,
        "vfioManager": spec.vfio_manager.enabled,
        "kataManager": spec.kata_manager.enabled,
        "sandboxDevicePlugin": spec.sandbox_device_plugin.enabled,
    }
    if not sandbox.enabled:
        on = [name for name, enabled in sandbox_parts.items() if enabled]
        if on:
            out.append(
                f"{', '.join(n + '.enabled' for n in on)} is true but sandboxWorkloads.enabled is false; "
                "set sandboxWorkloads.enabled=true or disable them"
            )
        if sandbox.default_workload != "container":
            out.append(
                f"sandboxWorkloads.defaultWorkload is {sandbox.default_workload!r} but sandboxWorkloads.enabled "
                "is false; enable sandbox workloads or set defaultWorkload=container"
            )
    else:
        if spec.cc_manager.enabled and sandbox.mode != "kata":
            out.append("ccManager.enabled needs sandboxWorkloads.mode=kata (confidential VMs are Kata's)")
        if sandbox.mode == "kata" and sandbox.default_workload == "vm-vgpu":
            out.append("sandboxWorkloads.defaultWorkload=vm-vgpu is not supported with mode=kata; use vm-passthrough")
    if spec.kata_manager.runtime_classes and not spec.kata_manager.enabled:
        out.append("kataManager.runtimeClasses is set but kataManager.enabled is false; enable kataManager")
    names = [rc.name for rc in spec.kata_manager.runtime_classes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        out.append(f"kataManager.runtimeClasses lists {', '.join(dupes)} more than once")
    return out


# --- CRD -----------------------------------------------------------------------------------------------

_DROP_KEYS = ("title", "$defs")


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema as a Kubernetes structural schema: `$ref`s inlined, titles dropped, every node
    typed, `const`s turned into one-value enums. Raises if anything non-structural (anyOf, oneOf) remains."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(x) for x in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
            extra = {k: v for k, v in node.items() if k != "$ref"}
            target.update(extra)
            return walk(target)
        for bad in ("anyOf", "oneOf", "allOf", "not"):
            if bad in node:
                raise ValueError(f"schema is not structural: {bad} in {sorted(node)}")
        out = {k: walk(v) for k, v in node.items() if k not in _DROP_KEYS}
        if "const" in out:
            out["enum"] = [out.pop("const")]
        if "enum" in out and "type" not in out:
            out["type"] = "string"
        if out.get("type") == "object" and "properties" in out:
            out.pop("additionalProperties", None)
            for prop in out["properties"].values():
                # An absent nested object defaults to {} so the API server applies the defaults inside it.
                if prop.get("type") == "object" and "properties" in prop:
                    prop.setdefault("default", {})
        return out

    return walk(raw)


def status_schema() -> dict[str, Any]:
    """The `.status` the operator writes (reference §1 plus ccgpu's per-operand and per-node summaries)."""
    count_map = {"type": "object", "additionalProperties": {"type": "integer"}}
    return {
        "type": "object",
        "properties": {
            "state": {"type": "string", "enum": ["ignored", "ready", "notReady"]},
            "namespace": {"type": "string"},
            "observedGeneration": {"type": "integer"},
            "conditions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["type", "status"],
                    "properties": {
                        "type": {"type": "string"},
                        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                        "reason": {"type": "string"},
                        "message": {"type": "string"},
                        "lastTransitionTime": {"type": "string"},
                        "observedGeneration": {"type": "integer"},
                    },
                },
            },
            "operands": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {"desired": {"type": "integer"}, "ready": {"type": "integer"}},
                },
            },
            "nodes": {
                "type": "object",
                "properties": {
                    "gpuNodes": {"type": "integer"},
                    "optedOut": {"type": "integer"},
                    "workloadConfigs": count_map,
                    "ccModes": count_map,
                    "ccModeStates": count_map,
                    "ccReadyStates": count_map,
                },
            },
        },
    }


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition for ClusterPolicy: cluster-scoped, status subresource, schema from the model."""
    spec_schema = structural_schema(ClusterPolicySpec)
    spec_schema["default"] = {}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": KIND,
                "plural": PLURAL,
                "singular": SINGULAR,
                "listKind": f"{KIND}List",
                "shortNames": ["ccp"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "State", "type": "string", "jsonPath": ".status.state"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "ccgpu's cluster-wide policy; the object named cluster-policy is the one in effect.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def default_policy() -> dict[str, Any]:
    """The ClusterPolicy `ccgpu manifests` installs: sandbox workloads on in Kata mode with the CC stack,
    containers by default (a node opts into VMs with nvidia.com/gpu.workload.config=vm-passthrough)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": SINGLETON_NAME},
        "spec": {
            "sandboxWorkloads": {"enabled": True, "defaultWorkload": "container", "mode": "kata"},
            "ccManager": {"enabled": True, "defaultMode": "on"},
            "vfioManager": {"enabled": True},
            "sandboxDevicePlugin": {"enabled": True},
            "kataManager": {"enabled": True},
            "nfd": {"nodeFeatureRules": True},
        },
    }

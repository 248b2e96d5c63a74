"""Desired cluster objects (pure): operand DaemonSets, the NodeFeatureRule, RuntimeClasses.

Every object carries the operator's managed-by label, a controller ownerReference to the ClusterPolicy (so
deleting the policy garbage-collects it) and a `ccgpu.dev/spec-hash` annotation over its rendered content, so
the controller replaces an object only when what it would render has changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ccgpu import labels
from ccgpu.operator.operands import OperandDef, enabled_operands
from ccgpu.operator.policy import API_VERSION, KIND, ClusterPolicySpec

MANAGED_BY_KEY = "app.kubernetes.io/managed-by"
MANAGED_BY = "ccgpu-operator"
COMPONENT_KEY = "app.kubernetes.io/component"
SPEC_HASH = "ccgpu.dev/spec-hash"
NFR_NAME = "nvidia-nfd-nodefeaturerules"
NFR_API_VERSION = "nfd.k8s-sigs.io/v1alpha1"


@dataclass(frozen=True)
class ObjectKey:
    """How objects are addressed: (apiVersion, kind, namespace or "", name)."""

    api_version: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectKey:
        meta = obj["metadata"]
        return cls(obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


@dataclass(frozen=True)
class Owner:
    """The ClusterPolicy that owns everything the operator creates."""

    name: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class Images:
    """Where images come from: ccgpu's one image, and the registry path of NVIDIA's operand images."""

    ccgpu: str
    nvidia_repository: str


def spec_hash(obj: Mapping[str, Any]) -> str:
    """Hash of an object's rendered content, excluding the hash annotation itself."""
    body = json.loads(json.dumps(obj))
    body.get("metadata", {}).get("annotations", {}).pop(SPEC_HASH, None)
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]


def _finish(obj: dict[str, Any], owner: Owner, component: str) -> dict[str, Any]:
    meta = obj["metadata"]
    meta.setdefault("labels", {}).update({MANAGED_BY_KEY: MANAGED_BY, COMPONENT_KEY: component})
    meta["ownerReferences"] = [owner.reference()]
    meta.setdefault("annotations", {})[SPEC_HASH] = spec_hash(obj)
    return obj


# --- DaemonSets --------------------------------------------------------------------------------------


def _env(name: str, value: str) -> dict[str, str]:
    return {"name": name, "value": value}


def _agent_env(d: OperandDef, spec: ClusterPolicySpec) -> list[dict[str, Any]]:
    """The environment each agent reads (NVIDIA's names), nothing it ignores: tests/operator check it against
    the variables each `ccgpu agent <name>` command declares."""
    env: list[dict[str, Any]] = [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    if d.agent in ("cc-manager", "validator", "vfio-manager"):  # the others take --host-root (_agent_args)
        env.append(_env("HOST_ROOT", "/host"))
    if d.spec_field == "cc_manager":
        env.append(_env("DEFAULT_CC_MODE", spec.cc_manager.default_mode))
    elif d.spec_field == "validator":
        env.append(_env("DEFAULT_GPU_WORKLOAD_CONFIG", spec.sandbox_workloads.default_workload))
    elif d.spec_field == "vfio_manager":
        env.append(_env("BIND_NVSWITCHES", labels.bool_label(spec.vfio_manager.bind_nv_switches)))
    elif d.spec_field == "sandbox_device_plugin":
        env.append(_env("P_GPU_ALIAS", spec.sandbox_device_plugin.resource_alias))
        env.append(_env("NVSWITCH_ALIAS", spec.sandbox_device_plugin.nvswitch_alias))
    return env


def _agent_args(d: OperandDef, spec: ClusterPolicySpec) -> list[str]:
    """Flags the agent CLIs take (`ccgpu agent kata-manager|device-plugin --host-root ...`); settings the other
    agents need travel as the environment variables NVIDIA's operands use (DEFAULT_CC_MODE, ...)."""
    if d.agent == "kata-manager":
        return ["--host-root", "/host"] + (["--configure-containerd"] if spec.kata_manager.configure_containerd
                                           else [])
    if d.agent == "device-plugin":
        return ["--host-root", "/host"]
    return []


def _volumes(d: OperandDef) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if d.agent is None:
        return [], []
    mounts = [("host-root", "/", "/host"), ("run-nvidia", "/run/nvidia", "/run/nvidia")]
    if d.agent == "device-plugin":
        mounts += [("device-plugins", "/var/lib/kubelet/device-plugins", "/var/lib/kubelet/device-plugins"),
                   ("cdi", "/var/run/cdi", "/var/run/cdi")]
    if d.agent == "kata-manager":
        mounts.append(("cdi", "/var/run/cdi", "/var/run/cdi"))
    volumes = [{"name": n, "hostPath": {"path": p}} for n, p, _ in mounts]
    volume_mounts = [{"name": n, "mountPath": m} for n, _, m in mounts]
    return volumes, volume_mounts


def _restarts_containerd(d: OperandDef, spec: ClusterPolicySpec) -> bool:
    """The kata-manager restarts containerd after writing its drop-in, and both ways need the host's PID
    namespace: `nsenter --target 1` (systemd) must reach the host's pid 1, SIGHUP must see containerd's pid."""
    return d.agent == "kata-manager" and spec.kata_manager.configure_containerd


def service_account(d: OperandDef) -> str:
    """One ServiceAccount per operand (`ccgpu manifests` creates them)."""
    return f"ccgpu-{d.operand.value}"


def daemonset(d: OperandDef, spec: ClusterPolicySpec, owner: Owner, namespace: str, images: Images) -> dict[str, Any]:
    """The DaemonSet for one enabled operand, selecting nodes with `nvidia.com/gpu.deploy.<operand>=true`."""
    img = d.image_spec(spec)
    if d.agent is not None:
        image = img.image_ref(images.ccgpu)
        command = ["ccgpu", "agent", d.agent, *_agent_args(d, spec), *img.args]
    else:
        repo = img.repository or images.nvidia_repository
        image = img.image_ref(f"{repo.rstrip('/')}/{d.nvidia_image}" if repo else d.nvidia_image)
        command = None
    ds_spec = spec.daemonsets
    pod_labels = {"app": d.daemonset, **ds_spec.labels}
    volumes, volume_mounts = _volumes(d)
    env = (_agent_env(d, spec) if d.agent else []) + [e.model_dump() for e in img.env]
    container: dict[str, Any] = {
        "name": d.operand.value,
        "image": image,
        "imagePullPolicy": img.image_pull_policy,
        "env": env,
    }
    if command:
        container["command"] = command
    elif img.args:
        container["args"] = list(img.args)
    if img.resources.limits or img.resources.requests:
        container["resources"] = img.resources.model_dump(exclude_defaults=True)
    if volume_mounts:
        container["volumeMounts"] = volume_mounts
    if d.privileged:
        container["securityContext"] = {"privileged": True}
    strategy: dict[str, Any] = {"type": ds_spec.update_strategy}
    if ds_spec.update_strategy == "RollingUpdate":
        strategy["rollingUpdate"] = {"maxUnavailable": ds_spec.rolling_update.max_unavailable}
    pod_spec: dict[str, Any] = {
        "serviceAccountName": service_account(d),
        "nodeSelector": {labels.deploy_label(d.operand): "true"},
        "tolerations": [t.model_dump(exclude_defaults=True) for t in ds_spec.tolerations],
        "priorityClassName": ds_spec.priority_class_name,
        "containers": [container],
    }
    if volumes:
        pod_spec["volumes"] = volumes
    if img.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in img.image_pull_secrets]
    if d.privileged:
        pod_spec["hostPID"] = d.agent is None or _restarts_containerd(d, spec)
    obj = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": d.daemonset,
            "namespace": namespace,
            "labels": dict(ds_spec.labels),
            "annotations": dict(ds_spec.annotations),
        },
        "spec": {
            "selector": {"matchLabels": {"app": d.daemonset}},
            "updateStrategy": strategy,
            "template": {"metadata": {"labels": pod_labels, "annotations": dict(ds_spec.annotations)},
                         "spec": pod_spec},
        },
    }
    return _finish(obj, owner, d.operand.value)


def daemonsets(spec: ClusterPolicySpec, owner: Owner, namespace: str, images: Images) -> list[dict[str, Any]]:
    return [daemonset(d, spec, owner, namespace, images) for d in enabled_operands(spec)]


# --- NodeFeatureRule -----------------------------------------------------------------------------------

# CC-capable NVIDIA GPUs by family. `operator/` may not import `hw/` (DESIGN's layering), so the ids are listed
# here and tests/operator/test_nfr.py checks them against ccgpu.hw.catalog: every Hopper/Blackwell GPU the
# catalog knows, H200 (0x2335) and H100 NVL (0x2321) included, which NVIDIA's rule missed (gpu-operator#1851).
CC_GPU_FAMILIES: dict[str, tuple[str, ...]] = {
    "hopper": (
        "230e", "2313", "2321", "2322", "2324", "2328", "2329", "232c", "2330", "2331", "2335", "2336", "2337",
        "2338", "2339", "233a", "233b", "233d", "2342", "2343", "2348",
    ),
    "blackwell": ("2901", "2920", "2941", "29bc", "2bb5"),
}
_TEE_FAMILY_LABEL = "nvidia.com/gpu.family"


def node_feature_rule(owner: Owner) -> dict[str, Any]:
    """NVIDIA's `nvidia-nfd-nodefeaturerules`, with the TEE labels kata-deploy selects on and every
    Hopper/Blackwell GPU; `nvidia.com/cc.capable=true` where such a GPU sits on an SNP or TDX host."""
    snp = {"feature": "cpu.security", "matchExpressions": {"sev.snp.enabled": {"op": "IsTrue"}}}
    tdx = {"feature": "cpu.security", "matchExpressions": {"tdx.enabled": {"op": "IsTrue"}}}
    rules: list[dict[str, Any]] = [
        {"name": "TDX rule", "labels": {"tdx.enabled": "true", labels.NFD_TDX: "true"}, "matchFeatures": [tdx]},
        {
            "name": "TDX total keys rule",
            "extendedResources": {"tdx.total_keys": "@cpu.security.tdx.total_keys"},
            "matchFeatures": [tdx],
        },
        {"name": "SEV-SNP rule", "labels": {"sev.snp.enabled": "true", labels.NFD_SNP: "true"},
         "matchFeatures": [snp]},
        {
            "name": "SEV-ES rule",
            "labels": {"sev.es.enabled": "true"},
            "matchFeatures": [{"feature": "cpu.security", "matchExpressions": {"sev.es.enabled": {"op": "IsTrue"}}}],
        },
    ]
    for family, ids in CC_GPU_FAMILIES.items():
        rules.append(
            {
                "name": f"NVIDIA {family} GPU",
                "labels": {_TEE_FAMILY_LABEL: family},
                "matchFeatures": [
                    {
                        "feature": "pci.device",
                        "matchExpressions": {"vendor": {"op": "In", "value": ["10de"]},
                                             "device": {"op": "In", "value": list(ids)}},
                    }
                ],
            }
        )
    families = list(CC_GPU_FAMILIES)
    matched_family = {"feature": "rule.matched",
                      "matchExpressions": {_TEE_FAMILY_LABEL: {"op": "In", "value": families}}}
    rules.append(
        {
            "name": "NVIDIA CC Enabled",
            "labels": {labels.CC_CAPABLE: "true"},
            "matchAny": [
                {"matchFeatures": [matched_family, {"feature": "rule.matched",
                                                    "matchExpressions": {"sev.snp.enabled": {"op": "IsTrue"}}}]},
                {"matchFeatures": [matched_family, {"feature": "rule.matched",
                                                    "matchExpressions": {"tdx.enabled": {"op": "IsTrue"}}}]},
            ],
        }
    )
    obj = {"apiVersion": NFR_API_VERSION, "kind": "NodeFeatureRule", "metadata": {"name": NFR_NAME},
           "spec": {"rules": rules}}
    return _finish(obj, owner, "nfd")


# --- RuntimeClasses ------------------------------------------------------------------------------------

_TEE_SELECTOR = {
    labels.RUNTIME_CLASS_KATA_GPU: {labels.CC_READY_STATE: "false"},
    labels.RUNTIME_CLASS_KATA_GPU_SNP: {labels.CC_READY_STATE: "true", labels.NFD_SNP: "true"},
    labels.RUNTIME_CLASS_KATA_GPU_TDX: {labels.CC_READY_STATE: "true", labels.NFD_TDX: "true"},
}
RUNTIME_CLASS_OVERHEAD = {"memory": "10240Mi", "cpu": "1.0"}


def runtime_class(name: str, owner: Owner) -> dict[str, Any]:
    """A RuntimeClass whose handler equals its name, as kata-deploy installs the handler (gpu-operator#1906:
    a class named differently from the handler makes every pod fail to start)."""
    obj = {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": name, "labels": {labels.KATA_RUNTIME_CLASS: "true"}},
        "handler": name,
        "overhead": {"podFixed": dict(RUNTIME_CLASS_OVERHEAD)},
        "scheduling": {"nodeSelector": dict(_TEE_SELECTOR[name])},
    }
    return _finish(obj, owner, "runtimeclass")


def runtime_classes(spec: ClusterPolicySpec, owner: Owner) -> list[dict[str, Any]]:
    km = spec.kata_manager
    if not (km.enabled and spec.sandbox_workloads.enabled):
        return []
    return [runtime_class(rc.name, owner) for rc in km.runtime_classes]


def desired_objects(
    spec: ClusterPolicySpec, owner: Owner, namespace: str, images: Images, any_gpu_node: bool
) -> dict[ObjectKey, dict[str, Any]]:
    """Everything the operator should have in the cluster. No DaemonSet before a GPU node exists (as NVIDIA)."""
    objs: list[dict[str, Any]] = []
    if any_gpu_node:
        objs += daemonsets(spec, owner, namespace, images)
    if spec.nfd.node_feature_rules:
        objs.append(node_feature_rule(owner))
    objs += runtime_classes(spec, owner)
    return {ObjectKey.of(o): o for o in objs}

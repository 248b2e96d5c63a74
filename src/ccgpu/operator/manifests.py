"""What installs ccgpu: namespace, CRD, least-privilege RBAC, the operator Deployment, a default ClusterPolicy.

RBAC gives each component its own ServiceAccount. Agents may only get/list/watch/patch Nodes, and RBAC cannot
narrow a patch to one object, so a ValidatingAdmissionPolicy does: it admits an agent's Node update only when
the node named in its bound ServiceAccount token (`authentication.kubernetes.io/node-name`, Kubernetes ≥1.30)
is the node being changed, and only if the Node's spec is untouched. Agents also only ever patch `$NODE_NAME`.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ccgpu import labels
from ccgpu.operator import policy
from ccgpu.operator.desired import service_account
from ccgpu.operator.operands import OPERANDS

OPERATOR_SA = "ccgpu-operator"
AGENT_ROLE = "ccgpu-agent"
CC_MANAGER_PODS_ROLE = "ccgpu-cc-manager-pods"
OWN_NODE_POLICY = "ccgpu-agents-own-node-only"
LEADER_LEASE = "ccgpu-operator-leader"


class Values(BaseModel):
    """`--values` file keys; anything else is refused with the list of accepted keys."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    namespace: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    image: str = Field(min_length=1)
    image_pull_policy: str = Field(alias="imagePullPolicy", pattern=r"^(Always|IfNotPresent|Never)$")
    nvidia_repository: str = Field(alias="nvidiaRepository")
    operator_replicas: int = Field(alias="operatorReplicas", ge=1, le=5)
    metrics_port: int = Field(alias="metricsPort", ge=1, le=65535)
    cluster_policy: dict[str, Any] = Field(alias="clusterPolicy", default_factory=dict)


class ValuesError(ValueError):
    """A values file that cannot be used; the message says which key and what is accepted."""


def _default_values() -> dict[str, Any]:
    text = resources.files("ccgpu.operator").joinpath("values.yaml").read_text()
    return yaml.safe_load(text)


def load_values(path: Path | None = None, namespace: str | None = None) -> Values:
    """Defaults, then the file, then `--namespace`. Validates the merged ClusterPolicy spec too."""
    merged = _default_values()
    if path is not None:
        try:
            user = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ValuesError(f"cannot read values file {path}: {e}") from None
        if not isinstance(user, dict):
            raise ValuesError(f"values file {path} must be a mapping of keys; accepted keys: {', '.join(merged)}")
        unknown = sorted(set(user) - set(merged))
        if unknown:
            raise ValuesError(f"unknown key(s) {', '.join(unknown)} in {path}; accepted keys: {', '.join(merged)}")
        merged.update(user)
    if namespace is not None:
        merged["namespace"] = namespace
    try:
        values = Values.model_validate(merged)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ValuesError(f"invalid values: {problems}") from None
    policy.parse_spec(cluster_policy_spec(values))  # raises PolicyError naming the field
    return values


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def cluster_policy_spec(values: Values) -> dict[str, Any]:
    return _deep_merge(policy.default_policy()["spec"], values.cluster_policy)


def _labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "ccgpu", "app.kubernetes.io/component": component}


def _sa(name: str, ns: str, component: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": ns, "labels": _labels(component)}}


def _rule(groups: list[str], res: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": res, "verbs": verbs}


_CRUD = ["get", "list", "watch", "create", "update", "patch", "delete"]
_READ = ["get", "list", "watch"]


def operator_rbac(ns: str) -> list[dict[str, Any]]:
    cluster_rules = [
        _rule([""], ["nodes"], [*_READ, "patch"]),
        _rule([policy.GROUP], [policy.PLURAL], _READ),
        _rule([policy.GROUP], [f"{policy.PLURAL}/status"], ["get", "patch", "update"]),
        _rule(["node.k8s.io"], ["runtimeclasses"], _CRUD),
        _rule(["nfd.k8s-sigs.io"], ["nodefeaturerules"], _CRUD),
        _rule(["apiextensions.k8s.io"], ["customresourcedefinitions"], _READ),
        _rule(["", "events.k8s.io"], ["events"], ["create", "patch"]),
        _rule([""], ["namespaces"], _READ),  # kopf waits for namespaces in discovery even cluster-wide
    ]
    ns_rules = [
        _rule(["apps"], ["daemonsets"], _CRUD),
        _rule(["coordination.k8s.io"], ["leases"], ["get", "list", "watch", "create", "update", "patch"]),
    ]
    subject = [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": ns}]
    return [
        _sa(OPERATOR_SA, ns, "operator"),
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": OPERATOR_SA, "labels": _labels("operator")}, "rules": cluster_rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": OPERATOR_SA, "labels": _labels("operator")},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": OPERATOR_SA},
         "subjects": subject},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": OPERATOR_SA, "namespace": ns, "labels": _labels("operator")}, "rules": ns_rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": OPERATOR_SA, "namespace": ns, "labels": _labels("operator")},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": OPERATOR_SA},
         "subjects": subject},
    ]


def agent_rbac(ns: str) -> list[dict[str, Any]]:
    sas = [service_account(d) for d in OPERANDS]
    docs: list[dict[str, Any]] = [_sa(name, ns, "agent") for name in sas]
    docs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                 "metadata": {"name": AGENT_ROLE, "labels": _labels("agent")},
                 "rules": [_rule([""], ["nodes"], [*_READ, "patch"]), _rule([""], ["events"], ["create"])]})
    docs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                 "metadata": {"name": AGENT_ROLE, "labels": _labels("agent")},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": AGENT_ROLE},
                 "subjects": [{"kind": "ServiceAccount", "name": n, "namespace": ns} for n in sas]})
    # cc-manager alone waits for the paused operands' pods to leave its node: it lists pods, nothing more.
    cc_sa = f"ccgpu-{labels.Operand.CC_MANAGER.value}"
    docs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                 "metadata": {"name": CC_MANAGER_PODS_ROLE, "labels": _labels("agent")},
                 "rules": [_rule([""], ["pods"], ["list"])]})
    docs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                 "metadata": {"name": CC_MANAGER_PODS_ROLE, "labels": _labels("agent")},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                             "name": CC_MANAGER_PODS_ROLE},
                 "subjects": [{"kind": "ServiceAccount", "name": cc_sa, "namespace": ns}]})
    agents = ", ".join(f"'system:serviceaccount:{ns}:{n}'" for n in sas)
    docs.append({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": OWN_NODE_POLICY, "labels": _labels("agent")},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                    "operations": ["UPDATE"], "resources": ["nodes"]}]},
            "matchConditions": [{"name": "is-ccgpu-agent", "expression": f"request.userInfo.username in [{agents}]"}],
            "validations": [
                {"expression": "'authentication.kubernetes.io/node-name' in request.userInfo.extra && "
                               "request.userInfo.extra['authentication.kubernetes.io/node-name'][0] == "
                               "object.metadata.name",
                 "message": "a ccgpu agent may change only the node its pod runs on"},
                {"expression": "object.spec == oldObject.spec",
                 "message": "a ccgpu agent may change node labels and annotations, not the node's spec"},
            ],
        },
    })
    docs.append({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
                 "metadata": {"name": OWN_NODE_POLICY, "labels": _labels("agent")},
                 "spec": {"policyName": OWN_NODE_POLICY, "validationActions": ["Deny"]}})
    return docs


def operator_deployment(values: Values) -> dict[str, Any]:
    ns = values.namespace
    labels = _labels("operator")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "ccgpu-operator", "namespace": ns, "labels": labels},
        "spec": {
            "replicas": values.operator_replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": OPERATOR_SA,
                    "priorityClassName": "system-cluster-critical",
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532},
                    "containers": [{
                        "name": "operator",
                        "image": values.image,
                        "imagePullPolicy": values.image_pull_policy,
                        "command": ["ccgpu", "operator", "--namespace", ns, "--image", values.image,
                                    "--nvidia-repository", values.nvidia_repository,
                                    "--metrics-port", str(values.metrics_port)],
                        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "ports": [{"name": "metrics", "containerPort": values.metrics_port}],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}},
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                      "limits": {"memory": "512Mi"}},
                        "securityContext": {"allowPrivilegeEscalation": False,
                                            "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}},
                    }],
                },
            },
        },
    }


def render(values: Values) -> list[dict[str, Any]]:
    """Every install object, in apply order."""
    ns = values.namespace
    namespace = {"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": ns, "labels": {**_labels("namespace"),
                                                     "pod-security.kubernetes.io/enforce": "privileged"}}}
    default = policy.default_policy()
    default["spec"] = cluster_policy_spec(values)
    return [namespace, policy.crd(), *operator_rbac(ns), *agent_rbac(ns), operator_deployment(values), default]


def render_yaml(values: Values) -> str:
    header = "# Generated by `ccgpu manifests`; do not edit (tests/operator checks this copy is fresh).\n"
    return header + yaml.safe_dump_all(render(values), sort_keys=False, explicit_start=True, width=120)

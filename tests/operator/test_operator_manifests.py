"""`ccgpu manifests`: install objects, least-privilege RBAC, and the committed deploy/ copy is fresh."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from ccgpu.cli import app
from ccgpu.operator import policy
from ccgpu.operator.manifests import ValuesError, load_values, render
from ccgpu.operator.operands import OPERANDS

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _docs(text):
    return [d for d in yaml.safe_load_all(text) if d]


def _by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def test_committed_deploy_manifests_are_fresh():
    """deploy/ccgpu.yaml must equal `ccgpu manifests`; regenerate with `ccgpu manifests > deploy/ccgpu.yaml`."""
    result = runner.invoke(app, ["manifests"])
    assert result.exit_code == 0, result.output
    committed = (REPO / "deploy" / "ccgpu.yaml").read_text()
    assert result.output == committed, "deploy/ccgpu.yaml is stale: run `ccgpu manifests > deploy/ccgpu.yaml`"


def test_manifests_hold_crd_rbac_deployment_and_a_default_policy_valid_against_the_crd():
    docs = render(load_values())
    kinds = [d["kind"] for d in docs]
    assert kinds[0] == "Namespace" and kinds[1] == "CustomResourceDefinition" and kinds[-1] == "ClusterPolicy"
    assert "Deployment" in kinds
    crd = _by_kind(docs, "CustomResourceDefinition")[0]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.validate(docs[-1], schema)
    assert docs[-1]["metadata"]["name"] == policy.SINGLETON_NAME


def test_every_component_has_its_own_service_account():
    docs = render(load_values())
    sas = {d["metadata"]["name"] for d in _by_kind(docs, "ServiceAccount")}
    assert "ccgpu-operator" in sas
    assert {f"ccgpu-{d.operand.value}" for d in OPERANDS} <= sas
    assert len(sas) == len(OPERANDS) + 1


def test_agents_may_only_read_and_patch_nodes_post_events_and_only_their_own_node():
    docs = render(load_values())
    agent_role = next(d for d in _by_kind(docs, "ClusterRole") if d["metadata"]["name"] == "ccgpu-agent")
    assert agent_role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]
    pods_role = next(d for d in _by_kind(docs, "ClusterRole") if d["metadata"]["name"] == "ccgpu-cc-manager-pods")
    assert pods_role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
    agent_sas = {f"ccgpu-{d.operand.value}" for d in OPERANDS}
    for binding in _by_kind(docs, "ClusterRoleBinding") + _by_kind(docs, "RoleBinding"):
        names = {s["name"] for s in binding["subjects"]}
        if names & agent_sas:
            assert binding["roleRef"]["name"] in ("ccgpu-agent", "ccgpu-cc-manager-pods")
            if binding["roleRef"]["name"] == "ccgpu-cc-manager-pods":
                assert names == {"ccgpu-cc-manager"}
    [vap] = _by_kind(docs, "ValidatingAdmissionPolicy")
    exprs = " ".join(v["expression"] for v in vap["spec"]["validations"])
    assert "authentication.kubernetes.io/node-name" in exprs and "object.metadata.name" in exprs
    [vapb] = _by_kind(docs, "ValidatingAdmissionPolicyBinding")
    assert vapb["spec"]["validationActions"] == ["Deny"]


def test_operator_role_grants_no_wildcards_and_no_secrets():
    docs = render(load_values())
    for role in _by_kind(docs, "ClusterRole") + _by_kind(docs, "Role"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], role["metadata"]["name"]
            assert "secrets" not in rule["resources"]


def test_namespace_option_moves_every_namespaced_object(tmp_path):
    result = runner.invoke(app, ["manifests", "--namespace", "gpu-ops"])
    assert result.exit_code == 0, result.output
    docs = _docs(result.output)
    namespaced = [d for d in docs if "namespace" in d["metadata"]]
    assert namespaced and all(d["metadata"]["namespace"] == "gpu-ops" for d in namespaced)
    dep = _by_kind(docs, "Deployment")[0]
    assert dep["spec"]["template"]["spec"]["containers"][0]["command"][2:4] == ["--namespace", "gpu-ops"]


def test_values_file_overrides_image_and_merges_cluster_policy(tmp_path):
    f = tmp_path / "v.yaml"
    f.write_text("image: registry.example/ccgpu:1.2.3\nclusterPolicy:\n  sandboxWorkloads:\n"
                 "    defaultWorkload: vm-passthrough\n")
    result = runner.invoke(app, ["manifests", "--values", str(f)])
    assert result.exit_code == 0, result.output
    docs = _docs(result.output)
    assert _by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.example/ccgpu:1.2.3"
    sw = docs[-1]["spec"]["sandboxWorkloads"]
    assert sw == {"enabled": True, "defaultWorkload": "vm-passthrough", "mode": "kata"}


@pytest.mark.parametrize(
    "content, message",
    [
        ("imagee: x\n", "unknown key(s) imagee"),
        ("operatorReplicas: 0\n", "operatorReplicas"),
        ("clusterPolicy:\n  ccManager:\n    defaultMode: On\n", "spec.ccManager.defaultMode"),
        ("- a\n", "must be a mapping"),
    ],
)
def test_bad_values_file_is_refused_with_what_was_wrong(tmp_path, content, message):
    f = tmp_path / "v.yaml"
    f.write_text(content)
    result = runner.invoke(app, ["manifests", "--values", str(f)])
    assert result.exit_code == 2
    assert message in result.output
    with pytest.raises((ValuesError, policy.PolicyError)):
        load_values(f)


def test_dockerfile_builds_one_image_with_the_ccgpu_entry_point():
    text = (REPO / "deploy" / "Dockerfile").read_text()
    assert "pip install" in text and "ccgpu" in text


async def test_every_install_object_is_accepted_by_the_api_simulator():
    """The generated CRD is served and the default ClusterPolicy passes its schema server-side."""
    from lightkube import codecs
    from lightkube.core.exceptions import ApiError

    from ccgpu.kube.client import make_async_client
    from ccgpu.operator.writer import ClusterPolicy
    from ccgpu.sim.apiserver import ApiServer

    not_in_simulator = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    async with ApiServer() as api:
        client = make_async_client(api.kubeconfig_dict())
        try:
            for doc in render(load_values()):
                obj = ClusterPolicy.from_dict(doc) if doc["kind"] == "ClusterPolicy" else codecs.from_dict(doc)
                if doc["kind"] in not_in_simulator:
                    with pytest.raises(ApiError) as e:
                        await client.create(obj)
                    assert e.value.status.code == 404  # if the simulator learns this kind, drop it from the set
                    continue
                await client.create(obj)
            made = await client.get(ClusterPolicy, policy.SINGLETON_NAME)
            assert made.to_dict()["spec"]["sandboxWorkloads"]["mode"] == "kata"
        finally:
            await client.close()

"""ClusterPolicy model, CRD schema generation and consistency rules."""

from __future__ import annotations

import jsonschema
import pytest

from ccgpu.operator import policy
from ccgpu.operator.policy import ClusterPolicySpec, PolicyError, inconsistencies, parse_spec


def _walk(node, path="$"):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def _schema_nodes(schema, path="$"):
    """Every schema node (not every dict: `default` and `enum` values are data)."""
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _schema_nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _schema_nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _schema_nodes(schema["additionalProperties"], f"{path}{{}}")


def _open_api_schema():
    return policy.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_crd_schema_is_structural_no_refs_no_anyof_and_every_node_typed():
    schema = _open_api_schema()
    for path, node in _walk(schema):
        assert "$ref" not in node, path
        assert "anyOf" not in node and "oneOf" not in node and "allOf" not in node, path
    for path, node in _schema_nodes(schema):
        assert "title" not in node, path
        if path == "$.metadata":
            continue
        assert "type" in node, f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path


def test_crd_is_cluster_scoped_with_status_subresource_and_nvidia_field_names():
    crd = policy.crd()
    assert crd["metadata"]["name"] == "clusterpolicies.ccgpu.dev"
    assert crd["spec"]["scope"] == "Cluster"
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    spec = _open_api_schema()["properties"]["spec"]["properties"]
    for name in ("sandboxWorkloads", "ccManager", "vfioManager", "kataManager", "sandboxDevicePlugin", "nfd",
                 "driver", "toolkit", "devicePlugin", "dcgm", "dcgmExporter", "migManager", "gfd", "daemonsets"):
        assert name in spec, name
    assert spec["sandboxWorkloads"]["properties"]["defaultWorkload"]["enum"] == ["container", "vm-passthrough",
                                                                                 "vm-vgpu"]
    assert spec["sandboxWorkloads"]["properties"]["mode"]["default"] == "kata"
    assert spec["ccManager"]["properties"]["defaultMode"]["enum"] == ["on", "off", "devtools"]
    assert spec["daemonsets"]["properties"]["updateStrategy"]["enum"] == ["RollingUpdate", "OnDelete"]
    assert spec["sandboxWorkloads"]["default"] == {}


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"sandboxWorkloads": {"defaultWorkload": "kata"}}, "defaultWorkload"),
        ({"ccManager": {"defaultMode": "On"}}, "defaultMode"),
        ({"sandboxWorkloads": {"mode": "vm"}}, "mode"),
        ({"kataManager": {"runtimeClasses": [{"name": "kata-nvidia-gpu"}]}}, "runtimeClasses"),
        ({"daemonsets": {"updateStrategy": "Recreate"}}, "updateStrategy"),
    ],
)
def test_schema_and_model_reject_the_same_bad_values(spec, field):
    """`kata` as a workload config is gpu-operator#1871; `kata-nvidia-gpu` as a class name is #1906."""
    full = {"apiVersion": policy.API_VERSION, "kind": "ClusterPolicy", "metadata": {"name": "x"}, "spec": spec}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(full, _open_api_schema())
    with pytest.raises(PolicyError, match=field):
        parse_spec(spec)


def test_parse_error_names_the_field_and_the_accepted_values():
    with pytest.raises(PolicyError) as e:
        parse_spec({"sandboxWorkloads": {"defaultWorkload": "kata"}})
    assert "spec.sandboxWorkloads.defaultWorkload" in str(e.value)
    assert "vm-passthrough" in str(e.value)


def test_default_policy_validates_against_the_crd_schema_and_is_consistent():
    jsonschema.validate(policy.default_policy(), _open_api_schema())
    spec = parse_spec(policy.default_policy()["spec"])
    assert inconsistencies(spec) == []
    assert spec.sandbox_workloads.mode == "kata"


@pytest.mark.parametrize(
    "spec, expect",
    [
        ({"ccManager": {"enabled": True}}, "ccManager.enabled is true but sandboxWorkloads.enabled is false"),
        ({"sandboxWorkloads": {"defaultWorkload": "vm-passthrough"}}, "defaultWorkload"),
        ({"sandboxWorkloads": {"enabled": True, "mode": "kubevirt"}, "ccManager": {"enabled": True}}, "mode=kata"),
        ({"kataManager": {"runtimeClasses": [{"name": "kata-qemu-nvidia-gpu"}]}}, "kataManager.enabled is false"),
        ({"sandboxWorkloads": {"enabled": True}, "kataManager": {"enabled": True, "runtimeClasses": [
            {"name": "kata-qemu-nvidia-gpu"}, {"name": "kata-qemu-nvidia-gpu"}]}}, "more than once"),
    ],
)
def test_inconsistent_specs_get_a_message_saying_how_to_fix_them(spec, expect):
    problems = inconsistencies(parse_spec(spec))
    assert any(expect in p for p in problems), problems


def test_empty_spec_is_consistent_and_takes_nvidia_defaults():
    spec = ClusterPolicySpec()
    assert inconsistencies(spec) == []
    assert spec.sandbox_workloads.enabled is False
    assert spec.sandbox_workloads.default_workload == "container"
    assert spec.cc_manager.default_mode == "on"
    assert spec.daemonsets.priority_class_name == "system-node-critical"
    assert spec.driver.enabled is True

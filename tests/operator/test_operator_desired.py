"""Desired objects: operand DaemonSets, the NodeFeatureRule, RuntimeClasses."""

from __future__ import annotations

import pytest

from ccgpu import labels as L
from ccgpu.hw import catalog
from ccgpu.operator import desired
from ccgpu.operator.desired import SPEC_HASH, Images, Owner
from ccgpu.operator.policy import default_policy, parse_spec

OWNER = Owner("cluster-policy", "uid-1")
IMAGES = Images(ccgpu="registry.example/ccgpu:0.1.0", nvidia_repository="registry.example/nvidia")
DEFAULT = parse_spec(default_policy()["spec"])


def _ds_by_name(spec):
    return {d["metadata"]["name"]: d for d in desired.daemonsets(spec, OWNER, "ccgpu", IMAGES)}


def test_each_enabled_operand_gets_one_daemonset_selecting_its_deploy_label():
    dss = _ds_by_name(DEFAULT)
    assert "nvidia-kata-sandbox-device-plugin-daemonset" in dss
    assert "nvidia-sandbox-device-plugin-daemonset" not in dss  # kubevirt plugin only in kubevirt mode
    for ds in dss.values():
        component = ds["metadata"]["labels"]["app.kubernetes.io/component"]
        selector = ds["spec"]["template"]["spec"]["nodeSelector"]
        assert selector == {L.deploy_label(component): "true"}
        assert ds["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
        assert ds["metadata"]["ownerReferences"][0]["controller"] is True


def test_ccgpu_operands_run_the_one_ccgpu_image_as_agents_and_nvidia_operands_run_nvidia_images():
    dss = _ds_by_name(DEFAULT)
    cc = dss["nvidia-cc-manager"]["spec"]["template"]["spec"]["containers"][0]
    assert cc["image"] == IMAGES.ccgpu and cc["command"] == ["ccgpu", "agent", "cc-manager"]
    assert {"name": "DEFAULT_CC_MODE", "value": "on"} in cc["env"]
    dp = dss["nvidia-kata-sandbox-device-plugin-daemonset"]["spec"]["template"]["spec"]["containers"][0]
    assert dp["command"] == ["ccgpu", "agent", "device-plugin", "--host-root", "/host"]
    assert {"name": "P_GPU_ALIAS", "value": "pgpu"} in dp["env"]
    drv = dss["nvidia-driver-daemonset"]["spec"]["template"]["spec"]["containers"][0]
    assert drv["image"].startswith("registry.example/nvidia/driver:")


def test_disabled_operands_have_no_daemonset():
    spec = parse_spec({**default_policy()["spec"], "driver": {"enabled": False}, "ccManager": {"enabled": False}})
    dss = _ds_by_name(spec)
    assert "nvidia-driver-daemonset" not in dss and "nvidia-cc-manager" not in dss
    assert not any("sandbox" in n for n in _ds_by_name(parse_spec({})))


def test_spec_hash_changes_only_when_the_rendered_object_changes():
    a = _ds_by_name(DEFAULT)["nvidia-cc-manager"]
    b = _ds_by_name(DEFAULT)["nvidia-cc-manager"]
    assert a["metadata"]["annotations"][SPEC_HASH] == b["metadata"]["annotations"][SPEC_HASH]
    changed = parse_spec({**default_policy()["spec"], "ccManager": {"enabled": True, "defaultMode": "off"}})
    c = _ds_by_name(changed)["nvidia-cc-manager"]
    assert c["metadata"]["annotations"][SPEC_HASH] != a["metadata"]["annotations"][SPEC_HASH]
    assert desired.spec_hash(a) == a["metadata"]["annotations"][SPEC_HASH]


def test_daemonsets_spec_applies_tolerations_priority_update_strategy_labels():
    spec = parse_spec({**default_policy()["spec"], "daemonsets": {
        "updateStrategy": "OnDelete", "priorityClassName": "gpu-critical", "labels": {"team": "ml"},
        "tolerations": [{"key": "gpu", "operator": "Exists"}]}})
    ds = _ds_by_name(spec)["nvidia-vfio-manager"]
    pod = ds["spec"]["template"]["spec"]
    assert ds["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert pod["priorityClassName"] == "gpu-critical"
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert ds["spec"]["template"]["metadata"]["labels"]["team"] == "ml"


def test_nfr_lists_every_cc_capable_gpu_the_catalog_knows_including_h200():
    """gpu-operator#1851: NVIDIA's rule listed five H100/H800 ids and missed H200 (0x2335) and H100 NVL (0x2321)."""
    listed = {int(i, 16) for ids in desired.CC_GPU_FAMILIES.values() for i in ids}
    known_cc = {m.device_id for m in catalog.known_models() if m.cc_capable}
    assert listed == known_cc
    assert {0x2335, 0x2321} <= listed
    for family, ids in desired.CC_GPU_FAMILIES.items():
        assert {catalog.lookup(int(i, 16)).arch.value for i in ids} == {family}


def test_nfr_sets_cc_capable_on_snp_or_tdx_hosts_and_the_tee_labels_kata_deploy_selects_on():
    nfr = desired.node_feature_rule(OWNER)
    assert nfr["metadata"]["name"] == "nvidia-nfd-nodefeaturerules"
    assert nfr["apiVersion"] == "nfd.k8s-sigs.io/v1alpha1"
    rules = {r["name"]: r for r in nfr["spec"]["rules"]}
    assert rules["SEV-SNP rule"]["labels"][L.NFD_SNP] == "true"
    assert rules["TDX rule"]["labels"][L.NFD_TDX] == "true"
    cc = rules["NVIDIA CC Enabled"]
    assert cc["labels"] == {L.CC_CAPABLE: "true"}
    tees = [t["matchFeatures"][1]["matchExpressions"] for t in cc["matchAny"]]
    assert tees == [{"sev.snp.enabled": {"op": "IsTrue"}}, {"tdx.enabled": {"op": "IsTrue"}}]
    names = list(rules)
    assert names.index("NVIDIA CC Enabled") == len(names) - 1  # rule.matched sees earlier rules only


@pytest.mark.parametrize(
    "name, selector",
    [
        ("kata-qemu-nvidia-gpu", {L.CC_READY_STATE: "false"}),
        ("kata-qemu-nvidia-gpu-snp", {L.CC_READY_STATE: "true", L.NFD_SNP: "true"}),
        ("kata-qemu-nvidia-gpu-tdx", {L.CC_READY_STATE: "true", L.NFD_TDX: "true"}),
    ],
)
def test_runtime_class_handler_equals_name_with_overhead_and_cc_selectors(name, selector):
    """gpu-operator#1906: a RuntimeClass named unlike kata-deploy's handler made every pod fail."""
    spec = parse_spec({"sandboxWorkloads": {"enabled": True},
                       "kataManager": {"enabled": True, "runtimeClasses": [{"name": name}]}})
    [rc] = desired.runtime_classes(spec, OWNER)
    assert rc["metadata"]["name"] == rc["handler"] == name
    assert rc["overhead"]["podFixed"] == {"memory": "10240Mi", "cpu": "1.0"}
    assert rc["scheduling"]["nodeSelector"] == selector


def test_no_daemonsets_before_a_gpu_node_exists():
    objs = desired.desired_objects(DEFAULT, OWNER, "ccgpu", IMAGES, any_gpu_node=False)
    assert {k.kind for k in objs} == {"NodeFeatureRule"}


@pytest.mark.parametrize("configure", [True, False])
def test_the_kata_manager_gets_the_host_pid_namespace_exactly_when_it_restarts_containerd(configure):
    """Both restart ways need it (nsenter --target 1 reaches the host's systemd; SIGHUP needs containerd's pid);
    without a drop-in to write there is no restart, and no reason to share the host's PIDs."""
    raw = default_policy()["spec"]
    raw["kataManager"]["configureContainerd"] = configure
    ds = _ds_by_name(parse_spec(raw))["nvidia-kata-manager"]
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is configure
    assert ("--configure-containerd" in pod["containers"][0]["command"]) is configure
    assert all(e["name"] != "CONFIGURE_CONTAINERD" for e in pod["containers"][0]["env"])  # nothing reads it
    others = _ds_by_name(DEFAULT)
    assert others["nvidia-cc-manager"]["spec"]["template"]["spec"]["hostPID"] is False

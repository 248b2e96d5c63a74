"""NFD emulator: built-in labels from a simulated host, and NodeFeatureRule evaluation (protocols.md §D)."""

from __future__ import annotations

import pytest

from ccgpu import labels as L
from ccgpu.operator.desired import Owner, node_feature_rule
from ccgpu.sim import nfd


def test_builtin_labels_of_an_snp_hgx_host_name_the_nvidia_classes_and_the_tee(make_host):
    host = make_host("8xh100-snp")
    got = nfd.builtin_labels(nfd.discover(host.sysfs))
    assert got["feature.node.kubernetes.io/pci-10de.present"] == "true"
    assert got["feature.node.kubernetes.io/pci-0302_10de.present"] == "true"
    assert got[L.NFD_BUILTIN_SNP] == "true"
    assert L.NFD_BUILTIN_TDX not in got
    assert not any("0680" in k for k in got), "NVSwitch bridges (class 0680) are not in NFD's class whitelist"


def test_a_host_with_sev_off_in_firmware_gets_no_tee_label(make_host):
    got = nfd.builtin_labels(nfd.discover(make_host("4xh100-notee").sysfs))
    assert L.NFD_BUILTIN_SNP not in got and "feature.node.kubernetes.io/pci-10de.present" in got


def test_operators_node_feature_rule_marks_snp_hopper_nodes_cc_capable(make_host):
    rule = node_feature_rule(Owner("cluster-policy", "uid"))
    snp = nfd.node_labels(make_host("8xh100-snp").sysfs, [rule])
    assert snp[L.NFD_SNP] == "true" and snp[L.CC_CAPABLE] == "true" and snp["nvidia.com/gpu.family"] == "hopper"
    assert snp["feature.node.kubernetes.io/sev.snp.enabled"] == "true", "unprefixed rule labels get NFD's prefix"
    notee = nfd.node_labels(make_host("4xh100-notee").sysfs, [rule])
    assert L.CC_CAPABLE not in notee and L.NFD_SNP not in notee and notee["nvidia.com/gpu.family"] == "hopper"


@pytest.mark.parametrize(("op", "value", "present", "attr", "expected"), [
    ("In", ["10de"], True, "10de", True), ("In", ["8086"], True, "10de", False),
    ("NotIn", ["8086"], True, "10de", True), ("Exists", None, True, "x", True), ("Exists", None, False, None, False),
    ("DoesNotExist", None, False, None, True), ("IsTrue", None, True, "true", True),
    ("IsFalse", None, True, "true", False), ("Gt", ["5"], True, "9", True), ("Lt", ["5"], True, "9", False),
    ("GtLt", ["1", "10"], True, "9", True), ("InRegexp", ["^23"], True, "2330", True),
])
def test_match_expression_ops(op, value, present, attr, expected):
    expr = {"op": op, **({"value": value} if value is not None else {})}
    assert nfd.match_expression(expr, present, attr) is expected


def test_unknown_op_is_refused_naming_the_accepted_ones():
    with pytest.raises(nfd.RuleError, match="accepted: In, NotIn"):
        nfd.match_expression({"op": "Equals", "value": ["1"]}, True, "1", "r")


def test_rule_matched_sees_only_earlier_rules_and_match_any_needs_one_branch():
    feats = nfd.Features(cpu_security={"tdx.enabled": "true"})
    later_first = {"metadata": {"name": "a"}, "spec": {"rules": [
        {"name": "uses-later", "labels": {"early": "x"},
         "matchFeatures": [{"feature": "rule.matched", "matchExpressions": {"tdx": {"op": "IsTrue"}}}]},
        {"name": "tdx", "labels": {"tdx": "true"},
         "matchFeatures": [{"feature": "cpu.security", "matchExpressions": {"tdx.enabled": {"op": "IsTrue"}}}]},
        {"name": "any", "labels": {"example.com/any": "yes"}, "matchAny": [
            {"matchFeatures": [{"feature": "cpu.security", "matchExpressions": {"sev.snp.enabled": {"op": "Exists"}}}]},
            {"matchFeatures": [{"feature": "rule.matched", "matchExpressions": {"tdx": {"op": "In", "value": ["true"]}}}]},
        ]},
    ]}}
    got = nfd.rule_labels([later_first], feats)
    assert "feature.node.kubernetes.io/early" not in got
    assert got == {"feature.node.kubernetes.io/tdx": "true", "example.com/any": "yes"}


def test_node_patch_removes_labels_nfd_owned_and_leaves_others_alone():
    current = {"feature.node.kubernetes.io/old": "true", "user/label": "x", "feature.node.kubernetes.io/keep": "1"}
    ann = {nfd.OWNED_ANNOTATION: "feature.node.kubernetes.io/keep,feature.node.kubernetes.io/old"}
    patch = nfd.node_patch(current, ann, {"feature.node.kubernetes.io/keep": "1"})
    assert patch["metadata"]["labels"] == {"feature.node.kubernetes.io/old": None}
    assert nfd.node_patch({"feature.node.kubernetes.io/keep": "1"},
                          {nfd.OWNED_ANNOTATION: "feature.node.kubernetes.io/keep"},
                          {"feature.node.kubernetes.io/keep": "1"}) is None, "nothing changed: no write"

"""Label and field selector parsing and matching, with the apiserver's grammar and refusals."""

from __future__ import annotations

import pytest

from ccgpu.sim.apiserver.errors import ApiError
from ccgpu.sim.apiserver.selectors import (
    labels_match,
    make_filter,
    parse_field_selector,
    parse_label_selector,
)

LABELS = {"app": "gpu", "tier": "a", "nvidia.com/cc.mode": "on"}


@pytest.mark.parametrize(("selector", "matches"), [
    ("app=gpu", True),
    ("app==gpu", True),
    ("app!=gpu", False),
    ("app!=cpu", True),
    ("missing!=x", True),  # != matches objects without the key, as in Kubernetes
    ("app in (gpu,cpu)", True),
    ("app in (cpu)", False),
    ("app notin (cpu)", True),
    ("missing notin (x)", True),
    ("app", True),
    ("!app", False),
    ("!missing", True),
    ("nvidia.com/cc.mode=on,tier in (a, b)", True),
    ("nvidia.com/cc.mode=on,tier=b", False),
    ("", True),
])
def test_label_selector_matches_like_kubernetes(selector, matches):
    assert labels_match(parse_label_selector(selector), LABELS) is matches


def test_empty_value_is_a_valid_label_value_in_selectors():
    assert labels_match(parse_label_selector("role="), {"role": ""})
    assert not labels_match(parse_label_selector("role="), {"role": "x"})


@pytest.mark.parametrize("bad", ["=gpu", "app in ()", "app in gpu", "a b", "app=gpu,", "bad key!=x",
                                 "app=-bad-"])
def test_malformed_label_selector_is_a_400_naming_the_accepted_forms(bad):
    with pytest.raises(ApiError) as err:
        parse_label_selector(bad)
    assert err.value.code == 400 and err.value.reason == "BadRequest"
    assert "unable to parse requirement" in err.value.message


def test_pod_field_selector_on_node_name_and_phase():
    pred = make_filter(None, "spec.nodeName=n1,status.phase!=Failed", "", "pods")
    assert pred({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    assert not pred({"metadata": {"name": "p"}, "spec": {"nodeName": "n2"}, "status": {"phase": "Running"}})
    assert not pred({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Failed"}})


def test_metadata_field_selectors_work_on_every_kind():
    pred = make_filter(None, "metadata.name=w1,metadata.namespace==default", "example.com", "widgets")
    assert pred({"metadata": {"name": "w1", "namespace": "default"}})
    assert not pred({"metadata": {"name": "w2", "namespace": "default"}})


def test_unsupported_field_is_a_400_listing_the_supported_ones():
    with pytest.raises(ApiError) as err:
        parse_field_selector("spec.nodeName=n1", "", "nodes", False)
    assert err.value.code == 400
    assert err.value.message.startswith("field label not supported: spec.nodeName")
    assert "metadata.name" in err.value.message

"""Scheduler decisions: resources, nodeSelector, RuntimeClass scheduling, taints, and kube-scheduler's reasons."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ccgpu.sim import scheduler as s

SNP_RC = {"metadata": {"name": "kata-qemu-nvidia-gpu-snp"}, "overhead": {"podFixed": {"memory": "10240Mi"}},
          "scheduling": {"nodeSelector": {"nvidia.com/cc.ready.state": "true"}}}


def node(name, labels=None, pgpu="8", taints=None, memory="1024Gi"):
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": {"taints": taints or []},
            "status": {"allocatable": {"nvidia.com/pgpu": pgpu, "memory": memory, "cpu": "64"}}}


def pod(gpus=1, **spec):
    return {"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/pgpu": str(gpus)}}}], **spec}}


@pytest.mark.parametrize(("text", "value"), [("2", 2), ("500m", Decimal("0.5")), ("10240Mi", 10240 * 2**20),
                                             ("1.0", 1), ("1Gi", 2**30)])
def test_parse_quantity(text, value):
    assert s.parse_quantity(text) == value


def test_bad_quantity_names_the_accepted_suffixes():
    with pytest.raises(s.QuantityError, match="Mi"):
        s.parse_quantity("ten")


def test_runtime_class_selector_and_overhead_decide_placement():
    nodes = [node("a", {"nvidia.com/cc.ready.state": "false"}), node("b", {"nvidia.com/cc.ready.state": "true"})]
    assert s.place(pod(), nodes, {}, SNP_RC).node == "b"
    small = [node("b", {"nvidia.com/cc.ready.state": "true"}, memory="8Gi")]
    assert s.place(pod(), small, {}, SNP_RC).reasons == {"Insufficient memory": 1}


def test_insufficient_gpus_reads_like_kube_scheduler():
    nodes = [node("a", {"x": "y"}, pgpu="1"), node("b", pgpu="0"), node("c", {"x": "z"})]
    used = {"a": {"nvidia.com/pgpu": Decimal(1)}}
    p = s.place(pod(nodeSelector={"x": "y"}), nodes, used, None)
    assert p.node is None
    assert p.message(3) == ("0/3 nodes are available: 1 Insufficient nvidia.com/pgpu, "
                            "2 node(s) didn't match Pod's node affinity/selector.")


def test_taints_need_a_toleration_and_runtime_class_tolerations_count():
    taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    nodes = [node("a", taints=[taint])]
    assert s.place(pod(), nodes, {}, None).node is None
    rc = {"scheduling": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}}
    assert s.place(pod(), nodes, {}, rc).node == "a"


def test_finished_pods_free_their_resources():
    pods = [{"spec": {"nodeName": "a", "containers": [{"resources": {"limits": {"nvidia.com/pgpu": "2"}}}]},
             "status": {"phase": "Succeeded"}},
            {"spec": {"nodeName": "a", "containers": [{"resources": {"limits": {"nvidia.com/pgpu": "1"}}}]},
             "status": {"phase": "Running"}}]
    assert s.usage(pods, {})["a"]["nvidia.com/pgpu"] == 1

"""Kata runtime decisions: CDI resolution with containerd's error text, CC mode per RuntimeClass."""

from __future__ import annotations

import pytest

from ccgpu.sim import kata_runtime as k


def test_unresolvable_cdi_names_are_listed():
    known = {"nvidia.com/pgpu": frozenset({"3", "4"})}
    assert k.unresolvable(["nvidia.com/pgpu=3", "nvidia.com/pgpu=9", "nvidia.com/nvswitch=1"], known) == [
        "nvidia.com/pgpu=9", "nvidia.com/nvswitch=1"]


def test_resolve_against_a_node_without_specs_fails_with_containerds_text(make_host):
    host = make_host("1xh200-snp")
    with pytest.raises(k.PodStartError, match="unresolvable CDI devices nvidia.com/pgpu=1") as e:
        k.resolve(host.sysfs, "/var/run/cdi", ["nvidia.com/pgpu=1"])
    assert e.value.reason == "CreateContainerError"


@pytest.mark.parametrize(("rc", "labels", "cc", "ok"), [
    ("kata-qemu-nvidia-gpu-snp", {"nvidia.com/cc.ready.state": "true"}, "on", True),
    ("kata-qemu-nvidia-gpu-snp", {"nvidia.com/cc.ready.state": "false"}, "on", False),
    ("kata-qemu-nvidia-gpu-snp", {"nvidia.com/cc.ready.state": "true"}, "off", False),
    ("kata-qemu-nvidia-gpu-tdx", {"nvidia.com/cc.ready.state": "true"}, "devtools", False),
    ("kata-qemu-nvidia-gpu", {}, "off", True),
    ("kata-qemu-nvidia-gpu", {}, "on", False),
])
def test_cc_mode_must_match_the_runtime_class(rc, labels, cc, ok):
    why = k.cc_mismatch(rc, labels, [k.GpuMode("0000:41:00.0", cc, "off")])
    assert (why is None) is ok
    if not ok:
        assert rc in why

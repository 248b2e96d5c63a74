"""Pure decisions of the device plugin: preferred allocation, PCI env names, health reasons, readiness."""

from __future__ import annotations

import dataclasses

import pytest
from fakehost import FakeVfioHost

from ccgpu.agents import cdi
from ccgpu.agents.device_plugin import allocation, health
from ccgpu.agents.device_plugin.server import readiness_missing, socket_name
from ccgpu.hw.sysfs import Sysfs


def _devices(tmp_path, layout):
    """layout: list of (group, numa, switch domain) -> {name: identity}."""
    host = FakeVfioHost(tmp_path)
    for i, (group, numa, _) in enumerate(layout):
        host.add(f"0000:{0x10 + i:02x}:00.0", group=group, numa=numa)
    domains = {str(g): dom for g, _, dom in layout}
    return {
        i.name: dataclasses.replace(i, switch_domain=domains[i.name])
        for i in cdi.inventory(Sysfs(tmp_path), host.devices())
    }


@pytest.mark.parametrize(
    ("available", "must", "size", "expected"),
    [
        (["1", "2", "3", "4"], [], 2, ["1", "3"]),  # NUMA 0 has two of them and the ties break numerically
        (["1", "2", "3", "4", "5"], [], 3, ["2", "4", "5"]),  # only NUMA 1 can hold all three
        (["1", "2", "3", "4", "5"], ["2"], 2, ["2", "4"]),  # NUMA-local to the required one, same domain first
        (["1", "2", "3", "4", "5"], ["2"], 3, ["2", "4", "5"]),
        (["1", "2", "3"], ["3", "1"], 2, ["3", "1"]),  # required ones are kept, in order
        (["1", "3"], [], 5, ["1", "3"]),  # asks for more than offered: everything offered
    ],
)
def test_preferred_allocation_prefers_numa_local_then_same_switch_domain(tmp_path, available, must, size, expected):
    devices = _devices(tmp_path, [(1, 0, "a"), (2, 1, "b"), (3, 0, "a"), (4, 1, "b"), (5, 1, "c")])
    assert allocation.preferred_allocation(available, must, size, devices) == expected


def test_preferred_allocation_uses_the_switch_domain_when_numa_does_not_decide(tmp_path):
    devices = _devices(tmp_path, [(1, 0, "x"), (2, 0, "y"), (3, 0, "y"), (4, 0, "x")])
    assert allocation.preferred_allocation(["1", "2", "3", "4"], ["2"], 2, devices) == ["2", "3"]


@pytest.mark.parametrize(
    ("resource", "env"),
    [("nvidia.com/pgpu", "PCI_RESOURCE_NVIDIA_COM_PGPU"),
     ("nvidia.com/GH100_H100_SXM5_80GB", "PCI_RESOURCE_NVIDIA_COM_GH100_H100_SXM5_80GB"),
     ("nvidia.com/gpu.vfio-x", "PCI_RESOURCE_NVIDIA_COM_GPU_VFIO_X")],
)
def test_pci_env_name_is_kubevirts_convention(resource, env):
    assert allocation.pci_env_name(resource) == env


def test_socket_name_is_per_resource_class():
    assert socket_name("nvidia.com/pgpu") == "ccgpu-pgpu.sock"


def test_health_problems_name_what_is_missing(tmp_path):
    host = FakeVfioHost(tmp_path)
    host.add("0000:3a:00.0", group=12)
    fs = Sysfs(tmp_path)
    [ident] = cdi.inventory(fs, host.devices())
    specs = health.SpecCache(fs, "/var/run/cdi")
    assert health.problems(fs, ident, specs) == ["nvidia.com/pgpu=12 is not in the CDI spec nvidia.com-pgpu.yaml"]
    cdi.write_specs(fs, "/var/run/cdi", [ident])
    assert health.problems(fs, ident, specs) == []
    host.unbind("0000:3a:00.0")
    assert health.problems(fs, ident, specs) == [
        "0000:3a:00.0 is bound to no driver, not a VFIO driver (vfio-pci or a *_vfio_pci variant)",
        "device node /dev/vfio/12 is missing",
    ]
    host.bind("0000:3a:00.0", "nvidia")
    assert health.problems(fs, ident, specs)[0] == (
        "0000:3a:00.0 is bound to nvidia, not a VFIO driver (vfio-pci or a *_vfio_pci variant)"
    )
    host.unbind("0000:3a:00.0")
    host.bind("0000:3a:00.0", "nvgrace_gpu_vfio_pci")  # a variant driver is as usable as vfio-pci
    assert health.problems(fs, ident, specs) == []


@pytest.mark.parametrize(
    ("files", "missing"),
    [
        ({}, ["run/nvidia/validations/workload-type"]),
        ({"workload-type": "vm-passthrough"}, ["run/nvidia/validations/vfio-pci-ready"]),
        ({"workload-type": "vm-passthrough", "vfio-pci-ready": "true"}, []),
        ({"workload-type": "container"}, []),
    ],
)
def test_readiness_needs_workload_type_and_on_vm_passthrough_vfio_pci_ready(tmp_path, files, missing):
    d = tmp_path / "run/nvidia/validations"
    d.mkdir(parents=True)
    for name, text in files.items():
        (d / name).write_text(text)
    assert readiness_missing(Sysfs(tmp_path)) == missing

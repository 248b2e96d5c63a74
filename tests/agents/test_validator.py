"""The sandbox validator: readiness files appear only while their checks hold, and go when they stop holding."""

from __future__ import annotations

import asyncio

from lightkube.resources.core_v1 import Node

from ccgpu import labels
from ccgpu.agents.validator import Validator, cc_ready
from ccgpu.agents.vfio_manager import VfioManager
from tests.agents.simnode import NODE, eventually, host_tree, sim_node

VALIDATIONS = labels.VALIDATIONS_DIR


def files(host) -> dict[str, str]:
    fs = host.sysfs
    names = [labels.READY_WORKLOAD_TYPE, labels.READY_VFIO_PCI, labels.READY_CC_MANAGER]
    return {n: fs.read(f"{VALIDATIONS}/{n}") for n in names if fs.exists(f"{VALIDATIONS}/{n}")}


async def test_vfio_pci_ready_appears_when_every_gpu_is_on_vfio_and_goes_when_one_leaves():
    async with sim_node() as n:
        validator = Validator(n.host.sysfs, n.handle("nvidia-sandbox-validator"), check_cc=False)
        await validator.once()
        assert files(n.host) == {labels.READY_WORKLOAD_TYPE: "vm-passthrough"}
        mgr = VfioManager(n.host.sysfs)
        mgr.bind(mgr.devices())
        assert await validator.once() == [labels.READY_VFIO_PCI]
        assert files(n.host)[labels.READY_VFIO_PCI] == "true"
        mgr.unbind(mgr.select(n.host.gpus()[6]))
        assert await validator.once() == [labels.READY_VFIO_PCI]
        assert labels.READY_VFIO_PCI not in files(n.host)


async def test_container_nodes_never_get_vfio_pci_ready_even_with_gpus_on_vfio():
    async with sim_node(extra_labels={labels.WORKLOAD_CONFIG: "container"}) as n:
        mgr = VfioManager(n.host.sysfs)
        mgr.bind(mgr.devices())
        await Validator(n.host.sysfs, n.handle(), check_cc=False).once()
        assert files(n.host) == {labels.READY_WORKLOAD_TYPE: "container"}


async def test_cc_manager_ready_follows_the_applied_mode_and_any_switch_in_progress():
    async with sim_node(extra_labels={labels.CC_MODE: "on"}) as n:
        validator = Validator(n.host.sysfs, n.handle())
        await validator.once()
        assert labels.READY_CC_MANAGER not in files(n.host)  # no state yet
        await n.set_label(labels.CC_MODE_STATE, "on")
        await validator.once()
        assert files(n.host)[labels.READY_CC_MANAGER] == "true"
        await n.client.patch(Node, NODE, {"metadata": {"annotations": {labels.CC_SWITCH_INTENT: '{"target": "on"}'}}})
        await validator.once()
        assert labels.READY_CC_MANAGER not in files(n.host)  # a switch in progress is never "ready"
        await n.client.patch(Node, NODE, {"metadata": {"annotations": {labels.CC_SWITCH_INTENT: None}}})
        await n.set_label(labels.CC_MODE_STATE, "failed")
        await validator.once()
        assert labels.READY_CC_MANAGER not in files(n.host)


def test_cc_ready_table():
    assert cc_ready({labels.CC_MODE: "on", labels.CC_MODE_STATE: "on"}, {}) == (True, "")
    assert cc_ready({labels.CC_MODE_STATE: "off"}, {}) == (True, "")  # no label: the default was applied
    assert not cc_ready({labels.CC_MODE: "devtools", labels.CC_MODE_STATE: "on"}, {})[0]
    assert "unset" in cc_ready({}, {})[1]
    assert "in progress" in cc_ready({labels.CC_MODE_STATE: "on"}, {labels.CC_SWITCH_INTENT: "{}"})[1]


def test_without_a_node_the_validator_checks_the_host_only_with_the_default_workload():
    with host_tree() as host:
        asyncio.run(Validator(host.sysfs, None, default_workload="vm-passthrough").once())
        assert files(host) == {labels.READY_WORKLOAD_TYPE: "vm-passthrough"}


async def test_the_running_validator_reacts_to_gpus_being_bound_and_unbound():
    async with sim_node() as n:
        stop = asyncio.Event()
        task = asyncio.create_task(
            Validator(n.host.sysfs, n.handle(), check_cc=False).run(stop, interval_s=0.02)
        )
        await eventually(lambda: labels.READY_WORKLOAD_TYPE in files(n.host))
        mgr = VfioManager(n.host.sysfs)
        mgr.bind(mgr.devices())
        await eventually(lambda: labels.READY_VFIO_PCI in files(n.host))
        mgr.unbind(mgr.select(n.host.gpus()[1]))
        await eventually(lambda: labels.READY_VFIO_PCI not in files(n.host))
        stop.set()
        await asyncio.wait_for(task, 5)

"""The cluster-in-a-box runs each agent's production loop, only configured for the simulated node (no copy of
its own that could drift from what `ccgpu agent <name>` does)."""

from __future__ import annotations

import asyncio

from ccgpu import labels
from ccgpu.kube.nodes import wait_until
from ccgpu.sim.agents import RUNNERS, AgentContext
from tests.agents.simnode import NODE, nvidia_drivers, sim_node


async def test_the_vfio_manager_of_the_box_is_the_production_loop_with_readiness_and_stop_rules():
    """As `ccgpu agent vfio-manager`: binds, writes vfio-pci-ready (the copy it replaced never did), keeps
    the GPUs bound while the node stays vm-passthrough, and unbinds on stop once the node has left it."""
    async with sim_node() as node:
        host = node.host
        ready = host.root / labels.VALIDATIONS_DIR / labels.READY_VFIO_PCI
        ctx = AgentContext(node=NODE, host_root=str(host.root), client=node.client, interval_s=0.05)
        stop = asyncio.Event()
        agent = asyncio.create_task(RUNNERS["vfio-manager"](ctx, stop))
        async def readiness_written() -> bool:
            return ready.exists()

        try:
            assert await wait_until(readiness_written, timeout_s=20), "no vfio-pci-ready"
            assert {host.device(b).driver for b in host.gpus()} == {"vfio-pci"}
            await node.set_label(labels.WORKLOAD_CONFIG, "container")
        finally:
            stop.set()
            await asyncio.wait_for(agent, 20)
        assert not ready.exists()
        assert {nvidia_drivers(host)[b] for b in host.gpus()} == {None}  # unbound: the node left vm-passthrough

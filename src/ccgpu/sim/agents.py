"""In-process runners for ccgpu's node agents: `ccgpu agent <name>` in a DaemonSet → the same agent code, run as
an asyncio task for one simulated node (500 nodes in one process must be feasible, so no subprocess each).

Each runner gets an `AgentContext` (node name, host root, the container's environment as the pod would see it,
an API client, the kubelet's device-plugin directory) and a stop event, and builds the agent from the library
the real CLI uses. An agent name missing here is "not in this build": its pod stays Pending with that reason.
The CC backend is the gpu-admin-tools emulator's in-process form (`sim.gpu_admin_tools.InProcessBackend`),
because one `nvidia_gpu_tools.py` subprocess per GPU operation is too slow for hundreds of nodes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ccgpu import labels

log = logging.getLogger(__name__)


@dataclass
class AgentContext:
    node: str
    host_root: str
    client: Any
    env: dict[str, str] = field(default_factory=dict)
    plugin_dir: str = ""
    interval_s: float = 0.2


Runner = Callable[[AgentContext, asyncio.Event], Awaitable[None]]


def _node_handle(ctx: AgentContext, component: str):
    from ccgpu.kube.nodes import NodeHandle

    return NodeHandle(ctx.client, ctx.node, component=component)


def _sysfs(ctx: AgentContext):
    from ccgpu.sim.host import sysfs_for

    return sysfs_for(ctx.host_root)


async def run_validator(ctx: AgentContext, stop: asyncio.Event) -> None:
    from ccgpu.agents.validator import Validator

    v = Validator(_sysfs(ctx), _node_handle(ctx, "sandbox-validator"),
                  default_workload=ctx.env.get("DEFAULT_WORKLOAD", "container"))
    await v.run(stop, interval_s=ctx.interval_s)


async def run_vfio_manager(ctx: AgentContext, stop: asyncio.Event) -> None:
    """Bind the node's GPUs to vfio while it is a vm-passthrough node (idempotent passes)."""
    from ccgpu.agents.vfio_manager import VfioManager
    from ccgpu.sim.loop import every

    def no_modprobe(module: str) -> None:
        raise OSError(f"module {module} is not loaded and the simulated host cannot load modules")

    mgr = VfioManager(_sysfs(ctx), include_nvswitches=ctx.env.get("BIND_NVSWITCHES") == "true",
                      modprobe=no_modprobe)
    node = _node_handle(ctx, "vfio-manager")
    reported: set[str] = set()

    async def step() -> None:
        view = await node.get()
        if view.labels.get(labels.WORKLOAD_CONFIG) != labels.WorkloadConfig.VM_PASSTHROUGH:
            return
        report = await asyncio.to_thread(lambda: mgr.bind(mgr.devices()))
        for o in report.failed():
            msg = f"{o}"
            if msg not in reported:
                reported.add(msg)
                log.warning("vfio-manager %s: %s", ctx.node, msg)

    await every(ctx.interval_s, stop, step, f"vfio-manager {ctx.node}")


async def run_cc_manager(ctx: AgentContext, stop: asyncio.Event) -> None:
    """The cc-manager as `ccgpu agent cc-manager` builds it, with the in-process gpu-admin-tools backend."""
    from ccgpu.agents.cc_manager import (
        CCManager,
        CCManagerConfig,
        host_devices,
        host_devices_in_use,
        host_has_tee,
    )
    from ccgpu.sim.gpu_admin_tools import InProcessBackend
    from ccgpu.sim.host import SimulatedHost

    fs = _sysfs(ctx)
    mgr = CCManager(
        _node_handle(ctx, "nvidia-cc-manager"), InProcessBackend(SimulatedHost.open(ctx.host_root)),
        devices=lambda: host_devices(fs), host_tee=lambda: host_has_tee(fs), in_use=lambda: host_devices_in_use(fs),
        # A switch that failed on a transient API error is retried within a second (the production default of
        # 30 s, doubling, suits a real API server's outages, not the simulator's injected faults).
        config=CCManagerConfig(default_mode=ctx.env.get("DEFAULT_CC_MODE", "on"), pause_timeout_s=60.0,
                               failed_retry_s=1.0, failed_retry_max_s=4.0),
    )
    await mgr.run(stop)


def _aliases(ctx: AgentContext):
    from ccgpu.agents.cdi import Aliases

    return Aliases(gpu=ctx.env.get("P_GPU_ALIAS", labels.DEFAULT_GPU_ALIAS),
                   nvswitch=ctx.env.get("NVSWITCH_ALIAS", labels.DEFAULT_NVSWITCH_ALIAS))


async def run_kata_manager(ctx: AgentContext, stop: asyncio.Event) -> None:
    """CDI specs and the containerd drop-in for the Kata runtime classes; no restart (no containerd runs)."""
    from ccgpu.agents import kata_manager
    from ccgpu.agents.containerd_restart import RestartMethod

    cfg = kata_manager.KataManagerConfig(host_root=ctx.host_root, aliases=_aliases(ctx), interval_s=ctx.interval_s,
                                         configure_containerd=True,
                                         containerd_options={"restart": RestartMethod.NONE})
    await kata_manager.run(cfg, stop)


async def run_device_plugin(ctx: AgentContext, stop: asyncio.Event) -> None:
    from ccgpu.agents.device_plugin.server import DevicePluginAgent, DevicePluginConfig

    cfg = DevicePluginConfig(host_root=ctx.host_root, plugin_dir=ctx.plugin_dir, aliases=_aliases(ctx),
                             rediscover_period_s=ctx.interval_s * 2, health_period_s=ctx.interval_s)
    await DevicePluginAgent(cfg).run(stop)


RUNNERS: dict[str, Runner] = {
    "validator": run_validator,
    "vfio-manager": run_vfio_manager,
    "cc-manager": run_cc_manager,
    "kata-manager": run_kata_manager,
    "device-plugin": run_device_plugin,
}


def agent_name(container: dict[str, Any]) -> str | None:
    """`ccgpu agent <name> ...` → name; None for a container that is not a ccgpu agent (NVIDIA's images)."""
    cmd = list(container.get("command") or []) + list(container.get("args") or [])
    if len(cmd) >= 3 and cmd[0] == "ccgpu" and cmd[1] == "agent":
        return cmd[2]
    return None

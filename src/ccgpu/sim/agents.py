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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ccgpu import labels
from ccgpu.agents.pacing import Pace, sleep_or_stop
from ccgpu.kube.nodes import NodeHandle, NodeView

log = logging.getLogger(__name__)


@dataclass
class AgentContext:
    node: str
    host_root: str
    client: Any
    env: dict[str, str] = field(default_factory=dict)
    plugin_dir: str = ""
    interval_s: float = 0.2
    informers: Any = None  # the cluster's shared informers (sim.informer.Informers), when it has them
    signals: Any = None  # the cluster's change signals (sim.signals.Signals): agents wake on their node's changes

    def pace(self, *keys: Callable[[str], str]) -> Pace:
        """How this node's agent waits between passes: until one of `keys` (node_key, host_key, state_key)
        changes for this node, or the interval passes as a backstop, when the cluster signals changes; else
        the plain interval."""
        if self.signals is None:
            return sleep_or_stop
        return self.signals.pacer(*(k(self.node) for k in keys))


Runner = Callable[[AgentContext, asyncio.Event], Awaitable[None]]


def node_key(node: str) -> str:
    """The signal a node's label or annotation change bumps."""
    return f"node:{node}"


def host_key(node: str) -> str:
    """The signal any change of a node's host tree bumps (state or files)."""
    return f"host:{node}"


def state_key(node: str) -> str:
    """The signal a change of a node's kernel/device state bumps (not agents' files)."""
    return f"state:{node}"


def _node_handle(ctx: AgentContext, component: str, cached_get: bool = False):
    """The agent's NodeHandle. With the cluster's informers its watch is served from the shared node informer
    (one watch connection per agent would make the client's connection pool, scanned on every request, as big
    as the cluster); `cached_get` also answers `get` from there (for level-triggered agents that only read
    labels). Writes, pods and Events always go to the API server."""
    if ctx.informers is not None:
        return SharedNodeHandle(ctx.client, ctx.node, component=component, informer=ctx.informers.nodes,
                                cached_get=cached_get, pod_informer=ctx.informers.pods)
    return NodeHandle(ctx.client, ctx.node, component=component)


def _view(node: dict[str, Any]) -> NodeView:
    meta = node.get("metadata") or {}
    return NodeView(name=meta.get("name", ""), labels=dict(meta.get("labels") or {}),
                    annotations=dict(meta.get("annotations") or {}), resource_version=meta.get("resourceVersion"))


class SharedNodeHandle(NodeHandle):
    """A NodeHandle over the cluster's node informer (see `_node_handle`)."""

    def __init__(self, client: Any, node_name: str, *, component: str, informer: Any, cached_get: bool,
                 pod_informer: Any = None) -> None:
        super().__init__(client, node_name, component=component)
        self.informer = informer
        self.pod_informer = pod_informer
        self.cached_get = cached_get

    async def get(self) -> NodeView:
        node = self.informer.get(self.name) if self.cached_get else None
        return _view(node) if node is not None else await super().get()

    async def pods(self, app_names: list[str]) -> list[str]:
        """Operand pods on this node, from the shared pod informer (the cc-manager asks this until they are
        gone; hundreds of nodes asking the API server at once were most of its load)."""
        if self.pod_informer is None:
            return await super().pods(app_names)
        return sorted(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in
                      self.pod_informer.indexed(self.name)
                      if (p["metadata"].get("labels") or {}).get("app") in app_names)

    async def watch(self, resource_version: str | None) -> AsyncIterator[tuple[str, NodeView]]:
        """This node's changes after `resource_version`, as a watch of it would deliver them."""
        queue = self.informer.subscribe(self.name)
        try:
            since = int(resource_version) if resource_version and resource_version.isdigit() else 0
            current = self.informer.get(self.name)
            if current is not None and int(current["metadata"].get("resourceVersion") or 0) > since:
                yield "MODIFIED", _view(current)  # changed between the caller's read and this subscription
            while True:
                kind, node = await queue.get()
                if int(node["metadata"].get("resourceVersion") or 0) > since:
                    yield kind, _view(node)
        finally:
            self.informer.unsubscribe(queue, self.name)


def _sysfs(ctx: AgentContext):
    from ccgpu.sim.host import sysfs_for

    return sysfs_for(ctx.host_root)


async def run_validator(ctx: AgentContext, stop: asyncio.Event) -> None:
    from ccgpu.agents.validator import Validator

    v = Validator(_sysfs(ctx), _node_handle(ctx, "sandbox-validator", cached_get=True),
                  default_workload=ctx.env.get("DEFAULT_GPU_WORKLOAD_CONFIG", "container"))
    await v.run(stop, interval_s=ctx.interval_s, pace=ctx.pace(node_key, state_key))  # labels, drivers


async def run_vfio_manager(ctx: AgentContext, stop: asyncio.Event) -> None:
    """The production agent loop (`ccgpu agent vfio-manager`): resume an interrupted bind, bind, keep binding,
    write `vfio-pci-ready`, and unbind on stop only if the node left vm-passthrough. Its DaemonSet runs only on
    vm-passthrough nodes, so it needs no label check of its own."""
    from ccgpu.agents import vfio_manager

    def no_modprobe(module: str) -> None:
        raise OSError(f"module {module} is not loaded and the simulated host cannot load modules")

    manager = vfio_manager.VfioManager(_sysfs(ctx), include_nvswitches=ctx.env.get("BIND_NVSWITCHES") == "true",
                                       modprobe=no_modprobe)
    await vfio_manager.run(manager, stop, node=_node_handle(ctx, "vfio-manager", cached_get=True),
                           interval_s=ctx.interval_s, pace=ctx.pace(node_key, state_key))


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
        config=CCManagerConfig(default_mode=ctx.env.get("DEFAULT_CC_MODE", "on"),
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
                                         containerd_options={"restart": RestartMethod.NONE},
                                         pace=ctx.pace(state_key))  # CDI specs follow the devices' drivers
    await kata_manager.run(cfg, stop, fs=_sysfs(ctx))  # the simulated host's Sysfs: its writes wake the node


async def run_device_plugin(ctx: AgentContext, stop: asyncio.Event) -> None:
    from ccgpu.agents.device_plugin.server import DevicePluginAgent, DevicePluginConfig

    # With change signals a pass runs when the host changed, so it rediscovers each time; without, on a timer.
    cfg = DevicePluginConfig(host_root=ctx.host_root, plugin_dir=ctx.plugin_dir, aliases=_aliases(ctx),
                             rediscover_period_s=0.0 if ctx.signals is not None else ctx.interval_s * 2,
                             health_period_s=ctx.interval_s, pace=ctx.pace(host_key))  # + validations, CDI
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

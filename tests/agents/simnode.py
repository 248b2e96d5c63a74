"""A node for agent tests: a simulated host tree, a Node object in the API simulator, and the production
gpu-admin-tools backend run over the CLI emulator (subprocesses, as in production)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from lightkube.models.core_v1 import Container, PodSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Node, Pod

from ccgpu import labels
from ccgpu.agents.cc_manager import (
    CCManager,
    CCManagerConfig,
    host_devices,
    host_devices_in_use,
    host_has_tee,
)
from ccgpu.hw.ccmode import GpuAdminToolsBackend
from ccgpu.kube.client import make_async_client
from ccgpu.kube.nodes import NodeHandle
from ccgpu.sim import gpu_admin_tools
from ccgpu.sim.apiserver import ApiServer
from ccgpu.sim.host import SimulatedHost
from tests.conftest import ccgpu_env, shared_dir

NODE = "gpu-node-1"
OPERANDS_NS = "default"

# The deploy labels the operator puts on a vm-passthrough Kata node (cc-manager's own label is not paused).
DEPLOY_LABELS = {
    labels.WORKLOAD_CONFIG: "vm-passthrough",
    labels.deploy_label("vfio-manager"): "true",
    labels.deploy_label("kata-sandbox-device-plugin"): "true",
    labels.deploy_label("sandbox-validator"): "true",
    labels.deploy_label("kata-manager"): "true",
    labels.deploy_label("cc-manager"): "true",
    labels.deploy_label("vgpu-manager"): "false",
}


@contextmanager
def host_tree(profile: str = "8xh100-snp", **overrides) -> Iterator[SimulatedHost]:
    """A simulated host on tmpfs when there is one (host trees are many small files)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    d = Path(tempfile.mkdtemp(prefix="ccgpu-agents-", dir=base))
    try:
        yield SimulatedHost.create(d / "host", profile, fixtures=shared_dir() / "fixtures", **overrides)
    finally:
        shutil.rmtree(d, ignore_errors=True)


class MountedHost:
    """A simulated host mounted through FUSE (`ccgpu.sim.host_mount`): `root` is the mount point, which agents
    get as their host root and see Linux's behaviour through; everything else is the `SimulatedHost` over the
    backing files (its state, faults, devices), which the FUSE server shares."""

    def __init__(self, root: Path, host: SimulatedHost) -> None:
        self.root = root
        self.host = host

    def __getattr__(self, name: str):
        return getattr(self.host, name)


@contextmanager
def mounted_host(profile: str = "8xh100-snp", **overrides) -> Iterator[MountedHost]:
    """A simulated host an unmodified program can use: built, mounted, and unmounted afterwards."""
    from ccgpu.sim import host_mount
    from tests.conftest import require_fuse

    require_fuse()
    d = Path(tempfile.mkdtemp(prefix="ccgpu-mounted-"))
    mountpoint = d / "host"
    backing = host_mount.backing_dir(mountpoint)
    try:
        host = SimulatedHost.create(backing, profile, fixtures=shared_dir() / "fixtures", **overrides)
        host_mount.mount(mountpoint, backing)
        yield MountedHost(mountpoint, host)
    finally:
        host_mount.unmount(mountpoint)
        shutil.rmtree(d, ignore_errors=True)


def tool_backend(host: SimulatedHost) -> GpuAdminToolsBackend:
    """The production backend, pointed at the emulator of nvidia_gpu_tools.py over `host`."""
    env = ccgpu_env(**{gpu_admin_tools.HOST_ROOT_ENV: str(host.root)})
    return GpuAdminToolsBackend(gpu_admin_tools.__file__, env=env, timeout_s=60)


def nvidia_drivers(host: SimulatedHost) -> dict[str, str | None]:
    """Driver of every NVIDIA function (GPUs, NVSwitches, GPU audio functions) of a simulated host."""
    return {b: host.device(b).driver for b in host.devices() if host.device(b).kind in ("gpu", "nvswitch", "audio")}


def other_drivers(host: SimulatedHost) -> dict[str, str | None]:
    """Driver of every other device (the NIC): the vfio-manager must never touch these."""
    return {b: host.device(b).driver for b in host.devices() if host.device(b).kind not in ("gpu", "nvswitch", "audio")}


class SimNode:
    """One node: API simulator + Node object + simulated host. Makes fresh agents (as after a restart)."""

    def __init__(self, api: ApiServer, host: SimulatedHost) -> None:
        self.api = api
        self.host = host
        self.client = make_async_client(api.kubeconfig_dict())

    async def create_node(self, extra_labels: dict[str, str] | None = None) -> None:
        meta = ObjectMeta(name=NODE, labels={**DEPLOY_LABELS, **(extra_labels or {})})
        await self.client.create(Node(metadata=meta))

    def handle(self, component: str = "nvidia-cc-manager") -> NodeHandle:
        return NodeHandle(self.client, NODE, component=component)

    def cc_manager(self, *, node=None, backend=None, default_mode: str = "on", pause_timeout_s: float = 10.0,
                   evict: bool = True, failed_retry_s: float = 30.0) -> CCManager:
        fs = self.host.sysfs
        return CCManager(
            node or self.handle(),
            backend or tool_backend(self.host),
            devices=lambda: host_devices(fs),
            host_tee=lambda: host_has_tee(fs),
            in_use=lambda: host_devices_in_use(fs),
            config=CCManagerConfig(default_mode=default_mode, pause_timeout_s=pause_timeout_s,
                                   evict_operands=evict, watch_retry_s=0.05, failed_retry_s=failed_retry_s),
        )

    async def labels(self) -> dict[str, str]:
        return dict((await self.client.get(Node, NODE)).metadata.labels or {})

    async def annotations(self) -> dict[str, str]:
        return dict((await self.client.get(Node, NODE)).metadata.annotations or {})

    async def set_label(self, key: str, value: str | None) -> None:
        await self.client.patch(Node, NODE, {"metadata": {"labels": {key: value}}})

    async def events(self, reason: str | None = None) -> list[Event]:
        found = [e async for e in self.client.list(Event, namespace="*")]
        return [e for e in found if reason is None or e.reason == reason]

    async def add_operand_pod(self, app: str, name: str | None = None) -> str:
        pod = Pod(
            metadata=ObjectMeta(name=name or f"{app}-x1", namespace=OPERANDS_NS, labels={"app": app}),
            spec=PodSpec(nodeName=NODE, containers=[Container(name="agent", image="ccgpu")]),
        )
        await self.client.create(pod)
        return pod.metadata.name

    async def delete_pod(self, name: str) -> None:
        await self.client.delete(Pod, name, namespace=OPERANDS_NS)

    def cc_modes(self) -> dict[str, str]:
        return {b: self.host.gpu(b).query_cc().current for b in self.host.gpus()}

    def ppcie_modes(self) -> dict[str, str]:
        return {b: self.host.gpu(b).query_cc().ppcie_current for b in [*self.host.gpus(), *self.host.nvswitches()]}


@asynccontextmanager
async def sim_node(profile: str = "8xh100-snp", extra_labels: dict[str, str] | None = None,
                   **overrides) -> AsyncIterator[SimNode]:
    with host_tree(profile, **overrides) as host:
        async with ApiServer() as api:
            node = SimNode(api, host)
            await node.create_node(extra_labels)
            try:
                yield node
            finally:
                await node.client.close()


class Killed(BaseException):
    """The agent process died here (not an Exception: nothing in the agent may catch it)."""


class CrashAt:
    """Wraps a NodeHandle or a CC backend: the `nth` call of `method` kills the agent, before the call runs or,
    with `after`, once it has taken effect."""

    def __init__(self, target, method: str, nth: int = 1, *, after: bool = False) -> None:
        self._target, self._method, self._nth, self._after = target, method, nth, after
        self.calls = 0

    def __getattr__(self, attr):
        real = getattr(self._target, attr)
        if attr != self._method:
            return real

        async def wrapped(*args, **kwargs):
            self.calls += 1
            hit = self.calls == self._nth
            if hit and not self._after:
                raise Killed(f"{self._method} #{self._nth}")
            result = await real(*args, **kwargs)
            if hit:
                raise Killed(f"after {self._method} #{self._nth}")
            return result

        return wrapped


async def eventually(predicate, timeout_s: float = 10.0, interval_s: float = 0.02):
    """Wait for an async or sync predicate to hold, with a deadline; fails the test with what it last saw."""
    import asyncio
    import inspect

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)

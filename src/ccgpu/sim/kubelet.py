"""A kubelet's device-manager side, written from the v1beta1 proto: meets device plugins over real unix sockets.

It serves `Registration` on `<dir>/kubelet.sock`; for each registration it dials the plugin's endpoint, asks
for its options, keeps ListAndWatch open and remembers the latest device list per resource. Tests and the
cluster-in-a-box call `allocate` / `preferred_allocation` as the real kubelet would, and `restart()` behaves like
a kubelet restart: every socket in the directory is deleted and `kubelet.sock` comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from ccgpu.agents.device_plugin import api_pb2 as pb
from ccgpu.agents.device_plugin import api_pb2_grpc as pb_grpc

SUPPORTED_VERSIONS = ("v1beta1",)
_RESOURCE_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


@dataclass
class PluginEndpoint:
    """What the kubelet knows about one registered resource."""

    resource: str
    endpoint: str
    options: pb.DevicePluginOptions
    channel: grpc.aio.Channel
    stub: pb_grpc.DevicePluginStub
    devices: list[pb.Device] = field(default_factory=list)
    updates: int = 0  # ListAndWatch responses received
    last_update: float = 0.0  # time.monotonic() of the latest one
    watcher: asyncio.Task | None = None


class FakeKubelet(pb_grpc.RegistrationServicer):
    def __init__(self, plugin_dir: str | Path) -> None:
        self.plugin_dir = Path(plugin_dir)
        self.socket = self.plugin_dir / "kubelet.sock"
        self.plugins: dict[str, PluginEndpoint] = {}
        self.registrations: list[pb.RegisterRequest] = []
        self._server: grpc.aio.Server | None = None
        self._changed = asyncio.Condition()

    # --- lifecycle ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        server = grpc.aio.server()
        pb_grpc.add_RegistrationServicer_to_server(self, server)
        server.add_insecure_port(f"unix://{self.socket}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        for plugin in list(self.plugins.values()):
            await self._drop(plugin)
        self.plugins.clear()
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None
        self.socket.unlink(missing_ok=True)

    async def restart(self) -> None:
        """What a new kubelet does at start: forget every plugin and delete every socket in the directory."""
        await self.stop()
        self.registrations = []
        for entry in self.plugin_dir.iterdir():
            if entry.is_socket():
                entry.unlink()
        await self.start()

    async def __aenter__(self) -> FakeKubelet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- Registration service -------------------------------------------------------------------------
    async def Register(self, request, context):  # noqa: N802 - gRPC method name
        if request.version not in SUPPORTED_VERSIONS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"version {request.version!r} is not supported; supported: {', '.join(SUPPORTED_VERSIONS)}",
            )
        if not _RESOURCE_RE.fullmatch(request.resource_name):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"{request.resource_name!r} is not an extended resource name"
            )
        if "/" in request.endpoint or not request.endpoint:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "endpoint must be a socket file name")
        channel = grpc.aio.insecure_channel(f"unix://{self.plugin_dir / request.endpoint}")
        stub = pb_grpc.DevicePluginStub(channel)
        try:
            options = await stub.GetDevicePluginOptions(pb.Empty(), timeout=2.0)
        except grpc.aio.AioRpcError as e:
            await channel.close()
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot reach {request.endpoint}: {e.details()}")
        old = self.plugins.get(request.resource_name)
        if old is not None:
            await self._drop(old)
        plugin = PluginEndpoint(request.resource_name, request.endpoint, options, channel, stub)
        plugin.watcher = asyncio.get_running_loop().create_task(self._watch(plugin))
        self.plugins[request.resource_name] = plugin
        self.registrations.append(request)
        async with self._changed:
            self._changed.notify_all()
        return pb.Empty()

    async def _watch(self, plugin: PluginEndpoint) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for resp in plugin.stub.ListAndWatch(pb.Empty()):
                async with self._changed:
                    plugin.devices = list(resp.devices)
                    plugin.updates += 1
                    plugin.last_update = time.monotonic()
                    self._changed.notify_all()

    async def _drop(self, plugin: PluginEndpoint) -> None:
        if plugin.watcher is not None:
            plugin.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await plugin.watcher
        await plugin.channel.close()

    # --- what the kubelet does with plugins -----------------------------------------------------------
    def health(self, resource: str) -> dict[str, str]:
        plugin = self.plugins.get(resource)
        return {d.ID: d.health for d in plugin.devices} if plugin else {}

    async def wait_for(self, condition: Callable[[FakeKubelet], bool], timeout: float = 5.0) -> None:
        """Wait until `condition(self)` holds (re-checked on every registration and ListAndWatch update)."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: condition(self)), timeout)

    async def wait_for_health(self, resource: str, expected: dict[str, str], timeout: float = 5.0) -> None:
        await self.wait_for(lambda k: k.health(resource) == expected, timeout)

    def _plugin(self, resource: str) -> PluginEndpoint:
        try:
            return self.plugins[resource]
        except KeyError:
            raise KeyError(f"no plugin registered for {resource}; registered: {sorted(self.plugins)}") from None

    async def allocate(self, resource: str, *containers: Sequence[str]) -> pb.AllocateResponse:
        req = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=c) for c in containers])
        return await self._plugin(resource).stub.Allocate(req, timeout=5.0)

    async def preferred_allocation(
        self, resource: str, available: Sequence[str], must_include: Sequence[str], size: int
    ) -> list[str]:
        plugin = self._plugin(resource)
        if not plugin.options.get_preferred_allocation_available:
            raise RuntimeError(f"{resource} does not offer GetPreferredAllocation")
        req = pb.PreferredAllocationRequest(
            container_requests=[
                pb.ContainerPreferredAllocationRequest(
                    available_deviceIDs=available, must_include_deviceIDs=must_include, allocation_size=size
                )
            ]
        )
        resp = await plugin.stub.GetPreferredAllocation(req, timeout=5.0)
        return list(resp.container_responses[0].deviceIDs)

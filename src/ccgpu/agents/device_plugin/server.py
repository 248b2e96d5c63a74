"""The sandbox device plugin: one gRPC server per resource, kept registered with the kubelet.

`ResourceServer` serves the kubelet device-plugin API v1beta1 for one extended resource (e.g. `nvidia.com/pgpu`)
on `<device-plugin-dir>/ccgpu-<class>.sock` and registers it on `kubelet.sock`. `DevicePluginAgent` is the node
loop: it waits for the validator's readiness files, discovers VFIO devices, advertises those that are bound to a
vfio driver, have their device nodes and appear in the CDI spec on disk (identity from `ccgpu.agents.cdi`, so
advertised IDs are the spec's device names), and re-checks their health every tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from ccgpu import labels
from ccgpu.agents import cdi
from ccgpu.agents.cdi import Aliases, DeviceIdentity
from ccgpu.agents.device_plugin import allocation, health
from ccgpu.agents.device_plugin import api_pb2 as pb
from ccgpu.agents.device_plugin import api_pb2_grpc as pb_grpc
from ccgpu.agents.pacing import Pace, sleep_or_stop
from ccgpu.hw.pci import PCIDevice
from ccgpu.hw.sysfs import Sysfs

log = logging.getLogger("ccgpu.device_plugin")

API_VERSION = "v1beta1"
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
KUBELET_SOCKET = "kubelet.sock"
REGISTER_TIMEOUT_S = 1.0
ONCE_REGISTER_DEADLINE_S = 30.0  # `--once` waits this long for the kubelet; the long-running agent never gives up
DEFAULT_PLUGIN_DIR = "/var/lib/kubelet/device-plugins"
OPTIONS = pb.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)


class RegistrationError(RuntimeError):
    """The kubelet refused the registration (wrong version, resource held by another plugin), or `--once` found
    no kubelet to register with: exit. A kubelet that is merely away is waited for, never a reason to exit."""


class RegistrationBackoff:
    """When to try registering again: at once after a (re)start or when `kubelet.sock` is a new file (the
    kubelet came back), else after a delay that doubles from `first_s` up to `max_s` while it stays away."""

    def __init__(self, first_s: float = 0.05, max_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.first_s, self.max_s, self.clock = first_s, max_s, clock
        self.reset()

    def reset(self) -> None:
        self.delay_s = 0.0
        self._next_at = float("-inf")
        self._failed_on: int | None = None

    def failed(self, kubelet_inode: int | None) -> bool:
        """Record a failed attempt; True when the delay grew (worth a log line), False once at its cap."""
        grew = self.delay_s < self.max_s
        self.delay_s = min(self.max_s, max(self.first_s, self.delay_s * 2))
        self._next_at = self.clock() + self.delay_s
        self._failed_on = kubelet_inode
        return grew

    def wait_s(self) -> float:
        """Seconds until the next attempt is due (0 when it is due now)."""
        return max(0.0, self._next_at - self.clock())

    def due(self, kubelet_inode: int | None) -> bool:
        """Whether to attempt now: never without a kubelet socket; at once for a socket file not yet tried."""
        if kubelet_inode is None:
            return False
        return kubelet_inode != self._failed_on or self.clock() >= self._next_at


def socket_name(resource: str) -> str:
    """`nvidia.com/pgpu` -> `ccgpu-pgpu.sock` (the class part is already restricted to [A-Za-z0-9_.-])."""
    return f"ccgpu-{resource.partition('/')[2]}.sock"


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


class ResourceServer(pb_grpc.DevicePluginServicer):
    """Serves and registers one resource; ListAndWatch streams the full device list on every change."""

    def __init__(self, resource: str, plugin_dir: str | os.PathLike[str], pci_env: bool = False) -> None:
        self.resource = resource
        self.plugin_dir = Path(plugin_dir)
        self.socket_path = self.plugin_dir / socket_name(resource)
        self.pci_env = pci_env
        self._devices: dict[str, DeviceIdentity] = {}
        self._health: dict[str, bool] = {}
        self._version = 0
        self._changed = asyncio.Condition()
        self._server: grpc.aio.Server | None = None
        self._socket_inode: int | None = None
        self._kubelet_inode: int | None = None  # kubelet.sock's inode when registered; None: not registered
        self._registering: asyncio.Task[bool] | None = None
        self._retry = RegistrationBackoff()
        self._said_absent = False  # logged that kubelet.sock is missing (once per absence)
        self.registrations = 0

    # --- state ------------------------------------------------------------------------------------
    async def set_devices(self, devices: dict[str, DeviceIdentity], healthy: dict[str, bool]) -> bool:
        """Replace the advertised list; wake ListAndWatch streams only when something changed."""
        if devices == self._devices and healthy == self._health:
            return False
        async with self._changed:
            self._devices, self._health = dict(devices), dict(healthy)
            self._version += 1
            self._changed.notify_all()
        return True

    def list_response(self) -> pb.ListAndWatchResponse:
        resp = pb.ListAndWatchResponse()
        for name in sorted(self._devices, key=cdi.name_sort_key):
            ident = self._devices[name]
            dev = pb.Device(ID=name, health=HEALTHY if self._health.get(name) else UNHEALTHY)
            if ident.numa_node is not None:
                dev.topology.nodes.append(pb.NUMANode(ID=ident.numa_node))
            resp.devices.append(dev)
        return resp

    # --- the gRPC service -------------------------------------------------------------------------
    async def GetDevicePluginOptions(self, request, context):  # noqa: N802 - gRPC method names
        return OPTIONS

    async def ListAndWatch(self, request, context):  # noqa: N802
        seen = -1
        while True:
            async with self._changed:
                def changed(since: int = seen) -> bool:  # bound now: `seen` moves on each pass
                    return self._version != since

                await self._changed.wait_for(changed)
                seen = self._version
                resp = self.list_response()
            yield resp

    async def Allocate(self, request, context):  # noqa: N802
        resp = pb.AllocateResponse()
        try:
            for creq in request.container_requests:
                ids = list(creq.devices_ids)
                resp.container_responses.append(
                    allocation.container_allocation(self.resource, ids, self._devices, self.pci_env)
                )
        except allocation.UnknownDevicesError as e:
            log.warning("Allocate refused: %s", e)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return resp

    async def GetPreferredAllocation(self, request, context):  # noqa: N802
        resp = pb.PreferredAllocationResponse()
        try:
            for creq in request.container_requests:
                allocation.check_known(
                    self.resource, [*creq.available_deviceIDs, *creq.must_include_deviceIDs], self._devices
                )
                ids = allocation.preferred_allocation(
                    list(creq.available_deviceIDs), list(creq.must_include_deviceIDs),
                    creq.allocation_size, self._devices,
                )
                resp.container_responses.append(pb.ContainerPreferredAllocationResponse(deviceIDs=ids))
        except allocation.UnknownDevicesError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return resp

    async def PreStartContainer(self, request, context):  # noqa: N802
        return pb.PreStartContainerResponse()

    # --- socket and registration lifecycle -------------------------------------------------------------
    async def serve(self) -> None:
        """(Re)start the gRPC server on a fresh socket file."""
        await self._stop_server()
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        server = grpc.aio.server()
        pb_grpc.add_DevicePluginServicer_to_server(self, server)
        server.add_insecure_port(f"unix://{self.socket_path}")
        await server.start()
        self._server = server
        self._socket_inode = _inode(self.socket_path)
        log.info("serving %s on %s", self.resource, self.socket_path)

    async def register(self) -> bool:
        """One registration attempt: True when the kubelet accepted it, False when the kubelet is not answering
        (absent, restarting; the caller retries later). A refusal raises RegistrationError."""
        kubelet = self.plugin_dir / KUBELET_SOCKET
        req = pb.RegisterRequest(
            version=API_VERSION, endpoint=self.socket_path.name, resource_name=self.resource, options=OPTIONS
        )
        inode = _inode(kubelet)
        if inode is None:
            return False
        try:
            async with grpc.aio.insecure_channel(f"unix://{kubelet}") as channel:
                await pb_grpc.RegistrationStub(channel).Register(req, timeout=REGISTER_TIMEOUT_S)
        except grpc.aio.AioRpcError as e:
            if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise RegistrationError(f"kubelet refused {self.resource}: {e.details()}") from None
            return False
        self._kubelet_inode = inode
        self.registrations += 1
        log.info("registered %s with the kubelet (endpoint %s)", self.resource, req.endpoint)
        return True

    def kubelet_present(self) -> bool:
        return _inode(self.plugin_dir / KUBELET_SOCKET) is not None

    @property
    def registered(self) -> bool:
        return self._kubelet_inode is not None

    async def start(self) -> None:
        """Serve on a fresh socket and register in the background (the caller's pass never waits on it)."""
        await self.serve()
        self._kubelet_inode = None
        self._retry.reset()

    async def ensure_registered(self) -> None:
        """Keep serving and registered without ever blocking a pass on the kubelet.

        A kubelet restart wipes the socket directory: serve again on a fresh socket and register again. While
        the kubelet is away, retry with backoff (capped, so a long outage costs one connect every few seconds);
        a new `kubelet.sock` (the kubelet came back) is tried at once. A refusal raises from here.
        """
        if _inode(self.socket_path) != self._socket_inode or self._server is None:
            log.info("%s vanished (kubelet restart?): serving again", self.socket_path)
            await self.start()
        elif self._kubelet_inode is not None and _inode(self.plugin_dir / KUBELET_SOCKET) != self._kubelet_inode:
            log.info("kubelet socket replaced or gone: registering %s again", self.resource)
            self._kubelet_inode = None
            self._retry.reset()
        task = self._registering
        if task is not None:
            if not task.done():
                return
            self._registering = None
            if task.result():  # re-raises a RegistrationError
                return
            if self._retry.failed(_inode(self.plugin_dir / KUBELET_SOCKET)):
                log.warning(
                    "kubelet at %s not answering; still serving %s, next registration attempt in %.2f s",
                    self.plugin_dir / KUBELET_SOCKET, self.resource, self._retry.delay_s,
                )
        if self._kubelet_inode is not None:
            return
        kubelet_inode = _inode(self.plugin_dir / KUBELET_SOCKET)
        if kubelet_inode is None and not self._said_absent:
            log.info("no %s yet; serving %s and registering once the kubelet is back", KUBELET_SOCKET, self.resource)
        self._said_absent = kubelet_inode is None
        if self._retry.due(kubelet_inode):
            self._registering = asyncio.get_running_loop().create_task(self.register())

    async def _stop_server(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None

    async def stop(self) -> None:
        if self._registering is not None:
            self._registering.cancel()
            with contextlib.suppress(asyncio.CancelledError, RegistrationError):
                await self._registering
            self._registering = None
        await self._stop_server()
        if _inode(self.socket_path) == self._socket_inode:
            self.socket_path.unlink(missing_ok=True)


# --- the node agent -----------------------------------------------------------------------------------

def readiness_missing(fs: Sysfs) -> list[str]:
    """The validator's readiness files still missing: workload-type, and vfio-pci-ready on vm-passthrough."""
    wt = f"{labels.VALIDATIONS_DIR}/{labels.READY_WORKLOAD_TYPE}"
    if not fs.exists(wt):
        return [wt]
    try:
        workload = fs.read(wt).strip()
    except OSError:
        return [wt]
    vfio = f"{labels.VALIDATIONS_DIR}/{labels.READY_VFIO_PCI}"
    if workload == labels.WorkloadConfig.VM_PASSTHROUGH and not fs.exists(vfio):
        return [vfio]
    return []


@dataclass
class DevicePluginConfig:
    host_root: str = "/"
    cdi_dir: str = cdi.DEFAULT_CDI_DIR  # host path, resolved under host_root
    plugin_dir: str = DEFAULT_PLUGIN_DIR  # a real directory (the kubelet's, mounted into the pod)
    aliases: Aliases = field(default_factory=Aliases)
    pci_env: bool = False
    wait_for_validations: bool = True
    health_period_s: float = 0.05
    rediscover_period_s: float = 1.0
    pace: Pace = sleep_or_stop  # how to wait between passes (see agents.pacing)


class DevicePluginAgent:
    """Discovers, health-checks and advertises the node's VFIO devices, one ResourceServer per resource."""

    def __init__(
        self,
        config: DevicePluginConfig,
        discover: Callable[[Sysfs], Iterable[PCIDevice]] | None = None,
        fs: Sysfs | None = None,
    ) -> None:
        self.config = config
        self.fs = fs or Sysfs(config.host_root)
        self.discover = discover or cdi.DeviceDiscovery()
        self.specs = health.SpecCache(self.fs, config.cdi_dir)
        self.servers: dict[str, ResourceServer] = {}
        self.advertised: dict[tuple[str, str], DeviceIdentity] = {}
        self._candidates: list[DeviceIdentity] = []
        self._last_discovery = float("-inf")
        self._unhealthy_reasons: dict[tuple[str, str], list[str]] = {}
        self.ticks = 0  # completed passes, for callers that wait for the agent to have looked again

    async def wait_until_ready(self, stop: asyncio.Event) -> bool:
        announced = None
        while not stop.is_set():
            missing = readiness_missing(self.fs)
            if not missing:
                return True
            if missing != announced:
                log.info("waiting for the validator: %s missing under the host root", ", ".join(missing))
                announced = missing
            await self.config.pace(stop, 0.1)
        return False

    async def tick(self) -> None:
        """One pass: rediscover when due, advertise newly usable devices, refresh health, keep registered."""
        now = time.monotonic()
        if now - self._last_discovery >= self.config.rediscover_period_s:
            self._last_discovery = now
            try:
                self._candidates = cdi.inventory(self.fs, self.discover(self.fs), self.config.aliases)
            except (OSError, cdi.CDIError) as e:  # advertised devices keep being health-checked meanwhile
                log.error("device discovery failed, keeping the previous candidates: %s", e)
        for ident in self._candidates:
            key = (ident.kind, ident.name)
            if key not in self.advertised and not health.problems(self.fs, ident, self.specs):
                self._retire_renamed(key, ident)
                self.advertised[key] = ident
                log.info("advertising %s (%s)", ident.cdi_name, ", ".join(map(str, ident.bdfs)))
        by_kind: dict[str, tuple[dict[str, DeviceIdentity], dict[str, bool]]] = {}
        for key, ident in self.advertised.items():
            found = health.problems(self.fs, ident, self.specs)
            if found != self._unhealthy_reasons.get(key, []):
                if found:
                    log.warning("%s unhealthy: %s", ident.cdi_name, "; ".join(found))
                else:
                    log.info("%s healthy again", ident.cdi_name)
                self._unhealthy_reasons[key] = found
            devs, healthy = by_kind.setdefault(ident.kind, ({}, {}))
            devs[ident.name] = ident
            healthy[ident.name] = not found
        for kind in self.servers.keys() - by_kind.keys():  # every device of a resource was renamed away
            by_kind[kind] = ({}, {})
        for kind, (devs, healthy) in by_kind.items():
            server = self.servers.get(kind)
            if server is None:
                server = self.servers[kind] = ResourceServer(kind, self.config.plugin_dir, self.config.pci_env)
                await server.set_devices(devs, healthy)
                await server.start()
            else:
                await server.set_devices(devs, healthy)
            await server.ensure_registered()
        self.ticks += 1

    def _retire_renamed(self, key: tuple[str, str], ident: DeviceIdentity) -> None:
        """Drop advertised names whose PCI function now has another name (an iommufd cdev number is assigned
        at bind time, so a rebind can turn vfio3 into vfio7): the old name must not linger as a phantom
        Unhealthy device in the node's capacity."""
        for old_key, old in list(self.advertised.items()):
            if old_key != key and set(old.bdfs) & set(ident.bdfs):
                del self.advertised[old_key]
                self._unhealthy_reasons.pop(old_key, None)
                log.info("%s is now %s: withdrawing the old name", old.cdi_name, ident.cdi_name)

    async def _wait_next(self, stop: asyncio.Event) -> None:
        """Wait for the next pass: `pace` over the health period, cut short when a registration attempt ends
        or a retry falls due (a pass looks at both, and a pace that waits for host changes would otherwise
        leave them unseen until its backstop)."""
        period = self.config.health_period_s
        attempts = []
        for server in self.servers.values():
            if server._registering is not None:
                attempts.append(server._registering)
            elif not server.registered and server._retry.delay_s > 0 and server.kubelet_present():
                period = min(period, server._retry.wait_s())  # a failed attempt's retry
        pace = asyncio.ensure_future(self.config.pace(stop, period))
        try:
            await asyncio.wait({pace, *attempts}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            pace.cancel()

    async def run(self, stop: asyncio.Event | None = None, once: bool = False) -> None:
        stop = stop or asyncio.Event()
        try:
            if self.config.wait_for_validations and not await self.wait_until_ready(stop):
                return
            give_up = time.monotonic() + ONCE_REGISTER_DEADLINE_S
            while not stop.is_set():
                await self.tick()
                if once and all(server.registered for server in self.servers.values()):
                    return
                if once and time.monotonic() > give_up:
                    raise RegistrationError(
                        f"the kubelet at {Path(self.config.plugin_dir) / KUBELET_SOCKET} did not accept "
                        f"{', '.join(sorted(k for k, v in self.servers.items() if not v.registered))} "
                        f"within {ONCE_REGISTER_DEADLINE_S:.0f} s"
                    )
                await self._wait_next(stop)
        finally:
            for server in self.servers.values():
                await server.stop()


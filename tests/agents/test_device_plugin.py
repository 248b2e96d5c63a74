"""The sandbox device plugin against ccgpu.sim.kubelet (a kubelet written from the proto) over real unix sockets."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import grpc
import pytest
from fakehost import H100_NVSWITCH, H100_SXM5, H200_SXM, FakeVfioHost

from ccgpu.agents import cdi
from ccgpu.agents.cdi import Aliases
from ccgpu.agents.device_plugin.server import DevicePluginAgent, DevicePluginConfig
from ccgpu.hw.sysfs import Sysfs
from ccgpu.sim.kubelet import FakeKubelet

PGPU = "nvidia.com/pgpu"
H, U = "Healthy", "Unhealthy"


@pytest.fixture
def plugin_dir():
    """A short path: unix socket paths are limited to 108 bytes, pytest's tmp_path can be longer."""
    d = Path(tempfile.mkdtemp(prefix="ccgpu-dp-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Node:
    """A fake VFIO host, its CDI spec, a kubelet and the plugin agent running as a task."""

    def __init__(self, root: Path, plugin_dir: Path, iommufd: bool = False, **config) -> None:
        self.host = FakeVfioHost(root, iommufd=iommufd)
        self.fs = Sysfs(root)
        self.kubelet = FakeKubelet(plugin_dir)
        self.aliases = config.pop("aliases", Aliases())
        self.config = DevicePluginConfig(
            host_root=str(root), plugin_dir=str(plugin_dir), aliases=self.aliases,
            rediscover_period_s=0.05, **config,
        )
        self.agent = DevicePluginAgent(self.config, discover=lambda fs: self.host.devices())
        self.stop = asyncio.Event()
        self.task: asyncio.Task | None = None

    def assert_advertised_ids_are_spec_names(self) -> None:
        """Checked at the end of every test: each Healthy ID the kubelet holds is a device of its kind's spec."""
        for resource in self.kubelet.plugins:
            healthy = {i for i, h in self.kubelet.health(resource).items() if h == H}
            assert healthy <= cdi.spec_device_names(self.fs, "/var/run/cdi", resource), resource

    def write_spec(self) -> cdi.WriteResult:
        return cdi.write_specs(self.fs, "/var/run/cdi", cdi.inventory(self.fs, self.host.devices(), self.aliases))

    async def __aenter__(self) -> Node:
        await self.kubelet.start()
        self.task = asyncio.get_running_loop().create_task(self.agent.run(self.stop))
        return self

    async def __aexit__(self, *exc) -> None:
        self.assert_advertised_ids_are_spec_names()
        self.stop.set()
        await asyncio.wait_for(self.task, 5)
        await self.kubelet.stop()


def two_gpu_node(tmp_path, plugin_dir, **kw) -> Node:
    node = Node(tmp_path, plugin_dir, **kw)
    node.host.add("0000:3a:00.0", group=12, numa=0, vfio_dev="vfio0")
    node.host.add("0000:ba:00.0", group=13, numa=1, vfio_dev="vfio1")
    node.host.write_readiness()
    node.write_spec()
    return node


async def test_plugin_registers_v1beta1_and_lists_healthy_devices_with_numa_topology(tmp_path, plugin_dir):
    async with two_gpu_node(tmp_path, plugin_dir) as node:
        await node.kubelet.wait_for_health(PGPU, {"12": H, "13": H})
        [reg] = node.kubelet.registrations
        assert (reg.version, reg.endpoint, reg.resource_name) == ("v1beta1", "ccgpu-pgpu.sock", PGPU)
        assert reg.options.get_preferred_allocation_available
        numa = {d.ID: [n.ID for n in d.topology.nodes] for d in node.kubelet.plugins[PGPU].devices}
        assert numa == {"12": [0], "13": [1]}


@pytest.mark.parametrize("iommufd", [False, True])
async def test_advertised_ids_are_exactly_the_cdi_spec_device_names(tmp_path, plugin_dir, iommufd):
    """kata-containers#12549 / #12186: plugin IDs that no CDI spec names give "unresolvable CDI devices"."""
    async with two_gpu_node(tmp_path, plugin_dir, iommufd=iommufd) as node:
        expected = {"vfio0", "vfio1"} if iommufd else {"12", "13"}
        await node.kubelet.wait_for(lambda k: set(k.health(PGPU)) == expected)
        assert cdi.spec_device_names(node.fs, "/var/run/cdi", PGPU) == expected
        resp = await node.kubelet.allocate(PGPU, sorted(expected))
        names = [d.name for d in resp.container_responses[0].cdi_devices]
        assert names == [f"{PGPU}={n}" for n in sorted(expected)]


async def test_a_device_missing_from_the_spec_is_not_advertised_until_the_spec_names_it(tmp_path, plugin_dir):
    async with two_gpu_node(tmp_path, plugin_dir) as node:
        node.host.add("0000:3b:00.0", group=14, numa=0)  # bound to vfio-pci, but the spec predates it
        await node.kubelet.wait_for_health(PGPU, {"12": H, "13": H})
        seen = node.agent.ticks
        await wait_until(lambda: node.agent.ticks >= seen + 3)  # rediscovered and re-checked since the add
        assert "14" not in node.kubelet.health(PGPU)
        node.write_spec()
        await node.kubelet.wait_for_health(PGPU, {"12": H, "13": H, "14": H})


async def test_allocate_returns_vfio_nodes_mrw_cdi_names_and_the_pci_env(tmp_path, plugin_dir):
    async with two_gpu_node(tmp_path, plugin_dir, pci_env=True) as node:
        await node.kubelet.wait_for_health(PGPU, {"12": H, "13": H})
        resp = await node.kubelet.allocate(PGPU, ["12", "13"], ["13"])
        first, second = resp.container_responses
        assert [(d.container_path, d.host_path, d.permissions) for d in first.devices] == [
            ("/dev/vfio/vfio", "/dev/vfio/vfio", "mrw"),
            ("/dev/vfio/12", "/dev/vfio/12", "mrw"),
            ("/dev/vfio/13", "/dev/vfio/13", "mrw"),
        ]
        assert [d.name for d in first.cdi_devices] == ["nvidia.com/pgpu=12", "nvidia.com/pgpu=13"]
        assert dict(first.envs) == {"PCI_RESOURCE_NVIDIA_COM_PGPU": "0000:3a:00.0,0000:ba:00.0"}
        assert [d.host_path for d in second.devices] == ["/dev/vfio/vfio", "/dev/vfio/13"]


async def test_iommufd_allocate_passes_only_the_cdev_node(tmp_path, plugin_dir):
    """dra-driver-nvidia-gpu#1036: legacy and iommufd nodes together break Kata."""
    async with two_gpu_node(tmp_path, plugin_dir, iommufd=True) as node:
        await node.kubelet.wait_for_health(PGPU, {"vfio0": H, "vfio1": H})
        resp = await node.kubelet.allocate(PGPU, ["vfio1"])
        assert [d.host_path for d in resp.container_responses[0].devices] == ["/dev/vfio/devices/vfio1"]
        assert dict(resp.container_responses[0].envs) == {}


async def test_allocate_with_unknown_ids_fails_invalid_argument_naming_them(tmp_path, plugin_dir):
    async with two_gpu_node(tmp_path, plugin_dir) as node:
        await node.kubelet.wait_for_health(PGPU, {"12": H, "13": H})
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await node.kubelet.allocate(PGPU, ["12", "99", "vfio7"])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "unknown device IDs for nvidia.com/pgpu: 99, vfio7" in err.value.details()
        assert "advertises: 12, 13" in err.value.details()


@pytest.mark.parametrize("loss", ["unbind", "node", "spec"])
async def test_device_goes_unhealthy_when_binding_node_or_spec_entry_goes_and_back_when_restored(
    tmp_path, plugin_dir, loss
):
    async with two_gpu_node(tmp_path, plugin_dir) as node:
        await node.kubelet.wait_for_health(PGPU, {"12": H, "13": H})
        spec_file = tmp_path / "var/run/cdi/nvidia.com-pgpu.yaml"
        saved = spec_file.read_bytes()
        if loss == "unbind":
            node.host.unbind("0000:3a:00.0")
        elif loss == "node":
            (tmp_path / "dev/vfio/12").unlink()
        else:
            cdi.write_specs(node.fs, "/var/run/cdi", [i for i in cdi.inventory(node.fs, node.host.devices())
                                                      if i.name != "12"])
        await node.kubelet.wait_for_health(PGPU, {"12": U, "13": H}, timeout=2.0)
        if loss == "unbind":
            node.host.bind("0000:3a:00.0")
        elif loss == "node":
            (tmp_path / "dev/vfio/12").touch()
        else:
            node.fs.write_file("var/run/cdi/nvidia.com-pgpu.yaml", saved)
        await node.kubelet.wait_for_health(PGPU, {"12": H, "13": H}, timeout=2.0)


async def test_an_iommufd_rebind_that_renames_the_cdev_withdraws_the_old_name(tmp_path, plugin_dir):
    """The kernel numbers vfio cdevs at bind time; a stale vfioN must not stay as a phantom Unhealthy device."""
    async with two_gpu_node(tmp_path, plugin_dir, iommufd=True) as node:
        await node.kubelet.wait_for_health(PGPU, {"vfio0": H, "vfio1": H})
        node.host.unbind("0000:3a:00.0")
        await node.kubelet.wait_for_health(PGPU, {"vfio0": U, "vfio1": H})
        node.host.bind("0000:3a:00.0", vfio_dev="vfio5")
        node.write_spec()
        await node.kubelet.wait_for_health(PGPU, {"vfio1": H, "vfio5": H})
        resp = await node.kubelet.allocate(PGPU, ["vfio5"])
        assert [d.host_path for d in resp.container_responses[0].devices] == ["/dev/vfio/devices/vfio5"]


async def test_losing_the_shared_container_node_makes_every_legacy_device_unhealthy(tmp_path, plugin_dir):
    async with two_gpu_node(tmp_path, plugin_dir) as node:
        await node.kubelet.wait_for_health(PGPU, {"12": H, "13": H})
        (tmp_path / "dev/vfio/vfio").unlink()
        await node.kubelet.wait_for_health(PGPU, {"12": U, "13": U}, timeout=2.0)


async def test_kubelet_restart_wiping_the_socket_dir_gets_a_fresh_socket_and_a_new_registration(
    tmp_path, plugin_dir
):
    async with two_gpu_node(tmp_path, plugin_dir) as node:
        await node.kubelet.wait_for_health(PGPU, {"12": H, "13": H})
        await node.kubelet.restart()
        assert not (plugin_dir / "ccgpu-pgpu.sock").exists()
        await node.kubelet.wait_for(lambda k: k.health(PGPU) == {"12": H, "13": H})  # timing: bench/
        assert len(node.kubelet.registrations) == 1  # the restarted kubelet's own record
        assert (plugin_dir / "ccgpu-pgpu.sock").is_socket()
        resp = await node.kubelet.allocate(PGPU, ["13"])
        assert resp.container_responses[0].cdi_devices[0].name == "nvidia.com/pgpu=13"


async def test_preferred_allocation_over_grpc_keeps_the_pod_on_one_numa_node(tmp_path, plugin_dir):
    node = Node(tmp_path, plugin_dir)
    for i, numa in enumerate([0, 1, 0, 1, 1]):
        node.host.add(f"0000:{0x10 + i:02x}:00.0", group=20 + i, numa=numa)
    node.host.write_readiness()
    node.write_spec()
    async with node:
        await node.kubelet.wait_for(lambda k: len(k.health(PGPU)) == 5)
        ids = ["20", "21", "22", "23", "24"]
        assert await node.kubelet.preferred_allocation(PGPU, ids, [], 3) == ["21", "23", "24"]
        assert await node.kubelet.preferred_allocation(PGPU, ids, ["20"], 2) == ["20", "22"]
        with pytest.raises(grpc.aio.AioRpcError, match="unknown device IDs for nvidia.com/pgpu: 77"):
            await node.kubelet.preferred_allocation(PGPU, ["77"], [], 1)


async def test_plugin_waits_for_workload_type_and_vfio_pci_ready_before_registering(tmp_path, plugin_dir):
    node = Node(tmp_path, plugin_dir)
    node.host.add("0000:3a:00.0", group=12)
    node.write_spec()
    async with node:
        for _ in range(3):
            assert await node.agent.wait_until_ready(_set_event()) is False
        validations = tmp_path / "run/nvidia/validations"
        validations.mkdir(parents=True)
        (validations / "workload-type").write_text("vm-passthrough")
        assert node.kubelet.registrations == []
        (validations / "vfio-pci-ready").write_text("true")
        await node.kubelet.wait_for_health(PGPU, {"12": H})


async def wait_until(predicate, timeout: float = 5.0) -> None:
    """Poll `predicate` until it holds, failing after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def _set_event() -> asyncio.Event:
    e = asyncio.Event()
    e.set()
    return e


async def test_empty_alias_registers_one_resource_per_model_and_nvswitches_separately(tmp_path, plugin_dir):
    node = Node(tmp_path, plugin_dir, aliases=Aliases(gpu=""))
    node.host.add("0000:3a:00.0", group=12, device_id=H100_SXM5)
    node.host.add("0000:4a:00.0", group=13, device_id=H200_SXM)
    node.host.add("0000:05:00.0", group=40, device_id=H100_NVSWITCH)
    node.host.write_readiness()
    node.write_spec()
    async with node:
        resources = {"nvidia.com/GH100_H100_SXM5_80GB", "nvidia.com/GH100_H200_SXM_141GB", "nvidia.com/nvswitch"}
        await node.kubelet.wait_for(lambda k: set(k.plugins) == resources)
        await node.kubelet.wait_for_health("nvidia.com/nvswitch", {"40": H})
        assert {r.endpoint for r in node.kubelet.registrations} == {
            "ccgpu-GH100_H100_SXM5_80GB.sock", "ccgpu-GH100_H200_SXM_141GB.sock", "ccgpu-nvswitch.sock"
        }


async def test_fake_kubelet_refuses_an_unsupported_api_version(plugin_dir):
    from ccgpu.agents.device_plugin import api_pb2 as pb
    from ccgpu.agents.device_plugin import api_pb2_grpc as pb_grpc

    async with FakeKubelet(plugin_dir) as kubelet:
        async with grpc.aio.insecure_channel(f"unix://{kubelet.socket}") as ch:
            with pytest.raises(grpc.aio.AioRpcError, match="supported: v1beta1"):
                await pb_grpc.RegistrationStub(ch).Register(
                    pb.RegisterRequest(version="v1alpha", endpoint="x.sock", resource_name=PGPU)
                )
        assert kubelet.registrations == []


class RefusingKubelet(FakeKubelet):
    async def Register(self, request, context):  # noqa: N802
        await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"{request.resource_name} is held by another plugin")


async def test_a_refused_registration_stops_the_plugin_with_the_kubelets_reason(tmp_path, plugin_dir):
    from ccgpu.agents.device_plugin.server import RegistrationError

    node = two_gpu_node(tmp_path, plugin_dir)
    node.kubelet = RefusingKubelet(plugin_dir)
    await node.kubelet.start()
    try:
        with pytest.raises(RegistrationError, match="held by another plugin"):
            await asyncio.wait_for(node.agent.run(node.stop), 10)
        assert not (plugin_dir / "ccgpu-pgpu.sock").exists()  # its server was stopped and the socket removed
    finally:
        await node.kubelet.stop()


async def test_plugin_keeps_serving_while_the_kubelet_is_away_and_registers_when_it_returns(tmp_path, plugin_dir):
    """The kubelet gone (for longer than any registration deadline) must not stop the plugin: it keeps serving
    and health-checking, and registers as soon as kubelet.sock is back."""
    node = two_gpu_node(tmp_path, plugin_dir)
    node.task = asyncio.get_running_loop().create_task(node.agent.run(node.stop))  # no kubelet yet
    try:
        await wait_until(lambda: (plugin_dir / "ccgpu-pgpu.sock").is_socket())
        ticks = node.agent.ticks
        await wait_until(lambda: node.agent.ticks >= ticks + 10)  # passes go on; nothing waits on the kubelet
        assert not node.task.done()
        await node.kubelet.start()
        await node.kubelet.wait_for_health(PGPU, {"12": H, "13": H})
        await node.kubelet.stop()  # away again, then back: a second registration on the same socket
        ticks = node.agent.ticks
        await wait_until(lambda: node.agent.ticks >= ticks + 10)
        await node.kubelet.start()
        await node.kubelet.wait_for_health(PGPU, {"12": H, "13": H})
        assert node.agent.servers[PGPU].registrations == 2
        node.assert_advertised_ids_are_spec_names()
    finally:
        node.stop.set()
        await asyncio.wait_for(node.task, 5)
        await node.kubelet.stop()


class SilentKubelet(FakeKubelet):
    """A kubelet that accepts the connection but never answers Register (hung, or busy restarting)."""

    asked = 0

    async def Register(self, request, context):  # noqa: N802
        self.asked += 1
        await asyncio.Event().wait()


async def test_a_kubelet_that_never_answers_does_not_hold_up_health_passes(tmp_path, plugin_dir):
    node = two_gpu_node(tmp_path, plugin_dir)
    node.kubelet = SilentKubelet(plugin_dir)
    async with node:
        await wait_until(lambda: node.agent.servers.get(PGPU) is not None)
        await wait_until(lambda: node.kubelet.asked)
        ticks = node.agent.ticks
        await wait_until(lambda: node.agent.ticks >= ticks + 10)  # a pass never waits on Register
        (tmp_path / "dev/vfio/12").unlink()  # health still followed while Register hangs
        server = node.agent.servers[PGPU]
        await wait_until(lambda: server.list_response().devices[0].health == U)
        assert not server.registered and not node.task.done()


def test_registration_backoff_doubles_to_its_cap_and_a_new_kubelet_socket_is_tried_at_once():
    from ccgpu.agents.device_plugin.server import RegistrationBackoff

    now = [100.0]
    backoff = RegistrationBackoff(first_s=0.05, max_s=5.0, clock=lambda: now[0])
    assert not backoff.due(None)  # no kubelet.sock: nothing to dial
    assert backoff.due(7)
    delays = []
    for _ in range(9):
        backoff.failed(7)
        delays.append(backoff.delay_s)
    assert delays == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert not backoff.due(7)
    now[0] += 4.9
    assert not backoff.due(7)
    assert backoff.due(8)  # the kubelet came back on a new socket file: no waiting out the backoff
    now[0] += 0.2
    assert backoff.due(7)


async def test_a_pace_that_waits_for_host_changes_still_sees_its_registration_through(tmp_path, plugin_dir):
    """With a `pace` that only returns on a host change (the cluster-in-a-box's), the pass that looks at a
    registration attempt's outcome must not wait for one: the attempt ending wakes the agent."""
    passes = []

    async def until_stopped(stop: asyncio.Event, seconds: float) -> None:
        passes.append(seconds)
        await stop.wait()

    async with two_gpu_node(tmp_path, plugin_dir, pace=until_stopped) as node:
        await node.kubelet.wait_for_health(PGPU, {"12": H, "13": H})
        await wait_until(lambda: node.agent.ticks >= 2)  # the attempt's end woke the pass that reads its outcome
        assert all(s._registering is None for s in node.agent.servers.values()), "the outcome was collected"
        # Parked in its pace after the last pass, with nothing else it waits on: no attempt in flight and no
        # retry due, so only a change (the pace returning) can start another pass.
        await wait_until(lambda: len(passes) == node.agent.ticks)
        assert all(s.registered and s._retry.delay_s == 0 for s in node.agent.servers.values())
        ticks = node.agent.ticks
        for _ in range(5):
            await asyncio.sleep(0)
        assert node.agent.ticks == ticks, "registered: no pass without a change"

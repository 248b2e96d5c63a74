"""kata-manager and the device plugin on ccgpu.sim.host's simulated kernel: unbind -> node gone -> Unhealthy."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from ccgpu.agents import cdi, kata_manager
from ccgpu.agents.device_plugin.server import DevicePluginAgent, DevicePluginConfig
from ccgpu.sim.host import SimulatedHost
from ccgpu.sim.kubelet import FakeKubelet

PGPU = "nvidia.com/pgpu"


@pytest.fixture
def scratch():
    """Short paths (unix sockets are limited to 108 bytes), on tmpfs when there is one."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    d = Path(tempfile.mkdtemp(prefix="ccgpu-sb-", dir=base))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _official_validate(shared: Path, spec: dict) -> None:
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    schema = json.loads((shared / "schemas/cdi/schema.json").read_text())
    defs = json.loads((shared / "schemas/cdi/defs.json").read_text())
    reg = Registry().with_resource("defs.json", Resource.from_contents(defs, default_specification=DRAFT7))
    jsonschema.Draft7Validator(schema, registry=reg).validate(spec)


@pytest.mark.parametrize(("profile", "mode"), [("8xh100-snp", "legacy"), ("8xh100-snp-iommufd", "iommufd")])
async def test_simulated_hgx_host_spec_plugin_and_unbind_rebind(scratch, shared, profile, mode):
    host = SimulatedHost.create(scratch / "h", profile, fixtures=shared / "fixtures", gpu_driver="vfio-pci")
    fs = host.sysfs
    config = kata_manager.KataManagerConfig(host_root=str(host.root))
    kata_manager.reconcile(fs, config)
    spec = yaml.safe_load((host.root / "var/run/cdi/nvidia.com-pgpu.yaml").read_text())
    _official_validate(shared, spec)
    names = [d["name"] for d in spec["devices"]]
    assert len(names) == len(host.gpus()) == 8
    nodes = {n["path"] for d in spec["devices"] for n in d["containerEdits"]["deviceNodes"]}
    if mode == "iommufd":
        assert all(n.startswith("/dev/vfio/devices/vfio") for n in nodes)
    else:
        assert "/dev/vfio/vfio" in nodes and not any(n.startswith("/dev/vfio/devices/") for n in nodes)

    (host.root / "run/nvidia/validations").mkdir(parents=True, exist_ok=True)
    fs.write_file("run/nvidia/validations/workload-type", "vm-passthrough")
    fs.write_file("run/nvidia/validations/vfio-pci-ready", "true")
    agent = DevicePluginAgent(
        DevicePluginConfig(host_root=str(host.root), plugin_dir=str(scratch / "dp"), rediscover_period_s=0.1), fs=fs
    )
    stop = asyncio.Event()
    async with FakeKubelet(scratch / "dp") as kubelet:
        task = asyncio.get_running_loop().create_task(agent.run(stop))
        try:
            all_healthy = {n: "Healthy" for n in names}
            await kubelet.wait_for_health(PGPU, all_healthy)
            victim = host.gpus()[0]
            [victim_ident] = [i for i in agent.advertised.values() if str(i.bdfs[0]) == victim]
            fs.write("sys/bus/pci/drivers/vfio-pci/unbind", victim)  # the simulated kernel drops the node
            assert not fs.exists(victim_ident.node_paths[-1])
            await kubelet.wait_for_health(PGPU, all_healthy | {victim_ident.name: "Unhealthy"})
            fs.write("sys/bus/pci/drivers/vfio-pci/bind", victim)
            await kubelet.wait_for_health(PGPU, all_healthy)
            resp = await kubelet.allocate(PGPU, [victim_ident.name])
            assert resp.container_responses[0].cdi_devices[0].name == victim_ident.cdi_name
            assert cdi.spec_device_names(fs, "/var/run/cdi", PGPU) == set(names)
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)

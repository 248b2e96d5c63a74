"""A minimal on-disk VFIO host for the CDI and device-plugin tests (and bench/device_plugin.py).

It lays out only what ccgpu.agents.cdi and the device plugin read through Sysfs -- the `driver` link of each
PCI function, `/dev/vfio/*` nodes, `/dev/iommu`, the validator's readiness files -- and keeps the matching
`PCIDevice` records, so tests can unbind a GPU or delete a node and watch the plugin react. It changes files
under a temporary root only. (The full simulated kernel is `ccgpu.sim.host`, on its own branch.)
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ccgpu.hw import catalog
from ccgpu.hw.pci import BDF, PCIDevice

H100_SXM5 = 0x2330
H200_SXM = 0x2335
H100_NVSWITCH = 0x22A3


class FakeVfioHost:
    def __init__(self, root: Path, iommufd: bool = False) -> None:
        self.root = Path(root)
        self._devices: dict[BDF, PCIDevice] = {}
        (self.root / "dev/vfio").mkdir(parents=True, exist_ok=True)
        (self.root / "dev/vfio/vfio").touch()
        (self.root / "sys/bus/pci/drivers/vfio-pci").mkdir(parents=True, exist_ok=True)
        (self.root / "sys/bus/pci/drivers/nvidia").mkdir(parents=True, exist_ok=True)
        if iommufd:
            (self.root / "dev/iommu").touch()

    def add(
        self,
        bdf: str,
        group: int,
        device_id: int = H100_SXM5,
        numa: int | None = 0,
        vfio_dev: str | None = None,
        driver: str | None = "vfio-pci",
    ) -> PCIDevice:
        b = BDF.parse(bdf)
        cls = catalog.CLASS_BRIDGE_OTHER if device_id == H100_NVSWITCH else catalog.CLASS_3D
        dev = PCIDevice(
            bdf=b, vendor=catalog.NVIDIA_VENDOR_ID, device=device_id, subsystem_vendor=0x10DE,
            subsystem_device=0x16C1, class_code=cls, revision=0xA1, modalias="", driver=None,
            driver_override=None, iommu_group=group, numa_node=numa, vfio_dev=vfio_dev, physfn=None,
        )
        (self.root / b.sysfs_path).mkdir(parents=True, exist_ok=True)
        self._devices[b] = dev
        if driver:
            self.bind(bdf, driver)
        return dev

    def devices(self) -> list[PCIDevice]:
        return list(self._devices.values())

    def bind(self, bdf: str, driver: str = "vfio-pci") -> None:
        b = BDF.parse(bdf)
        dev = self._devices[b]
        (self.root / f"sys/bus/pci/drivers/{driver}").mkdir(parents=True, exist_ok=True)
        link = self.root / b.sysfs_path / "driver"
        if link.is_symlink():
            link.unlink()
        os.symlink(f"../../../bus/pci/drivers/{driver}", link)
        self._devices[b] = dataclasses.replace(dev, driver=driver)
        if driver == "vfio-pci" or driver.endswith("_vfio_pci"):
            for node in self.nodes_of(dev):
                node.parent.mkdir(parents=True, exist_ok=True)
                node.touch()

    def unbind(self, bdf: str) -> None:
        """Like writing the BDF to `driver/unbind`: the link goes, and with it the VFIO nodes."""
        b = BDF.parse(bdf)
        dev = self._devices[b]
        (self.root / b.sysfs_path / "driver").unlink()
        self._devices[b] = dataclasses.replace(dev, driver=None)
        for node in self.nodes_of(dev):
            node.unlink(missing_ok=True)

    def nodes_of(self, dev: PCIDevice) -> list[Path]:
        nodes = [self.root / f"dev/vfio/{dev.iommu_group}"]
        if dev.vfio_dev:
            nodes.append(self.root / f"dev/vfio/devices/{dev.vfio_dev}")
        return nodes

    def write_readiness(self, workload: str = "vm-passthrough", vfio_ready: bool = True) -> None:
        d = self.root / "run/nvidia/validations"
        d.mkdir(parents=True, exist_ok=True)
        (d / "workload-type").write_text(workload)
        if vfio_ready:
            (d / "vfio-pci-ready").write_text("true")

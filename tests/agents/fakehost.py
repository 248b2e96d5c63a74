"""A minimal on-disk VFIO host for the CDI and device-plugin tests (and bench/device_plugin.py).

It lays out what ccgpu.hw.pci's reader and the device plugin read through Sysfs -- each PCI function's
attribute files, `driver` and `iommu_group` links and `vfio-dev/`, `/dev/vfio/*` nodes, `/dev/iommu`, the
validator's readiness files -- so `devices()` is the real `enumerate_devices`, and tests can unbind a GPU or
delete a node and watch the plugin react. It changes files under a temporary root only. (The full simulated
kernel, with side effects on writes, is `ccgpu.sim.host`, on its own branch.)
"""

from __future__ import annotations

import os
from pathlib import Path

from ccgpu.hw import catalog
from ccgpu.hw.pci import BDF, PCIDevice, enumerate_devices, read_device
from ccgpu.hw.sysfs import Sysfs

H100_SXM5 = 0x2330
H200_SXM = 0x2335
H100_NVSWITCH = 0x22A3


class FakeVfioHost:
    def __init__(self, root: Path, iommufd: bool = False) -> None:
        self.root = Path(root)
        self._groups: dict[BDF, int] = {}
        self._cdevs: dict[BDF, str] = {}
        (self.root / "dev/vfio").mkdir(parents=True, exist_ok=True)
        (self.root / "dev/vfio/vfio").touch()
        (self.root / "sys/bus/pci/devices").mkdir(parents=True, exist_ok=True)
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
        d = self.root / b.sysfs_path
        d.mkdir(parents=True, exist_ok=True)
        attrs = {
            "vendor": "0x10de", "device": f"0x{device_id:04x}", "subsystem_vendor": "0x10de",
            "subsystem_device": "0x16c1", "class": f"0x{cls:06x}", "revision": "0xa1",
            "driver_override": "(null)", "numa_node": "-1" if numa is None else str(numa),
            "modalias": f"pci:v000010DEd{device_id:08X}sv000010DEsd000016C1bc{cls >> 16:02X}"
            f"sc{(cls >> 8) & 0xFF:02X}i{cls & 0xFF:02X}",
        }
        for name, value in attrs.items():
            (d / name).write_text(value + "\n")
        (self.root / f"sys/kernel/iommu_groups/{group}/devices").mkdir(parents=True, exist_ok=True)
        os.symlink(f"../../../kernel/iommu_groups/{group}", d / "iommu_group")
        self._groups[b] = group
        if vfio_dev:
            self._cdevs[b] = vfio_dev
        if driver:
            self.bind(bdf, driver)
        return read_device(Sysfs(self.root), b)

    def devices(self) -> list[PCIDevice]:
        """What ccgpu.hw.pci reads from this tree right now."""
        return enumerate_devices(Sysfs(self.root))

    def bind(self, bdf: str, driver: str = "vfio-pci", vfio_dev: str | None = None) -> None:
        """Bind to `driver`; on an iommufd host `vfio_dev` gives the cdev a new name, as a real rebind may."""
        b = BDF.parse(bdf)
        if vfio_dev is not None:
            self._cdevs[b] = vfio_dev
        (self.root / f"sys/bus/pci/drivers/{driver}").mkdir(parents=True, exist_ok=True)
        link = self.root / b.sysfs_path / "driver"
        if link.is_symlink():
            link.unlink()
        os.symlink(f"../../../bus/pci/drivers/{driver}", link)
        if driver == "vfio-pci" or driver.endswith("_vfio_pci"):
            if b in self._cdevs:
                (self.root / b.sysfs_path / "vfio-dev" / self._cdevs[b]).mkdir(parents=True, exist_ok=True)
            for node in self.nodes_of(b):
                node.parent.mkdir(parents=True, exist_ok=True)
                node.touch()

    def unbind(self, bdf: str) -> None:
        """Like writing the BDF to `driver/unbind`: the link goes, and with it vfio-dev/ and the VFIO nodes."""
        b = BDF.parse(bdf)
        (self.root / b.sysfs_path / "driver").unlink()
        if b in self._cdevs:
            (self.root / b.sysfs_path / "vfio-dev" / self._cdevs[b]).rmdir()
            (self.root / b.sysfs_path / "vfio-dev").rmdir()
        for node in self.nodes_of(b):
            node.unlink(missing_ok=True)

    def nodes_of(self, b: BDF) -> list[Path]:
        nodes = [self.root / f"dev/vfio/{self._groups[b]}"]
        if b in self._cdevs:
            nodes.append(self.root / f"dev/vfio/devices/{self._cdevs[b]}")
        return nodes

    def write_readiness(self, workload: str = "vm-passthrough", vfio_ready: bool = True) -> None:
        d = self.root / "run/nvidia/validations"
        d.mkdir(parents=True, exist_ok=True)
        (d / "workload-type").write_text(workload)
        if vfio_ready:
            (d / "vfio-pci-ready").write_text("true")

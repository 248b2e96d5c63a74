"""Host trees for hw tests: real device captures laid out the way the kernel lays out sysfs, plus platform files."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from ccgpu.hw.pci import BDF

# Attribute files of a plain NVIDIA function, used when a test builds a device without a capture.
_DEFAULT_ATTRS = {
    "vendor": "0x10de",
    "subsystem_vendor": "0x10de",
    "subsystem_device": "0x16c1",
    "revision": "0xa1",
    "driver_override": "(null)",
    "numa_node": "-1",
}


class HostTree:
    """Builds a root directory that `Sysfs(root)` reads like a host: sysfs, procfs, /lib/modules, /dev."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "sys/bus/pci/devices").mkdir(parents=True, exist_ok=True)

    def file(self, rel: str, text: str) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    def link(self, rel: str, target: str) -> None:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_symlink():
            p.unlink()
        os.symlink(target, p)

    # --- PCI devices, laid out as the kernel does -------------------------------------------------
    def _device_dir(self, bdf: BDF) -> str:
        return f"sys/devices/pci{bdf.domain:04x}:{bdf.bus:02x}/{bdf}"

    def device(
        self,
        bdf: str,
        device: str = "0x2330",
        cls: str = "0x030200",
        driver: str | None = "nvidia",
        iommu_group: int | None = None,
        attrs: dict[str, str] | None = None,
    ) -> BDF:
        """A PCI function with attribute files (each ending in a newline, as the kernel writes them)."""
        b = BDF.parse(bdf)
        values = dict(_DEFAULT_ATTRS, device=device, **{"class": cls})
        values["modalias"] = (
            f"pci:v{int(values['vendor'], 16):08X}d{int(device, 16):08X}sv{int(values['subsystem_vendor'], 16):08X}"
            f"sd{int(values['subsystem_device'], 16):08X}bc{int(cls, 16) >> 16:02X}sc{(int(cls, 16) >> 8) & 0xFF:02X}"
            f"i{int(cls, 16) & 0xFF:02X}"
        )
        values.update(attrs or {})
        for name, value in values.items():
            self.file(f"{self._device_dir(b)}/{name}", value + "\n")
        self._wire(b, driver, iommu_group)
        return b

    def capture(self, capture_dir: Path, bdf: str | None = None, iommu_group: int | None = None) -> BDF:
        """Lay one real device capture (fixtures/<name>/sysfs) into the tree at its own BDF or at `bdf`."""
        src = capture_dir / "sysfs"
        real = (src / "_realpath.txt").read_text().strip()  # /sys/devices/pci0000:00/0000:00:06.0
        b = BDF.parse(bdf or real.rsplit("/", 1)[-1])
        for f in sorted(src.iterdir()):
            if f.name.startswith("_") or f.name == "config.hex":
                continue
            self.file(f"{self._device_dir(b)}/{f.name}", f.read_text())
        links = {}
        for line in (src / "_links.txt").read_text().splitlines():
            name, _, target = line.partition(" -> ")
            links[name.strip()] = target.strip()
        driver = links.get("driver") or None
        self._wire(b, driver.rsplit("/", 1)[-1] if driver else None, iommu_group)
        return b

    def _wire(self, b: BDF, driver: str | None, iommu_group: int | None) -> None:
        ddir = self._device_dir(b)
        self.link(f"sys/bus/pci/devices/{b}", f"../../../devices/pci{b.domain:04x}:{b.bus:02x}/{b}")
        if driver:
            (self.root / f"sys/bus/pci/drivers/{driver}").mkdir(parents=True, exist_ok=True)
            self.link(f"{ddir}/driver", f"../../../bus/pci/drivers/{driver}")
            self.link(f"sys/bus/pci/drivers/{driver}/{b}", f"../../../../devices/pci{b.domain:04x}:{b.bus:02x}/{b}")
        if iommu_group is not None:
            self.link(f"{ddir}/iommu_group", f"../../../kernel/iommu_groups/{iommu_group}")
            self.link(
                f"sys/kernel/iommu_groups/{iommu_group}/devices/{b}",
                f"../../../../devices/pci{b.domain:04x}:{b.bus:02x}/{b}",
            )

    # --- platform ---------------------------------------------------------------------------------
    def snp_host(self, release: str = "6.17.0-5-generic", vfio_loaded: bool = True) -> None:
        """An AMD host with SEV-SNP on, IOMMU on, vfio-pci available (and loaded unless told otherwise)."""
        self.file("proc/cpuinfo", "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sev sev_es sev_snp svm\n\n")
        for p, v in (("sev", "Y"), ("sev_es", "Y"), ("sev_snp", "Y")):
            self.file(f"sys/module/kvm_amd/parameters/{p}", v + "\n")
        self.file("sys/fs/cgroup/misc.capacity", "sev 410\nsev_es 99\n")
        self.file("proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 amd_iommu=on iommu=pt modprobe.blacklist=nouveau\n")
        self.file("proc/sys/kernel/osrelease", release + "\n")
        modules = "kvm_amd 217088 0 - Live 0x0000000000000000\nkvm 1409024 1 kvm_amd, Live 0x0000000000000000\n"
        if vfio_loaded:
            modules += "vfio_pci 16384 0 - Live 0x0000000000000000\nvfio_iommu_type1 49152 0 - Live 0x0\n"
        self.file("proc/modules", modules)
        self.file(
            f"lib/modules/{release}/modules.alias",
            "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n"
            "alias pci:v000010DEd*sv*sd*bc03sc02i00* nvidia\n",
        )
        self.file(f"lib/modules/{release}/modules.builtin", "kernel/drivers/vfio/vfio.ko\n")
        self.file("dev/vfio/vfio", "")
        (self.root / "sys/class/iommu/ivhd0").mkdir(parents=True, exist_ok=True)


@pytest.fixture
def host(tmp_path) -> HostTree:
    """An empty host tree, on tmpfs when the machine has one (small files are much faster there)."""
    if not os.access("/dev/shm", os.W_OK):
        yield HostTree(tmp_path / "root")
        return
    d = Path(tempfile.mkdtemp(prefix="ccgpu-hw-", dir="/dev/shm"))
    try:
        yield HostTree(d / "root")
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def h100_capture(shared) -> Path:
    return shared / "fixtures" / "h100-sxm5-80gb"


@pytest.fixture(scope="session")
def h200_capture(shared) -> Path:
    return shared / "fixtures" / "h200-sxm-141gb"


@pytest.fixture(scope="session")
def host_tree_factory():
    """The HostTree class, for tests (hypothesis) that build many trees in their own temp directories."""
    return HostTree

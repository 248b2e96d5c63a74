"""Property test: any sequence of sysfs writes leaves the simulated tree consistent with itself.

After every write, accepted or refused: a device's `driver` link, its back link under the driver and its
uevent `DRIVER=` line agree; `/dev/vfio/<group>` exists exactly when every device of the group is on
vfio-pci or unbound and one is on vfio-pci (read from the files, not from the simulator's state); and a
refused write changed nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccgpu.hw.sysfs import Sysfs
from ccgpu.sim.host import SimulatedHost

BDFS = ["0000:41:00.0", "0000:41:00.1", "0000:c1:00.0", "0000:99:00.0"]  # GPU, its audio, the NIC, absent
DRIVERS = ["nvidia", "vfio-pci", "snd_hda_intel", "mlx5_core"]
ACTIONS = [
    "override-vfio",
    "override-clear",
    "override-junk",
    "unbind-current",
    "unbind-other",
    "bind-vfio",
    "bind-nvidia",
    "probe",
    "reset",
    "reset-junk",
]


def current_driver(fs: Sysfs, bdf: str) -> str | None:
    link = f"sys/bus/pci/devices/{bdf}/driver"
    return os.path.basename(fs.readlink(link)) if fs.is_link(link) else None


def apply(fs: Sysfs, action: str, bdf: str) -> None:
    """One write: mostly the ones vfio-manager-like code makes, some of them wrong."""
    dev = f"sys/bus/pci/devices/{bdf}"
    if action.startswith("override"):
        value = {"override-vfio": "vfio-pci", "override-clear": "\n", "override-junk": "vfio_pci"}[action]
        fs.write(f"{dev}/driver_override", value)
    elif action == "unbind-current":
        fs.write(f"sys/bus/pci/drivers/{current_driver(fs, bdf) or 'vfio-pci'}/unbind", bdf)
    elif action == "unbind-other":
        other = next(d for d in DRIVERS if d != current_driver(fs, bdf))
        fs.write(f"sys/bus/pci/drivers/{other}/unbind", bdf)
    elif action.startswith("bind"):
        fs.write(f"sys/bus/pci/drivers/{'vfio-pci' if action == 'bind-vfio' else 'nvidia'}/bind", bdf)
    elif action == "probe":
        fs.write("sys/bus/pci/drivers_probe", bdf)
    else:
        fs.write(f"{dev}/reset", "1" if action == "reset" else "on")


def check_consistent(root: Path) -> None:
    fs = Sysfs(root)
    drivers_of: dict[str, str | None] = {}
    for bdf in fs.listdir("sys/bus/pci/devices"):
        driver = current_driver(fs, bdf)
        drivers_of[bdf] = driver
        uevent = fs.read(f"sys/bus/pci/devices/{bdf}/uevent").splitlines()
        assert [line[7:] for line in uevent if line.startswith("DRIVER=")] == ([driver] if driver else [])
        for name in DRIVERS:
            assert fs.exists(f"sys/bus/pci/drivers/{name}/{bdf}") == (driver == name)
    for group in fs.listdir("sys/kernel/iommu_groups"):
        members = [drivers_of[b] for b in fs.listdir(f"sys/kernel/iommu_groups/{group}/devices")]
        viable = "vfio-pci" in members and all(d in (None, "vfio-pci") for d in members)
        assert fs.exists(f"dev/vfio/{group}") == viable, (group, members)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(ACTIONS), st.sampled_from(BDFS)), min_size=1, max_size=12))
def test_any_write_sequence_keeps_links_uevent_and_vfio_nodes_consistent(shared, ops):
    tmpfs = "/dev/shm" if os.path.isdir("/dev/shm") else None
    scratch = Path(tempfile.mkdtemp(prefix="ccgpu-simhost-prop-", dir=tmpfs))
    try:
        host = SimulatedHost.create(scratch / "h", "1xh100-pcie-snp", fixtures=shared / "fixtures")
        fs = host.sysfs
        for action, bdf in ops:
            before = host.state().to_json()
            try:
                apply(fs, action, bdf)
            except OSError:
                assert host.state().to_json() == before, f"refused {action} {bdf} changed the state"
            check_consistent(host.root)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

"""`ccgpu sim host --no-mount`: materialise a simulated host tree for people and scripts (the FUSE mount, the
default, is tests/sim/test_simhost_mount.py)."""

from __future__ import annotations

from typer.testing import CliRunner

from ccgpu.cli import app
from ccgpu.hw.sysfs import Sysfs
from ccgpu.sim.host import SimSysfs, SimulatedHost, sysfs_for

runner = CliRunner()


def test_list_profiles_names_every_profile_with_its_description():
    result = runner.invoke(app, ["sim", "host", "--list-profiles"])
    assert result.exit_code == 0
    names = [line.split()[0] for line in result.output.splitlines()]
    assert {
        "8xh100-snp",
        "8xh100-snp-iommufd",
        "1xh200-snp",
        "4xh100-notee",
        "8xb200-tdx",
        "1xh100-pcie-snp",
    } <= set(names)
    assert "SEV-SNP" in result.output


def test_sim_host_builds_a_tree_another_process_can_open(host_dir):
    target = host_dir / "node"
    result = runner.invoke(
        app, ["sim", "host", str(target), "--no-mount", "--profile", "8xh100-snp-iommufd", "--gpu-driver", "vfio-pci"]
    )
    assert result.exit_code == 0, result.output
    assert "0000:18:00.0" in result.output and "vfio-pci" in result.output
    host = SimulatedHost.open(target)
    assert host.profile == "8xh100-snp-iommufd"
    assert len(host.gpus()) == 8 and (target / "dev/iommu").exists()


def test_sim_host_no_iommu_variant(host_dir):
    result = runner.invoke(app, ["sim", "host", str(host_dir / "n"), "--no-mount", "-p", "1xh200-snp", "--no-iommu"])
    assert result.exit_code == 0, result.output
    assert Sysfs(host_dir / "n").listdir("sys/kernel/iommu_groups") == []


def test_sim_host_refuses_unknown_profile_and_bad_driver_naming_what_is_accepted(host_dir):
    bad = runner.invoke(app, ["sim", "host", str(host_dir / "x"), "--profile", "9xh100"])
    assert bad.exit_code == 2 and "known profiles" in bad.output and "8xh100-snp" in bad.output
    assert not (host_dir / "x").exists()
    drv = runner.invoke(app, ["sim", "host", str(host_dir / "y"), "--gpu-driver", "nouveau"])
    assert drv.exit_code == 2 and "nvidia, vfio-pci, none" in drv.output
    missing = runner.invoke(app, ["sim", "host"])
    assert missing.exit_code == 2 and "DIRECTORY" in missing.output


def test_sysfs_for_gives_the_simulated_kernel_only_for_simulated_trees(make_host, host_dir):
    host = make_host("1xh200-snp")
    assert isinstance(sysfs_for(host.root), SimSysfs)
    plain = host_dir / "plain"
    plain.mkdir()
    assert type(sysfs_for(plain)) is Sysfs


def test_sim_host_cc_mode_option_boots_gpus_in_that_mode(host_dir):
    result = runner.invoke(
        app, ["sim", "host", str(host_dir / "p"), "--no-mount", "-p", "1xh200-snp", "--cc-mode", "ppcie"]
    )
    assert result.exit_code == 0, result.output
    host = SimulatedHost.open(host_dir / "p")
    assert host.gpu(host.gpus()[0]).query_cc().ppcie_current == "on"
    bad = runner.invoke(app, ["sim", "host", str(host_dir / "q"), "--cc-mode", "maybe"])
    assert bad.exit_code == 2 and "off, on, devtools, ppcie" in bad.output

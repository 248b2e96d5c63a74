"""kata-manager in the cluster-in-a-box writes the containerd drop-in (restart method `none`) on every
vm-passthrough node, for main configs of version 2 and 3, and `ccgpu simulate`'s outcomes check it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from ccgpu import labels
from ccgpu.sim.cluster import Cluster, parse_nodes
from ccgpu.sim.containerd_check import dropin_runtimes, imports
from ccgpu.sim.host import SimulatedHost
from ccgpu.sim.profiles import ProfileError

pytestmark = pytest.mark.timeout(90)



async def test_each_vm_passthrough_node_gets_a_dropin_naming_the_three_kata_runtime_classes(workdir):
    c = Cluster(parse_nodes("2x1xh200-snp,1x1xh200-snp:container"), workdir)
    await c.start()
    try:
        await c.apply_policy()
        report = await c.wait_converged(60)
        assert report.ok, report.failed()
        dropin_outcomes = [o for o in report.outcomes if "containerd drop-in" in o.what]
        assert len(dropin_outcomes) == 2 and all(o.ok for o in dropin_outcomes), dropin_outcomes
        versions = set()
        for spec in c.specs[:2]:
            found, version, why = dropin_runtimes(c.hosts[spec.name])
            assert not why and set(labels.RUNTIME_CLASSES) <= set(found), (spec.name, found, why)
            versions.add(version)
            root = Path(c.hosts[spec.name])
            assert (root / "etc/containerd/config.toml.ccgpu-backup").is_file(), "the original main file is kept"
        assert versions == {2, 3}, "both config layouts were exercised"
        ctr = Path(c.hosts[c.specs[2].name])
        assert not (ctr / "etc/containerd/conf.d").exists(), "a container node's containerd is left alone"
        assert tomllib.loads((ctr / "etc/containerd/config.toml").read_text()).get("imports") is None
    finally:
        await c.stop()


def test_dropin_check_says_why_a_dropin_would_not_load(tmp_path):
    root = tmp_path / "h"
    SimulatedHost.create(root, "1xh200-snp", containerd_config_version=3)
    found, version, why = dropin_runtimes(str(root))
    assert found == [] and "ccgpu-kata.toml missing" in why
    (root / "etc/containerd/conf.d").mkdir(parents=True)
    (root / "etc/containerd/conf.d/ccgpu-kata.toml").write_text(
        'version = 3\n[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kata-qemu-nvidia-gpu]\n')
    found, version, why = dropin_runtimes(str(root))
    assert version == 3 and "does not import /etc/containerd/conf.d/ccgpu-kata.toml" in why


def test_imports_resolve_relative_entries_and_globs_from_the_main_configs_directory():
    assert imports(["conf.d/ccgpu-kata.toml"], "/etc/containerd/conf.d/ccgpu-kata.toml")
    assert imports(["/etc/containerd/conf.d/*.toml"], "/etc/containerd/conf.d/ccgpu-kata.toml")
    assert not imports(["/etc/k3s/conf.d/*.toml"], "/etc/containerd/conf.d/ccgpu-kata.toml")


def test_host_profile_refuses_a_containerd_config_version_other_than_2_or_3(tmp_path):
    with pytest.raises(ProfileError, match="accepted: 2, 3"):
        SimulatedHost.create(tmp_path / "h", "1xh200-snp", containerd_config_version=1)

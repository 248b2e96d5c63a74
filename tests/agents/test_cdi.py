"""ccgpu.agents.cdi: device identity, spec generation, validation against the official CDI schema, writing."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path

import pytest
import yaml
from fakehost import H100_NVSWITCH, H100_SXM5, H200_SXM, FakeVfioHost
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccgpu.agents import cdi
from ccgpu.agents.cdi import Aliases, CDIError, HostMode
from ccgpu.hw.sysfs import Sysfs

SCHEMA_DIR = Path(cdi.__file__).parent / "cdi_schema"


@functools.lru_cache(maxsize=2)
def _official_validator(shared: Path):
    """A validator built straight from shared/schemas/cdi, independent of the package's vendored copy."""
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    schema = json.loads((shared / "schemas/cdi/schema.json").read_text())
    defs = json.loads((shared / "schemas/cdi/defs.json").read_text())
    reg = Registry().with_resource("defs.json", Resource.from_contents(defs, default_specification=DRAFT7))
    return jsonschema.Draft7Validator(schema, registry=reg)


def test_vendored_schema_is_identical_to_the_shared_copy(shared):
    for name in ("schema.json", "defs.json"):
        assert (SCHEMA_DIR / name).read_bytes() == (shared / "schemas/cdi" / name).read_bytes(), name


def test_validator_accepts_the_official_good_examples_and_refuses_the_bad(shared):
    goods = sorted((shared / "schemas/cdi/testdata/good").glob("*.json"))
    bads = sorted((shared / "schemas/cdi/testdata/bad").glob("*.json"))
    assert goods and bads, "the official CDI examples are missing from shared/schemas/cdi/testdata"
    for good in goods:
        cdi.validate_spec(json.loads(good.read_text()))
    for bad in bads:
        text = bad.read_text()
        with pytest.raises(CDIError, match="CDI"):
            cdi.validate_spec(json.loads(text) if text.strip() else None)


def test_legacy_identity_is_the_iommu_group_with_container_and_group_nodes(tmp_path):
    host = FakeVfioHost(tmp_path)
    dev = host.add("0000:3a:00.0", group=12, vfio_dev="vfio3")  # has a cdev, but the host has no /dev/iommu
    fs = Sysfs(tmp_path)
    assert cdi.host_mode(fs, dev) is HostMode.LEGACY
    ident = cdi.identify(dev, HostMode.LEGACY)
    assert (ident.name, ident.kind, ident.cdi_name) == ("12", "nvidia.com/pgpu", "nvidia.com/pgpu=12")
    assert ident.nodes == ("/dev/vfio/vfio", "/dev/vfio/12")


def test_iommufd_identity_is_the_cdev_name_with_only_the_cdev_node(tmp_path):
    """dra-driver-nvidia-gpu#1036: passing both iommufd and legacy nodes breaks Kata, so never both."""
    host = FakeVfioHost(tmp_path, iommufd=True)
    dev = host.add("0000:3a:00.0", group=12, vfio_dev="vfio3")
    assert cdi.host_mode(Sysfs(tmp_path), dev) is HostMode.IOMMUFD
    ident = cdi.identify(dev, HostMode.IOMMUFD)
    assert ident.name == "vfio3"
    assert ident.nodes == ("/dev/vfio/devices/vfio3",)


@pytest.mark.parametrize("cdev", ["../../etc", "vfio1/../x", "vfio", "vfio3x", "vfio3\n", "xvfio3", "vfio-3"])
def test_identify_refuses_a_cdev_name_that_could_become_another_path(tmp_path, cdev):
    host = FakeVfioHost(tmp_path, iommufd=True)
    dev = dataclasses.replace(host.add("0000:3a:00.0", group=12, vfio_dev="vfio3"), vfio_dev=cdev)
    with pytest.raises(CDIError, match="vfioN"):
        cdi.identify(dev, HostMode.IOMMUFD)


@pytest.mark.parametrize("group", [None, -1])
def test_identify_refuses_a_legacy_device_without_a_real_iommu_group(tmp_path, group):
    """`-1` would become `/dev/vfio/-1` and the CDI name `pgpu=-1`; no group means no VFIO node at all."""
    host = FakeVfioHost(tmp_path)
    dev = dataclasses.replace(host.add("0000:3a:00.0", group=12), iommu_group=group)
    with pytest.raises(CDIError, match="legacy VFIO needs an IOMMU group"):
        cdi.identify(dev, HostMode.LEGACY)


def test_empty_alias_gives_per_model_kinds_and_nvswitches_their_own_kind(tmp_path):
    host = FakeVfioHost(tmp_path)
    host.add("0000:3a:00.0", group=12, device_id=H100_SXM5)
    host.add("0000:4a:00.0", group=13, device_id=H200_SXM)
    host.add("0000:05:00.0", group=40, device_id=H100_NVSWITCH)
    idents = cdi.inventory(Sysfs(tmp_path), host.devices(), Aliases(gpu=""))
    assert [(i.kind, i.name) for i in idents] == [
        ("nvidia.com/GH100_H100_SXM5_80GB", "12"),
        ("nvidia.com/GH100_H200_SXM_141GB", "13"),
        ("nvidia.com/nvswitch", "40"),
    ]


@pytest.mark.parametrize("alias", ["pgpu/x", "-pgpu", "9gpu", "a" * 64, "gpu!", "pgpu-"])
def test_bad_alias_is_refused_with_the_accepted_form(alias):
    with pytest.raises(CDIError, match="must start with a letter"):
        Aliases(gpu=alias)


def test_inventory_skips_devices_not_bound_to_vfio_and_accepts_variant_vfio_drivers(tmp_path):
    """NVIDIA's sandbox plugin skips GPUs on variant VFIO drivers such as nvgrace_gpu_vfio_pci (operands.md §4a)."""
    host = FakeVfioHost(tmp_path)
    host.add("0000:3a:00.0", group=12)
    host.add("0000:3b:00.0", group=14, driver="nvidia")
    host.add("0000:3c:00.0", group=15, driver="nvgrace_gpu_vfio_pci")
    host.add("0000:3d:00.0", group=16, driver=None)
    names = [i.name for i in cdi.inventory(Sysfs(tmp_path), host.devices())]
    assert names == ["12", "15"]


def test_a_gpu_is_a_candidate_exactly_when_pci_calls_it_a_gpu_whatever_its_programming_interface(tmp_path):
    """The CDI spec must describe every GPU the vfio-manager binds (it selects by PCIDevice.is_gpu)."""
    host = FakeVfioHost(tmp_path)
    [dev] = [host.add("0000:3a:00.0", group=12)]
    for class_code in (0x030000, 0x030001, 0x030200, 0x030201, 0x068000, 0x040300):
        variant = dataclasses.replace(dev, class_code=class_code)
        assert cdi.is_candidate(variant) is (variant.is_gpu or variant.is_nvswitch), hex(class_code)


def test_two_gpus_in_one_iommu_group_are_one_device_with_both_functions(tmp_path):
    host = FakeVfioHost(tmp_path)
    host.add("0000:3a:00.0", group=12)
    host.add("0000:3b:00.0", group=12)
    [ident] = cdi.inventory(Sysfs(tmp_path), host.devices())
    assert [str(b) for b in ident.bdfs] == ["0000:3a:00.0", "0000:3b:00.0"]


def test_legacy_spec_validates_against_the_official_schema_with_version_0_5_0(tmp_path, shared):
    host = FakeVfioHost(tmp_path)
    for i in range(4):
        host.add(f"0000:{0x3a + i:02x}:00.0", group=12 + i)
    specs = cdi.build_specs(cdi.inventory(Sysfs(tmp_path), host.devices()))
    spec = specs["nvidia.com/pgpu"]
    _official_validator(shared).validate(spec)
    assert spec["cdiVersion"] == "0.5.0"
    assert spec["devices"][0] == {
        "name": "12",
        "containerEdits": {
            "deviceNodes": [
                {"path": "/dev/vfio/vfio", "hostPath": "/dev/vfio/vfio"},
                {"path": "/dev/vfio/12", "hostPath": "/dev/vfio/12"},
            ]
        },
    }


def test_iommufd_spec_validates_and_never_mentions_legacy_nodes(tmp_path, shared):
    host = FakeVfioHost(tmp_path, iommufd=True)
    host.add("0000:3a:00.0", group=12, vfio_dev="vfio0")
    host.add("0000:3b:00.0", group=13, vfio_dev="vfio1")
    spec = cdi.build_specs(cdi.inventory(Sysfs(tmp_path), host.devices()))["nvidia.com/pgpu"]
    _official_validator(shared).validate(spec)
    paths = [n["path"] for d in spec["devices"] for n in d["containerEdits"]["deviceNodes"]]
    assert paths == ["/dev/vfio/devices/vfio0", "/dev/vfio/devices/vfio1"]
    assert spec["cdiVersion"] == "0.5.0"  # hostPath needs 0.5.0


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, "0.3.0"),
        ({"devices": [{"name": "1", "containerEdits": {}}]}, "0.5.0"),
        ({"containerEdits": {"mounts": [{"hostPath": "/a", "containerPath": "/a", "type": "bind"}]}}, "0.4.0"),
        ({"annotations": {"a": "b"}}, "0.6.0"),
        ({"kind": "nvidia.com/p.gpu"}, "0.6.0"),
        ({"containerEdits": {"additionalGids": [44]}}, "0.7.0"),
        ({"containerEdits": {"netDevices": [{"hostInterfaceName": "e", "name": "n"}]}}, "1.1.0"),
    ],
)
def test_required_version_is_the_lowest_the_fields_need(extra, expected):
    spec = {"cdiVersion": "", "kind": "nvidia.com/pgpu", "devices": [{"name": "a", "containerEdits": {}}]}
    spec.update(extra)
    assert cdi.required_version(spec) == expected


def test_validate_refuses_a_version_too_low_for_the_fields():
    spec = {"cdiVersion": "0.3.0", "kind": "nvidia.com/pgpu",
            "devices": [{"name": "12", "containerEdits": {"deviceNodes": [{"path": "/dev/vfio/12"}]}}]}
    with pytest.raises(CDIError, match="need at least 0.5.0"):
        cdi.validate_spec(spec)


def test_write_specs_writes_atomically_rewrites_on_change_and_removes_stale_kinds(tmp_path):
    host = FakeVfioHost(tmp_path)
    host.add("0000:3a:00.0", group=12, device_id=H100_SXM5)
    host.add("0000:05:00.0", group=40, device_id=H100_NVSWITCH)
    fs = Sysfs(tmp_path)
    other = tmp_path / "var/run/cdi/nvidia.com-gpu.yaml"  # nvidia-ctk's file: not ours, never touched
    other.parent.mkdir(parents=True)
    other.write_text("cdiVersion: 0.5.0\n")

    first = cdi.write_specs(fs, "/var/run/cdi", cdi.inventory(fs, host.devices()))
    assert first.written == ("nvidia.com-nvswitch.yaml", "nvidia.com-pgpu.yaml")
    assert cdi.spec_device_names(fs, "var/run/cdi", "nvidia.com/pgpu") == {"12"}

    again = cdi.write_specs(fs, "/var/run/cdi", cdi.inventory(fs, host.devices()))
    assert again.written == () and len(again.unchanged) == 2

    host.unbind("0000:05:00.0")
    host.add("0000:3b:00.0", group=13)
    third = cdi.write_specs(fs, "/var/run/cdi", cdi.inventory(fs, host.devices()))
    assert third.removed == ("nvidia.com-nvswitch.yaml",)
    assert cdi.spec_device_names(fs, "var/run/cdi", "nvidia.com/pgpu") == {"12", "13"}
    assert sorted(os.listdir(tmp_path / "var/run/cdi")) == ["nvidia.com-gpu.yaml", "nvidia.com-pgpu.yaml"]
    assert other.read_text() == "cdiVersion: 0.5.0\n"


def test_a_spec_file_of_the_same_name_that_another_tool_wrote_is_refused_and_nothing_changes(tmp_path):
    """The CDI Go library names a generated spec `nvidia.com-pgpu.yaml` too; ccgpu must not overwrite it."""
    host = FakeVfioHost(tmp_path)
    host.add("0000:3a:00.0", group=12, device_id=H100_SXM5)
    host.add("0000:05:00.0", group=40, device_id=H100_NVSWITCH)
    fs = Sysfs(tmp_path)
    theirs = tmp_path / "var/run/cdi/nvidia.com-pgpu.yaml"
    theirs.parent.mkdir(parents=True)
    theirs.write_text("cdiVersion: 0.5.0\nkind: nvidia.com/pgpu\ndevices: []\n")
    with pytest.raises(CDIError, match="nvidia.com-pgpu.yaml exists and ccgpu did not write it"):
        cdi.write_specs(fs, "/var/run/cdi", cdi.inventory(fs, host.devices()))
    assert os.listdir(tmp_path / "var/run/cdi") == ["nvidia.com-pgpu.yaml"]  # not even the NVSwitch spec
    assert theirs.read_text() == "cdiVersion: 0.5.0\nkind: nvidia.com/pgpu\ndevices: []\n"


def test_written_file_is_yaml_that_keeps_numeric_names_as_strings(tmp_path, shared):
    host = FakeVfioHost(tmp_path)
    host.add("0000:3a:00.0", group=7)
    fs = Sysfs(tmp_path)
    cdi.write_specs(fs, "/var/run/cdi", cdi.inventory(fs, host.devices()))
    loaded = yaml.safe_load((tmp_path / "var/run/cdi/nvidia.com-pgpu.yaml").read_text())
    assert loaded["devices"][0]["name"] == "7"
    _official_validator(shared).validate(loaded)


def test_an_invalid_spec_changes_nothing_on_disk(tmp_path, monkeypatch):
    host = FakeVfioHost(tmp_path)
    host.add("0000:3a:00.0", group=12)
    fs = Sysfs(tmp_path)
    cdi.write_specs(fs, "/var/run/cdi", cdi.inventory(fs, host.devices()))
    before = (tmp_path / "var/run/cdi/nvidia.com-pgpu.yaml").read_bytes()
    monkeypatch.setattr(cdi, "required_version", lambda spec: "9.9.9")
    host.add("0000:3b:00.0", group=13)
    with pytest.raises(CDIError):
        cdi.write_specs(fs, "/var/run/cdi", cdi.inventory(fs, host.devices()))
    assert (tmp_path / "var/run/cdi/nvidia.com-pgpu.yaml").read_bytes() == before


# --- property: over random device sets, every spec is valid and names match the plugin's device IDs ---------

_device = st.tuples(
    st.integers(min_value=0, max_value=4095),  # IOMMU group
    st.sampled_from([H100_SXM5, H200_SXM, 0x2331, 0x2901, H100_NVSWITCH, 0x2350]),
    st.one_of(st.none(), st.integers(min_value=0, max_value=255)),  # vfio cdev number
    st.sampled_from(["vfio-pci", "nvgrace_gpu_vfio_pci", "nvidia", None]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    devices=st.lists(_device, max_size=12, unique_by=lambda d: d[0]),
    iommufd=st.booleans(),
    gpu_alias=st.sampled_from(["pgpu", "", "gpu.vfio"]),
)
def test_random_device_sets_give_valid_specs_whose_names_are_the_advertised_ids(
    tmp_path_factory, shared, devices, iommufd, gpu_alias
):
    root = tmp_path_factory.mktemp("host")
    host = FakeVfioHost(root, iommufd=iommufd)
    cdevs: set[int] = set()
    for n, (group, dev_id, cdev, driver) in enumerate(devices):
        if cdev in cdevs:
            cdev = None
        cdevs.add(cdev)
        host.add(f"0000:{n + 1:02x}:00.0", group=group, device_id=dev_id,
                 vfio_dev=None if cdev is None else f"vfio{cdev}", driver=driver)
    fs = Sysfs(root)
    idents = cdi.inventory(fs, host.devices(), Aliases(gpu=gpu_alias))
    cdi.write_specs(fs, "/var/run/cdi", idents)
    validator = _official_validator(shared)
    by_kind: dict[str, set[str]] = {}
    for ident in idents:
        by_kind.setdefault(ident.kind, set()).add(ident.name)
        assert len(ident.name) <= 63
        assert all(not (n.startswith("/dev/vfio/devices/") and "/dev/vfio/vfio" in ident.nodes) for n in ident.nodes)
    files = {p.name for p in (root / "var/run/cdi").glob("*.yaml")} if (root / "var/run/cdi").exists() else set()
    assert files == {cdi.spec_file_name(k) for k in by_kind}
    for kind, names in by_kind.items():
        text = (root / "var/run/cdi" / cdi.spec_file_name(kind)).read_text()
        spec = yaml.safe_load(text)
        validator.validate(spec)
        cdi.validate_spec(spec)
        assert cdi.spec_device_names(fs, "/var/run/cdi", kind) == names


def _pci_logs(caplog, level: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ccgpu.cdi" and r.levelname == level]


def test_discovery_logs_each_unreadable_pci_entry_once_until_the_problem_changes(tmp_path, caplog):
    """An agent rediscovers every second: a stuck, unreadable entry must not log a line every pass."""
    host = FakeVfioHost(tmp_path)
    host.add("0000:3a:00.0", group=12)
    devices = tmp_path / "sys/bus/pci/devices"
    (devices / "not-a-bdf").mkdir()
    discover, fs = cdi.DeviceDiscovery(), Sysfs(tmp_path)
    caplog.set_level("INFO", logger="ccgpu.cdi")
    for _ in range(3):
        assert [str(d.bdf) for d in discover(fs)] == ["0000:3a:00.0"]
    warnings = _pci_logs(caplog, "WARNING")
    assert len(warnings) == 1 and "entry 'not-a-bdf' ignored" in warnings[0]
    (devices / "not-a-bdf").rename(devices / "still-not-a-bdf")  # a different problem: logged once more
    discover(fs)
    discover(fs)
    warnings = _pci_logs(caplog, "WARNING")
    assert len(warnings) == 2 and "entry 'still-not-a-bdf' ignored" in warnings[1]
    (devices / "still-not-a-bdf").rmdir()
    discover(fs)
    discover(fs)
    cleared = _pci_logs(caplog, "INFO")
    assert len(cleared) == 2 and "'not-a-bdf'" in cleared[0] and "'still-not-a-bdf'" in cleared[1]
    assert len(_pci_logs(caplog, "WARNING")) == 2

import pytest

from ccgpu.hw import catalog
from ccgpu.hw.catalog import Arch, Kind


@pytest.mark.parametrize(
    "device_id,resource",
    [(0x2330, "GH100_H100_SXM5_80GB"), (0x2331, "GH100_H100_PCIE"), (0x2335, "GH100_H200_SXM_141GB"),
     (0x2321, "GH100_H100L_94GB"), (0x2901, "GB100_B200")],
)
def test_resource_names_follow_the_sandbox_device_plugin_rule(device_id, resource):
    assert catalog.lookup(device_id).resource_name == resource


@pytest.mark.parametrize("device_id", [0x2335, 0x233B, 0x2321, 0x2329, 0x2342, 0x2901, 0x2941, 0x2BB5])
def test_h200_h100nvl_h20_gh200_blackwell_are_cc_capable_gpu_operator_1851(device_id):
    """gpu-operator#1851/#1798: an id allowlist missed H200 and H100 NVL; capability comes from arch."""
    assert catalog.lookup(device_id).cc_capable


def test_ppcie_is_hopper_gpus_and_the_h100_nvswitch_only():
    assert catalog.lookup(0x2330).ppcie_capable
    assert catalog.lookup(0x22A3).ppcie_capable and catalog.lookup(0x22A3).kind is Kind.NVSWITCH
    assert not catalog.lookup(0x2901).ppcie_capable
    assert not catalog.lookup(0x1AF1).ppcie_capable


def test_unknown_ids_are_classified_by_architecture_range_not_dropped():
    hopper = catalog.lookup(0x2360)
    assert not hopper.known and hopper.arch is Arch.HOPPER and hopper.cc_capable
    blackwell = catalog.lookup(0x3190)
    assert blackwell.arch is Arch.BLACKWELL and blackwell.cc_capable
    other = catalog.lookup(0x1234)
    assert other.arch is Arch.UNKNOWN and not other.cc_capable
    assert catalog.lookup(0x2399, catalog.CLASS_BRIDGE_OTHER).kind is Kind.NVSWITCH


def test_ampere_is_not_cc_capable():
    assert not catalog.lookup(0x20B0).cc_capable

import pytest

from ccgpu.hw.ccmode import (
    CC_MODE_INVALID,
    GpuAdminToolsBackend,
    error_lines,
    parse_query,
    parse_tool_output,
)
from ccgpu.hw.pci import BDF

# Shapes as nvidia_gpu_tools.py prints them (reference/operands.md §3).
QUERY_OUTPUT = """NVIDIA GPU Tools version v2025.10.20
Topo:
  Intel root port 0000:37:01.0
   PCI 0000:38:00.0 0x1000:0xc030
     GPU 0000:3a:00.0 H100-PCIE 0x2324 BAR0 0x66042000000
2024-03-29,05:28:52.728 INFO     Selected GPU 0000:3a:00.0 H100-PCIE 0x2324 BAR0 0x66042000000
2024-03-29,05:28:52.880 INFO     GPU 0000:3a:00.0 H100-PCIE 0x2324 BAR0 0x66042000000 CC mode is devtools
2024-03-29,05:28:52.881 INFO     NvSwitch 0000:05:00.0 LS10 0x22a3 BAR0 0x84000000 PPCIe mode is on
"""


def test_query_lines_map_bdf_to_mode_and_skip_banner_and_topology():
    assert parse_query(QUERY_OUTPUT, "CC") == {BDF.parse("0000:3a:00.0"): "devtools"}
    assert parse_query(QUERY_OUTPUT, "PPCIe") == {BDF.parse("0000:05:00.0"): "on"}
    kinds = [ln.kind for ln in parse_tool_output(QUERY_OUTPUT)]
    assert kinds == [None, "GPU", "NvSwitch"]


def test_interrupted_switch_state_is_reported_verbatim_gpu_admin_tools_issue_7():
    out = f"2024-03-29,05:28:52.880 INFO     GPU 0000:3a:00.0 H100 0x2321 BAR0 0x7e042000000 CC mode is {CC_MODE_INVALID}\n"
    assert parse_query(out, "CC") == {BDF.parse("0000:3a:00.0"): CC_MODE_INVALID}


def test_error_lines_are_collected_for_the_failure_message():
    out = "2024-03-29,05:28:52.880 ERROR    Configuring CC not supported on GPU 0000:3a:00.0 A100 0x20b0 BAR0 0x1\n"
    assert error_lines(out) == ["Configuring CC not supported on GPU 0000:3a:00.0 A100 0x20b0 BAR0 0x1"]


def test_argv_is_a_list_with_the_validated_bdf_never_a_shell_string():
    backend = GpuAdminToolsBackend("/opt/gpu-admin-tools/nvidia_gpu_tools.py", python="python3")
    assert backend.argv(BDF.parse("3a:00.0"), "--query-cc-mode") == [
        "python3", "/opt/gpu-admin-tools/nvidia_gpu_tools.py", "--devices=0000:3a:00.0", "--query-cc-mode",
    ]


async def test_setting_an_invalid_mode_is_refused_before_running_anything(tmp_path):
    backend = GpuAdminToolsBackend(tmp_path / "does-not-exist.py")
    with pytest.raises(ValueError, match="accepted: on, off, devtools"):
        await backend.set_cc(BDF.parse("3a:00.0"), "On")

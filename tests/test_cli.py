from typer.testing import CliRunner

from ccgpu.cli import app

runner = CliRunner()


def test_help_lists_every_command_with_one_line_help():
    out = runner.invoke(app, ["--help"])
    assert out.exit_code == 0
    for command in ("doctor", "simulate", "agent", "sim", "attest", "version"):
        assert command in out.output


# `ccgpu simulate` (the cluster-in-a-box) is tested in tests/sim/cluster/test_simulate_cli.py; the node preflight it
# replaced is `ccgpu doctor` on a simulated host (tests/hw/test_doctor_simhost.py).

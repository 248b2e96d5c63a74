import json

from typer.testing import CliRunner

from ccgpu.cli import app

runner = CliRunner()


def test_help_lists_every_command_with_one_line_help():
    out = runner.invoke(app, ["--help"])
    assert out.exit_code == 0
    for command in ("doctor", "simulate", "agent", "sim", "attest", "version"):
        assert command in out.output


def test_simulate_builds_a_ready_snp_node_and_exits_zero(shared, monkeypatch):
    monkeypatch.setenv("CCGPU_SHARED", str(shared))
    out = runner.invoke(app, ["simulate", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["ready"] is True
    assert {c["id"] for c in report["checks"] if c["status"] == "fail"} == set()


def test_simulate_on_a_host_without_tee_exits_one_naming_the_cpu_tee_check(shared, monkeypatch):
    monkeypatch.setenv("CCGPU_SHARED", str(shared))
    out = runner.invoke(app, ["simulate", "--json", "--profile", "4xh100-notee"])
    assert out.exit_code == 1
    failed = {c["id"] for c in json.loads(out.output)["checks"] if c["status"] == "fail"}
    assert "cpu-tee" in failed

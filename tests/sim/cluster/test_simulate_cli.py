"""`ccgpu simulate` as README runs it: default node set, JSON summary, exit code; and its refusals of bad input."""

from __future__ import annotations

import json
import subprocess

import pytest

from ccgpu.sim.cluster import NodeSpecError, parse_nodes
from tests.conftest import ccgpu_command, ccgpu_env


@pytest.mark.timeout(120)
def test_simulate_json_on_the_default_nodes_converges_and_runs_the_sample_pod(tmp_path):
    proc = subprocess.run(ccgpu_command("simulate", "--json", "--workdir", str(tmp_path / "w")),  # noqa: S603 - our own CLI
                          env=ccgpu_env(), capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["ok"] and all(o["ok"] for o in summary["outcomes"])
    rows = {r["node"]: r for r in summary["nodes"]}
    snp = rows["8xh100-snp-vm-0"]
    assert (snp["cc_mode_state"], snp["cc_ready_state"], snp["gpus_on_vfio"], snp["pgpu_allocatable"]) == (
        "on", "true", 8, 8)
    assert rows["4xh100-notee-vm-2"]["cc_mode_state"] == "off"
    assert "driver" in rows["4xh100-notee-ctr-3"]["deploy"]
    pod = summary["sample_pod"]
    assert pod["phase"] == "Running" and pod["node"] in ("8xh100-snp-vm-0", "1xh200-snp-vm-1")
    assert pod["cdi_devices"].startswith("nvidia.com/pgpu=")
    kept = tmp_path / "w" / "nodes" / pod["node"] / "var/run/cdi"
    assert any(kept.iterdir()), "--workdir keeps each node's CDI spec for inspection"


@pytest.mark.parametrize(("text", "match"), [
    ("3xnope", "unknown host profile 'nope'|nope"), ("8xh100-snp:kata", "accepted: vm-passthrough, container"),
    ("", "no nodes"), ("0x8xh100-snp", "unknown host profile"),
])
def test_bad_node_specs_say_what_is_accepted(text, match):
    with pytest.raises(NodeSpecError, match=match):
        parse_nodes(text)


def test_nodes_count_cycles_through_the_profile_items():
    specs = parse_nodes("1xh200-snp,4xh100-notee:container", total=5)
    assert [s.profile for s in specs] == ["1xh200-snp", "4xh100-notee"] * 2 + ["1xh200-snp"]
    assert len({s.name for s in specs}) == 5


def test_simulate_refuses_a_non_empty_workdir_and_changes_nothing(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    proc = subprocess.run(ccgpu_command("simulate", "--workdir", str(tmp_path)), env=ccgpu_env(),  # noqa: S603 - our own CLI
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not an empty directory" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.timeout(120)
def test_simulate_scenario_file_runs_its_steps_and_reports_each(tmp_path):
    steps = tmp_path / "steps.yaml"
    steps.write_text(
        "steps:\n"
        "  - fall_off_bus: {node: '#0', gpu: 0}\n"
        "  - expect: {node: '#0', allocatable: {nvidia.com/pgpu: '0'}, timeout: 20}\n"
        "  - pod: {name: p2, runtimeClass: kata-qemu-nvidia-gpu-snp, gpus: 1}\n"
        "  - expect: {pod: p2, phase: Running, node: '#1', timeout: 20}\n"
    )
    proc = subprocess.run(ccgpu_command("simulate", "--json", "-p", "2x1xh200-snp", "--scenario", str(steps)),  # noqa: S603 - our own CLI
                          env=ccgpu_env(), capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert [s["ok"] for s in summary["scenario"]] == [True] * 4


def test_a_scenario_with_an_unknown_action_is_refused_before_anything_starts(tmp_path):
    steps = tmp_path / "steps.yaml"
    steps.write_text("steps:\n  - reboot: '#0'\n")
    proc = subprocess.run(ccgpu_command("simulate", "--scenario", str(steps)), env=ccgpu_env(),  # noqa: S603 - our own CLI
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "each step is one of: label, pod" in proc.stderr

"""`ccgpu agent containerd-config apply|cleanup` end to end in a subprocess, as an operator would run it."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest
from containerd_hosts import DROPIN, KATA_DIR, KUBEADM_V2, MAIN, make_host, snapshot
from typer.testing import CliRunner

from ccgpu.cli import app
from tests.conftest import ccgpu_command, ccgpu_env


def _ccgpu(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603 - our own CLI, argv list
        ccgpu_command(*args), env=ccgpu_env(), capture_output=True, text=True, timeout=60, check=False
    )


def test_apply_then_cleanup_from_the_command_line_round_trips_the_host(tmp_path: Path) -> None:
    root = make_host(tmp_path, KUBEADM_V2)
    original = {k: v[0] for k, v in snapshot(root).items()}
    common = ["--host-root", str(root), "--restart", "none"]
    applied = _ccgpu(
        "agent", "containerd-config", "apply", *common, "--kata-config-dir", KATA_DIR,
        "--runtime-class", "kata-qemu-nvidia-gpu-snp", "--runtime-class", "kata-qemu-nvidia-gpu-tdx",
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    assert f"wrote {DROPIN}" in applied.stdout and f"wrote {MAIN}" in applied.stdout
    dropin = (root / DROPIN.lstrip("/")).read_text()
    assert "kata-qemu-nvidia-gpu-snp" in dropin and "runtimes.kata-qemu-nvidia-gpu]" not in dropin

    again = _ccgpu("agent", "containerd-config", "apply", *common, "--kata-config-dir", KATA_DIR,
                   "--runtime-class", "kata-qemu-nvidia-gpu-snp", "--runtime-class", "kata-qemu-nvidia-gpu-tdx")  # fmt: skip
    assert again.returncode == 0 and again.stdout.strip() == "apply: nothing to change"

    cleaned = _ccgpu("agent", "containerd-config", "cleanup", *common)
    assert cleaned.returncode == 0, cleaned.stderr
    assert {k: v[0] for k, v in snapshot(root).items()} == original


def test_bad_input_exits_2_with_the_reason_and_changes_nothing(tmp_path: Path) -> None:
    root = make_host(tmp_path, "version = 9\n")
    before = snapshot(root)
    done = _ccgpu("agent", "containerd-config", "apply", "--host-root", str(root), "--restart", "none")
    assert done.returncode == 2
    assert "error: /etc/containerd/config.toml declares version = 9; accepted: `version = 2`" in done.stderr
    bad_method = _ccgpu("agent", "containerd-config", "apply", "--host-root", str(root), "--restart", "hup")
    assert bad_method.returncode == 2
    assert (
        "--restart 'hup' is not a restart method; accepted: auto, signal, systemd, none" in bad_method.stderr
    )
    assert snapshot(root) == before


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf"])
def test_a_restart_timeout_that_is_not_a_positive_finite_number_exits_2_and_changes_nothing(
    tmp_path: Path, timeout: str
) -> None:
    root = make_host(tmp_path, KUBEADM_V2)
    before = snapshot(root)
    done = CliRunner().invoke(
        app, ["agent", "containerd-config", "apply", "--host-root", str(root), "--restart", "none",
              "--restart-timeout", timeout],
    )  # fmt: skip
    assert done.exit_code == 2
    assert "--restart-timeout must be a positive, finite number of seconds" in done.output
    assert snapshot(root) == before


def test_agent_help_lists_containerd_config_with_its_commands() -> None:
    listing = _ccgpu("agent", "containerd-config", "--help")
    assert listing.returncode == 0
    assert "apply" in listing.stdout and "cleanup" in listing.stdout


@pytest.mark.parametrize(
    "args,wanted",
    [([], "/opt/kata/bin/containerd-shim-kata-v2"), (["--kata-shim", "/usr/bin/containerd-shim-kata-v2"],
     "/usr/bin/containerd-shim-kata-v2"), (["--kata-shim", ""], None)],
    ids=["kata-deploy-default", "custom", "containerd-path"],
)
def test_kata_shim_option_sets_or_leaves_out_each_runtimes_runtime_path(
    tmp_path: Path, args: list[str], wanted: str | None
) -> None:
    root = make_host(tmp_path, KUBEADM_V2)
    done = CliRunner().invoke(
        app, ["agent", "containerd-config", "apply", "--host-root", str(root), "--restart", "none", *args]
    )
    assert done.exit_code == 0, done.output
    dropin = tomllib.loads((root / DROPIN.lstrip("/")).read_text())
    runtimes = dropin["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
    kata = [rt for name, rt in runtimes.items() if name.startswith("kata-")]
    assert len(kata) == 3 and all(rt.get("runtime_path") == wanted for rt in kata)

"""The `ccgpu` command line: one typer app, each subcommand a thin shell over a module that does the work."""

from __future__ import annotations

import typer

from ccgpu import __version__

app = typer.Typer(
    name="ccgpu",
    help="Confidential GPU workloads on Kubernetes: Kata confidential VMs with NVIDIA GPUs in CC mode.",
    no_args_is_help=True,
    add_completion=False,
)
agent_app = typer.Typer(help="Node agents (one per operand DaemonSet).", no_args_is_help=True)
sim_app = typer.Typer(
    help="Simulation tools: simulated hosts and the Kubernetes API simulator.", no_args_is_help=True
)
attest_app = typer.Typer(
    help="Attestation: KBS server, guest client, evidence verification.", no_args_is_help=True
)
app.add_typer(agent_app, name="agent")
app.add_typer(sim_app, name="sim")
app.add_typer(attest_app, name="attest")
containerd_config_app = typer.Typer(
    help="Add or remove the containerd runtimes for the Kata runtime classes (drop-in + imports entry).",
    no_args_is_help=True,
)
agent_app.add_typer(containerd_config_app, name="containerd-config")


@app.command()
def version() -> None:
    """Print the ccgpu version."""
    typer.echo(__version__)


_HOST_ROOT = typer.Option("/", "--host-root", help="The host's root (in a pod, the host mount).")
_MAIN_CONFIG = typer.Option(
    "/etc/containerd/config.toml", "--main-config", help="containerd's main config (host path)."
)
_DROPIN = typer.Option(
    "/etc/containerd/conf.d/ccgpu-kata.toml", "--dropin", help="ccgpu's drop-in file (host path)."
)
_RESTART = typer.Option(
    "auto",
    "--restart",
    help="How to restart containerd: auto (systemd if booted with it), systemd, signal, none.",
)
_SOCKET = typer.Option("/run/containerd/containerd.sock", "--containerd-socket", help="For --restart signal.")
_UNIT = typer.Option("containerd.service", "--systemd-unit", help="For --restart systemd.")
_TIMEOUT = typer.Option(30.0, "--restart-timeout", help="Seconds to wait for containerd to come back.")


@containerd_config_app.command("apply")
def containerd_config_apply(
    host_root: str = _HOST_ROOT,
    main_config: str = _MAIN_CONFIG,
    dropin: str = _DROPIN,
    runtime_class: list[str] = typer.Option(  # noqa: B008 - typer's declaration style
        None, "--runtime-class", help="RuntimeClass handler to add (repeatable; default: all three)."
    ),
    kata_config_dir: str = typer.Option(
        "/opt/kata/share/defaults/kata-containers",
        "--kata-config-dir",
        help="Where Kata's shim configs live.",
    ),
    containerd_version: str = typer.Option(
        None,
        "--containerd-version",
        help="The node's containerRuntimeVersion, e.g. containerd://1.7.2 (optional).",
    ),
    restart: str = _RESTART,
    containerd_socket: str = _SOCKET,
    systemd_unit: str = _UNIT,
    restart_timeout: float = _TIMEOUT,
) -> None:
    """Write the Kata runtimes drop-in, import it from the main config, restart containerd."""
    from ccgpu.agents import containerd_cli

    containerd_cli.run_apply(
        host_root,
        main_config,
        dropin,
        runtime_class,
        kata_config_dir,
        containerd_version,
        restart,
        containerd_socket,
        systemd_unit,
        restart_timeout,
    )


@containerd_config_app.command("cleanup")
def containerd_config_cleanup(
    host_root: str = _HOST_ROOT,
    main_config: str = _MAIN_CONFIG,
    dropin: str = _DROPIN,
    restart: str = _RESTART,
    containerd_socket: str = _SOCKET,
    systemd_unit: str = _UNIT,
    restart_timeout: float = _TIMEOUT,
) -> None:
    """Remove ccgpu's drop-in and restore the main config byte for byte, then restart containerd."""
    from ccgpu.agents import containerd_cli

    containerd_cli.run_cleanup(
        host_root, main_config, dropin, restart, containerd_socket, systemd_unit, restart_timeout
    )


def main() -> None:  # pragma: no cover - console entry point
    app()

"""The `ccgpu` command line: one typer app, each subcommand a thin shell over a module that does the work."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ccgpu import __version__

app = typer.Typer(
    name="ccgpu",
    help="Confidential GPU workloads on Kubernetes: Kata confidential VMs with NVIDIA GPUs in CC mode.",
    no_args_is_help=True,
    add_completion=False,
)
agent_app = typer.Typer(help="Node agents (one per operand DaemonSet).", no_args_is_help=True)
sim_app = typer.Typer(help="Simulation tools: simulated hosts and the Kubernetes API simulator.", no_args_is_help=True)
attest_app = typer.Typer(help="Attestation: KBS server, guest client, evidence verification.", no_args_is_help=True)
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


@app.command()
def doctor(
    root: Annotated[
        str, typer.Option("--root", help="Host root to inspect: / on the node, a host mount, a capture.")
    ] = "/",
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the stable JSON report (README: ccgpu doctor).")
    ] = False,
    workload: Annotated[str, typer.Option("--workload", help="vm-passthrough or container.")] = "vm-passthrough",
) -> None:
    """Preflight a node for confidential GPU pods and name the fix for each problem."""
    import json
    import os

    from rich.console import Console

    from ccgpu.hw import doctor as doc
    from ccgpu.hw.doctor_output import render_table, report_json

    try:
        wl = doc.Workload.parse(workload)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--workload") from None
    if not os.path.isdir(root):
        raise typer.BadParameter(f"{root!r} is not a directory; give a host root such as / or /host", param_hint="--root")
    report = doc.diagnose(root, wl)
    if json_output:
        typer.echo(json.dumps(report_json(report), indent=2))
    else:
        render_table(report, Console())
    raise typer.Exit(0 if report.ready else 1)


@sim_app.command("host")
def sim_host(
    directory: Annotated[
        Path | None, typer.Argument(metavar="DIR", help="Empty or absent directory to build the host tree in.")
    ] = None,
    profile: Annotated[str, typer.Option("--profile", "-p", help="Host profile (see --list-profiles).")] = "8xh100-snp",
    list_profiles: Annotated[bool, typer.Option("--list-profiles", help="List the host profiles and exit.")] = False,
    gpu_driver: Annotated[
        str | None,
        typer.Option("--gpu-driver", help="Driver the GPUs start on: nvidia, vfio-pci or none (default: the profile's)."),
    ] = None,
    iommu: Annotated[
        bool | None, typer.Option("--iommu/--no-iommu", help="Override the profile's IOMMU setting.")
    ] = None,
) -> None:
    """Build a simulated host tree (sysfs, /dev/vfio, /proc) from a profile, for tests and scripts."""
    from ccgpu.sim import host as simhost
    from ccgpu.sim.profiles import ProfileError
    from ccgpu.sim.profiles import list_profiles as profiles

    if list_profiles:
        for p in profiles():
            typer.echo(f"{p.name:<20} {p.description}")
        return
    if directory is None:
        raise typer.BadParameter("give the DIRECTORY to build the host in (or --list-profiles)", param_hint="DIRECTORY")
    overrides: dict[str, object] = {}
    if gpu_driver is not None:
        if gpu_driver not in ("nvidia", "vfio-pci", "none"):
            raise typer.BadParameter(f"{gpu_driver!r}; accepted: nvidia, vfio-pci, none", param_hint="--gpu-driver")
        overrides["gpu_driver"] = None if gpu_driver == "none" else gpu_driver
    if iommu is not None:
        overrides["iommu"] = iommu
    try:
        built = simhost.SimulatedHost.create(directory, profile, **overrides)
    except (ProfileError, simhost.SimHostError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(simhost.describe(built))


_HostRoot = Annotated[str, typer.Option("--host-root", help="The host's root (in a pod, the host mount).")]
_MainConfig = Annotated[str, typer.Option("--main-config", help="containerd's main config (host path).")]
_Dropin = Annotated[str, typer.Option("--dropin", help="ccgpu's drop-in file (host path).")]
_Restart = Annotated[
    str, typer.Option("--restart", help="How to restart containerd: auto (systemd if booted with it), systemd, signal, none.")
]
_Socket = Annotated[str, typer.Option("--containerd-socket", help="containerd's socket (host path), for --restart signal.")]
_Unit = Annotated[str, typer.Option("--systemd-unit", help="containerd's unit, for --restart systemd.")]
_Timeout = Annotated[float, typer.Option("--restart-timeout", help="Seconds to wait for containerd to come back.")]


@containerd_config_app.command("apply")
def containerd_config_apply(
    host_root: _HostRoot = "/",
    main_config: _MainConfig = "/etc/containerd/config.toml",
    dropin: _Dropin = "/etc/containerd/conf.d/ccgpu-kata.toml",
    runtime_class: Annotated[
        list[str] | None,
        typer.Option("--runtime-class", help="RuntimeClass handler to add (repeatable; default: all three)."),
    ] = None,
    kata_config_dir: Annotated[
        str, typer.Option("--kata-config-dir", help="Where Kata's shim configs live (host path).")
    ] = "/opt/kata/share/defaults/kata-containers",
    containerd_version: Annotated[
        str | None,
        typer.Option("--containerd-version", help="The node's containerRuntimeVersion, e.g. containerd://1.7.2."),
    ] = None,
    restart: _Restart = "auto",
    containerd_socket: _Socket = "/run/containerd/containerd.sock",
    systemd_unit: _Unit = "containerd.service",
    restart_timeout: _Timeout = 30.0,
) -> None:
    """Write the Kata runtimes drop-in, import it from the main config, restart containerd."""
    from ccgpu.agents import containerd_cli

    containerd_cli.run_apply(
        host_root, main_config, dropin, runtime_class, kata_config_dir, containerd_version,
        restart, containerd_socket, systemd_unit, restart_timeout,
    )  # fmt: skip


@containerd_config_app.command("cleanup")
def containerd_config_cleanup(
    host_root: _HostRoot = "/",
    main_config: _MainConfig = "/etc/containerd/config.toml",
    dropin: _Dropin = "/etc/containerd/conf.d/ccgpu-kata.toml",
    restart: _Restart = "auto",
    containerd_socket: _Socket = "/run/containerd/containerd.sock",
    systemd_unit: _Unit = "containerd.service",
    restart_timeout: _Timeout = 30.0,
) -> None:
    """Remove ccgpu's drop-in and restore the main config byte for byte, then restart containerd."""
    from ccgpu.agents import containerd_cli

    containerd_cli.run_cleanup(host_root, main_config, dropin, restart, containerd_socket, systemd_unit, restart_timeout)


def main() -> None:  # pragma: no cover - console entry point
    app()

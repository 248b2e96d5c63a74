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


@app.command()
def version() -> None:
    """Print the ccgpu version."""
    typer.echo(__version__)


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
    cc_mode: Annotated[
        str, typer.Option("--cc-mode", help="Mode the GPUs booted in: off, on, devtools or ppcie.")
    ] = "off",
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
    if cc_mode not in ("off", "on", "devtools", "ppcie"):
        raise typer.BadParameter(f"{cc_mode!r}; accepted: off, on, devtools, ppcie", param_hint="--cc-mode")
    overrides["ppcie_mode" if cc_mode == "ppcie" else "cc_mode"] = "on" if cc_mode == "ppcie" else cc_mode
    try:
        built = simhost.SimulatedHost.create(directory, profile, **overrides)
    except (ProfileError, simhost.SimHostError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(simhost.describe(built))


def main() -> None:  # pragma: no cover - console entry point
    app()

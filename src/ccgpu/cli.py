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


@sim_app.command("apiserver")
def sim_apiserver(
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port on 127.0.0.1 (0: a free one).")] = 0,
    kubeconfig_out: Annotated[
        Path | None, typer.Option("--kubeconfig-out", help="Write a kubeconfig for kubectl here.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for generated names, uids and injected faults.")] = 0,
) -> None:
    """Serve the Kubernetes API simulator on 127.0.0.1 (for kubectl and clients) until interrupted."""
    from ccgpu.sim.apiserver.standalone import run

    run(port, kubeconfig_out, seed, announce=lambda line: typer.echo(line, err=False))


def main() -> None:  # pragma: no cover - console entry point
    app()

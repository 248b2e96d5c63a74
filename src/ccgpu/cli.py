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
sim_app = typer.Typer(help="Simulation tools: simulated hosts and the Kubernetes API simulator.", no_args_is_help=True)
attest_app = typer.Typer(help="Attestation: KBS server, guest client, evidence verification.", no_args_is_help=True)
app.add_typer(agent_app, name="agent")
app.add_typer(sim_app, name="sim")
app.add_typer(attest_app, name="attest")


@app.command()
def version() -> None:
    """Print the ccgpu version."""
    typer.echo(__version__)


@app.command()
def doctor(
    root: str = typer.Option("/", "--root", help="Host root to inspect: / on the node, a host mount, or a capture."),
    json_output: bool = typer.Option(False, "--json", help="Print the stable JSON report (README: ccgpu doctor)."),
    workload: str = typer.Option("vm-passthrough", "--workload", help="vm-passthrough or container."),
) -> None:
    """Preflight a node: is it ready for confidential GPU pods, and what to fix if not."""
    import json
    import os

    from rich.console import Console

    from ccgpu.hw import doctor as doc

    try:
        wl = doc.Workload.parse(workload)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--workload") from None
    if not os.path.isdir(root):
        raise typer.BadParameter(f"{root!r} is not a directory; give a host root such as / or /host", param_hint="--root")
    report = doc.diagnose(root, wl)
    if json_output:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        doc.render_table(report, Console())
    raise typer.Exit(0 if report.ready else 1)


def main() -> None:  # pragma: no cover - console entry point
    app()

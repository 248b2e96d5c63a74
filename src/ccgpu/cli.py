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


@app.command()
def manifests(
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Namespace to install into (default: ccgpu).")
    ] = None,
    values: Annotated[
        Path | None, typer.Option("--values", "-f", help="YAML file overriding the default values.")
    ] = None,
) -> None:
    """Print the install manifests: CRD, RBAC, operator Deployment, default ClusterPolicy."""
    from ccgpu.operator.manifests import ValuesError, load_values, render_yaml
    from ccgpu.operator.policy import PolicyError

    try:
        typer.echo(render_yaml(load_values(values, namespace)), nl=False)
    except (ValuesError, PolicyError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


@app.command("operator")
def operator_cmd(
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the operand DaemonSets.")] = "ccgpu",
    image: Annotated[str, typer.Option(help="The ccgpu image the sandbox operands run.")] = "ccgpu:" + __version__,
    nvidia_repository: Annotated[str, typer.Option(help="Registry path of NVIDIA's operand images.")] = "",
    metrics_port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port for /metrics and /healthz (0: off).")
    ] = 8080,
    kubeconfig: Annotated[
        Path | None, typer.Option(help="kubeconfig file (default: in-cluster, then ~/.kube/config).")
    ] = None,
    standalone: Annotated[bool, typer.Option(help="Skip leader election (one replica only).")] = False,
) -> None:
    """Run the cluster operator (ClusterPolicy controller)."""
    from ccgpu.operator.controller import ConfigError, OperatorConfig, run_until_signalled

    try:
        cfg = OperatorConfig(namespace=namespace, image=image, nvidia_repository=nvidia_repository,
                             metrics_port=metrics_port, kubeconfig=kubeconfig, standalone=standalone)
        cfg.check()
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    run_until_signalled(cfg)


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

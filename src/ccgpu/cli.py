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
verify_app = typer.Typer(help="Verify SNP or GPU evidence offline and print its claims as JSON.", no_args_is_help=True)
attest_app.add_typer(verify_app, name="verify")


@app.command()
def version() -> None:
    """Print the ccgpu version."""
    typer.echo(__version__)


@verify_app.command("snp")
def attest_verify_snp(
    report: Annotated[Path, typer.Argument(help="SNP report, 1184 bytes raw or as hex text.")],
    vcek: Annotated[Path | None, typer.Option("--vcek", help="VCEK certificate (DER or PEM).")] = None,
    vlek: Annotated[Path | None, typer.Option("--vlek", help="VLEK certificate (DER or PEM).")] = None,
    chain: Annotated[Path | None, typer.Option("--chain", help="ASK/ARK(/ASVK) PEM to trust; default AMD's.")] = None,
    report_data: Annotated[str | None, typer.Option("--report-data", help="Expected report_data, hex.")] = None,
) -> None:
    """Verify an SEV-SNP report against its VCEK/VLEK and AMD's chain; print the claims."""
    from ccgpu.attest import verify_cli

    raise typer.Exit(
        verify_cli.run(
            verify_cli.verify_snp_files, report=report, vcek=vcek, vlek=vlek, chain=chain, report_data=report_data
        )
    )


@verify_app.command("gpu")
def attest_verify_gpu(
    evidence: Annotated[Path, typer.Argument(help="SPDM GET_MEASUREMENTS request+response, raw or hex text.")],
    certs: Annotated[Path, typer.Option("--certs", help="GPU certificate chain (PEM, leaf first).")],
    root: Annotated[Path | None, typer.Option("--root", help="Device root to trust (PEM); default NVIDIA's.")] = None,
    nonce: Annotated[str | None, typer.Option("--nonce", help="Expected 32-byte SPDM nonce, hex.")] = None,
) -> None:
    """Verify an NVIDIA GPU attestation report against its chain and root; print the claims."""
    from ccgpu.attest import verify_cli

    raise typer.Exit(verify_cli.run(verify_cli.verify_gpu_files, evidence=evidence, certs=certs, root=root, nonce=nonce))


def main() -> None:  # pragma: no cover - console entry point
    app()

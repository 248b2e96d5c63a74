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


def _guest_attesters(attester: str, sim_guest: Path | None, with_gpus: bool) -> tuple:
    """The guest's CPU attester and GPU attesters: production (`snp`: SEV-SNP + NVML) or simulated (`sim`)."""
    if attester == "sim":
        from ccgpu.sim.guest import load_or_create_guest

        if sim_guest is None:
            raise typer.BadParameter("--attester sim needs --sim-guest DIR (the simulated guest's identity)")
        guest = load_or_create_guest(sim_guest)
        return guest.cpu, [guest.gpu] if with_gpus else []
    if attester == "snp":
        from ccgpu.attest.attester import NvmlGpuAttester, SnpAttester

        return SnpAttester(), [NvmlGpuAttester()] if with_gpus else []
    raise typer.BadParameter(f"--attester {attester!r}; accepted: snp, sim")


_SIM_GUEST_HELP = "Simulated guest identity directory (made on first use); the KBS then trusts that guest."


@attest_app.command("kbs")
def attest_kbs(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Resources, policies, reference values, signer.")],
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8080,
    host: Annotated[str, typer.Option("--host", help="Listen address.")] = "127.0.0.1",
    admin_token_file: Annotated[
        Path | None, typer.Option("--admin-token-file", help="Admin bearer token (else $CCGPU_KBS_ADMIN_TOKEN).")
    ] = None,
    session_timeout: Annotated[int, typer.Option("--session-timeout", help="Session lifetime, seconds.")] = 300,
    snp_chain: Annotated[Path | None, typer.Option("--snp-chain", help="ASK/ARK PEM to trust; default AMD's.")] = None,
    gpu_root: Annotated[Path | None, typer.Option("--gpu-root", help="GPU device root PEM; default NVIDIA's.")] = None,
    sim_guest: Annotated[Path | None, typer.Option("--sim-guest", help=_SIM_GUEST_HELP)] = None,
) -> None:
    """Run the Key Broker Service (Trustee KBS protocol 0.4.0) until SIGINT/SIGTERM."""
    import asyncio

    from ccgpu.attest import kbs_cli
    from ccgpu.attest.verifiers import default_verifiers

    try:
        token = kbs_cli.load_admin_token(admin_token_file)
    except kbs_cli.CommandError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    reference: dict = {}
    if sim_guest is not None:
        from ccgpu.sim.guest import kbs_trust

        verifiers, reference = kbs_trust(sim_guest)
    else:
        verifiers = default_verifiers(
            snp_chain_pem=snp_chain.read_bytes() if snp_chain else None,
            gpu_root_pem=gpu_root.read_bytes() if gpu_root else None,
        )
    server = kbs_cli.build_server(data_dir, token, verifiers, session_timeout_s=session_timeout,
                                  reference_values=reference)
    asyncio.run(kbs_cli.serve_until_stopped(server, host, port))


@attest_app.command("get-resource")
def attest_get_resource(
    uri: Annotated[str, typer.Argument(help="kbs:///<repository>/<type>/<tag>")],
    kbs_url: Annotated[str, typer.Option("--kbs-url", help="KBS base URL, e.g. http://kbs:8080.")],
    attester: Annotated[str, typer.Option("--attester", help="snp (SEV-SNP + NVML GPUs) or sim.")] = "snp",
    sim_guest: Annotated[Path | None, typer.Option("--sim-guest", help=_SIM_GUEST_HELP)] = None,
    no_gpu: Annotated[bool, typer.Option("--no-gpu", help="Attest the CPU only.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the secret here (0600).")] = None,
) -> None:
    """Attest to a KBS and fetch one resource (the secret goes to stdout or --output)."""
    import asyncio
    import sys

    from ccgpu.attest import kbs_cli
    from ccgpu.attest.client import KbsClientError
    from ccgpu.attest.storage import atomic_write

    cpu, gpus = _guest_attesters(attester, sim_guest, not no_gpu)
    try:
        secret = asyncio.run(kbs_cli.fetch_resource(kbs_url, uri, cpu, gpus))
    except (KbsClientError, ValueError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    if output is not None:
        atomic_write(output, secret, mode=0o600)
    else:
        sys.stdout.buffer.write(secret)
        sys.stdout.flush()


@attest_app.command("ready-gate")
def attest_ready_gate(
    kbs_url: Annotated[str, typer.Option("--kbs-url", help="KBS base URL, e.g. http://kbs:8080.")],
    attester: Annotated[str, typer.Option("--attester", help="snp (SEV-SNP + NVML GPUs) or sim.")] = "snp",
    sim_guest: Annotated[Path | None, typer.Option("--sim-guest", help=_SIM_GUEST_HELP)] = None,
    state_file: Annotated[
        Path | None, typer.Option("--state-file", help="Keep the ready state in this file instead of NVML.")
    ] = None,
    token_key: Annotated[
        Path | None, typer.Option("--token-key", help="KBS token-signer JWK (token-signer.jwk.json) to pin.")
    ] = None,
    min_gpus: Annotated[int, typer.Option("--min-gpus", help="GPU submods the verdict must cover.")] = 1,
) -> None:
    """Set the GPUs' CC ready state only after the KBS affirmed CPU and GPU evidence; else leave them not-ready."""
    import asyncio

    from ccgpu.attest import kbs_cli
    from ccgpu.attest.ready_gate import FileReadyState, NvmlReadyState

    cpu, gpus = _guest_attesters(attester, sim_guest, True)
    backend = FileReadyState(state_file) if state_file is not None else NvmlReadyState()
    result = asyncio.run(kbs_cli.ready_gate(kbs_url, cpu, gpus, backend, token_key=token_key, min_gpus=min_gpus))
    typer.echo(("ready: " if result.ready else "not ready: ") + result.reason, err=not result.ready)
    raise typer.Exit(0 if result.ready else 1)


def main() -> None:  # pragma: no cover - console entry point
    app()

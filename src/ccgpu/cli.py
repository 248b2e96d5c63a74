"""The `ccgpu` command line: one typer app, each subcommand a thin shell over a module that does the work."""

from __future__ import annotations

import shutil
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


_HOST_ROOT = typer.Option("/", "--host-root", help="The host's root: / on the node, the host mount in a pod.")
_CDI_DIR = typer.Option("/var/run/cdi", "--cdi-dir", help="CDI spec directory (a host path, under --host-root).")
_GPU_ALIAS = typer.Option(
    None, "--gpu-alias",
    help="GPU resource and CDI class nvidia.com/<alias>; empty for per-model names. Default: $P_GPU_ALIAS, else pgpu.",
)
_NVSWITCH_ALIAS = typer.Option(
    None, "--nvswitch-alias", help="NVSwitch resource nvidia.com/<alias>. Default: $NVSWITCH_ALIAS, else nvswitch."
)
_NODE_NAME = typer.Option(None, "--node-name", envvar="NODE_NAME", help="This node's name (for logs).")


@agent_app.command("kata-manager")
def agent_kata_manager(
    host_root: str = _HOST_ROOT,
    cdi_dir: str = _CDI_DIR,
    gpu_alias: str | None = _GPU_ALIAS,
    nvswitch_alias: str | None = _NVSWITCH_ALIAS,
    once: bool = typer.Option(False, "--once", help="Do one pass and exit."),
    cleanup: bool = typer.Option(
        False, "--cleanup", help="Remove ccgpu's CDI specs (and, with --configure-containerd, its containerd changes)."
    ),
    configure_containerd: bool = typer.Option(
        False, "--configure-containerd", help="Also add the Kata runtime classes to containerd (drop-in + imports)."
    ),
    containerd_config: str | None = typer.Option(
        None, "--containerd-config", envvar="CONTAINERD_CONFIG", help="containerd's main config (host path)."
    ),
    containerd_dropin: str | None = typer.Option(None, "--containerd-dropin", help="ccgpu's containerd drop-in."),
    containerd_restart: str = typer.Option(
        "auto", "--containerd-restart", envvar="CONTAINERD_RESTART_MODE",
        help="How to restart containerd: auto (systemd if booted with it), systemd, signal, none.",
    ),
    kata_shim: str | None = typer.Option(
        None, "--kata-shim", envvar="KATA_SHIM", help="Kata shim (host path) for runtime_path; '' for containerd's PATH."
    ),
    interval: float = typer.Option(1.0, "--interval", help="Seconds between passes that pick up device changes."),
    node_name: str | None = _NODE_NAME,
) -> None:
    """Keep the host CDI spec equal to the node's VFIO GPUs; optionally configure containerd for Kata."""
    from ccgpu.agents import sandbox_cli

    sandbox_cli.run_kata_manager(
        host_root, cdi_dir, gpu_alias, nvswitch_alias, once, cleanup, configure_containerd, containerd_config,
        containerd_dropin, interval, node_name, containerd_restart, kata_shim,
    )


@agent_app.command("device-plugin")
def agent_device_plugin(
    host_root: str = _HOST_ROOT,
    cdi_dir: str = _CDI_DIR,
    device_plugin_dir: str = typer.Option(
        "/var/lib/kubelet/device-plugins", "--device-plugin-dir", help="The kubelet's device-plugin socket directory."
    ),
    gpu_alias: str | None = _GPU_ALIAS,
    nvswitch_alias: str | None = _NVSWITCH_ALIAS,
    pci_env: bool = typer.Option(
        False, "--pci-env/--no-pci-env", help="Also set PCI_RESOURCE_NVIDIA_COM_<NAME>=<BDFs> in Allocate."
    ),
    wait_for_validations: bool = typer.Option(
        True, "--wait-for-validations/--no-wait-for-validations",
        help="Wait for the validator's workload-type (and vfio-pci-ready) files before advertising.",
    ),
    once: bool = typer.Option(False, "--once", help="Do one pass (serve, register, advertise) and exit."),
    node_name: str | None = _NODE_NAME,
) -> None:
    """Advertise the node's VFIO GPUs (nvidia.com/pgpu) and NVSwitches to the kubelet (device-plugin API v1beta1)."""
    from ccgpu.agents import sandbox_cli

    sandbox_cli.run_device_plugin(
        host_root, cdi_dir, device_plugin_dir, gpu_alias, nvswitch_alias, pci_env, wait_for_validations, once,
        node_name,
    )


_HOST_ROOT_ENV = typer.Option(
    "/", "--host-root", envvar=["HOST_ROOT", "CCGPU_HOST_ROOT"],
    help="The host's root: / on the node, the host mount in a pod. Env: HOST_ROOT.",
)
_KUBECONFIG = typer.Option(
    None, "--kubeconfig", envvar="KUBECONFIG", help="Kubeconfig file; default: in-cluster service account."
)
_METRICS_PORT = typer.Option(0, "--metrics-port", envvar="METRICS_PORT", help="Serve Prometheus /metrics (0: off).")


@agent_app.command("cc-manager")
def agent_cc_manager(
    node_name: str | None = typer.Option(None, "--node-name", envvar="NODE_NAME", help="This node (required)."),
    default_cc_mode: str = typer.Option(
        "on", "--default-cc-mode", "-m", envvar="DEFAULT_CC_MODE",
        help="Mode when the node has no nvidia.com/cc.mode label: on, off or devtools.",
    ),
    host_root: str = _HOST_ROOT_ENV,
    evict: bool = typer.Option(
        True, "--evict-operator-components/--no-evict-operator-components", envvar="EVICT_OPERATOR_COMPONENTS",
        help="Pause the sandbox operands (and wait for their pods to leave) while switching.",
    ),
    gpu_admin_tools: str = typer.Option(
        "/app/gpu-admin-tools/nvidia_gpu_tools.py", "--gpu-admin-tools", envvar="GPU_ADMIN_TOOLS",
        help="Path of NVIDIA's nvidia_gpu_tools.py.",
    ),
    kubeconfig: str | None = _KUBECONFIG,
    metrics_port: int = _METRICS_PORT,
    readiness_file: str = typer.Option(
        "/run/nvidia/validations/.cc-manager-ctr-ready", "--readiness-file", envvar="CC_READINESS_FILE",
        help="Touched after the first pass, removed at exit.",
    ),
    pause_timeout: float = typer.Option(300.0, "--pause-timeout", help="Seconds to wait for paused operand pods."),
    once: bool = typer.Option(False, "--once", help="One pass, then exit (1 if the switch failed)."),
    debug: bool = typer.Option(False, "--debug", help="Debug logging."),
) -> None:
    """Make the node's GPUs' CC mode match nvidia.com/cc.mode (or DEFAULT_CC_MODE), pausing operands meanwhile."""
    from ccgpu.agents import node_cli

    node_cli.run_cc_manager(
        node_name=node_name, default_cc_mode=default_cc_mode, host_root=host_root, evict=evict,
        gpu_admin_tools=gpu_admin_tools, kubeconfig=kubeconfig, metrics_port=metrics_port,
        readiness_file=readiness_file, pause_timeout=pause_timeout, once=once, debug=debug,
    )


vfio_app = typer.Typer(
    help="Bind the node's NVIDIA GPUs (and NVSwitches) to vfio drivers; with no subcommand: run.",
    invoke_without_command=True,
)
agent_app.add_typer(vfio_app, name="vfio-manager")
_ALL = typer.Option(False, "--all", "-a", help="Every NVIDIA GPU (and NVSwitch, if asked).")
_DEVICE = typer.Option(None, "--device-id", "-d", "--device", help="One device by PCI address, e.g. 0000:3a:00.0.")


@vfio_app.callback()
def agent_vfio_manager(ctx: typer.Context) -> None:
    """Bind the node's NVIDIA GPUs (and NVSwitches) to vfio drivers; with no subcommand: run."""
    if ctx.invoked_subcommand is None:
        from ccgpu.agents import node_cli

        node_cli.run_vfio_manager_from_env()


@vfio_app.command("bind")
def agent_vfio_bind(
    all_devices: bool = _ALL,
    device: str | None = _DEVICE,
    host_root: str = _HOST_ROOT_ENV,
    bind_nvswitches: bool = typer.Option(False, "--bind-nvswitches", envvar="BIND_NVSWITCHES", help="NVSwitches too."),
) -> None:
    """Bind GPUs to their vfio driver (most specific modules.alias match); exit 1 naming any that failed."""
    from ccgpu.agents import node_cli

    node_cli.vfio_bind_or_unbind("bind", all_devices=all_devices, device=device, host_root=host_root,
                                 nvswitches=bind_nvswitches)


@vfio_app.command("unbind")
def agent_vfio_unbind(
    all_devices: bool = _ALL,
    device: str | None = _DEVICE,
    host_root: str = _HOST_ROOT_ENV,
    unbind_nvswitches: bool = typer.Option(
        False, "--unbind-nvswitches", envvar="BIND_NVSWITCHES", help="NVSwitches too."
    ),
) -> None:
    """Unbind GPUs from vfio, never one whose VFIO group a VM holds open; exit 1 naming any left bound."""
    from ccgpu.agents import node_cli

    node_cli.vfio_bind_or_unbind("unbind", all_devices=all_devices, device=device, host_root=host_root,
                                 nvswitches=unbind_nvswitches)


@vfio_app.command("run")
def agent_vfio_run(
    host_root: str = _HOST_ROOT_ENV,
    bind_nvswitches: bool = typer.Option(False, "--bind-nvswitches", envvar="BIND_NVSWITCHES", help="NVSwitches too."),
    node_name: str | None = typer.Option(
        None, "--node-name", envvar="NODE_NAME", help="This node: unbind on stop only if it left vm-passthrough."
    ),
    kubeconfig: str | None = _KUBECONFIG,
    interval: float = typer.Option(2.0, "--interval", help="Seconds between passes that bind new devices."),
    metrics_port: int = _METRICS_PORT,
) -> None:
    """Bind all, write vfio-pci-ready while all are bound, bind GPUs that appear; stay up until stopped."""
    from ccgpu.agents import node_cli

    node_cli.run_vfio_manager(host_root=host_root, nvswitches=bind_nvswitches, node_name=node_name,
                              kubeconfig=kubeconfig, interval=interval, metrics_port=metrics_port)


@agent_app.command("validator")
def agent_validator(
    host_root: str = _HOST_ROOT_ENV,
    node_name: str | None = typer.Option(
        None, "--node-name", envvar="NODE_NAME", help="This node (for the workload and CC checks)."
    ),
    kubeconfig: str | None = _KUBECONFIG,
    default_workload: str = typer.Option(
        "container", "--default-workload", envvar="DEFAULT_GPU_WORKLOAD_CONFIG",
        help="Workload when the node has no nvidia.com/gpu.workload.config label.",
    ),
    check_cc: bool = typer.Option(True, "--check-cc/--no-check-cc", help="Also gate cc-manager-ready."),
    interval: float = typer.Option(2.0, "--interval", help="Seconds between checks."),
    metrics_port: int = _METRICS_PORT,
    once: bool = typer.Option(False, "--once", help="Check once, print the files' state, exit."),
) -> None:
    """Write the readiness files (workload-type, vfio-pci-ready, cc-manager-ready) only while their checks hold."""
    from ccgpu.agents import node_cli

    node_cli.run_validator(host_root=host_root, node_name=node_name, kubeconfig=kubeconfig,
                           default_workload=default_workload, check_cc=check_cc, interval=interval,
                           metrics_port=metrics_port, once=once)


@app.command()
def simulate(
    nodes: Annotated[
        int | None, typer.Option("--nodes", "-n", min=1, help="Number of nodes, cycling through --profile's items.")
    ] = None,
    profile: Annotated[
        str, typer.Option("--profile", "-p", help="Nodes as [COUNTx]PROFILE[:WORKLOAD],... (workload: "
                          "vm-passthrough (default) or container); see `ccgpu sim host --list-profiles`.")
    ] = "1x8xh100-snp,1x1xh200-snp,1x4xh100-notee,1x4xh100-notee:container",
    json_output: Annotated[bool, typer.Option("--json", help="Print the final summary as JSON on stdout.")] = False,
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="Keep every node's host tree (and cluster.log) here.")
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Leave it running and print a kubeconfig for kubectl.")] = False,
    scenario: Annotated[
        Path | None, typer.Option("--scenario", help="YAML steps to run after convergence, with expected outcomes.")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for convergence.")] = 90.0,
) -> None:
    """Run the whole system on a simulated mixed cluster and a sample confidential pod (exit 0: all as expected)."""
    from ccgpu.sim import simulate as sim

    try:
        opts = sim.options(nodes, profile, json_output, workdir, keep, scenario, timeout)
        if scenario is not None:
            from ccgpu.sim.scenario import load

            load(scenario)
        raise typer.Exit(sim.simulate(opts))
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


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
    cc_mode: Annotated[
        str, typer.Option("--cc-mode", help="Mode the GPUs booted in: off, on, devtools or ppcie.")
    ] = "off",
    mount: Annotated[
        bool | None,
        typer.Option(
            "--mount/--no-mount",
            help="Present DIR through FUSE so writes under sys/ have the kernel's effects for any program "
            "(default: when FUSE is available); --no-mount writes a plain tree.",
        ),
    ] = None,
    unmount: Annotated[
        bool, typer.Option("--unmount", help="Unmount the simulated host at DIR and delete its files.")
    ] = False,
) -> None:
    """Build a simulated host (sysfs, /dev/vfio, /proc) from a profile, for tests, scripts and agents."""
    from ccgpu.sim import host as simhost
    from ccgpu.sim import host_mount
    from ccgpu.sim.profiles import ProfileError
    from ccgpu.sim.profiles import list_profiles as profiles

    if list_profiles:
        for p in profiles():
            typer.echo(f"{p.name:<20} {p.description}")
        return
    if directory is None:
        raise typer.BadParameter("give the DIRECTORY to build the host in (or --list-profiles)", param_hint="DIRECTORY")
    if unmount:
        if not host_mount.is_mounted(directory) and not host_mount.backing_dir(directory).exists():
            typer.echo(f"error: no simulated host is mounted at {directory}", err=True)
            raise typer.Exit(2)
        try:
            host_mount.unmount(directory)
        except host_mount.MountError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"unmounted {directory}")
        return
    fuse_missing = host_mount.unavailable()
    if mount and fuse_missing:
        typer.echo(f"error: --mount: {fuse_missing}", err=True)
        raise typer.Exit(2)
    mounting = mount is not False and fuse_missing is None
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
    if mounting and directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        typer.echo(f"error: {directory} must be an empty or absent directory", err=True)
        raise typer.Exit(2)
    tree = host_mount.backing_dir(directory) if mounting else directory
    if mounting and tree.exists():  # left by a server that died: the mount point is empty, so it is stale
        shutil.rmtree(tree)
    try:
        built = simhost.SimulatedHost.create(tree, profile, fixtures=None, **overrides)
    except (ProfileError, simhost.SimHostError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if not mounting:
        typer.echo(simhost.describe(built))
        if mount is None:
            typer.echo(
                f"note: {directory} is a plain tree ({fuse_missing}): programs can read it, but writes under "
                "sys/ have no kernel effect; --no-mount says that is what you want",
                err=True,
            )
        return
    try:
        host_mount.mount(directory, tree)
    except host_mount.MountError as e:
        shutil.rmtree(tree, ignore_errors=True)
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    described = simhost.describe(built).replace(str(tree), str(directory.resolve())).splitlines()[:-1]
    typer.echo("\n".join(described))
    typer.echo(
        f"  mounted through FUSE: any program (agents with --host-root, a shell, a container) sees the kernel's "
        f"behaviour at {directory.resolve()}\n"
        f"  its state: ccgpu.sim.host.SimulatedHost.open({str(tree)!r}); stop with "
        f"`ccgpu sim host --unmount {directory}`"
    )


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


def _guest_attesters(attester: str, sim_guest: Path | None, with_gpus: bool, init_data=None) -> tuple:
    """The guest's CPU attester and GPU attesters: production (`snp`: SEV-SNP + NVML) or simulated (`sim`)."""
    if attester == "sim":
        from ccgpu.attest.appraisal import init_data_digest
        from ccgpu.sim.guest import load_or_create_guest

        if sim_guest is None:
            raise typer.BadParameter("--attester sim needs --sim-guest DIR (the simulated guest's identity)")
        guest = load_or_create_guest(sim_guest)
        if init_data is not None:  # the simulated host launched this guest with that init-data
            guest.cpu.host_data = init_data_digest(init_data)
        return guest.cpu, [guest.gpu] if with_gpus else []
    if attester == "snp":
        from ccgpu.attest.attester import NvmlGpuAttester, SnpAttester

        return SnpAttester(), [NvmlGpuAttester()] if with_gpus else []
    raise typer.BadParameter(f"--attester {attester!r}; accepted: snp, sim")


_SIM_GUEST_HELP = "Simulated guest identity directory (made on first use); the KBS then trusts that guest."
_KBS_CERT_HELP = "For an https KBS: its certificate or CA (PEM) to trust instead of the system's CAs."
_INIT_DATA_HELP = "Init-data TOML this guest was launched with (its digest is the report's HOST_DATA)."


def _init_data(path: Path | None):
    from ccgpu.attest.protocol import InitData

    return InitData(format="toml", body=path.read_text()) if path is not None else None


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
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="Serve HTTPS: certificate chain PEM.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Serve HTTPS: private key PEM.")] = None,
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
    try:
        asyncio.run(kbs_cli.serve_until_stopped(server, host, port, tls_cert=tls_cert, tls_key=tls_key))
    except (kbs_cli.CommandError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


@attest_app.command("get-resource")
def attest_get_resource(
    uri: Annotated[str, typer.Argument(help="kbs:///<repository>/<type>/<tag>")],
    kbs_url: Annotated[str, typer.Option("--kbs-url", help="KBS base URL, e.g. http://kbs:8080.")],
    attester: Annotated[str, typer.Option("--attester", help="snp (SEV-SNP + NVML GPUs) or sim.")] = "snp",
    sim_guest: Annotated[Path | None, typer.Option("--sim-guest", help=_SIM_GUEST_HELP)] = None,
    no_gpu: Annotated[bool, typer.Option("--no-gpu", help="Attest the CPU only.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the secret here (0600).")] = None,
    kbs_cert: Annotated[Path | None, typer.Option("--kbs-cert", help=_KBS_CERT_HELP)] = None,
    init_data: Annotated[Path | None, typer.Option("--init-data", help=_INIT_DATA_HELP)] = None,
) -> None:
    """Attest to a KBS and fetch one resource (the secret goes to stdout or --output)."""
    import asyncio
    import sys

    import aiohttp

    from ccgpu.attest import kbs_cli
    from ccgpu.attest.attester import AttesterError
    from ccgpu.attest.client import KbsClientError
    from ccgpu.attest.storage import atomic_write

    initdata = _init_data(init_data)
    cpu, gpus = _guest_attesters(attester, sim_guest, not no_gpu, initdata)
    try:
        secret = asyncio.run(kbs_cli.fetch_resource(kbs_url, uri, cpu, gpus, kbs_cert=kbs_cert, init_data=initdata))
    except (KbsClientError, AttesterError, aiohttp.ClientError, TimeoutError, ValueError, OSError) as e:
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
    kbs_cert: Annotated[Path | None, typer.Option("--kbs-cert", help=_KBS_CERT_HELP)] = None,
    init_data: Annotated[Path | None, typer.Option("--init-data", help=_INIT_DATA_HELP)] = None,
) -> None:
    """Set the GPUs' CC ready state only after the KBS affirmed CPU and GPU evidence; else leave them not-ready."""
    import asyncio

    from ccgpu.attest import kbs_cli
    from ccgpu.attest.ready_gate import FileReadyState, NvmlReadyState

    initdata = _init_data(init_data)
    cpu, gpus = _guest_attesters(attester, sim_guest, True, initdata)
    backend = FileReadyState(state_file) if state_file is not None else NvmlReadyState()
    result = asyncio.run(kbs_cli.ready_gate(kbs_url, cpu, gpus, backend, token_key=token_key, min_gpus=min_gpus,
                                            kbs_cert=kbs_cert, init_data=initdata))
    typer.echo(("ready: " if result.ready else "not ready: ") + result.reason, err=not result.ready)
    raise typer.Exit(0 if result.ready else 1)


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

_HostRoot = Annotated[str, typer.Option("--host-root", help="The host's root (in a pod, the host mount).")]
_MainConfig = Annotated[str, typer.Option("--main-config", help="containerd's main config (host path).")]
_Dropin = Annotated[str, typer.Option("--dropin", help="ccgpu's drop-in file (host path).")]
_Restart = Annotated[
    str, typer.Option("--restart", help="How to restart containerd: auto (systemd if booted with it), systemd, signal, none.")
]
_Socket = Annotated[str, typer.Option("--containerd-socket", help="containerd's socket (host path), for --restart signal.")]
_Unit = Annotated[str, typer.Option("--systemd-unit", help="containerd's unit, for --restart systemd.")]
_Timeout = Annotated[float, typer.Option("--restart-timeout", help="Seconds to wait for containerd to come back.")]
_KataShim = Annotated[str, typer.Option(
    "--kata-shim", help="Kata shim binary (host path) set as each runtime's runtime_path; '' to use containerd's PATH."
)]  # fmt: skip


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
    kata_shim: _KataShim = "/opt/kata/bin/containerd-shim-kata-v2",
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
        restart, containerd_socket, systemd_unit, restart_timeout, kata_shim,
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

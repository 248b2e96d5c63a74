"""Argument handling around the kata-manager and the sandbox device plugin: aliases, logging, signals, errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, NoReturn

import typer

from ccgpu import labels
from ccgpu.agents.cdi import DEFAULT_CDI_DIR, Aliases, CDIError
from ccgpu.agents.containerd_restart import RestartError, RestartMethod
from ccgpu.agents.containerd_toml import ContainerdConfigError, check_host_path
from ccgpu.hw.pci import BDFError, SysfsFormatError
from ccgpu.hw.sysfs import PathEscapeError

GPU_ALIAS_ENV = "P_GPU_ALIAS"
NVSWITCH_ALIAS_ENV = "NVSWITCH_ALIAS"


def resolve_alias(value: str | None, env: str, default: str) -> str:
    """The flag if given, else the environment variable even when set to empty (empty -> per-model names,
    as NVIDIA's plugin reads `P_GPU_ALIAS`), else the default."""
    if value is not None:
        return value
    return os.environ.get(env, default)


def aliases(gpu_alias: str | None, nvswitch_alias: str | None) -> Aliases:
    return Aliases(
        gpu=resolve_alias(gpu_alias, GPU_ALIAS_ENV, labels.DEFAULT_GPU_ALIAS),
        nvswitch=resolve_alias(nvswitch_alias, NVSWITCH_ALIAS_ENV, labels.DEFAULT_NVSWITCH_ALIAS),
    )


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def check_host_root(host_root: str) -> None:
    if not os.path.isdir(host_root):
        fail(f"--host-root {host_root!r} is not a directory; give the host's root (/ or the pod's host mount)")


def check_cdi_dir(cdi_dir: str) -> None:
    """The CDI directory is a host path resolved under --host-root: absolute, without '..'."""
    parts = cdi_dir.split("/")
    if not cdi_dir.startswith("/") or ".." in parts or "\x00" in cdi_dir:
        fail(f"--cdi-dir {cdi_dir!r} must be an absolute host path without '..', such as {DEFAULT_CDI_DIR}")


def restart_method(value: str) -> RestartMethod:
    """`--containerd-restart` / $CONTAINERD_RESTART_MODE as a method, or exit 2 naming the accepted ones."""
    try:
        return RestartMethod(value.strip().lower())
    except ValueError:
        accepted = ", ".join(m.value for m in RestartMethod)
        fail(f"--containerd-restart {value!r} is not a restart method; accepted: {accepted}")


def setup_logging(node_name: str | None) -> None:
    fmt = "%(asctime)s %(levelname)s %(name)s" + (f" [{node_name}]" if node_name else "") + ": %(message)s"
    logging.basicConfig(level=logging.INFO, format=fmt)


def run_until_signalled(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run `main(stop)` until it returns or SIGTERM/SIGINT sets `stop`; map ccgpu errors to exit code 2."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests)
                pass
        await main(stop)

    with errors_to_exit():
        asyncio.run(runner())


@contextlib.contextmanager
def errors_to_exit() -> Iterator[None]:
    """ccgpu's refusals exit 2 with their message; a host file the agent cannot write, or a containerd that
    cannot be restarted, exits 1 saying so."""
    try:
        yield
    except (CDIError, PathEscapeError, BDFError, SysfsFormatError, ContainerdConfigError) as e:
        fail(str(e))
    except RestartError as e:  # as `containerd-config apply` reports it
        fail(str(e), code=1)
    except OSError as e:
        fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e.strerror or e), code=1)


def run_kata_manager(
    host_root: str,
    cdi_dir: str,
    gpu_alias: str | None,
    nvswitch_alias: str | None,
    once: bool,
    cleanup: bool,
    configure_containerd: bool,
    containerd_config: str | None,
    containerd_dropin: str | None,
    interval: float,
    node_name: str | None,
    containerd_restart: str = RestartMethod.AUTO.value,
    kata_shim: str | None = None,
) -> None:
    from ccgpu.agents import kata_manager
    from ccgpu.hw.sysfs import Sysfs

    check_host_root(host_root)
    check_cdi_dir(cdi_dir)
    if not (0 < interval < math.inf):  # also refuses nan and inf, which the float option accepts
        fail(f"--interval must be a positive, finite number of seconds, got {interval}")
    try:
        names = aliases(gpu_alias, nvswitch_alias)
    except CDIError as e:
        fail(str(e))
    options: dict[str, Any] = {}
    if containerd_config:
        options["main_config"] = containerd_config
    if containerd_dropin:
        options["dropin"] = containerd_dropin
    options["restart"] = restart_method(containerd_restart)
    if kata_shim is not None:
        if kata_shim:
            try:  # refused before the first CDI write, like every other bad flag
                check_host_path(kata_shim, "--kata-shim")
            except ContainerdConfigError as e:
                fail(str(e))
        options["shim_path"] = kata_shim
    config = kata_manager.KataManagerConfig(
        host_root=host_root, cdi_dir=cdi_dir, aliases=names, configure_containerd=configure_containerd,
        containerd_options=options, interval_s=interval,
    )
    setup_logging(node_name)
    try:
        if cleanup:
            with errors_to_exit():
                removed = kata_manager.cleanup(Sysfs(host_root), config)
            for name in removed:
                typer.echo(f"removed {cdi_dir.rstrip('/')}/{name}")
            return
        run_until_signalled(lambda stop: kata_manager.run(config, stop, once=once))
    except kata_manager.KataManagerError as e:
        fail(str(e))


def run_device_plugin(
    host_root: str,
    cdi_dir: str,
    device_plugin_dir: str,
    gpu_alias: str | None,
    nvswitch_alias: str | None,
    pci_env: bool,
    wait_for_validations: bool,
    once: bool,
    node_name: str | None,
) -> None:
    from ccgpu.agents.device_plugin.server import DevicePluginAgent, DevicePluginConfig, RegistrationError

    check_host_root(host_root)
    check_cdi_dir(cdi_dir)
    try:
        names = aliases(gpu_alias, nvswitch_alias)
    except CDIError as e:
        fail(str(e))
    config = DevicePluginConfig(
        host_root=host_root, cdi_dir=cdi_dir, plugin_dir=device_plugin_dir, aliases=names, pci_env=pci_env,
        wait_for_validations=wait_for_validations,
    )
    setup_logging(node_name)
    try:
        run_until_signalled(lambda stop: DevicePluginAgent(config).run(stop, once=once))
    except RegistrationError as e:
        fail(str(e), code=1)

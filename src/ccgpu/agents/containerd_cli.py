"""`ccgpu agent containerd-config apply|cleanup`: argument checks and output around `agents.containerd`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NoReturn

import typer

from ccgpu import labels
from ccgpu.agents.containerd import ChangeReport, cleanup, configure
from ccgpu.agents.containerd_restart import RestartError, RestartMethod, RestartOptions
from ccgpu.agents.containerd_toml import DEFAULT_SHIM_PATH, ContainerdConfigError
from ccgpu.hw.sysfs import PathEscapeError, Sysfs


def _method(value: str) -> RestartMethod:
    try:
        return RestartMethod(value)
    except ValueError:
        accepted = ", ".join(m.value for m in RestartMethod)
        _fail(f"--restart {value!r} is not a restart method; accepted: {accepted}", code=2)


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _options(socket: str, unit: str, timeout: float) -> RestartOptions:
    if not (0 < timeout < math.inf):  # also refuses nan and inf, which the float option accepts
        _fail(f"--restart-timeout must be a positive, finite number of seconds, got {timeout}", code=2)
    return RestartOptions(socket=socket, unit=unit, timeout_s=timeout)


def _print(report: ChangeReport) -> None:
    for path in report.written:
        typer.echo(f"wrote {path}")
    for path in report.removed:
        typer.echo(f"removed {path}")
    if report.restart:
        typer.echo(f"containerd: {report.restart}")
    if not report.changed:
        typer.echo(f"{report.action}: nothing to change")
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)


def _run(action: Callable[..., ChangeReport], **kwargs: Any) -> None:
    try:
        _print(action(**kwargs))
    except (ContainerdConfigError, PathEscapeError) as e:
        _fail(str(e), code=2)
    except RestartError as e:
        _fail(str(e), code=1)
    except OSError as e:  # e.g. a read-only /etc: the intent file lets the next run finish or roll back
        _fail(f"{e.strerror or e}: {e.filename or ''}".rstrip(": "), code=1)


def run_apply(
    host_root: str,
    main_config: str,
    dropin: str,
    runtime_classes: list[str] | None,
    kata_config_dir: str,
    containerd_version: str | None,
    restart: str,
    socket: str,
    unit: str,
    timeout: float,
    shim_path: str = DEFAULT_SHIM_PATH,
) -> None:
    _run(
        configure,
        fs=Sysfs(host_root),
        main_config=main_config,
        dropin=dropin,
        runtime_classes=runtime_classes or list(labels.RUNTIME_CLASSES),
        kata_config_dir=kata_config_dir,
        shim_path=shim_path,
        containerd_version=containerd_version,
        restart=_method(restart),
        restart_options=_options(socket, unit, timeout),
    )


def run_cleanup(
    host_root: str, main_config: str, dropin: str, restart: str, socket: str, unit: str, timeout: float
) -> None:
    _run(
        cleanup,
        fs=Sysfs(host_root),
        main_config=main_config,
        dropin=dropin,
        restart=_method(restart),
        restart_options=_options(socket, unit, timeout),
    )

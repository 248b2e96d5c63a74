"""What `ccgpu agent cc-manager | vfio-manager | validator` do around the agents: check the flags, log
structured lines, serve Prometheus metrics, touch readiness files, run until signalled, map errors to exit codes.

Exit codes: 0 done, 1 the work failed (a device, a switch), 2 bad input (flags, environment) that changed nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

import typer
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from ccgpu import labels
from ccgpu.agents.sandbox_cli import fail, run_until_signalled
from ccgpu.hw.pci import BDFError, SysfsFormatError
from ccgpu.hw.sysfs import PathEscapeError, Sysfs

log = logging.getLogger(__name__)

SysfsFactory = Callable[[str], Sysfs]


class JsonLines(logging.Formatter):
    """One JSON object per line: time, level, component, node, logger, message (and the exception, if any)."""

    def __init__(self, component: str, node: str | None) -> None:
        super().__init__()
        self.component, self.node = component, node

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "component": self.component,
            "node": self.node,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is at the time (so a CLI run in-process, as tests do, logs to its own)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def setup_logging(component: str, node: str | None, debug: bool = False) -> None:
    """Structured lines on stderr; replaces a handler an earlier call installed, keeps any other."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    handler = _StderrHandler()
    handler.setFormatter(JsonLines(component, node))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def serve_metrics(port: int, registry: CollectorRegistry) -> None:
    """Serve /metrics on `port` (0: no server)."""
    if port:
        try:
            start_http_server(port, registry=registry)
        except OSError as e:
            fail(f"--metrics-port {port}: cannot listen ({e.strerror or e}); pick a free port, or 0 for none")
        log.info("metrics on :%d/metrics", port)


def check_host_root(host_root: str) -> None:
    if not os.path.isdir(host_root):
        fail(f"--host-root {host_root!r} is not a directory; give the host's root (/ or the pod's host mount)")


def check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        fail(f"--metrics-port {port} is not a TCP port; accepted: 1-65535, or 0 for no metrics server")


def _node_handle(kubeconfig: str | None, node_name: str, component: str):
    from ccgpu.kube.client import make_async_client
    from ccgpu.kube.nodes import NodeHandle

    return NodeHandle(make_async_client(kubeconfig), node_name, component=component)


class Readiness:
    """A readiness file the agent owns (a container path, on a host mount): touched when ready, removed at exit."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.fs = Sysfs("/")

    def touch(self) -> None:
        if self.path:
            self.fs.write_file(self.path.lstrip("/"), "ready\n")
            log.info("readiness file %s written", self.path)

    def clear(self) -> None:
        if self.path:
            self.fs.remove(self.path.lstrip("/"))


# --- cc-manager ------------------------------------------------------------------------------------------


def run_cc_manager(
    *,
    node_name: str | None,
    default_cc_mode: str,
    host_root: str,
    evict: bool,
    gpu_admin_tools: str,
    kubeconfig: str | None,
    metrics_port: int,
    readiness_file: str | None,
    pause_timeout: float,
    once: bool,
    debug: bool,
    sysfs_for: SysfsFactory = Sysfs,
) -> None:
    from ccgpu.agents.cc_manager import (
        CCManager,
        CCManagerConfig,
        CCManagerMetrics,
        host_devices,
        host_devices_in_use,
        host_has_tee,
    )
    from ccgpu.hw.ccmode import GpuAdminToolsBackend

    if not node_name:
        fail("the node name is missing; set NODE_NAME (the downward API's spec.nodeName) or --node-name")
    try:
        if labels.parse_cc_mode(default_cc_mode) is labels.CCMode.PPCIE:
            fail("DEFAULT_CC_MODE may not be ppcie (it is set per node with the nvidia.com/cc.mode label); "
                 "accepted: on, off, devtools")
    except labels.LabelValueError as e:
        fail(f"DEFAULT_CC_MODE: {e}")
    check_host_root(host_root)
    check_port(metrics_port)
    if not os.path.isfile(gpu_admin_tools):
        fail(f"GPU_ADMIN_TOOLS {gpu_admin_tools!r} is not a file; point it at NVIDIA's nvidia_gpu_tools.py")
    if pause_timeout <= 0:
        fail(f"--pause-timeout must be a positive number of seconds, got {pause_timeout}")
    setup_logging("cc-manager", node_name, debug)
    fs = sysfs_for(host_root)
    metrics = CCManagerMetrics()
    serve_metrics(metrics_port, metrics.registry)
    readiness = Readiness(readiness_file)
    result_box: list = []

    async def main(stop: asyncio.Event) -> None:
        node = _node_handle(kubeconfig, node_name, "nvidia-cc-manager")
        manager = CCManager(
            node, GpuAdminToolsBackend(gpu_admin_tools), devices=lambda: host_devices(fs),
            host_tee=lambda: host_has_tee(fs), in_use=lambda: host_devices_in_use(fs),
            config=CCManagerConfig(default_mode=default_cc_mode, evict_operands=evict, pause_timeout_s=pause_timeout),
            metrics=metrics,
        )
        try:
            if once:
                result_box.append(await manager.reconcile())
                readiness.touch()
            else:
                try:
                    await manager.run(stop, on_ready=readiness.touch)
                finally:
                    readiness.clear()
        finally:
            await node.client.close()

    _run(main)
    if once and result_box and result_box[0] is not None and result_box[0].error:
        typer.echo(f"error: {result_box[0].error}", err=True)
        raise typer.Exit(1)


def _run(main) -> None:
    try:
        run_until_signalled(main)
    except (FileNotFoundError, ValueError, PathEscapeError, BDFError, SysfsFormatError) as e:
        fail(str(e))


# --- vfio-manager ----------------------------------------------------------------------------------------


def vfio_bind_or_unbind(
    op: str,
    *,
    all_devices: bool,
    device: str | None,
    host_root: str,
    nvswitches: bool,
    sysfs_for: SysfsFactory = Sysfs,
) -> None:
    """`bind`/`unbind` with exactly one of --all and --device; print one line per device; exit 1 naming the
    devices that failed."""
    from ccgpu.agents.vfio_manager import VfioManager

    if all_devices == (device is not None):
        fail("give exactly one of --all and --device-id BDF (e.g. 0000:3a:00.0)")
    check_host_root(host_root)
    setup_logging("vfio-manager", os.environ.get("NODE_NAME"))
    manager = VfioManager(sysfs_for(host_root), include_nvswitches=nvswitches)
    try:
        manager.resume()
        devices = manager.select(device)
    except (ValueError, OSError, PathEscapeError) as e:
        fail(str(e))
    report = manager.bind(devices) if op == "bind" else manager.unbind(devices)
    if report.outcomes:
        typer.echo(report.summary())
    else:
        typer.echo("no NVIDIA devices found")
    failed = report.failed()
    if failed:
        names = ", ".join(f"{o.bdf} ({o.action})" for o in failed)
        typer.echo(f"error: {op} failed for {len(failed)} of {len(report.outcomes)} devices: {names}", err=True)
        raise typer.Exit(1)


def run_vfio_manager(
    *,
    host_root: str,
    nvswitches: bool,
    node_name: str | None,
    kubeconfig: str | None,
    interval: float,
    metrics_port: int,
    sysfs_for: SysfsFactory = Sysfs,
) -> None:
    """`vfio-manager run`: bind, keep binding, write vfio-pci-ready; with NODE_NAME, unbind on stop only when the
    node has left vm-passthrough."""
    from ccgpu.agents import vfio_manager

    check_host_root(host_root)
    check_port(metrics_port)
    if interval <= 0:
        fail(f"--interval must be a positive number of seconds, got {interval}")
    setup_logging("vfio-manager", node_name)
    registry = CollectorRegistry()
    devices = Gauge("ccgpu_vfio_devices", "Managed devices by outcome of the last pass.", ["outcome"],
                    registry=registry)
    serve_metrics(metrics_port, registry)
    manager = vfio_manager.VfioManager(sysfs_for(host_root), include_nvswitches=nvswitches)

    def record(report) -> None:
        for outcome in ("bound", "already-bound", "failed", "busy"):
            devices.labels(outcome=outcome).set(sum(o.action == outcome for o in report.outcomes))

    async def main(stop: asyncio.Event) -> None:
        node = _node_handle(kubeconfig, node_name, "nvidia-vfio-manager") if node_name else None
        try:
            await vfio_manager.run(manager, stop, node=node, interval_s=interval, on_pass=record)
        finally:
            if node is not None:
                await node.client.close()

    _run(main)


def run_vfio_manager_from_env(sysfs_for: SysfsFactory = Sysfs) -> None:
    """`ccgpu agent vfio-manager` with no subcommand (how a DaemonSet runs it): `run`, configured by NVIDIA's
    environment variables."""
    run_vfio_manager(
        host_root=os.environ.get("HOST_ROOT") or os.environ.get("CCGPU_HOST_ROOT") or "/",
        nvswitches=os.environ.get("BIND_NVSWITCHES", "false").lower() in ("1", "true", "yes"),
        node_name=os.environ.get("NODE_NAME") or None,
        kubeconfig=os.environ.get("KUBECONFIG") or None,
        interval=2.0,
        metrics_port=int(os.environ.get("METRICS_PORT", "0") or 0),
        sysfs_for=sysfs_for,
    )


# --- validator -------------------------------------------------------------------------------------------


def run_validator(
    *,
    host_root: str,
    node_name: str | None,
    kubeconfig: str | None,
    default_workload: str,
    check_cc: bool,
    interval: float,
    metrics_port: int,
    once: bool,
    sysfs_for: SysfsFactory = Sysfs,
) -> None:
    from ccgpu.agents.validator import Validator

    check_host_root(host_root)
    check_port(metrics_port)
    try:
        labels.parse_workload_config(default_workload)
    except labels.LabelValueError as e:
        fail(f"--default-workload: {e}")
    if interval <= 0:
        fail(f"--interval must be a positive number of seconds, got {interval}")
    setup_logging("sandbox-validator", node_name)
    registry = CollectorRegistry()
    ready = Gauge("ccgpu_validation_ready", "1 while the readiness file exists.", ["file"], registry=registry)
    serve_metrics(metrics_port, registry)

    async def main(stop: asyncio.Event) -> None:
        node = _node_handle(kubeconfig, node_name, "nvidia-sandbox-validator") if node_name else None
        validator = Validator(sysfs_for(host_root), node, default_workload=default_workload, check_cc=check_cc)

        def record(files: dict[str, str | None]) -> None:
            for name, content in files.items():
                ready.labels(file=name).set(0 if content is None else 1)

        try:
            if once:
                wanted, reasons = await validator.evaluate()
                validator.apply(wanted)
                record(wanted.files)
                for name, content in sorted(wanted.files.items()):
                    typer.echo(f"{name}: {'written' if content is not None else 'absent'}")
                for reason in reasons:
                    typer.echo(f"not ready: {reason}")
            else:
                await validator.run(stop, interval_s=interval, on_pass=record)
        finally:
            if node is not None:
                await node.client.close()

    _run(main)


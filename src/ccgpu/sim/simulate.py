"""`ccgpu simulate`: start the cluster-in-a-box, apply the default ClusterPolicy, show it converging, run a sample
confidential pod, and say whether every expected outcome holds (exit 0 only then).

Logs of every component go to `<workdir>/cluster.log`, so the terminal shows the live view (or, with `--json`,
only the final summary on stdout).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccgpu.sim.cluster import SAMPLE_POD, Cluster, NodeSpec, Report, parse_nodes
from ccgpu.sim.vm_attestation import attestation_summary


@dataclass
class Options:
    nodes: list[NodeSpec]
    json_output: bool = False
    workdir: Path | None = None
    keep: bool = False
    scenario: Path | None = None
    timeout_s: float = 90.0


class WorkdirError(ValueError):
    pass


def prepare_workdir(path: Path | None) -> tuple[Path, bool]:
    """(directory, whether to delete it at the end). A given directory must be absent or empty."""
    if path is None:
        return Path(tempfile.mkdtemp(prefix="ccgpu-sim-")), True
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise WorkdirError(f"--workdir {path} is not an empty directory; give an absent or empty one")
    path.mkdir(parents=True, exist_ok=True)
    return path, False


def _table(rows: list[dict[str, Any]], report: Report | None, title: str):
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col in ("node", "workload", "cc.mode", "cc.mode.state", "cc.ready", "operands", "GPUs vfio", "pgpu alloc"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["node"], r["workload"], r["cc_mode"] or "(default)", r["cc_mode_state"] or "-",
                  r["cc_ready_state"] or "-", str(len(r["operands"])), f"{r['gpus_on_vfio']}/{r['gpus']}",
                  str(r["pgpu_allocatable"]))
    if report is not None:
        done = sum(1 for o in report.outcomes if o.ok)
        t.caption = f"{done}/{len(report.outcomes)} expected outcomes hold"
    return t


async def _run(opts: Options, workdir: Path) -> tuple[int, dict[str, Any]]:
    from rich.console import Console
    from rich.live import Live

    console = Console(stderr=True)
    live_view = not opts.json_output and console.is_terminal
    started = time.monotonic()
    async with Cluster(opts.nodes, workdir) as cluster:
        await cluster.apply_policy()
        if live_view:
            with Live(_table([], None, "converging"), console=console, refresh_per_second=4) as live:
                report = await cluster.wait_converged(
                    opts.timeout_s, progress=lambda rows, rep: live.update(
                        _table(rows, rep, f"converging ({time.monotonic() - started:.1f}s)")))
        else:
            report = await cluster.wait_converged(opts.timeout_s)
        converged_s = time.monotonic() - started
        if not opts.json_output:
            console.print(f"converged: {report.ok} after {converged_s:.1f}s")
        pod: dict[str, Any] = {}
        scenario_results: list[dict[str, Any]] = []
        if report.ok:
            await cluster.create_pod()
            pod = await cluster.wait_pod(SAMPLE_POD, timeout_s=30)
        final = await cluster.outcomes(sample_pod=True)
        if opts.scenario is not None and final.ok:
            from ccgpu.sim.scenario import load, run_scenario

            scenario_results = await run_scenario(cluster, load(opts.scenario))
        summary: dict[str, Any] = {
            "ok": final.ok and all(s["ok"] for s in scenario_results),
            "converge_seconds": round(converged_s, 2),
            "outcomes": [{"what": o.what, "ok": o.ok, "detail": o.detail} for o in final.outcomes],
            "nodes": await cluster.view(),
            "sample_pod": {"name": SAMPLE_POD, "node": (pod.get("spec") or {}).get("nodeName"),
                           "phase": (pod.get("status") or {}).get("phase"),
                           "cdi_devices": ((pod.get("metadata") or {}).get("annotations") or {}).get(
                               "ccgpu.dev/cdi-devices"),
                           "gpu_bdfs": ((pod.get("metadata") or {}).get("annotations") or {}).get(
                               "ccgpu.dev/gpu-bdfs"),
                           "attestation": attestation_summary(pod)},
            "scenario": scenario_results,
            "api": cluster.metrics(),
            "workdir": str(workdir),
        }
        if not opts.json_output:
            console.print(_table(summary["nodes"], final, "final"))
            for o in final.outcomes:
                console.print(f"[{'green' if o.ok else 'red'}]{'ok  ' if o.ok else 'FAIL'}[/] {o.what}: {o.detail}")
            for s in scenario_results:
                console.print(f"[{'green' if s['ok'] else 'red'}]{'ok  ' if s['ok'] else 'FAIL'}[/] "
                              f"scenario step {s['step']}: {s['detail']}")
            sp = summary["sample_pod"]
            console.print(f"sample pod {SAMPLE_POD}: {sp['phase']} on {sp['node']} with {sp['cdi_devices']} "
                          f"({sp['gpu_bdfs']})")
            at = sp["attestation"]
            console.print(f"sample pod attestation: {at['status']}, GPU ready {at['gpu_ready']}: {at['reason']}")
        if opts.keep:
            kc = workdir / "kubeconfig"
            cluster.api.write_kubeconfig(kc)
            console.print(f"cluster kept running; use: KUBECONFIG={kc} kubectl get nodes  (Ctrl-C to stop)")
            summary["kubeconfig"] = str(kc)
            if opts.json_output:
                print(json.dumps(summary, indent=2), flush=True)
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                pass
        return (0 if summary["ok"] else 1), summary


def simulate(opts: Options) -> int:
    import os

    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # gRPC's C core logs every closed plugin socket otherwise
    workdir, remove = prepare_workdir(opts.workdir)
    logging.basicConfig(level=logging.WARNING, filename=str(workdir / "cluster.log"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    try:
        code, summary = asyncio.run(_run(opts, workdir))
    except KeyboardInterrupt:
        return 130
    finally:
        if remove and not opts.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if opts.json_output and not opts.keep:
        if remove:
            summary["workdir"] = None
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return code


def options(nodes: int | None, profile: str, json_output: bool, workdir: Path | None, keep: bool,
            scenario: Path | None, timeout_s: float) -> Options:
    """Validate the command-line values (raises ValueError naming what is accepted)."""
    if scenario is not None and not scenario.is_file():
        raise ValueError(f"--scenario {scenario} is not a file")
    return Options(parse_nodes(profile, nodes), json_output, workdir, keep, scenario, timeout_s)

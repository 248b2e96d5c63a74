"""The operator's Prometheus metrics, in their own registry (so tests and two controllers never collide)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconcile_seconds = Histogram(
            "ccgpu_operator_reconcile_duration_seconds", "Time one reconcile took (compute and writes).",
            registry=self.registry, buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60))
        self.writes = Counter("ccgpu_operator_writes", "API writes made, by verb and kind.", ["verb", "kind"],
                              registry=self.registry)
        self.errors = Counter("ccgpu_operator_reconcile_errors", "Reconciles that failed.", registry=self.registry)
        self.nodes = Gauge("ccgpu_operator_nodes", "GPU nodes by summary dimension and value.",
                           ["dimension", "value"], registry=self.registry)
        self.leader = Gauge("ccgpu_operator_leader", "1 while this replica holds the leader Lease.",
                            registry=self.registry)

    def observe_status(self, status: Mapping[str, Any] | None) -> None:
        nodes = (status or {}).get("nodes") or {}
        self.nodes.clear()
        self.nodes.labels("all", "gpu").set(nodes.get("gpuNodes", 0))
        self.nodes.labels("all", "optedOut").set(nodes.get("optedOut", 0))
        for dim in ("workloadConfigs", "ccModes", "ccModeStates", "ccReadyStates"):
            for value, count in (nodes.get(dim) or {}).items():
                self.nodes.labels(dim, value).set(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)

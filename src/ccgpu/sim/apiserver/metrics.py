"""Request metering: how many requests each verb made on each resource, readable in-process and as
Prometheus text at /metrics, so tests and benchmarks can assert how many writes a controller made."""

from __future__ import annotations

from collections import Counter

WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


class Metrics:
    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str, int]] = Counter()

    def record(self, verb: str, resource: str, code: int) -> None:
        self._counts[(verb, resource, code)] += 1

    def count(self, verb: str | None = None, resource: str | None = None, code: int | None = None) -> int:
        """Requests matching every given filter (`resource` is the plural, or "plural/status")."""
        return sum(n for (v, r, c), n in self._counts.items()
                   if (verb is None or v == verb) and (resource is None or r == resource)
                   and (code is None or c == code))

    def writes(self, resource: str | None = None) -> int:
        return sum(self.count(v, resource) for v in WRITE_VERBS)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """{resource: {verb: count}}"""
        out: dict[str, dict[str, int]] = {}
        for (v, r, _), n in sorted(self._counts.items()):
            out.setdefault(r, {}).setdefault(v, 0)
            out[r][v] += n
        return out

    def reset(self) -> None:
        self._counts.clear()

    def prometheus(self) -> str:
        lines = ["# HELP apiserver_request_total Requests served, by verb, resource and HTTP code.",
                 "# TYPE apiserver_request_total counter"]
        for (v, r, c), n in sorted(self._counts.items()):
            lines.append(f'apiserver_request_total{{verb="{v}",resource="{r}",code="{c}"}} {n}')
        return "\n".join(lines) + "\n"

"""Fault injection for tests: error rates per verb/resource, added latency, dropped watch streams and forced
410 Gone. Seeded, and decided in request order, so a test run is reproducible."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .errors import ApiError

_REASONS = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 409: "Conflict", 410: "Gone",
            422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
            504: "Timeout"}


@dataclass
class _Rule:
    verb: str
    resource: str
    rate: float = 1.0
    code: int = 500
    count: int | None = None  # remaining firings; None means unlimited
    seconds: float = 0.0
    after_events: int = 0

    def applies(self, verb: str, resource: str) -> bool:
        return self.verb in ("*", verb) and self.resource in ("*", resource) and self.count != 0


class Faults:
    """The injection knobs. `resource` is the plural ("nodes", "widgets", "nodes/status"); "*" means any."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        """No faults; the random stream starts over from `seed` (default: the one it had)."""
        if seed is not None:
            self.seed = seed
        self.rng = random.Random(self.seed)
        self._errors: list[_Rule] = []
        self._delays: list[_Rule] = []
        self._drops: list[_Rule] = []
        self._gone: list[_Rule] = []
        self.injected = 0

    def fail(self, verb: str = "*", resource: str = "*", *, rate: float = 1.0, code: int = 500,
             count: int | None = None) -> None:
        """Answer matching requests with `code` (probability `rate`, at most `count` times)."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, got {rate}")
        self._errors.append(_Rule(verb, resource, rate, code, count))

    def delay(self, seconds: float, verb: str = "*", resource: str = "*") -> None:
        """Add `seconds` of latency before matching requests are served."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        self._delays.append(_Rule(verb, resource, seconds=seconds))

    def drop_watches(self, resource: str = "*", *, after_events: int = 0, rate: float = 1.0,
                     count: int | None = None) -> None:
        """End matching watch streams abruptly after `after_events` events (as a broken connection does)."""
        self._drops.append(_Rule("watch", resource, rate, count=count, after_events=after_events))

    def force_gone(self, resource: str = "*", *, count: int = 1) -> None:
        """The next `count` watches of `resource` that name a resourceVersion get 410 Gone."""
        self._gone.append(_Rule("watch", resource, count=count))

    # --- decisions (called by the server) ------------------------------------------------------------
    def _fire(self, rules: list[_Rule], verb: str, resource: str) -> _Rule | None:
        for r in rules:
            if r.applies(verb, resource) and (r.rate >= 1.0 or self.rng.random() < r.rate):
                if r.count is not None:
                    r.count -= 1
                self.injected += 1
                return r
        return None

    def error_for(self, verb: str, resource: str) -> ApiError | None:
        r = self._fire(self._errors, verb, resource)
        if r is None:
            return None
        reason = _REASONS.get(r.code, "InternalError")
        return ApiError(r.code, reason, f"injected fault: {verb} {resource} answered {r.code} {reason}", {})

    def latency_for(self, verb: str, resource: str) -> float:
        return sum(r.seconds for r in self._delays if r.applies(verb, resource))

    def watch_drop_after(self, resource: str) -> int | None:
        r = self._fire(self._drops, "watch", resource)
        return None if r is None else r.after_events

    def take_gone(self, resource: str) -> bool:
        return self._fire(self._gone, "watch", resource) is not None

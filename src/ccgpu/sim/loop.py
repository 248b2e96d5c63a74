"""The one loop shape the simulated cluster's controllers share: do a pass, wait, repeat until stopped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ccgpu.agents.pacing import sleep_or_stop

log = logging.getLogger(__name__)


async def wait_event_or_stop(event: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
    """Return when `event` or `stop` is set, or after `seconds`."""
    waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def every(interval_s: float, stop: asyncio.Event, step: Callable[[], Awaitable[Any]], name: str,
                pace: Callable[[asyncio.Event, float], Awaitable[None]] | None = None) -> None:
    """Run `step` every `interval_s` (or whenever `pace(stop, interval_s)` returns) until `stop`; a failing pass
    is logged and retried (level-triggered), so an injected API fault delays convergence but never ends the
    controller."""
    last_error = None
    while not stop.is_set():
        try:
            await step()
            last_error = None
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a controller keeps going; the next pass redoes the work
            msg = f"{type(e).__name__}: {e}"
            if msg != last_error:
                log.warning("%s pass failed (will retry): %s", name, msg)
            last_error = msg
        await (pace or sleep_or_stop)(stop, interval_s)

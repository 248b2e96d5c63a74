"""How a polling agent waits between passes. Production agents sleep their interval (sysfs has no change
events); a caller that knows when the host or node changed (the cluster-in-a-box, with hundreds of nodes in one
process) passes its own `pace`, which returns early on a change, so a pass runs when there is work."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Pace = Callable[[asyncio.Event, float], Awaitable[None]]


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds` or until `stop` is set, whichever comes first."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass

"""Change signals for the cluster-in-a-box: "something about node X changed", so that a simulated node's agents
and checks run when there is work instead of polling hundreds of host trees on a timer.

A `Signals` keeps one generation counter per key (a node name). `bump(key)` may be called from any thread (host
writes happen in worker threads); waiters in the event loop see the new generation. Simulated host trees report
their own changes through `host_changed(root)`, which the cluster maps to its node's key with `watch_host`.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable

_host_listeners: dict[str, Callable[[str], None]] = {}
_host_lock = threading.Lock()


def _key(root: str | os.PathLike[str]) -> str:
    return os.path.realpath(root)


def watch_host(root: str | os.PathLike[str], callback: Callable[[str], None]) -> None:
    """Call `callback(what)` (from whatever thread made the change) whenever the host tree at `root` changes:
    `what` is "state" for the kernel and device state (drivers, CC modes, devices present), "file" for a file
    an agent wrote (validation files)."""
    with _host_lock:
        _host_listeners[_key(root)] = callback


def unwatch_host(root: str | os.PathLike[str]) -> None:
    with _host_lock:
        _host_listeners.pop(_key(root), None)


def host_changed(root: str | os.PathLike[str], what: str = "state") -> None:
    """A simulated host's state or one of its files changed (called by the simulated host's write paths)."""
    if not _host_listeners:
        return
    with _host_lock:
        callback = _host_listeners.get(_key(root))
    if callback is not None:
        callback(what)


class Signals:
    """Generation counters per key with async waits; bind to the loop that waits (`bind()` inside it)."""

    def __init__(self) -> None:
        self._gen: dict[str, int] = {}
        self._waiters: dict[str, set[asyncio.Future]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self) -> None:
        self._loop = asyncio.get_running_loop()

    def generation(self, key: str) -> int:
        return self._gen.get(key, 0)

    def bump(self, key: str) -> None:
        """Mark `key` changed; safe from any thread once bound."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._fire(key)
        else:
            loop.call_soon_threadsafe(self._fire, key)

    def _fire(self, key: str) -> None:
        self._gen[key] = self._gen.get(key, 0) + 1
        for fut in self._waiters.pop(key, ()):
            if not fut.done():
                fut.set_result(None)

    def pacer(self, *keys: str, settle_s: float = 0.02) -> Callable[[asyncio.Event, float], Awaitable[None]]:
        """A `pace(stop, interval_s)` (see agents.pacing) for one node's agent: return once one of `keys`
        changes, `stop` is set or `interval_s` passes; a change is followed by `settle_s` so that a burst of
        changes makes one pass. Thousands of agents wait at once, so a wait is one future and one timer (a
        single task per pacer watches `stop`), not a task per wait."""
        seen = [tuple(self.generation(k) for k in keys)]
        current: list[asyncio.Future | None] = [None]
        stop_watch: list[asyncio.Task | None] = [None]

        async def wake_on_stop(stop: asyncio.Event) -> None:
            await stop.wait()
            fut = current[0]
            if fut is not None and not fut.done():
                fut.set_result(None)

        async def pace(stop: asyncio.Event, interval_s: float) -> None:
            loop = asyncio.get_running_loop()
            if stop_watch[0] is None:
                stop_watch[0] = loop.create_task(wake_on_stop(stop))
            if stop.is_set():
                return
            if tuple(self.generation(k) for k in keys) == seen[0]:
                fut = current[0] = loop.create_future()
                for k in keys:
                    self._waiters.setdefault(k, set()).add(fut)

                def wake() -> None:
                    if not fut.done():
                        fut.set_result(None)

                timer = loop.call_later(interval_s, wake)
                try:
                    await fut
                finally:
                    timer.cancel()
                    current[0] = None
                    for k in keys:
                        waiting = self._waiters.get(k)
                        if waiting is not None:
                            waiting.discard(fut)
            if not stop.is_set() and tuple(self.generation(k) for k in keys) != seen[0] and settle_s:
                await asyncio.sleep(settle_s)
            seen[0] = tuple(self.generation(k) for k in keys)

        return pace

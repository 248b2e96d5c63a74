"""One list+watch per resource kind, shared by every simulated kubelet, controller and check of the
cluster-in-a-box, as client-go's shared informers are: hundreds of nodes must not each LIST nodes and pods.

An `Informer` keeps plain dicts (the API's JSON, never model objects: decoding thousands of objects into
models was most of the simulator's CPU) keyed by (namespace, name), resumes its watch by resourceVersion, and
re-lists on 410 or after a broken stream. `on_change(old, new)` callbacks run in the event loop for every
change (new is None on delete). `apply(obj)` records the answer of our own write at once, so the writer's next
pass does not act on the object as it was before (the newer resourceVersion wins either way).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Key = tuple[str, str]
Change = Callable[[dict[str, Any] | None, dict[str, Any] | None], None]


def object_key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


def _rv(obj: dict[str, Any] | None) -> int:
    text = ((obj or {}).get("metadata") or {}).get("resourceVersion") or "0"
    return int(text) if text.isdigit() else 0


class Informer:
    """`path` is the collection's URL path (e.g. `/api/v1/pods` for every namespace); `http` an httpx-style
    async client whose base URL is the API server."""

    def __init__(self, http: Any, path: str, *, retry_s: float = 0.1, watch_timeout_s: int = 300,
                 index: Callable[[dict[str, Any]], str] | None = None) -> None:
        self.http = http
        self.index = index  # objects are also kept by this value (pods by node), see `indexed`
        self._by_index: dict[str, dict[Key, dict[str, Any]]] = {}
        self.path = path
        self.retry_s = retry_s
        self.watch_timeout_s = watch_timeout_s
        self.cache: dict[Key, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self._listeners: list[Change] = []
        self._subscribers: dict[Key, set[asyncio.Queue]] = {}
        self._rv = ""

    def on_change(self, callback: Change) -> None:
        self._listeners.append(callback)

    def subscribe(self, name: str, namespace: str = "") -> asyncio.Queue:
        """A queue that gets ("MODIFIED" | "ADDED" | "DELETED", object) for every change of one object: a
        watch of that object, served from this informer's one stream instead of a connection of its own."""
        queue: asyncio.Queue = asyncio.Queue()
        self._subscribers.setdefault((namespace, name), set()).add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue, name: str, namespace: str = "") -> None:
        self._subscribers.get((namespace, name), set()).discard(queue)

    def get(self, name: str, namespace: str = "") -> dict[str, Any] | None:
        return self.cache.get((namespace, name))

    def items(self) -> list[dict[str, Any]]:
        return list(self.cache.values())

    def indexed(self, value: str) -> list[dict[str, Any]]:
        """The objects whose index value is `value` (e.g. the pods bound to one node)."""
        return list(self._by_index.get(value, {}).values())

    def apply(self, obj: dict[str, Any], deleted: bool = False) -> None:
        """Record an object (or its deletion) now; an older version arriving later changes nothing."""
        key = object_key(obj)
        old = self.cache.get(key)
        if deleted:
            if old is not None and _rv(old) <= _rv(obj):
                del self.cache[key]
                self._notify(old, None)
            return
        if old is not None and _rv(old) >= _rv(obj):
            return
        self.cache[key] = obj
        self._notify(old, obj)

    def _notify(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if self.index is not None:
            key = object_key(new or old or {})
            if old is not None:
                self._by_index.get(self.index(old), {}).pop(key, None)
            if new is not None:
                self._by_index.setdefault(self.index(new), {})[key] = new
        subscribers = self._subscribers.get(object_key(new or old or {}))
        if subscribers:
            event = ("DELETED" if new is None else "ADDED" if old is None else "MODIFIED", new or old)
            for queue in subscribers:
                queue.put_nowait(event)
        for callback in self._listeners:
            try:
                callback(old, new)
            except Exception:  # one bad listener must not stop the informer
                log.exception("informer %s: a change listener failed", self.path)

    # --- list + watch ---------------------------------------------------------------------------------
    async def _list(self) -> None:
        resp = await self.http.get(self.path)
        resp.raise_for_status()
        body = resp.json()
        fresh = {object_key(o): o for o in body.get("items") or []}
        kind = (body.get("kind") or "").removesuffix("List")
        for key, old in list(self.cache.items()):
            if key not in fresh:
                del self.cache[key]
                self._notify(old, None)
        for obj in fresh.values():
            obj.setdefault("kind", kind)
            self.apply(obj)
        self._rv = (body.get("metadata") or {}).get("resourceVersion") or ""

    async def _watch(self) -> bool:
        """Follow the watch until it ends; False when it must re-list (410)."""
        params = {"watch": "true", "resourceVersion": self._rv, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(self.watch_timeout_s)}
        async with self.http.stream("GET", self.path, params=params, timeout=None) as resp:
            resp.raise_for_status()
            async for line in resp.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                etype, obj = event.get("type"), event.get("object") or {}
                if etype == "ERROR":
                    if obj.get("code") == 410:
                        return False
                    raise RuntimeError(f"watch of {self.path}: {obj.get('message')}")
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if etype != "BOOKMARK":
                    self.apply(obj, deleted=etype == "DELETED")
                if rv:
                    self._rv = rv
        return True

    async def run(self, stop: asyncio.Event) -> None:
        relist = True
        failures = 0
        while not stop.is_set():
            try:
                if relist:
                    await self._list()
                    self.synced.set()
                    relist = False
                relist = not await self._watch()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - injected faults, dropped streams: retry, re-list if stuck
                failures += 1
                if failures > 3:
                    relist = True
                log.debug("informer %s: %s: %s (retrying)", self.path, type(e).__name__, e)
                await asyncio.sleep(self.retry_s * min(failures, 10))


def pod_node(pod: dict[str, Any]) -> str:
    return (pod.get("spec") or {}).get("nodeName") or ""


class Informers:
    """The cluster's shared informers (nodes, every namespace's pods, daemonsets), run until `stop`."""

    PATHS = {"nodes": "/api/v1/nodes", "pods": "/api/v1/pods", "daemonsets": "/apis/apps/v1/daemonsets"}

    def __init__(self, http: Any) -> None:
        self.http = http
        self.nodes = Informer(http, self.PATHS["nodes"])
        self.pods = Informer(http, self.PATHS["pods"], index=pod_node)
        self.daemonsets = Informer(http, self.PATHS["daemonsets"])
        self._tasks: list[asyncio.Task] = []

    def all(self) -> list[Informer]:
        return [self.nodes, self.pods, self.daemonsets]

    async def start(self, stop: asyncio.Event, timeout_s: float = 30.0) -> None:
        self._tasks = [asyncio.create_task(i.run(stop), name=f"informer {i.path}") for i in self.all()]
        await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in self.all())), timeout_s)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

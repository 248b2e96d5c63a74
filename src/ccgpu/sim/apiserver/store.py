"""Versioned object store: one global resourceVersion counter, the current objects per resource, a bounded
log of recent change events (the watch window), and the live watchers each commit is pushed to.

Everything runs on the server's event loop, so a commit (bump rv, store, log, notify) is atomic.
"""

from __future__ import annotations

import asyncio
import builtins
import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, str]  # (group, plural)
ObjKey = tuple[str, str]  # (namespace or "", name)


@dataclass
class Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    key: Key
    obj: dict[str, Any]
    prev: dict[str, Any] | None
    _json: str | None = field(default=None, repr=False)

    def object_json(self, store: Store) -> str:
        """The object serialized once, shared by every watcher (and reader) that receives it unchanged."""
        if self._json is None:
            self._json = store.dumps(self.obj)
        return self._json


class TooOld(Exception):
    """The requested resourceVersion has left the watch window."""

    def __init__(self, requested: int, oldest: int):
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


class Watcher:
    """One watch stream's inbox. `None` in the queue means: the server closed this stream."""

    def __init__(self, key: Key, namespace: str | None, name: str | None = None):
        self.key = key
        self.namespace = namespace
        self.name = name  # a watch of one object (fieldSelector metadata.name=X): others never wake it
        self.seen_rv = 0  # the newest event offered, queued or not (what a bookmark may report)
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()

    def offer(self, ev: Event) -> None:
        self.seen_rv = ev.rv
        meta = ev.obj["metadata"]
        if self.name is not None and meta.get("name") != self.name:
            return
        if self.namespace is None or meta.get("namespace", "") == self.namespace:
            self.queue.put_nowait(ev)

    def close(self) -> None:
        self.queue.put_nowait(None)


class Store:
    def __init__(self, window: int = 20000):
        self.rv = 0
        self.window = window
        self.horizon = 0  # the highest rv whose event has left the log; watches must start at or above it
        self._objects: dict[Key, dict[ObjKey, dict[str, Any]]] = {}
        self._log: deque[Event] = deque()
        self._watchers: dict[Key, set[Watcher]] = {}
        # Serialized form of stored objects, computed on first read: id(obj) -> (obj, json or None).
        self._json: dict[int, tuple[dict[str, Any], str | None]] = {}

    def dumps(self, obj: dict[str, Any]) -> str:
        """JSON of an object; a stored object (never modified once stored) is serialized only once."""
        entry = self._json.get(id(obj))
        if entry is not None and entry[0] is obj:
            text = entry[1]
            if text is None:
                text = json.dumps(obj, separators=(",", ":"))
                self._json[id(obj)] = (obj, text)
            return text
        return json.dumps(obj, separators=(",", ":"))

    # --- reads -------------------------------------------------------------------------------------
    def get(self, key: Key, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get(key, {}).get((namespace, name))

    def list(self, key: Key, namespace: str | None = None, at: int | None = None) -> list[dict[str, Any]]:
        """Objects sorted by (namespace, name), now or as of resourceVersion `at` (rebuilt by undoing the
        logged changes after it; TooOld once they have left the window). Callers must not modify them."""
        items = self._objects.get(key, {})
        if at is not None and at < self.rv:
            if at < self.horizon:
                raise TooOld(at, self.horizon + 1)
            items = dict(items)
            for ev in reversed(self._log):
                if ev.rv <= at:
                    break
                if ev.key != key:
                    continue
                meta = ev.obj["metadata"]
                okey = (meta.get("namespace", ""), meta["name"])
                if ev.type == "ADDED" or ev.prev is None:
                    items.pop(okey, None)
                else:
                    items[okey] = ev.prev
        keys = sorted(k for k in items if namespace is None or k[0] == namespace)
        return [items[k] for k in keys]

    def keys(self) -> Iterable[Key]:
        return list(self._objects)

    def count(self, key: Key) -> int:
        return len(self._objects.get(key, {}))

    # --- writes ------------------------------------------------------------------------------------
    def commit(self, key: Key, etype: str, obj: dict[str, Any], prev: dict[str, Any] | None) -> dict[str, Any]:
        """Stamp the next resourceVersion on `obj` (owned by the store from now on), apply and publish it."""
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        meta = obj["metadata"]
        okey = (meta.get("namespace", ""), meta["name"])
        bucket = self._objects.setdefault(key, {})
        if prev is not None:
            self._json.pop(id(prev), None)
        if etype == "DELETED":
            bucket.pop(okey, None)
        else:
            bucket[okey] = obj
            self._json[id(obj)] = (obj, None)
        ev = Event(self.rv, etype, key, obj, prev)
        self._log.append(ev)
        while len(self._log) > self.window:
            self.horizon = self._log.popleft().rv
        for w in list(self._watchers.get(key, ())):
            w.offer(ev)
        return obj

    def compact(self) -> None:
        """Forget every logged event, as etcd compaction does: older watches then get 410 Gone."""
        self.horizon = self.rv
        self._log.clear()

    # --- watch -------------------------------------------------------------------------------------
    def events_since(self, key: Key, rv: int) -> builtins.list[Event]:
        if rv < self.horizon:
            raise TooOld(rv, self.horizon + 1)
        return [e for e in self._log if e.rv > rv and e.key == key]

    def subscribe(self, key: Key, namespace: str | None, name: str | None = None) -> Watcher:
        w = Watcher(key, namespace, name)
        self._watchers.setdefault(key, set()).add(w)
        return w

    def unsubscribe(self, w: Watcher) -> None:
        self._watchers.get(w.key, set()).discard(w)

    def close_watchers(self, key: Key | None = None) -> int:
        """End live watch streams (all, or one resource's); returns how many were closed."""
        n = 0
        for k, ws in self._watchers.items():
            if key is None or k == key:
                for w in list(ws):
                    w.close()
                    n += 1
        return n

    def watcher_count(self) -> int:
        return sum(len(ws) for ws in self._watchers.values())

"""Garbage collection as the kube-controller-manager does it: dependents whose owners are all gone are
deleted (background), owners in foreground deletion wait for their dependents, `orphan` owners release
theirs, and terminating namespaces are emptied before they go.

Runs as a pass scheduled on the event loop after deletions, repeated until nothing changes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from . import errors
from .resources import ResourceType
from .verbs import NS_KEY, Verbs, fast_copy

log = logging.getLogger(__name__)


class GarbageCollector:
    def __init__(self, verbs: Verbs):
        self.verbs = verbs
        self._scheduled = False
        self.passes = 0

    def kick(self) -> None:
        """Schedule a pass soon (coalesces many deletions into one pass)."""
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.run()
            return
        self._scheduled = True
        loop.call_soon(self._run_scheduled)

    def _run_scheduled(self) -> None:
        self._scheduled = False
        try:
            self.run()
        except Exception:  # the collector must never take the server down
            log.exception("garbage collection pass failed")

    def run(self, max_rounds: int = 50) -> None:
        for _ in range(max_rounds):
            self.passes += 1
            if not self._one_round():
                return

    def _types(self) -> dict[tuple[str, str], ResourceType]:
        out: dict[tuple[str, str], ResourceType] = {}
        for rt in self.verbs.registry:
            out.setdefault(rt.key, rt)
        return out

    def _one_round(self) -> bool:
        store = self.verbs.store
        types = self._types()
        objects: list[tuple[ResourceType, dict[str, Any]]] = []
        for key, rt in types.items():
            objects += [(rt, o) for o in store.list(key)]
        by_uid = {o["metadata"]["uid"]: o for _, o in objects}
        changed = False
        # Dependents of absent, foreground-deleting or orphaning owners.
        dependents_of: dict[str, int] = {}
        for rt, obj in objects:
            refs = obj["metadata"].get("ownerReferences") or []
            if not refs:
                continue
            if store.get(rt.key, obj["metadata"].get("namespace", ""), obj["metadata"]["name"]) is not obj:
                continue  # changed or removed earlier in this round (e.g. with its CRD): next round sees it
            keep, delete_now = [], False
            live_owner = False
            for ref in refs:
                owner = by_uid.get(ref.get("uid"))
                if owner is None:
                    continue
                ometa = owner["metadata"]
                if ometa.get("deletionTimestamp") and "orphan" in (ometa.get("finalizers") or []):
                    continue  # released
                keep.append(ref)
                dependents_of[ref["uid"]] = dependents_of.get(ref["uid"], 0) + 1
                if ometa.get("deletionTimestamp") and "foregroundDeletion" in (ometa.get("finalizers") or []):
                    delete_now = True
                else:
                    live_owner = True
            if delete_now or (not keep and not _released_only(refs, by_uid)):
                if not obj["metadata"].get("deletionTimestamp"):
                    changed |= self._delete(rt, obj)
            elif len(keep) != len(refs) and (live_owner or keep):
                new = fast_copy(obj)
                new["metadata"]["ownerReferences"] = keep
                if not keep:
                    new["metadata"].pop("ownerReferences")
                self.verbs._write(rt, obj, new, "", False, "garbage-collector", None, None)
                changed = True
            elif not keep:
                new = fast_copy(obj)
                new["metadata"].pop("ownerReferences")
                self.verbs._write(rt, obj, new, "", False, "garbage-collector", None, None)
                changed = True
        # Owners whose deletion waits on dependents or orphaning.
        for rt, obj in objects:
            meta = obj["metadata"]
            if not meta.get("deletionTimestamp"):
                continue
            fins = list(meta.get("finalizers") or [])
            current = store.get(rt.key, meta.get("namespace", ""), meta["name"])
            if current is None:
                continue
            if "foregroundDeletion" in fins and not dependents_of.get(meta["uid"]):
                changed |= self._drop_finalizer(rt, current, "foregroundDeletion")
            elif "orphan" in fins:
                changed |= self._drop_finalizer(rt, current, "orphan")
            if rt.key == NS_KEY:
                changed |= self._empty_namespace(meta["name"], types)
        return changed

    def _delete(self, rt: ResourceType, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        try:
            self.verbs.delete(rt, meta.get("namespace", ""), meta["name"], {"propagationPolicy": "Background"})
        except errors.ApiError:
            return False
        return True

    def _drop_finalizer(self, rt: ResourceType, obj: dict[str, Any], finalizer: str) -> bool:
        new = fast_copy(obj)
        new["metadata"]["finalizers"] = [f for f in obj["metadata"].get("finalizers", []) if f != finalizer]
        if not new["metadata"]["finalizers"]:
            new["metadata"].pop("finalizers")
        self.verbs._write(rt, obj, new, "", False, "garbage-collector", None, None)
        return True

    def _empty_namespace(self, ns: str, types: dict[tuple[str, str], ResourceType]) -> bool:
        store = self.verbs.store
        changed = False
        remaining = 0
        for key, rt in types.items():
            if not rt.namespaced:
                continue
            for o in store.list(key, ns):
                remaining += 1
                if not o["metadata"].get("deletionTimestamp"):
                    changed |= self._delete(rt, o)
        if remaining == 0:
            nsobj = store.get(NS_KEY, "", ns)
            if nsobj is not None and (nsobj.get("spec") or {}).get("finalizers"):
                new = fast_copy(nsobj)
                new["spec"]["finalizers"] = []
                rt = types[NS_KEY]
                self.verbs._write(rt, nsobj, new, "", False, "namespace-controller", None, None)
                changed = True
        return changed


def _released_only(refs: list[dict[str, Any]], by_uid: dict[str, dict[str, Any]]) -> bool:
    """True when every owner still exists but is orphaning this dependent (so it survives)."""
    return all(r.get("uid") in by_uid for r in refs)

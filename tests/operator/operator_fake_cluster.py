"""An in-memory cluster for the controller's unit tests: Sources + Writer with resourceVersions and counts.

`lagging=True` makes the watch side (Sources) show only what `deliver()` has released, as a real watch does.
"""

from __future__ import annotations

import copy
from collections import Counter

from ccgpu.operator.desired import ObjectKey
from ccgpu.operator.plan import Event, Write


class FakeCluster:
    def __init__(self, nodes=None, policies=(), lagging=False, fail_after=None):
        self.rv = 0
        self.nodes = {}
        self.policies = {}
        self.objects = {}
        self.events: list[Event] = []
        self.writes: Counter[str] = Counter()
        self.lagging = lagging
        self.fail_after = fail_after
        for name, labels in (nodes or {}).items():
            self.nodes[name] = (self._next(), dict(labels))
        for p in policies:
            self.add_policy(p)
        self._seen = self._view()

    def _next(self) -> str:
        self.rv += 1
        return str(self.rv)

    def add_policy(self, p):
        p = copy.deepcopy(p)
        rv = self._next()
        p["metadata"]["resourceVersion"] = rv
        self.policies[p["metadata"]["name"]] = (rv, p)

    def set_node_labels(self, name, labels):
        self.nodes[name] = (self._next(), dict(labels))

    # --- Sources -------------------------------------------------------------------------------------
    def _view(self):
        return copy.deepcopy((self.policies, self.nodes, self.objects))

    def deliver(self):
        self._seen = self._view()

    def _state(self):
        return self._seen if self.lagging else (self.policies, self.nodes, self.objects)

    def policies_view(self):
        return self._state()[0]

    def nodes_view(self):
        return self._state()[1]

    def owned_view(self):
        return self._state()[2]

    # --- Writer --------------------------------------------------------------------------------------
    async def apply(self, write: Write, actual):
        if self.fail_after is not None and sum(self.writes.values()) >= self.fail_after:
            raise ConnectionError("API server went away")
        self.writes[write.verb] += 1
        key: ObjectKey = write.key
        if write.verb == "patch-node":
            labels = dict(self.nodes[key.name][1])
            for k, v in write.body.items():
                if v is None:
                    labels.pop(k, None)
                else:
                    labels[k] = v
            rv = self._next()
            self.nodes[key.name] = (rv, labels)
            return rv, labels
        if write.verb in ("create", "replace"):
            if write.verb == "create" and key in self.objects:
                raise AssertionError(f"duplicate create of {key}")
            obj = copy.deepcopy(dict(write.body))
            rv = self._next()
            obj["metadata"]["resourceVersion"] = rv
            self.objects[key] = (rv, obj)
            return rv, obj
        if write.verb == "delete":
            rv, _ = self.objects.pop(key)
            return rv, None
        if write.verb == "status":
            _, p = self.policies[key.name]
            p = copy.deepcopy(p)
            p["status"] = copy.deepcopy(dict(write.body))
            rv = self._next()
            p["metadata"]["resourceVersion"] = rv
            self.policies[key.name] = (rv, p)
            return rv, p
        raise AssertionError(write.verb)

    async def post_event(self, event, uid=None):
        self.events.append(event)


class Sources:
    """Adapter with the controller's Sources protocol."""

    def __init__(self, cluster: FakeCluster):
        self.c = cluster

    def policies(self):
        return self.c.policies_view()

    def nodes(self):
        return self.c.nodes_view()

    def owned(self):
        return self.c.owned_view()

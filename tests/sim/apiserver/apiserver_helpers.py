"""Helpers for the API simulator tests: sample objects, a raw HTTP client, waiting on conditions."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from typing import Any

import aiohttp

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "subresources": {"status": {}},
            "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {"type": "object", "required": ["size"], "properties": {
                        "size": {"type": "integer", "minimum": 1, "maximum": 100},
                        "color": {"type": "string", "enum": ["red", "blue"]},
                        "tags": {"type": "array", "items": {"type": "string"}},
                    }},
                    "status": {"type": "object", "properties": {"phase": {"type": "string"},
                                                                "observed": {"type": "integer"}}},
                },
            }},
        }],
    },
}

WIDGETS = "/apis/example.com/v1/namespaces/default/widgets"


def widget_crd(**changes: Any) -> dict[str, Any]:
    crd = copy.deepcopy(WIDGET_CRD)
    crd["spec"].update(changes)
    return crd


def widget(name: str, size: int = 1, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": name, "labels": labels}, "spec": {"size": size}}


def node(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}, "spec": {}}


class Http:
    """Raw HTTP against the simulator, returning (status, parsed JSON body)."""

    def __init__(self, session: aiohttp.ClientSession, url: str):
        self.session = session
        self.url = url

    async def req(self, method: str, path: str, body: Any = None, *, ctype: str = "application/json",
                  raw: bytes | None = None, headers: dict[str, str] | None = None, **params: Any) -> tuple[int, Any]:
        import json

        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        hdrs = {"Content-Type": ctype, **(headers or {})}
        async with self.session.request(method, self.url + path, data=data, headers=hdrs,
                                        params={k: str(v) for k, v in params.items()}) as r:
            text = await r.text()
            try:
                return r.status, json.loads(text) if text else None
            except ValueError:
                return r.status, text

    async def get(self, path: str, **params: Any) -> tuple[int, Any]:
        return await self.req("GET", path, **params)

    async def post(self, path: str, body: Any, **params: Any) -> tuple[int, Any]:
        return await self.req("POST", path, body, **params)

    async def put(self, path: str, body: Any, **params: Any) -> tuple[int, Any]:
        return await self.req("PUT", path, body, **params)

    async def patch(self, path: str, body: Any, ctype: str = "application/merge-patch+json",
                    **params: Any) -> tuple[int, Any]:
        return await self.req("PATCH", path, body, ctype=ctype, **params)

    async def delete(self, path: str, body: Any = None, **params: Any) -> tuple[int, Any]:
        return await self.req("DELETE", path, body, **params)



async def wait_for(cond: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> Any:
    """Poll an (async or sync) condition until it is truthy; fail with the last value at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


async def watch_events(session: Any, url: str, **params: Any) -> Any:
    """Yield parsed watch events from a raw `?watch=1` stream until the server ends it."""
    import json

    params = {"watch": "1", **{k: str(v) for k, v in params.items()}}
    async with session.get(url, params=params) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            if line.strip():
                yield json.loads(line)

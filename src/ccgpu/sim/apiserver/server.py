"""HTTP front of the simulator: aiohttp routes for discovery and the REST verbs, watch streaming, content
negotiation (JSON, YAML bodies, server-side Tables for kubectl), fault injection and metering.

`ApiServer` runs it on 127.0.0.1 on a free port, as an async context manager or in a thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from aiohttp import StreamReader, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import RawRequestMessage

from . import discovery, errors, openapi, protobuf
from .errors import ApiError
from .faults import Faults
from .gc import GarbageCollector
from .kubeconfig import kubeconfig_dict, write_kubeconfig
from .metrics import Metrics
from .resources import Registry, ResourceType
from .selectors import make_filter
from .store import Event, Store, TooOld
from .tables import to_table
from .verbs import APPLY, Verbs

log = logging.getLogger(__name__)
CLIENT_CLOSED_REQUEST = 499  # metrics code for a request whose client left before the answer (nginx's convention)

K8S_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-ccgpu-sim", "gitCommit": "ccgpu-sim",
               "gitTreeState": "clean", "buildDate": "2026-11-26T00:00:00Z", "goVersion": "go1.23.0",
               "compiler": "gc", "platform": "linux/amd64"}
MAX_BODY = 64 * 1024 * 1024
LOOPBACK = ("127.0.0.1", "::1", "localhost")
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_TRUE = ("true", "1", "True")


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=json.dumps(body, separators=(",", ":")).encode(), status=status,
                        content_type="application/json", headers=headers)


def _raw_json(text: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=text.encode(), status=status, content_type="application/json", headers=headers)


class _Route:
    """A parsed resource path."""

    __slots__ = ("rt", "namespace", "name", "subresource")

    def __init__(self, rt: ResourceType, namespace: str | None, name: str | None, subresource: str):
        self.rt, self.namespace, self.name, self.subresource = rt, namespace, name, subresource


class ApiApp:
    """The application state behind the routes."""

    def __init__(self, seed: int = 0, watch_window: int = 20000, bookmark_interval: float = 5.0,
                 namespaces: tuple[str, ...] = DEFAULT_NAMESPACES):
        self.registry = Registry()
        self.store = Store(window=watch_window)
        self.metrics = Metrics()
        self.faults = Faults(seed)
        self.verbs = Verbs(self.registry, self.store, seed, on_delete=self._deleted)
        self.gc = GarbageCollector(self.verbs)
        self.bookmark_interval = bookmark_interval
        self.address = "127.0.0.1:0"
        ns_type = self.registry.get("", "v1", "namespaces")
        assert ns_type is not None
        for ns in namespaces:
            self.verbs.create(ns_type, "", {"metadata": {"name": ns}}, field_manager="kube-apiserver")

    def _deleted(self) -> None:
        """A deletion happened or started: dependents, foreground owners and namespaces may need collecting."""
        self.gc.kick()

    def make_server(self) -> web.Server:
        """A low-level aiohttp server: every path goes to `handle`, which routes by itself (no router)."""

        def request_factory(message: RawRequestMessage, payload: StreamReader, protocol: web.RequestHandler,
                            writer: AbstractStreamWriter, task: asyncio.Task[None]) -> web.BaseRequest:
            return web.BaseRequest(message, payload, protocol, writer, task, asyncio.get_running_loop(),
                                   client_max_size=MAX_BODY)

        return web.Server(self.handle, request_factory=request_factory, access_log=None)

    # --- entry ---------------------------------------------------------------------------------------
    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        try:
            disc = self._discovery(path, request.headers.get("Accept", ""))
            if disc is not None:
                if request.method != "GET":
                    raise errors.method_not_allowed()
                return disc
            if path in ("/healthz", "/readyz", "/livez"):
                return web.Response(text="ok")
            if path == "/metrics":
                return web.Response(text=self.metrics.prometheus(), content_type="text/plain")
            route = self._parse(path)
        except ApiError as e:
            return _json(e.status(), e.code)
        verb = self._verb(request, route)
        resource = route.rt.plural + (f"/{route.subresource}" if route.subresource else "")
        code = 500
        try:
            delay = self.faults.latency_for(verb, resource)
            if delay:
                await asyncio.sleep(delay)
            injected = self.faults.error_for(verb, resource)
            if injected is not None:
                raise injected
            resp = await self._dispatch(request, route, verb)
            code = resp.status
            return resp
        except ApiError as e:
            code = e.code
            return _json(e.status(), e.code)
        except ConnectionError:  # the client left mid-response: normal, nothing to report or answer
            log.debug("client left during %s %s", request.method, request.path_qs)
            code = CLIENT_CLOSED_REQUEST
            return web.Response(status=CLIENT_CLOSED_REQUEST)
        except Exception as e:  # never let a bug take the server down; answer as the real one would
            log.exception("internal error serving %s %s", request.method, request.path_qs)
            code = 500
            return _json(ApiError(500, "InternalError", f"Internal error occurred: {e}").status(), 500)
        finally:
            if verb != "watch" or code != 200:  # a streaming watch was counted when it started
                self.metrics.record(verb, resource, code)

    # --- discovery -----------------------------------------------------------------------------------
    def _discovery(self, path: str, accept: str) -> web.Response | None:
        reg = self.registry
        if path == "/version":
            return _json(K8S_VERSION)
        if path in ("/api", "/apis") and discovery.wants_aggregated(accept):
            return web.Response(body=json.dumps(discovery.aggregated(reg, core=path == "/api")).encode(),
                                headers={"Content-Type": discovery.AGGREGATED_V2})
        if path == "/api":
            return _json({"kind": "APIVersions", "versions": ["v1"],
                          "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                          "serverAddress": self.address}]})
        if path == "/api/v1":
            return _json(discovery.resource_list(reg, "", "v1"))
        if path == "/apis":
            return _json(discovery.group_list(reg))
        parts = path.split("/")
        if len(parts) == 3 and parts[1] == "apis":
            vs = reg.groups().get(parts[2])
            if not vs:
                raise errors.unknown_resource()
            return _json({"kind": "APIGroup", "apiVersion": "v1", **discovery.group(parts[2], vs)})
        if len(parts) == 4 and parts[1] == "apis":
            if parts[3] not in reg.groups().get(parts[2], []):
                raise errors.unknown_resource()
            return _json(discovery.resource_list(reg, parts[2], parts[3]))
        if path == "/openapi/v3":
            return _json(openapi.index(reg))
        if path.startswith("/openapi/v3/"):
            rest = path[len("/openapi/v3/"):].split("/")
            doc = None
            if rest[:1] == ["api"] and len(rest) == 2:
                doc = openapi.document(reg, "", rest[1])
            elif rest[:1] == ["apis"] and len(rest) == 3:
                doc = openapi.document(reg, rest[1], rest[2])
            if doc is None:
                raise errors.unknown_resource()
            return _json(doc)
        if path.startswith("/openapi"):
            raise errors.unknown_resource()
        return None

    # --- routing -------------------------------------------------------------------------------------
    def _parse(self, path: str) -> _Route:
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise errors.unknown_resource()
        if not rest or not rest[0]:  # e.g. `//api/v1`, which discovery's exact routes do not catch
            raise errors.unknown_resource()
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
        plural = rest[0]
        rt = self.registry.get(group, version, plural)
        if rt is None or len(rest) > 3 or (namespace is not None and not rt.namespaced):
            raise errors.unknown_resource()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        if sub and not ((sub == "status" and rt.status) or (sub == "finalize" and plural == "namespaces")
                        or (sub in ("binding", "eviction") and rt.key == ("", "pods"))):
            raise errors.unknown_resource()
        if name is not None and rt.namespaced and namespace is None:
            raise errors.unknown_resource()
        return _Route(rt, namespace, name, sub)

    @staticmethod
    def _verb(request: web.BaseRequest, route: _Route) -> str:
        m = request.method
        if route.name is None:
            if m == "GET":
                return "watch" if request.query.get("watch") in _TRUE else "list"
            return {"POST": "create", "DELETE": "deletecollection"}.get(m, m.lower())
        if route.subresource in ("binding", "eviction") and m == "POST":
            return "create"
        return {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(m, m.lower())

    async def _dispatch(self, request: web.BaseRequest, route: _Route, verb: str) -> web.StreamResponse:
        rt, q = route.rt, request.query
        ns = route.namespace or ""
        dry_run = q.get("dryRun") == "All"
        manager = q.get("fieldManager") or _manager_from_agent(request.headers.get("User-Agent", ""))
        fv = q.get("fieldValidation")
        if fv not in (None, "Ignore", "Warn", "Strict"):
            raise errors.bad_request(f"fieldValidation must be one of Ignore, Warn, Strict; got {fv!r}")
        warnings: list[str] = []
        if verb == "list":
            pred = make_filter(q.get("labelSelector"), q.get("fieldSelector"), rt.group, rt.plural, rt.custom)
            limit = _int_param(q, "limit")
            exact = _int_param(q, "resourceVersion") if q.get("resourceVersionMatch") == "Exact" else None
            result = self.verbs.list(rt, route.namespace, pred, limit, q.get("continue"), exact)
            if _wants_table(request):
                return _json(to_table(rt, result["items"], result["metadata"], q.get("includeObject", "Metadata")))
            head = json.dumps({k: v for k, v in result.items() if k != "items"}, separators=(",", ":"))
            items = ",".join(self.store.dumps(o) for o in result["items"])
            return _raw_json(head[:-1] + ',"items":[' + items + "]}")
        if verb == "watch":
            return await self._watch(request, route)
        if verb == "get":
            obj = self.verbs.get(rt, ns, route.name or "")
            if _wants_table(request):
                return _json(to_table(rt, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]},
                                      q.get("includeObject", "Metadata")))
            return _raw_json(self.store.dumps(obj))
        if verb == "create" and route.subresource == "binding":
            return _json(self.verbs.bind(rt, ns, route.name or "", await _body(request)), 201)
        if verb == "create" and route.subresource == "eviction":
            return _json(self.verbs.evict(rt, ns, route.name or "", await _body(request)), 201)
        if verb == "create":
            if route.subresource:
                raise errors.method_not_allowed()
            if rt.namespaced and route.namespace is None:
                raise errors.method_not_allowed(f"POST to {rt.plural} needs a namespace in the path: "
                                                f"/namespaces/<ns>/{rt.plural}")
            body = await _body(request)
            obj = self.verbs.create(rt, ns, body, dry_run=dry_run, field_manager=manager, field_validation=fv,
                                    warnings=warnings)
            return _raw_json(self.store.dumps(obj), 201, _warn_headers(warnings))
        if verb == "update":
            body = await _body(request)
            obj = self.verbs.update(rt, ns, route.name or "", body, subresource=_sub(route), dry_run=dry_run,
                                    field_manager=manager, field_validation=fv, warnings=warnings)
            return _raw_json(self.store.dumps(obj), 200, _warn_headers(warnings))
        if verb == "patch":
            ctype = request.content_type
            body = await _body(request, yaml_ok=ctype == APPLY)
            existed = self.store.get(rt.key, ns if rt.namespaced else "", route.name or "") is not None
            force = q.get("force") in _TRUE
            if force and ctype != APPLY:
                raise errors.bad_request("force is only allowed for server-side apply (application/apply-patch+yaml)")
            obj = self.verbs.patch(rt, ns, route.name or "", ctype, body, subresource=_sub(route),
                                   dry_run=dry_run, field_manager=q.get("fieldManager") or (
                                       manager if ctype != APPLY else None), force=force, field_validation=fv,
                                   warnings=warnings)
            created = ctype == APPLY and not existed
            return _raw_json(self.store.dumps(obj), 201 if created else 200, _warn_headers(warnings))
        if verb in ("delete", "deletecollection"):
            options = await _body(request, allow_empty=True) or {}
            if not isinstance(options, dict):
                raise errors.bad_request("the DeleteOptions body must be a JSON object")
            if "propagationPolicy" in q:
                options["propagationPolicy"] = q["propagationPolicy"]
            if verb == "delete":
                return _json(self.verbs.delete(rt, ns, route.name or "", options, dry_run))
            pred = make_filter(q.get("labelSelector"), q.get("fieldSelector"), rt.group, rt.plural, rt.custom)
            return _json(self.verbs.delete_collection(rt, route.namespace, pred, options, dry_run))
        raise errors.method_not_allowed()

    # --- watch ---------------------------------------------------------------------------------------
    async def _watch(self, request: web.BaseRequest, route: _Route) -> web.StreamResponse:
        rt, q = route.rt, request.query
        pred = make_filter(q.get("labelSelector"), q.get("fieldSelector"), rt.group, rt.plural, rt.custom)
        if route.name is not None:
            raise errors.method_not_allowed()
        timeout = _int_param(q, "timeoutSeconds")
        bookmarks = q.get("allowWatchBookmarks") in _TRUE
        send_initial = q.get("sendInitialEvents") in _TRUE
        table = _wants_table(request)
        rv_param = q.get("resourceVersion", "")
        resource = rt.plural
        ns = route.namespace if rt.namespaced else None
        watcher = self.store.subscribe(rt.key, ns, _watched_name(q.get("fieldSelector")))
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                       "Cache-Control": "no-cache, private"})
        resp.enable_chunked_encoding()
        try:
            try:
                if rv_param not in ("", "0") and self.faults.take_gone(resource):
                    raise TooOld(int(rv_param) if rv_param.isdigit() else 0, self.store.rv)
                if rv_param in ("", "0") or send_initial:
                    initial = [Event(self.store.rv, "ADDED", rt.key, o, None)
                               for o in self.store.list(rt.key, ns)]
                    last_rv = self.store.rv
                else:
                    if not rv_param.isdigit():
                        raise errors.bad_request(f"invalid resourceVersion {rv_param!r}: must be a decimal number "
                                                 "returned by this server")
                    initial = [e for e in self.store.events_since(rt.key, int(rv_param))
                               if ns is None or e.obj["metadata"].get("namespace", "") == ns]
                    last_rv = int(rv_param)
            except TooOld as e:
                self.metrics.record("watch", resource, 410)  # streamed as an ERROR event in a 200 response
                await resp.prepare(request)
                status = errors.gone(f"too old resource version: {e.requested} ({e.oldest})").status()
                await resp.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
                return resp
            await resp.prepare(request)
            self.metrics.record("watch", resource, 200)
            drop_after = self.faults.watch_drop_after(resource)
            sent = 0
            chunks: list[str] = []
            for ev in initial:
                if drop_after is not None and sent >= drop_after:
                    break
                line = self._event_line(rt, ev, pred, table, q)
                if line:
                    chunks.append(line)
                    sent += 1
                last_rv = max(last_rv, ev.rv)
            if send_initial and bookmarks:
                chunks.append(self._bookmark(rt, last_rv, initial_end=True))
            if chunks:
                await resp.write("".join(chunks).encode())
            if drop_after is not None and sent >= drop_after:
                return self._abort(request, resp)
            deadline = time.monotonic() + timeout if timeout else None
            next_bookmark = time.monotonic() + self.bookmark_interval
            while True:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if request.transport is None or request.transport.is_closing():
                    break
                wait = min(1.0, next_bookmark - now, (deadline - now) if deadline else 1.0)
                try:
                    first = await asyncio.wait_for(watcher.queue.get(), max(wait, 0.001))
                except TimeoutError:
                    if bookmarks and time.monotonic() >= next_bookmark:
                        await resp.write(self._bookmark(rt, max(last_rv, watcher.seen_rv, 0)).encode())
                    if time.monotonic() >= next_bookmark:
                        next_bookmark = time.monotonic() + self.bookmark_interval
                    continue
                batch = [first]
                while not watcher.queue.empty():
                    batch.append(watcher.queue.get_nowait())
                chunks = []
                closed = False
                for queued in batch:
                    if queued is None:
                        closed = True
                        break
                    last_rv = queued.rv
                    line = self._event_line(rt, queued, pred, table, q)
                    if line:
                        chunks.append(line)
                        sent += 1
                        if drop_after is not None and sent >= drop_after:
                            break
                if chunks:
                    await resp.write("".join(chunks).encode())
                if drop_after is not None and sent >= drop_after:
                    return self._abort(request, resp)
                if closed:
                    break
            if bookmarks and deadline is not None:
                await resp.write(self._bookmark(rt, last_rv).encode())
            return resp
        except ConnectionError:  # the watcher left (reset, broken pipe, closing transport): its stream just ends
            log.debug("watcher of %s left: %s", resource, request.path_qs)
            return resp
        finally:
            self.store.unsubscribe(watcher)

    def _abort(self, request: web.BaseRequest, resp: web.StreamResponse) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.close()
        resp.force_close()
        return resp

    def _bookmark(self, rt: ResourceType, rv: int, initial_end: bool = False) -> str:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return json.dumps({"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version,
                                                          "metadata": meta}}) + "\n"

    def _event_line(self, rt: ResourceType, ev: Event, pred: Callable[[dict], bool], table: bool,
                    q: Any) -> str | None:
        etype = ev.type
        now_match = pred(ev.obj)
        if etype == "MODIFIED" and ev.prev is not None:
            was = pred(ev.prev)
            if was and not now_match:
                etype = "DELETED"
            elif now_match and not was:
                etype = "ADDED"
            elif not now_match:
                return None
        elif not now_match:
            return None
        if table:
            obj = to_table(rt, [self.verbs.out(rt, ev.obj)], {"resourceVersion": str(ev.rv)},
                           q.get("includeObject", "Metadata"))
            return json.dumps({"type": etype, "object": obj}) + "\n"
        if ev.obj.get("apiVersion") == rt.api_version:
            return '{"type":"' + etype + '","object":' + ev.object_json(self.store) + "}\n"
        return json.dumps({"type": etype, "object": self.verbs.out(rt, ev.obj)}) + "\n"


# --- request helpers -----------------------------------------------------------------------------------

def _watched_name(field_selector: str | None) -> str | None:
    """X when the field selector requires `metadata.name=X` (a watch of one object, as an agent's of its node),
    so the store offers that watcher only X's events: hundreds of per-node watches then cost nothing per event
    of another node. The full selector is still applied to what passes."""
    for term in (field_selector or "").split(","):
        name, sep, value = term.partition("=")
        if sep and name.strip() == "metadata.name" and value.lstrip("=").strip():
            return value.lstrip("=").strip()
    return None


def _sub(route: _Route) -> str:
    return "status" if route.subresource == "status" else ""


def _warn_headers(warnings: list[str]) -> dict[str, str] | None:
    if not warnings:
        return None

    def quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return {"Warning": ", ".join(f"299 - {quoted(w)}" for w in warnings)}


def _manager_from_agent(agent: str) -> str:
    return (agent.split("/", 1)[0] or "unknown")[:128]


def _int_param(q: Any, name: str) -> int | None:
    v = q.get(name)
    if v is None or v == "":
        return None
    try:
        n = int(v)
    except ValueError:
        raise errors.bad_request(f"{name} must be a non-negative integer, got {v!r}") from None
    if n < 0:
        raise errors.bad_request(f"{name} must be a non-negative integer, got {v!r}")
    return n


def _wants_table(request: web.BaseRequest) -> bool:
    accept = request.headers.get("Accept", "")
    return "as=Table" in accept


async def _body(request: web.BaseRequest, yaml_ok: bool = False, allow_empty: bool = False) -> Any:
    raw = await request.read()
    if request.content_type == "application/vnd.kubernetes.protobuf":
        try:
            return protobuf.decode_object(raw)
        except protobuf.ProtobufError as e:
            raise errors.unsupported_media_type(request.content_type, ["application/json", "application/yaml"],
                                                str(e)) from None
    if request.content_type.startswith(("application/vnd.kubernetes", "application/cbor")):
        raise errors.unsupported_media_type(request.content_type, ["application/json", "application/yaml"])
    if not raw.strip():
        if allow_empty:
            return None
        raise errors.bad_request("the request body is empty; send a JSON (or YAML) object")
    ctype = request.content_type
    try:
        if yaml_ok or ctype in ("application/yaml", "application/x-yaml", "text/yaml"):
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as e:
        kind = "yaml" if yaml_ok or "yaml" in ctype else "json"
        raise errors.bad_request(f"couldn't get version/kind; {kind} parse error: {e}") from None


# --- the server ----------------------------------------------------------------------------------------

class ApiServer:
    """An in-process Kubernetes API server on 127.0.0.1.

        async with ApiServer() as api:
            client = make_async_client(api.kubeconfig_dict())

    or, from synchronous code: `api = ApiServer().start_in_thread(); ...; api.stop()`.
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1", *, seed: int = 0, watch_window: int = 20000,
                 bookmark_interval: float = 5.0, namespaces: tuple[str, ...] = DEFAULT_NAMESPACES):
        if host not in LOOPBACK:
            raise ValueError(f"the simulator serves plain HTTP without authentication, so it binds only to "
                             f"loopback ({', '.join(LOOPBACK)}); got {host!r}")
        self.host, self.port = host, port
        self.app_state = ApiApp(seed, watch_window, bookmark_interval, namespaces)
        self._runner: web.ServerRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    # public knobs
    @property
    def metrics(self) -> Metrics:
        return self.app_state.metrics

    @property
    def faults(self) -> Faults:
        return self.app_state.faults

    @property
    def store(self) -> Store:
        return self.app_state.store

    @property
    def verbs(self) -> Verbs:
        return self.app_state.verbs

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def kubeconfig_dict(self, namespace: str = "default") -> dict[str, Any]:
        return kubeconfig_dict(self.url, namespace)

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        return write_kubeconfig(path, self.url, namespace)

    # in-process access (seeding and inspecting state without HTTP; thread-safe for start_in_thread())
    def resource_type(self, api_version: str, kind: str) -> ResourceType:
        for rt in self.app_state.registry:
            if rt.api_version == api_version and rt.kind == kind:
                return rt
        raise LookupError(f"no served resource has apiVersion {api_version!r} and kind {kind!r}")

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object exactly as a POST would (validation, uid, resourceVersion, watch event)."""
        rt = self.resource_type(obj.get("apiVersion", ""), obj.get("kind", ""))
        ns = (obj.get("metadata") or {}).get("namespace") or ("default" if rt.namespaced else "")
        return self.call(lambda: self.verbs.create(rt, ns, obj, field_manager="ccgpu-sim"))

    def get(self, api_version: str, kind: str, name: str, namespace: str = "") -> dict[str, Any] | None:
        rt = self.resource_type(api_version, kind)
        obj = self.call(lambda: self.store.get(rt.key, namespace if rt.namespaced else "", name))
        return None if obj is None else self.verbs.out(rt, obj)

    def list(self, api_version: str, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        rt = self.resource_type(api_version, kind)
        return [self.verbs.out(rt, o) for o in self.call(lambda: self.store.list(rt.key, namespace))]

    def compact(self) -> None:
        """Drop the watch window, as etcd compaction does: watches from older versions then get 410."""
        self.store.compact()

    def drop_watches(self) -> int:
        """End every live watch stream now (clients must re-watch)."""
        return self.store.close_watchers()

    # lifecycle
    async def start(self) -> ApiServer:
        self._runner = web.ServerRunner(self.app_state.make_server(), handle_signals=False,
                                     shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]  # (host, port) or, for IPv6, (host, port, flowinfo, scope)
        self.app_state.address = f"{self.host}:{self.port}"
        return self

    async def stop(self) -> None:
        self.store.close_watchers()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ApiServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    def start_in_thread(self, timeout: float = 10.0) -> ApiServer:
        """Serve from a daemon thread with its own event loop; returns once the port is bound."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._stop_event = asyncio.Event()
            try:
                loop.run_until_complete(self.start())
            except BaseException as e:  # reported to the starting thread
                failure.append(e)
                ready.set()
                return
            ready.set()
            loop.run_until_complete(self._stop_event.wait())
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=main, name=f"ccgpu-apiserver-{id(self):x}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError(f"the API simulator did not start within {timeout}s")
        if failure:
            raise failure[0]
        return self

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the server's loop thread (for in-process access from a synchronous test)."""
        if self._loop is None or self._thread is threading.current_thread():
            return fn()
        fut = asyncio.run_coroutine_threadsafe(_as_coro(fn), self._loop)
        return fut.result(10)

    def stop_thread(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop_event is not None:
            self._loop.call_soon_threadsafe(self._stop_event.set)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> ApiServer:
        return self.start_in_thread()

    def __exit__(self, *exc: object) -> None:
        self.stop_thread()


async def _as_coro(fn: Callable[[], Any]) -> Any:
    return fn()

"""The API verbs over the store: get, list, create, update, patch, delete, with the apiserver's rules for
names, namespaces, resourceVersion preconditions, generation, status isolation, finalizers and CRDs.

Transport-free: server.py turns HTTP into these calls and `ApiError`s into Status responses.
"""

from __future__ import annotations

import base64
import builtins
import copy
import datetime as dt
import json
import random
import uuid
from collections.abc import Callable
from typing import Any

from . import conversion, errors, ssa, strategies
from .patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from .resources import GENERATION_KINDS, Registry, ResourceType
from .store import Key, Store, TooOld
from .validation import metadata_causes, schema_causes

_GENERATE_CHARS = "bcdfghjklmnpqrstvwxz2456789"
CRD_KEY: Key = ("apiextensions.k8s.io", "customresourcedefinitions")
NS_KEY: Key = ("", "namespaces")
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fast_copy(obj: Any) -> Any:
    """Deep copy of a JSON document (faster than copy.deepcopy for plain dicts and lists)."""
    if isinstance(obj, dict):
        return {k: fast_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [fast_copy(v) for v in obj]
    return obj


class Verbs:
    def __init__(self, registry: Registry, store: Store, seed: int = 0,
                 on_delete: Callable[[], None] | None = None):
        self.registry = registry
        self.store = store
        self.rng = random.Random(seed)
        self.on_delete = on_delete or (lambda: None)

    # --- helpers -----------------------------------------------------------------------------------
    def out(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """An object as served under `rt`'s version (CRDs serve one storage under several versions)."""
        if obj.get("apiVersion") == rt.api_version:
            return obj
        if rt.storage == ("", "events"):
            return conversion.event_from_core(obj)
        o = dict(obj)
        o["apiVersion"] = rt.api_version
        return o

    def _uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _existing(self, rt: ResourceType, ns: str, name: str) -> dict[str, Any]:
        obj = self.store.get(rt.key, ns if rt.namespaced else "", name)
        if obj is None:
            raise errors.not_found(rt.plural, rt.group, name)
        return obj

    def _check_namespace(self, rt: ResourceType, ns: str) -> None:
        if not rt.namespaced:
            return
        nsobj = self.store.get(NS_KEY, "", ns)
        if nsobj is None:
            raise errors.not_found("namespaces", "", ns)
        if nsobj["metadata"].get("deletionTimestamp"):
            raise errors.ApiError(403, "Forbidden",
                                  f'{rt.plural} "{ns}" is forbidden: unable to create new content in namespace {ns} '
                                  f"because it is being terminated", {"name": ns, "kind": rt.plural})

    def _validate(self, rt: ResourceType, obj: dict[str, Any], field_validation: str | None,
                  warnings: list[str] | None, old: dict[str, Any] | None = None) -> None:
        name = obj["metadata"].get("name", "")
        causes = metadata_causes(obj, rt.name_rule, old)
        if rt.custom and rt.schema:
            sc, pruned = schema_causes(obj, rt.schema)
            causes += sc
            if pruned:
                if field_validation == "Strict":
                    raise errors.bad_request(
                        "strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in pruned))
                if field_validation != "Ignore" and warnings is not None:
                    warnings += [f'unknown field "{p}"' for p in pruned]
        if rt.key == CRD_KEY:
            causes += _crd_causes(obj)
        if causes:
            raise errors.invalid(rt.kind, rt.group, name, causes)

    # --- reads -------------------------------------------------------------------------------------
    def get(self, rt: ResourceType, ns: str, name: str) -> dict[str, Any]:
        return self.out(rt, self._existing(rt, ns, name))

    def list(self, rt: ResourceType, ns: str | None, pred: Callable[[dict], bool],
             limit: int | None = None, cont: str | None = None, exact_rv: int | None = None) -> dict[str, Any]:
        """A page of objects. A continue token (or resourceVersionMatch=Exact) reads the state as of its
        resourceVersion, rebuilt from the watch window, so pages are one consistent snapshot; once that
        version has left the window the answer is 410 Expired, as etcd compaction makes it."""
        rv = self.store.rv if exact_rv is None else exact_rv
        start_after: tuple[str, str] | None = None
        if cont:
            try:
                token = json.loads(base64.urlsafe_b64decode(cont.encode()).decode())
                start_after = (token["ns"], token["name"])
                rv = int(token["rv"])
            except (ValueError, KeyError, TypeError):
                raise errors.bad_request(f"invalid continue token {cont!r}: it must be the value of "
                                         "metadata.continue from a previous list") from None
        try:
            items = self.store.list(rt.key, ns if rt.namespaced else None, at=rv)
        except TooOld:
            if cont:
                raise errors.ApiError(410, "Expired", "The provided continue parameter is too old to display a "
                                      "consistent list result. You can start a new list without the continue "
                                      "parameter.") from None
            raise errors.gone(f"too old resource version: {rv} ({self.store.horizon + 1})") from None
        selected: builtins.list[dict[str, Any]] = []
        more = False
        for obj in items:
            obj_meta = obj["metadata"]
            if start_after is not None and (obj_meta.get("namespace", ""), obj_meta["name"]) <= start_after:
                continue
            if not pred(obj):
                continue
            if limit and len(selected) >= limit:
                more = True
                break
            selected.append(self.out(rt, obj))
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if more:
            last = selected[-1]["metadata"]
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"rv": rv, "ns": last.get("namespace", ""), "name": last["name"]}).encode()).decode()
        return {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta, "items": selected}

    # --- create ------------------------------------------------------------------------------------
    def create(self, rt: ResourceType, ns: str, body: Any, *, dry_run: bool = False,
               field_manager: str | None = None, field_validation: str | None = None,
               warnings: builtins.list[str] | None = None, _applied: bool = False) -> dict[str, Any]:
        obj = self._to_storage(rt, self._check_body(rt, ns, body))
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(self.rng.choice(_GENERATE_CHARS) for _ in range(5))
        self._validate(rt, obj, field_validation, warnings)
        self._check_namespace(rt, ns)
        if self.store.get(rt.key, meta.get("namespace", ""), meta["name"]) is not None:
            raise errors.already_exists(rt.plural, rt.group, meta["name"])
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(k, None)
        meta["uid"] = self._uid()
        meta["creationTimestamp"] = now_rfc3339()
        if rt.custom or rt.kind in GENERATION_KINDS:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        strategies.prepare_create(rt, obj, now_rfc3339())
        if field_manager and not _applied:
            meta.pop("managedFields", None)
            ssa.record_update(None, obj, field_manager, rt.api_version, meta["creationTimestamp"], rt.status)
        elif not _applied:
            meta.pop("managedFields", None)
        if dry_run:
            return self.out(rt, obj)
        self.store.commit(rt.key, "ADDED", obj, None)
        if rt.key == CRD_KEY:
            self.registry.serve_crd(obj)
        return self.out(rt, obj)

    @staticmethod
    def _to_storage(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        return conversion.event_to_core(obj) if rt.storage == ("", "events") else obj

    def _check_body(self, rt: ResourceType, ns: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise errors.bad_request(f"the request body must be a {rt.kind} object, not {type(body).__name__}")
        obj = fast_copy(body)
        av, kind = obj.get("apiVersion"), obj.get("kind")
        if kind is None and av is None:
            obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        elif kind != rt.kind:
            raise errors.bad_request(f"the kind in the data ({kind!r}) does not match the expected kind "
                                     f"({rt.kind!r}) for {rt.plural}")
        elif av != rt.api_version:
            raise errors.bad_request(f"the API version in the data ({av}) does not match the expected API "
                                     f"version ({rt.api_version})")
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        if rt.namespaced:
            if meta.get("namespace") not in (None, "", ns):
                raise errors.bad_request("the namespace of the provided object does not match the namespace sent "
                                         "on the request")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        return obj

    # --- update ------------------------------------------------------------------------------------
    def update(self, rt: ResourceType, ns: str, name: str, body: Any, *, subresource: str = "",
               dry_run: bool = False, field_manager: str | None = None, field_validation: str | None = None,
               warnings: builtins.list[str] | None = None) -> dict[str, Any]:
        old = self._existing(rt, ns, name)
        new = self._to_storage(rt, self._check_body(rt, ns, body))
        if new["metadata"].get("name") != name:
            raise errors.bad_request(f"the name of the object ({new['metadata'].get('name')}) does not match the "
                                     f"name on the URL ({name})")
        want_rv = new["metadata"].get("resourceVersion")
        if want_rv and want_rv != old["metadata"]["resourceVersion"]:
            raise errors.conflict(rt.plural, rt.group, name)
        return self._write(rt, old, new, subresource, dry_run, field_manager or "unknown", field_validation,
                           warnings)

    def _write(self, rt: ResourceType, old: dict[str, Any], new: dict[str, Any], subresource: str,
               dry_run: bool, field_manager: str | None, field_validation: str | None,
               warnings: builtins.list[str] | None, record: bool = True,
               bypass_immutability: bool = False) -> dict[str, Any]:
        """Commit `new` over `old` under the type's rules; a no-op write returns `old` unchanged."""
        old_meta = old["metadata"]
        # `new` may share unchanged subtrees with `old` (stored objects are never modified in place): copy only
        # the levels this function writes to.
        if subresource == "status":
            result = dict(old)
            result["metadata"] = dict(old_meta)
            if "managedFields" in (new.get("metadata") or {}):  # as computed by an apply to /status
                result["metadata"]["managedFields"] = new["metadata"]["managedFields"]
            if new.get("status") is None:
                result.pop("status", None)
            else:
                result["status"] = new["status"]
            new = result
        else:
            new = dict(new)
            new["metadata"] = dict(new.get("metadata") or {})
            if rt.status:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
        if rt.custom and rt.schema:
            new = fast_copy(new)  # schema validation prunes unknown fields in place
        meta = new["metadata"]
        for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace"):
            if k in old_meta:
                meta[k] = old_meta[k]
            else:
                meta.pop(k, None)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if "generation" in old_meta:
            meta["generation"] = old_meta["generation"]
            if _spec_of(old, rt) != _spec_of(new, rt):
                meta["generation"] = old_meta["generation"] + 1
        else:
            meta.pop("generation", None)
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise errors.invalid(rt.kind, rt.group, meta["name"], [errors.field_cause(
                    "metadata.finalizers", f"Forbidden: no new finalizers can be added if the object is being "
                    f"deleted, found new finalizers {sorted(added)!r}", "FieldValueForbidden")])
        self._validate(rt, new, field_validation, warnings, old)
        if subresource != "status" and not bypass_immutability:
            causes = strategies.update_causes(rt, old, new)
            if causes:
                raise errors.invalid(rt.kind, rt.group, meta["name"], causes)
        if rt.key == NS_KEY and old_meta.get("deletionTimestamp"):
            new["status"] = old.get("status")
        if record and field_manager:
            ssa.record_update(old, new, field_manager, rt.api_version, now_rfc3339(), rt.status, subresource)
        if new == old:
            return self.out(rt, old)
        if dry_run:
            return self.out(rt, new)
        if old_meta.get("deletionTimestamp") and not meta.get("finalizers") and not _ns_finalizers(rt, new):
            self.store.commit(rt.key, "DELETED", new, old)
            self._after_delete(rt, new)
            return self.out(rt, new)
        self.store.commit(rt.key, "MODIFIED", new, old)
        if rt.key == CRD_KEY:
            self.registry.serve_crd(new)
        return self.out(rt, new)

    # --- patch -------------------------------------------------------------------------------------
    def patch(self, rt: ResourceType, ns: str, name: str, patch_type: str, body: Any, *,
              subresource: str = "", dry_run: bool = False, field_manager: str | None = None,
              force: bool = False, field_validation: str | None = None,
              warnings: builtins.list[str] | None = None) -> dict[str, Any]:
        key_ns = ns if rt.namespaced else ""
        old = self.store.get(rt.key, key_ns, name)
        if patch_type == APPLY:
            return self._apply(rt, ns, name, old, body, subresource, dry_run, field_manager, force,
                               field_validation, warnings)
        if old is None:
            raise errors.not_found(rt.plural, rt.group, name)
        view = self.out(rt, old)
        try:
            if patch_type == MERGE:
                if not isinstance(body, dict):
                    raise errors.bad_request("a merge patch must be a JSON object")
                patched = merge_patch(view, body)
            elif patch_type == JSON_PATCH:
                patched = json_patch(view, body)
            elif patch_type == STRATEGIC:
                if rt.custom:
                    raise errors.unsupported_media_type(patch_type, [JSON_PATCH, MERGE, APPLY])
                patched = strategic_merge_patch(view, body)
            else:
                accepted = [JSON_PATCH, MERGE, APPLY] + ([] if rt.custom else [STRATEGIC])
                raise errors.unsupported_media_type(patch_type, accepted)
        except PatchError as e:
            code = 422 if patch_type == JSON_PATCH else 400
            raise errors.ApiError(code, "Invalid" if code == 422 else "BadRequest", str(e)) from None
        if not isinstance(patched, dict):
            raise errors.bad_request("the patch must leave an object")
        want_rv = (patched.get("metadata") or {}).get("resourceVersion")
        if want_rv != old["metadata"]["resourceVersion"]:
            if want_rv is not None:
                raise errors.conflict(rt.plural, rt.group, name)
        if (patched.get("metadata") or {}).get("name") != name:
            raise errors.bad_request("metadata.name cannot be changed by a patch")
        patched["apiVersion"], patched["kind"] = rt.api_version, rt.kind
        patched = self._to_storage(rt, patched)
        return self._write(rt, old, patched, subresource, dry_run, field_manager or "unknown",
                           field_validation, warnings)

    def _apply(self, rt: ResourceType, ns: str, name: str, old: dict[str, Any] | None, body: Any,
               subresource: str, dry_run: bool, field_manager: str | None, force: bool,
               field_validation: str | None, warnings: builtins.list[str] | None) -> dict[str, Any]:
        if not field_manager:
            raise errors.bad_request("PATCH request for server-side apply requires fieldManager; pass "
                                     "?fieldManager=<name>")
        config = self._check_body(rt, ns, body) if isinstance(body, dict) and "kind" in body else None
        if config is None:
            raise errors.bad_request("an apply patch must be a full object with apiVersion, kind and "
                                     "metadata.name")
        if config["metadata"].get("name") != name:
            raise errors.bad_request(f"the name of the object ({config['metadata'].get('name')}) does not match "
                                     f"the name on the URL ({name})")
        now = now_rfc3339()
        try:
            if old is None:
                if subresource:
                    raise errors.not_found(rt.plural, rt.group, name)
                obj = ssa.apply(None, config, field_manager, force, rt.api_version, now, rt.status)
                return self.create(rt, ns, obj, dry_run=dry_run, field_validation=field_validation,
                                   warnings=warnings, _applied=True)
            want_rv = config["metadata"].get("resourceVersion")
            if want_rv and want_rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(rt.plural, rt.group, name)
            merged = ssa.apply(self.out(rt, old), config, field_manager, force, rt.api_version, now, rt.status,
                               subresource)
            merged = self._to_storage(rt, merged)
        except ssa.ApplyConflict as e:
            n = len(e.conflicts)
            detail = "\n".join(f'- {ssa.render(p)}' for _, p in e.conflicts)
            managers = sorted({m for m, _ in e.conflicts})
            msg = (f'Apply failed with {n} conflict{"s" if n > 1 else ""}: conflict with '
                   f'{", ".join(repr(m).replace(chr(39), chr(34)) for m in managers)}:\n{detail}')
            causes = [{"reason": "FieldManagerConflict", "message": f'conflict with "{m}"', "field": ssa.render(p)}
                      for m, p in e.conflicts]
            raise errors.ApiError(409, "Conflict", msg, {"causes": causes}) from None
        merged = fast_copy(merged)
        merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        return self._write(rt, old, merged, subresource, dry_run, None, field_validation, warnings,
                           record=False)

    # --- pods/binding ------------------------------------------------------------------------------
    def bind(self, rt: ResourceType, ns: str, name: str, body: Any) -> dict[str, Any]:
        """POST pods/<name>/binding, as the scheduler binds a pod: sets spec.nodeName exactly once."""
        old = self._existing(rt, ns, name)
        if not isinstance(body, dict) or body.get("kind") != "Binding":
            raise errors.bad_request("a binding must be a Binding object (apiVersion v1, kind Binding, target)")
        target = (body.get("target") or {}).get("name")
        if not target:
            raise errors.invalid("Binding", "", name, [errors.field_cause("target.name", "Required value",
                                                                          "FieldValueRequired")])
        current = (old.get("spec") or {}).get("nodeName")
        if current:
            raise errors.conflict(rt.plural, rt.group, name, f'pod {name} is already assigned to node "{current}"')
        new = dict(old)
        new["spec"] = {**(old.get("spec") or {}), "nodeName": target}
        status = dict(old.get("status") or {})
        conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        status["conditions"] = [*conditions, {"type": "PodScheduled", "status": "True",
                                              "lastTransitionTime": now_rfc3339()}]
        new["status"] = status
        self._write(rt, old, new, "", False, "kube-scheduler", None, None, bypass_immutability=True)
        after = self._existing(rt, ns, name)  # a main write keeps status: set the condition through /status
        self._write(rt, after, {**after, "status": status}, "status", False, "kube-scheduler", None, None)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    # --- pods/eviction -----------------------------------------------------------------------------
    def evict(self, rt: ResourceType, ns: str, name: str, body: Any) -> dict[str, Any]:
        """POST pods/<name>/eviction (policy/v1 Eviction), as `kubectl drain` does. There are no
        PodDisruptionBudgets here, so an eviction is a delete with the Eviction's DeleteOptions."""
        if not isinstance(body, dict) or body.get("kind") != "Eviction":
            raise errors.bad_request("an eviction must be an Eviction object (apiVersion policy/v1, kind Eviction)")
        if (body.get("metadata") or {}).get("name") not in (None, name):
            raise errors.bad_request(f"the name of the eviction ({body['metadata'].get('name')}) does not match "
                                     f"the pod ({name})")
        self.delete(rt, ns, name, body.get("deleteOptions") or {})
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    # --- delete ------------------------------------------------------------------------------------
    def delete(self, rt: ResourceType, ns: str, name: str, options: dict[str, Any] | None = None,
               dry_run: bool = False) -> dict[str, Any]:
        old = self._existing(rt, ns, name)
        options = options or {}
        pre = options.get("preconditions") or {}
        meta = old["metadata"]
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise errors.conflict(rt.plural, rt.group, name, f"Precondition failed: UID in precondition: "
                                  f"{pre['uid']}, UID in object meta: {meta['uid']}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise errors.conflict(rt.plural, rt.group, name, f"Precondition failed: ResourceVersion in "
                                  f"precondition: {pre['resourceVersion']}, ResourceVersion in object meta: "
                                  f"{meta['resourceVersion']}")
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents"):
            policy = "Orphan"
        if policy not in (None, "Background", "Foreground", "Orphan"):
            raise errors.bad_request(f"unsupported propagationPolicy {policy!r}; accepted: Background, "
                                     "Foreground, Orphan")
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        if dry_run:
            return self.out(rt, old)
        if meta.get("deletionTimestamp"):
            return self.out(rt, old)
        if finalizers or _ns_finalizers(rt, old):
            new = fast_copy(old)
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            if finalizers:
                new["metadata"]["finalizers"] = finalizers
            if rt.key == NS_KEY:
                new.setdefault("status", {})["phase"] = "Terminating"
            self.store.commit(rt.key, "MODIFIED", new, old)
            self.on_delete()
            return self.out(rt, new)
        new = fast_copy(old)
        self.store.commit(rt.key, "DELETED", new, old)
        self._after_delete(rt, new)
        return self.out(rt, new)

    def _after_delete(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        if rt.key == CRD_KEY:
            spec = obj.get("spec") or {}
            key = (spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
            for o in self.store.list(key):
                self.store.commit(key, "DELETED", fast_copy(o), o)
            self.store.close_watchers(key)
            self.registry.unserve_crd(obj["metadata"]["name"])
        self.on_delete()

    def delete_collection(self, rt: ResourceType, ns: str | None, pred: Callable[[dict], bool],
                          options: dict[str, Any] | None = None, dry_run: bool = False) -> dict[str, Any]:
        items = [o for o in self.store.list(rt.key, ns if rt.namespaced else None) if pred(o)]
        deleted = []
        for o in items:
            deleted.append(self.delete(rt, o["metadata"].get("namespace", ""), o["metadata"]["name"], options,
                                       dry_run))
        return {"kind": rt.list_kind, "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(self.store.rv)}, "items": deleted}


def _spec_of(obj: dict[str, Any], rt: ResourceType) -> dict[str, Any]:
    """Everything a generation counts: all but metadata (and status, where /status is separate)."""
    return {k: v for k, v in obj.items() if k != "metadata" and not (k == "status" and (rt.status or not rt.custom))}


def _ns_finalizers(rt: ResourceType, obj: dict[str, Any]) -> bool:
    return rt.key == NS_KEY and bool((obj.get("spec") or {}).get("finalizers"))


def _crd_causes(crd: dict[str, Any]) -> list[dict[str, str]]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    causes = []
    if not spec.get("group"):
        causes.append(errors.field_cause("spec.group", "Required value", "FieldValueRequired"))
    for f in ("plural", "kind"):
        if not names.get(f):
            causes.append(errors.field_cause(f"spec.names.{f}", "Required value", "FieldValueRequired"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(errors.field_cause("spec.scope", f"Unsupported value: {json.dumps(spec.get('scope'))}: "
                                         'supported values: "Cluster", "Namespaced"', "FieldValueNotSupported"))
    versions = spec.get("versions") or []
    if not versions:
        causes.append(errors.field_cause("spec.versions", "Invalid value: must have exactly one version marked "
                                         "as storage version", "FieldValueInvalid"))
    elif sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(errors.field_cause("spec.versions", "Invalid value: must have exactly one version marked "
                                         "as storage version"))
    if names.get("plural") and spec.get("group"):
        want = f"{names['plural']}.{spec['group']}"
        if crd["metadata"].get("name") != want:
            causes.append(errors.field_cause("metadata.name", f"Invalid value: {json.dumps(crd['metadata'].get('name'))}: "
                                             f"must be spec.names.plural+\".\"+spec.group"))
    return causes


__all__ = ["Verbs", "now_rfc3339", "fast_copy", "MERGE", "JSON_PATCH", "STRATEGIC", "APPLY", "copy"]

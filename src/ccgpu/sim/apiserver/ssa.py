"""Server-side apply: field ownership in `metadata.managedFields` (FieldsV1), apply merges with conflict
detection, and removal of fields a manager stopped applying. Also records ownership for plain updates, so an
apply that would overwrite another manager's value is refused with 409 unless forced.

Field paths are tuples of FieldsV1 tokens: `f:<name>` (map key), `k:<json>` (list item by merge key),
`v:<json>` (set member) and `.` (the list item itself).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from .patch import MERGE_KEYS, MERGE_SETS

Path = tuple[str, ...]
_SKIP_META = {"name", "namespace", "uid", "resourceVersion", "creationTimestamp", "generation", "managedFields",
              "deletionTimestamp", "deletionGracePeriodSeconds", "generateName", "selfLink"}


def field_paths(obj: dict[str, Any], skip_status: bool) -> set[Path]:
    """Leaf field paths of an object, as ownership is recorded."""
    out: set[Path] = set()
    for k, v in obj.items():
        if k in ("apiVersion", "kind") or (k == "status" and skip_status):
            continue
        if k == "metadata":
            for mk, mv in (v or {}).items():
                if mk not in _SKIP_META:
                    _walk(mv, ("f:metadata", f"f:{mk}"), mk, out)
            continue
        _walk(v, (f"f:{k}",), k, out)
    return out


def _walk(value: Any, path: Path, name: str, out: set[Path]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _walk(v, (*path, f"f:{k}"), k, out)
    elif isinstance(value, list) and name in MERGE_KEYS and all(
            isinstance(x, dict) and MERGE_KEYS[name] in x for x in value) and value:
        mk = MERGE_KEYS[name]
        for item in value:
            ipath = (*path, "k:" + json.dumps({mk: item[mk]}, separators=(",", ":")))
            out.add((*ipath, "."))
            for k, v in item.items():
                _walk(v, (*ipath, f"f:{k}"), k, out)
    elif isinstance(value, list) and name in MERGE_SETS and value:
        for item in value:
            out.add((*path, "v:" + json.dumps(item, separators=(",", ":"))))
    else:
        out.add(path)


def to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for p in sorted(paths):
        node = root
        for tok in p:
            node = node.setdefault(tok, {})
    return root


def from_fields_v1(tree: dict[str, Any], prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for tok, sub in (tree or {}).items():
        p = (*prefix, tok)
        if not sub or tok == ".":
            out.add(p)
        if sub:
            out |= from_fields_v1(sub, p)
    return out


def get_path(obj: Any, path: Path) -> tuple[bool, Any]:
    cur = obj
    for tok in path:
        if tok == ".":
            continue
        kind, _, arg = tok.partition(":")
        if kind == "f" and isinstance(cur, dict) and arg in cur:
            cur = cur[arg]
        elif kind == "k" and isinstance(cur, list):
            want = json.loads(arg)
            found = [x for x in cur if isinstance(x, dict) and all(x.get(a) == b for a, b in want.items())]
            if not found:
                return False, None
            cur = found[0]
        elif kind == "v" and isinstance(cur, list):
            val = json.loads(arg)
            if val not in cur:
                return False, None
            cur = val
        else:
            return False, None
    return True, cur


def remove_path(obj: Any, path: Path) -> None:
    if not path:
        return
    if path[-1] == ".":
        path = path[:-1]
    ok, parent = get_path(obj, path[:-1])
    if not ok:
        return
    kind, _, arg = path[-1].partition(":")
    if kind == "f" and isinstance(parent, dict):
        parent.pop(arg, None)
    elif kind == "k" and isinstance(parent, list):
        want = json.loads(arg)
        parent[:] = [x for x in parent if not (isinstance(x, dict) and all(x.get(a) == b for a, b in want.items()))]
    elif kind == "v" and isinstance(parent, list):
        val = json.loads(arg)
        parent[:] = [x for x in parent if x != val]


def apply_merge(current: Any, config: Any, name: str = "") -> Any:
    """Merge an applied configuration over the live object: maps recurse, keyed lists merge by key."""
    if isinstance(config, dict) and isinstance(current, dict):
        out = dict(current)
        for k, v in config.items():
            out[k] = apply_merge(current.get(k), v, k) if k in current else copy.deepcopy(v)
        return out
    if isinstance(config, list) and isinstance(current, list) and name in MERGE_KEYS:
        mk = MERGE_KEYS[name]
        if all(isinstance(x, dict) and mk in x for x in config + current):
            merged = [copy.deepcopy(x) for x in current]
            for item in config:
                idx = next((i for i, x in enumerate(merged) if x[mk] == item[mk]), None)
                if idx is None:
                    merged.append(copy.deepcopy(item))
                else:
                    merged[idx] = apply_merge(merged[idx], item)
            return merged
    if isinstance(config, list) and isinstance(current, list) and name in MERGE_SETS:
        return current + [x for x in config if x not in current]
    return copy.deepcopy(config)


class ApplyConflict(Exception):
    def __init__(self, conflicts: list[tuple[str, Path]]):
        self.conflicts = conflicts
        super().__init__("; ".join(f'conflict with "{m}": {render(p)}' for m, p in conflicts))


def render(path: Path) -> str:
    parts = []
    for tok in path:
        kind, _, arg = tok.partition(":")
        if kind == "f":
            parts.append("." + arg)
        elif kind in ("k", "v"):
            parts.append(f"[{arg}]")
    return "".join(parts)


def _entries(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("metadata") or {}).get("managedFields") or [])


def _entry_paths(entry: dict[str, Any]) -> set[Path]:
    return from_fields_v1(entry.get("fieldsV1") or {})


def _set_entries(obj: dict[str, Any], owners: dict[tuple[str, str, str], set[Path]], api_version: str,
                 now: str, subresource: str, keep_time: dict[tuple[str, str, str], str]) -> None:
    entries = []
    for (manager, operation, sub), paths in owners.items():
        if not paths:
            continue
        e = {"manager": manager, "operation": operation, "apiVersion": api_version,
             "time": keep_time.get((manager, operation, sub), now), "fieldsType": "FieldsV1",
             "fieldsV1": to_fields_v1(paths)}
        if sub:
            e["subresource"] = sub
        entries.append(e)
    if entries:
        obj["metadata"]["managedFields"] = entries
    else:
        obj["metadata"].pop("managedFields", None)


def _owners(obj: dict[str, Any]) -> tuple[dict[tuple[str, str, str], set[Path]], dict[tuple[str, str, str], str]]:
    owners: dict[tuple[str, str, str], set[Path]] = {}
    times = {}
    for e in _entries(obj):
        k = (e.get("manager", ""), e.get("operation", "Update"), e.get("subresource", ""))
        owners.setdefault(k, set()).update(_entry_paths(e))
        times[k] = e.get("time", "")
    return owners, times


def apply(current: dict[str, Any] | None, config: dict[str, Any], manager: str, force: bool,
          api_version: str, now: str, skip_status: bool, subresource: str = "") -> dict[str, Any]:
    """The object after `manager` applies `config` over `current` (None: the object is being created)."""
    applied = field_paths(config, skip_status and subresource != "status")
    if subresource == "status":
        applied = {p for p in applied if p[:1] == ("f:status",)}
    if current is None:
        obj = copy.deepcopy(config)
        obj.setdefault("metadata", {})
        _set_entries(obj, {(manager, "Apply", subresource): applied}, api_version, now, subresource, {})
        return obj
    owners, times = _owners(current)
    mine = (manager, "Apply", subresource)
    previously = owners.get(mine, set())
    conflicts = []
    for who, paths in owners.items():
        if who == mine or who[0] == manager:
            continue
        for p in applied & paths:
            ok_cur, cur_val = get_path(current, p)
            _, new_val = get_path(config, p)
            if ok_cur and cur_val != new_val and p[-1] != ".":
                conflicts.append((who[0], p))
    if conflicts and not force:
        raise ApplyConflict(conflicts)
    merged = apply_merge({k: v for k, v in current.items()}, {k: v for k, v in config.items()})
    merged["metadata"] = dict(merged.get("metadata") or {})
    for who in owners:
        if who != mine and (force or who[0] == manager):
            owners[who] = owners[who] - applied  # forced: the applier takes these fields over
    others: set[Path] = set().union(*(p for w, p in owners.items() if w != mine))
    # Shallowest first, a list item ("." path) before its own fields: a removed item takes its fields with it.
    for p in sorted(previously - applied, key=lambda p: (len(p) - (p[-1] == "."), p[-1] != ".")):
        if p not in others and not any(o[:len(p)] == p for o in others):
            remove_path(merged, p)
    owners[mine] = applied
    _set_entries(merged, owners, api_version, now, subresource, times)
    return merged


def _leaves(value: Any, path: Path, name: str) -> set[Path]:
    out: set[Path] = set()
    _walk(value, path, name, out)
    return out


def _diff(old: Any, new: Any, path: Path, name: str, changed: set[Path], removed: set[Path]) -> None:
    """Collect the leaf paths a write set or changed, and those it took away (identical subtrees are skipped)."""
    if old is new:
        return
    if isinstance(old, dict) and isinstance(new, dict) and old and new:
        for k in old.keys() | new.keys():
            sub = (*path, f"f:{k}")
            if k not in new:
                removed |= _leaves(old[k], sub, k)
            elif k not in old:
                changed |= _leaves(new[k], sub, k)
            else:
                _diff(old[k], new[k], sub, k, changed, removed)
        return
    if old == new:
        return
    before, after = _leaves(old, path, name), _leaves(new, path, name)
    removed |= before - after
    for p in after:
        rel = p[len(path):]
        if p not in before or get_path(old, rel)[1] != get_path(new, rel)[1]:
            changed.add(p)


def changed_paths(old: dict[str, Any], new: dict[str, Any], skip_status: bool,
                  subresource: str = "") -> tuple[set[Path], set[Path]]:
    """(paths this write set or changed, paths it removed), limited to what the endpoint may write."""
    changed: set[Path] = set()
    removed: set[Path] = set()
    for k in old.keys() | new.keys():
        if k in ("apiVersion", "kind"):
            continue
        if subresource == "status" and k != "status":
            continue
        if subresource != "status" and k == "status" and skip_status:
            continue
        if k == "metadata":
            om, nm = old.get("metadata") or {}, new.get("metadata") or {}
            for mk in (om.keys() | nm.keys()) - _SKIP_META:
                sub: Path = ("f:metadata", f"f:{mk}")
                if mk not in nm:
                    removed |= _leaves(om[mk], sub, mk)
                elif mk not in om:
                    changed |= _leaves(nm[mk], sub, mk)
                else:
                    _diff(om[mk], nm[mk], sub, mk, changed, removed)
            continue
        sub = (f"f:{k}",)
        if k not in new:
            removed |= _leaves(old[k], sub, k)
        elif k not in old:
            changed |= _leaves(new[k], sub, k)
        else:
            _diff(old[k], new[k], sub, k, changed, removed)
    return changed, removed


def record_update(old: dict[str, Any] | None, new: dict[str, Any], manager: str, api_version: str, now: str,
                  skip_status: bool, subresource: str = "") -> None:
    """Give `manager` (operation Update) ownership of the fields this write changed; others lose them, and
    fields the write removed are owned by nobody."""
    if old is None:
        changed = {p for p in field_paths(new, skip_status)}
        _set_entries(new, {(manager, "Update", subresource): changed}, api_version, now, subresource, {})
        return
    changed, removed = changed_paths(old, new, skip_status, subresource)
    old_mf = (old.get("metadata") or {}).get("managedFields")
    if not changed and not removed:
        if old_mf:
            new["metadata"]["managedFields"] = old_mf
        else:
            new["metadata"].pop("managedFields", None)
        return
    owners, times = _owners(old)
    gone = changed | removed
    for who in owners:
        owners[who] = {p for p in owners[who] if p not in gone and not _under_any(p, removed)}
    me = (manager, "Update", subresource)
    owners[me] = owners.get(me, set()) | changed
    times.pop(me, None)
    _set_entries(new, owners, api_version, now, subresource, times)


def _under_any(p: Path, prefixes: set[Path]) -> bool:
    return any(p[:len(q)] == q for q in prefixes if len(q) < len(p))

"""Object validation with the apiserver's own rules and wording: names, labels, annotations, and CRD
`openAPIV3Schema` (type, required, enum, bounds, pattern, lengths, items, unknown-field pruning).

Every function returns a list of causes ({field, reason, message}); callers turn a non-empty list into a 422.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, MutableMapping
from typing import Any

from .errors import field_cause

DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN = DNS1123_LABEL + r"(\." + DNS1123_LABEL + r")*"
_LABEL_RE = re.compile("^" + DNS1123_LABEL + "$")
_SUBDOMAIN_RE = re.compile("^" + DNS1123_SUBDOMAIN + "$")
_QNAME_PART = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QNAME_RE = re.compile("^" + _QNAME_PART + "$")
_LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
_LABEL_VALUE_RE = re.compile("^" + _LABEL_VALUE + "$")

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    f"'{DNS1123_SUBDOMAIN}')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and "
    f"end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '{DNS1123_LABEL}')"
)
QNAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    f"'{_QNAME_PART}')"
)
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for "
    f"validation is '{_LABEL_VALUE}')"
)


def _q(v: Any) -> str:
    return json.dumps(v) if isinstance(v, str) else json.dumps(v, default=str)


def dns1123_subdomain_errors(name: str) -> list[str]:
    errs = []
    if len(name) > 253:
        errs.append("must be no more than 253 characters")
    if not _SUBDOMAIN_RE.match(name):
        errs.append(SUBDOMAIN_MSG)
    return errs


def dns1123_label_errors(name: str) -> list[str]:
    errs = []
    if len(name) > 63:
        errs.append("must be no more than 63 characters")
    if not _LABEL_RE.match(name):
        errs.append(LABEL_MSG)
    return errs


def label_key_errors(key: str) -> list[str]:
    """A qualified name: optional DNS-1123 subdomain prefix and '/', then a name part of at most 63 chars."""
    prefix, _, name = key.rpartition("/")
    errs = []
    if "/" in key and not prefix:
        errs.append("prefix part must be non-empty")
    elif prefix:
        errs += [f"prefix part {e}" for e in dns1123_subdomain_errors(prefix)]
    if not name:
        errs.append("name part must be non-empty")
    else:
        if len(name) > 63:
            errs.append("name part must be no more than 63 characters")
        if not _QNAME_RE.match(name):
            errs.append(QNAME_MSG)
    return errs


def label_value_errors(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _LABEL_VALUE_RE.match(value):
        errs.append(LABEL_VALUE_MSG)
    return errs


def metadata_causes(obj: Mapping[str, Any], name_rule: str = "subdomain",
                    old: Mapping[str, Any] | None = None) -> list[dict[str, str]]:
    """Name, labels and annotations of any object (on update, only the parts that changed from `old`)."""
    meta = obj.get("metadata") or {}
    old_meta = (old or {}).get("metadata") or {}
    if old is not None and meta.get("labels") == old_meta.get("labels") \
            and meta.get("annotations") == old_meta.get("annotations"):
        return []  # the name cannot change on update; unchanged labels and annotations were valid before
    causes = []
    name = meta.get("name")
    if not name:
        causes.append(field_cause("metadata.name", "Required value: name or generateName is required",
                                  "FieldValueRequired"))
    elif not isinstance(name, str):
        causes.append(field_cause("metadata.name", f"Invalid value: {_q(name)}: must be a string"))
    else:
        errs = dns1123_label_errors(name) if name_rule == "label" else dns1123_subdomain_errors(name)
        for e in errs:
            causes.append(field_cause("metadata.name", f"Invalid value: {_q(name)}: {e}"))
    labels = meta.get("labels")
    if labels is not None and not isinstance(labels, Mapping):
        causes.append(field_cause("metadata.labels", "Invalid value: must be a map of string to string"))
    for k, v in (labels or {}).items():
        for e in label_key_errors(k):
            causes.append(field_cause("metadata.labels", f"Invalid value: {_q(k)}: {e}"))
        if not isinstance(v, str):
            causes.append(field_cause(f"metadata.labels.{k}", f"Invalid value: {_q(v)}: must be a string"))
            continue
        for e in label_value_errors(v):
            causes.append(field_cause("metadata.labels", f"Invalid value: {_q(v)}: {e}"))
    annotations = meta.get("annotations")
    if annotations is not None and not isinstance(annotations, Mapping):
        causes.append(field_cause("metadata.annotations", "Invalid value: must be a map of string to string"))
    total = 0
    for k, v in (annotations or {}).items():
        for e in label_key_errors(k):
            causes.append(field_cause("metadata.annotations", f"Invalid value: {_q(k)}: {e}"))
        if not isinstance(v, str):
            causes.append(field_cause(f"metadata.annotations.{k}", f"Invalid value: {_q(v)}: must be a string"))
        else:
            total += len(k) + len(v)
    if total > 256 * 1024:
        causes.append(field_cause("metadata.annotations", f"Too long: must have at most {256 * 1024} bytes",
                                  "FieldValueTooLong"))
    return causes


# --- CRD openAPIV3Schema --------------------------------------------------------------------------

_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, Mapping),
    "array": lambda v: isinstance(v, list),
}


def schema_causes(obj: dict[str, Any], schema: Mapping[str, Any]) -> tuple[list[dict[str, str]], list[str]]:
    """Validate a custom object against its version's schema, pruning unknown fields in place.

    Returns (causes, pruned field paths). `metadata`, `apiVersion` and `kind` are the server's, not the schema's.
    """
    causes: list[dict[str, str]] = []
    pruned: list[str] = []
    props = schema.get("properties") or {}
    _apply_defaults(obj, props)
    for key in list(obj):
        if key in ("apiVersion", "kind", "metadata"):
            continue
        if key in props:
            _validate(obj[key], props[key], key, causes, pruned, obj, key)
        elif not schema.get("x-kubernetes-preserve-unknown-fields"):
            pruned.append(key)
            del obj[key]
    for req in schema.get("required") or []:
        if req not in obj and req not in ("apiVersion", "kind", "metadata"):
            causes.append(field_cause(req, "Required value", "FieldValueRequired"))
    return causes, pruned


def _apply_defaults(obj: dict[str, Any], props: Mapping[str, Any]) -> None:
    """Structural defaulting: absent properties with a `default` get it (nested objects only if present)."""
    for name, sub in props.items():
        if name not in obj and isinstance(sub, Mapping) and "default" in sub:
            obj[name] = copy.deepcopy(sub["default"])


def _alternatives(value: Any, schema: Mapping[str, Any], path: str) -> list[dict[str, str]]:
    """anyOf / oneOf / allOf / not, checked for validity only (they never prune or default)."""
    causes: list[dict[str, str]] = []

    def ok(sub: Mapping[str, Any]) -> bool:
        found: list = []
        _validate(copy.deepcopy(value), {**sub, "x-kubernetes-preserve-unknown-fields": True}, path, found, [],
                  None, None)
        return not found

    if "anyOf" in schema and not any(ok(sub) for sub in schema["anyOf"]):
        causes.append(field_cause(path, f"Invalid value: {_q(value)}: {path} in body must match at least one "
                                        "schema in anyOf"))
    if "oneOf" in schema and sum(ok(sub) for sub in schema["oneOf"]) != 1:
        causes.append(field_cause(path, f"Invalid value: {_q(value)}: {path} in body must match exactly one "
                                        "schema in oneOf"))
    for sub in schema.get("allOf") or []:
        if not ok(sub):
            causes.append(field_cause(path, f"Invalid value: {_q(value)}: {path} in body must match all "
                                            "schemas in allOf"))
    if "not" in schema and ok(schema["not"]):
        causes.append(field_cause(path, f"Invalid value: {_q(value)}: {path} in body must not match the "
                                        "schema in not"))
    return causes


def _validate(value: Any, schema: Mapping[str, Any], path: str, causes: list, pruned: list,
              parent: Any, key: Any) -> None:
    if any(k in schema for k in ("anyOf", "oneOf", "allOf", "not")):
        causes.extend(_alternatives(value, schema, path))
    if value is None:
        if not schema.get("nullable"):
            if schema.get("type"):
                causes.append(field_cause(path, f'Invalid value: "null": {path} in body must be of type '
                                                f'{schema["type"]}: "null"', "FieldValueTypeInvalid"))
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not (isinstance(value, str) or _TYPES["integer"](value)):
            causes.append(field_cause(path, f"Invalid value: {_q(value)}: {path} in body must be of type "
                                            "integer or string", "FieldValueTypeInvalid"))
        return
    typ = schema.get("type")
    if typ and typ in _TYPES and not _TYPES[typ](value):
        actual = _json_type(value)
        causes.append(field_cause(path, f'Invalid value: "{actual}": {path} in body must be of type {typ}: '
                                        f'"{actual}"', "FieldValueTypeInvalid"))
        return
    enum = schema.get("enum")
    if enum is not None and value not in enum:
        causes.append(field_cause(path, f"Unsupported value: {_q(value)}: supported values: "
                                        + ", ".join(_q(e) for e in enum), "FieldValueNotSupported"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema:
            lo = schema["minimum"]
            if value < lo or (schema.get("exclusiveMinimum") and value == lo):
                rel = "greater than" if schema.get("exclusiveMinimum") else "greater than or equal to"
                causes.append(field_cause(path, f"Invalid value: {_q(value)}: {path} in body should be {rel} {lo}"))
        if "maximum" in schema:
            hi = schema["maximum"]
            if value > hi or (schema.get("exclusiveMaximum") and value == hi):
                rel = "less than" if schema.get("exclusiveMaximum") else "less than or equal to"
                causes.append(field_cause(path, f"Invalid value: {_q(value)}: {path} in body should be {rel} {hi}"))
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            causes.append(field_cause(path, f"Too long: may not be more than {schema['maxLength']} bytes",
                                      "FieldValueTooLong"))
        if "minLength" in schema and len(value) < schema["minLength"]:
            causes.append(field_cause(path, f"Invalid value: {_q(value)}: {path} in body should be at least "
                                            f"{schema['minLength']} chars long"))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            causes.append(field_cause(path, f"Invalid value: {_q(value)}: {path} in body should match "
                                            f"'{schema['pattern']}'"))
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            causes.append(field_cause(path, f"Too many: {len(value)}: must have at most {schema['maxItems']} items",
                                      "FieldValueTooMany"))
        if "minItems" in schema and len(value) < schema["minItems"]:
            causes.append(field_cause(path, f"Invalid value: {len(value)}: {path} in body should have at least "
                                            f"{schema['minItems']} items"))
        items = schema.get("items")
        if isinstance(items, Mapping):
            for i, item in enumerate(value):
                _validate(item, items, f"{path}[{i}]", causes, pruned, value, i)
    if isinstance(value, dict):
        _apply_defaults(value, schema.get("properties") or {})
    if isinstance(value, MutableMapping):  # decoded JSON: a dict, pruned in place
        props = schema.get("properties")
        addl = schema.get("additionalProperties")
        for k in list(value):
            sub = f"{path}.{k}"
            if props and k in props:
                _validate(value[k], props[k], sub, causes, pruned, value, k)
            elif isinstance(addl, Mapping):
                _validate(value[k], addl, sub, causes, pruned, value, k)
            elif addl is True or schema.get("x-kubernetes-preserve-unknown-fields"):
                continue
            elif props is not None or addl is False or schema.get("type") == "object":
                pruned.append(sub)
                del value[k]
        for req in schema.get("required") or []:
            if req not in value:
                causes.append(field_cause(f"{path}.{req}", "Required value", "FieldValueRequired"))
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            causes.append(field_cause(path, f"Too many: {len(value)}: must have at most "
                                            f"{schema['maxProperties']} items", "FieldValueTooMany"))


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return "null"

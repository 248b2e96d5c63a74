"""Just enough of the Kubernetes protobuf encoding to accept the objects kubectl's typed clients send as
`application/vnd.kubernetes.protobuf` (`kubectl create namespace|configmap|secret|serviceaccount`).

The envelope is the magic `k8s\\0` followed by a runtime.Unknown message {typeMeta, raw}; `raw` is the typed
object. Each supported kind is described by a table of field number -> (JSON name, wire type); anything else
is refused with a message saying to send JSON or YAML instead.
"""

from __future__ import annotations

import base64
from typing import Any

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    pass


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ProtobufError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) in order; length-delimited values are bytes."""
    out: list[tuple[int, int, Any]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        v: int | bytes
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ProtobufError("truncated field")
            v, i = buf[i:i + n], i + n
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ProtobufError(f"unsupported wire type {wt}")
        out.append((num, wt, v))
    return out


# Schemas: field number -> (json name, kind) where kind is "str", "bytes", "int", "bool", "strlist",
# "strmap", "bytesmap", a nested schema dict, or ("list", schema) for repeated messages.
OWNER_REF = {1: ("kind", "str"), 3: ("name", "str"), 4: ("uid", "str"), 5: ("apiVersion", "str"),
             6: ("controller", "bool"), 7: ("blockOwnerDeletion", "bool")}
OBJECT_META = {1: ("name", "str"), 2: ("generateName", "str"), 3: ("namespace", "str"),
               6: ("resourceVersion", "str"), 11: ("labels", "strmap"), 12: ("annotations", "strmap"),
               13: ("ownerReferences", ("list", OWNER_REF)), 14: ("finalizers", "strlist")}
NAME_REF = {1: ("name", "str")}
OBJECT_REF = {1: ("kind", "str"), 2: ("namespace", "str"), 3: ("name", "str"), 4: ("uid", "str"),
              5: ("apiVersion", "str")}
KINDS: dict[tuple[str, str], dict[int, Any]] = {
    ("v1", "Namespace"): {1: ("metadata", OBJECT_META), 2: ("spec", {1: ("finalizers", "strlist")})},
    ("v1", "ConfigMap"): {1: ("metadata", OBJECT_META), 2: ("data", "strmap"), 3: ("binaryData", "bytesmap"),
                          4: ("immutable", "bool")},
    ("v1", "Secret"): {1: ("metadata", OBJECT_META), 2: ("data", "bytesmap"), 3: ("type", "str"),
                       4: ("stringData", "strmap"), 5: ("immutable", "bool")},
    ("v1", "ServiceAccount"): {1: ("metadata", OBJECT_META), 2: ("secrets", ("list", OBJECT_REF)),
                               3: ("imagePullSecrets", ("list", NAME_REF)),
                               4: ("automountServiceAccountToken", "bool")},
}


def _decode(buf: bytes, schema: dict[int, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for num, _, v in fields(buf):
        if num not in schema:
            continue
        name, kind = schema[num]
        if kind == "str":
            if v:  # Go writes empty strings too; JSON omits them
                out[name] = v.decode()
        elif kind == "int":
            out[name] = v
        elif kind == "bool":
            out[name] = bool(v)
        elif kind == "strlist":
            out.setdefault(name, []).append(v.decode())
        elif kind in ("strmap", "bytesmap"):
            entry = {n: val for n, _, val in fields(v)}
            key = entry.get(1, b"").decode()
            val = entry.get(2, b"")
            out.setdefault(name, {})[key] = val.decode() if kind == "strmap" else base64.b64encode(val).decode()
        elif isinstance(kind, tuple):
            out.setdefault(name, []).append(_decode(v, kind[1]))
        else:
            out[name] = _decode(v, kind)
    return out


def decode_object(body: bytes) -> dict[str, Any]:
    """A JSON-shaped object from a Kubernetes protobuf body, for the kinds in KINDS."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf magic prefix")
    unknown = {num: v for num, _, v in fields(body[len(MAGIC):])}
    type_meta = {num: v.decode() for num, _, v in fields(unknown.get(1, b""))}
    api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
    schema = KINDS.get((api_version, kind))
    if schema is None:
        raise ProtobufError(f"protobuf bodies are accepted only for {', '.join(k for _, k in KINDS)}; got "
                            f"{api_version or '?'}/{kind or '?'}; send JSON or YAML (e.g. kubectl apply -f)")
    obj = _decode(unknown.get(2, b""), schema)
    return {"apiVersion": api_version, "kind": kind, **obj}

"""Just enough Kubernetes protobuf to read a ``SelfSubjectAccessReview`` body (pure).

kubectl ≥ 1.3x sends ``kubectl auth can-i`` reviews as ``application/vnd.kubernetes.protobuf``: the
``k8s\\x00`` magic, then a ``runtime.Unknown`` {1: TypeMeta, 2: raw object bytes, ...}. The object is
``SelfSubjectAccessReview`` {1: metadata, 2: spec {1: resourceAttributes, 2: nonResourceAttributes}}.
kubegate only needs the spec to decide whether its roles deny; everything else passes through untouched.
"""

from __future__ import annotations

from typing import Any

MAGIC = b"k8s\x00"

_RESOURCE_FIELDS = {1: "namespace", 2: "verb", 3: "group", 4: "version", 5: "resource", 6: "subresource", 7: "name"}
_NON_RESOURCE_FIELDS = {1: "path", 2: "verb"}


class ProtobufError(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of one message: varints as int, length-delimited as bytes."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((number, value))
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ProtobufError("truncated field")
            out.append((number, data[pos : pos + length]))
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
    return out


def _strings(data: bytes, names: dict[int, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, value in fields(data):
        name = names.get(number)
        if name is not None and isinstance(value, bytes):
            out[name] = value.decode("utf-8", "replace")
    return out


def access_review_from_protobuf(body: bytes) -> dict[str, Any]:
    """The JSON-shaped dict of a protobuf ``SelfSubjectAccessReview`` (spec only)."""
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf body")
    raw = b""
    for number, value in fields(body[len(MAGIC) :]):
        if number == 2 and isinstance(value, bytes):
            raw = value
    spec: dict[str, Any] = {}
    for number, value in fields(raw):
        if number == 2 and isinstance(value, bytes):
            for sub, sub_value in fields(value):
                if sub == 1 and isinstance(sub_value, bytes):
                    spec["resourceAttributes"] = _strings(sub_value, _RESOURCE_FIELDS)
                elif sub == 2 and isinstance(sub_value, bytes):
                    spec["nonResourceAttributes"] = _strings(sub_value, _NON_RESOURCE_FIELDS)
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": spec}

"""Just enough Kubernetes protobuf to read a ``SelfSubjectAccessReview`` body (pure).

kubectl ≥ 1.3x sends ``kubectl auth can-i`` reviews as ``application/vnd.kubernetes.protobuf``: the
``k8s\\x00`` magic, then a ``runtime.Unknown`` {1: TypeMeta, 2: raw object bytes, ...}. The object is
``SelfSubjectAccessReview`` {1: metadata, 2: spec {1: resourceAttributes, 2: nonResourceAttributes}}.
kubegate only needs the spec to decide whether its roles deny; everything else passes through untouched.
"""

from __future__ import annotations

from typing import Any

from proxy.protocol.protobuf_wire import MAGIC, ProtobufError, fields, unwrap

__all__ = ["MAGIC", "ProtobufError", "access_review_from_protobuf", "fields"]

_RESOURCE_FIELDS = {1: "namespace", 2: "verb", 3: "group", 4: "version", 5: "resource", 6: "subresource", 7: "name"}
_NON_RESOURCE_FIELDS = {1: "path", 2: "verb"}


def _strings(data: bytes, names: dict[int, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, value in fields(data):
        name = names.get(number)
        if name is not None and isinstance(value, bytes):
            out[name] = value.decode("utf-8", "replace")
    return out


def access_review_from_protobuf(body: bytes) -> dict[str, Any]:
    """The JSON-shaped dict of a protobuf ``SelfSubjectAccessReview`` (spec only)."""
    raw = unwrap(body).raw
    spec: dict[str, Any] = {}
    for number, value in fields(raw):
        if number == 2 and isinstance(value, bytes):
            for sub, sub_value in fields(value):
                if sub == 1 and isinstance(sub_value, bytes):
                    spec["resourceAttributes"] = _strings(sub_value, _RESOURCE_FIELDS)
                elif sub == 2 and isinstance(sub_value, bytes):
                    spec["nonResourceAttributes"] = _strings(sub_value, _NON_RESOURCE_FIELDS)
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": spec}

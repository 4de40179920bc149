"""The minimal protobuf reader for SelfSubjectAccessReview bodies (what kubectl 1.37 `auth can-i` sends)."""

from __future__ import annotations

import pytest

from proxy.protobuf import MAGIC, ProtobufError, access_review_from_protobuf


def _field(number: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([(number << 3) | 2, len(payload)]) + payload


def _review(resource: dict[int, str] | None = None, non_resource: dict[int, str] | None = None) -> bytes:
    spec = b""
    if resource is not None:
        spec += _field(1, b"".join(_field(k, v.encode()) for k, v in resource.items()))
    if non_resource is not None:
        spec += _field(2, b"".join(_field(k, v.encode()) for k, v in non_resource.items()))
    obj = _field(1, b"") + _field(2, spec)
    type_meta = _field(1, b"authorization.k8s.io/v1") + _field(2, b"SelfSubjectAccessReview")
    return MAGIC + _field(1, type_meta) + _field(2, obj)


def test_resource_attributes_are_read():
    body = _review({1: "dev", 2: "get", 3: "", 5: "pods", 7: "web-1"})
    assert access_review_from_protobuf(body)["spec"] == {
        "resourceAttributes": {"namespace": "dev", "verb": "get", "group": "", "resource": "pods", "name": "web-1"}
    }


def test_non_resource_attributes_are_read():
    body = _review(non_resource={1: "/version", 2: "get"})
    assert access_review_from_protobuf(body)["spec"] == {"nonResourceAttributes": {"path": "/version", "verb": "get"}}


@pytest.mark.parametrize("body", [b'{"json": true}', MAGIC + b"\x12\x7f", MAGIC + b"\x0f"])
def test_garbage_is_an_error_not_a_crash(body):
    with pytest.raises(ProtobufError):
        access_review_from_protobuf(body)

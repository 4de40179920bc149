"""The one protobuf wire reader (proxy.protocol.protobuf_wire): fields, varints, the k8s envelope."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.protocol.protobuf_wire import (
    MAGIC,
    ProtobufError,
    encode_varint,
    fields,
    last_bytes,
    length_delimited,
    read_varint,
    unwrap,
    varint_field,
)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varints_round_trip(value: int) -> None:
    encoded = encode_varint(value) + b"rest"
    assert read_varint(encoded, 0) == (value, len(encoded) - 4)


def test_fields_in_wire_order_with_fixed_width_fields_skipped() -> None:
    fixed64 = encode_varint(3 << 3 | 1) + bytes(8)
    fixed32 = encode_varint(4 << 3 | 5) + bytes(4)
    data = (
        length_delimited(1, b"name") + varint_field(2, 300) + fixed64 + fixed32
        + length_delimited(1, b"") + varint_field(7, 2**64 - 1)
    )
    assert fields(data) == [(1, b"name"), (2, 300), (1, b""), (7, 2**64 - 1)]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x08", "truncated varint"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "varint too long"),
        (b"\x12\x05abc", "truncated length-delimited field"),
        (b"\x0b", "unsupported wire type 3"),
        (b"\x0f", "unsupported wire type 7"),
    ],
)
def test_malformed_messages_are_protobuf_errors(data: bytes, message: str) -> None:
    with pytest.raises(ProtobufError, match=message):
        fields(data)


@given(st.binary(max_size=64))
def test_any_bytes_give_fields_or_a_protobuf_error(data: bytes) -> None:
    try:
        fields(data)
    except ProtobufError:
        pass


def test_last_bytes_takes_the_last_length_delimited_occurrence() -> None:
    data = (
        length_delimited(2, b"first") + varint_field(2, 5)
        + length_delimited(2, b"second") + length_delimited(3, b"other")
    )
    assert last_bytes(data, 2) == b"second"
    assert last_bytes(data, 9) == b""


def test_envelope_gives_type_meta_and_raw_object() -> None:
    api_version = length_delimited(1, b"authorization.k8s.io/v1")
    type_meta = api_version + length_delimited(2, b"SelfSubjectAccessReview")
    content_type = length_delimited(4, b"application/vnd.kubernetes.protobuf")
    body = MAGIC + length_delimited(1, type_meta) + length_delimited(2, b"\x0a\x00") + content_type
    envelope = unwrap(body)
    assert (envelope.api_version, envelope.kind, envelope.raw) == (
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
        b"\x0a\x00",
    )
    assert (unwrap(MAGIC).kind, unwrap(MAGIC).raw) == ("", b"")


@pytest.mark.parametrize("body", [b'{"kind": "Pod"}', b"k8s", b"K8S\x00"])
def test_a_body_without_the_magic_is_refused(body: bytes) -> None:
    with pytest.raises(ProtobufError, match="magic"):
        unwrap(body)


def test_a_type_meta_string_of_the_wrong_wire_type_is_malformed() -> None:
    with pytest.raises(ProtobufError):
        _ = unwrap(MAGIC + length_delimited(1, varint_field(2, 1))).kind

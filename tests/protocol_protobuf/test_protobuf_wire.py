"""The one protobuf wire reader (proxy.protocol.protobuf_wire): fields, varints, the k8s envelope."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.protocol.protobuf_wire import MAGIC, ProtobufError, fields, last_bytes, read_varint, unwrap


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _ld(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _vi(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varints_round_trip(value: int) -> None:
    encoded = _varint(value) + b"rest"
    assert read_varint(encoded, 0) == (value, len(encoded) - 4)


def test_fields_in_wire_order_with_fixed_width_fields_skipped() -> None:
    fixed64 = _varint(3 << 3 | 1) + bytes(8)
    fixed32 = _varint(4 << 3 | 5) + bytes(4)
    data = _ld(1, b"name") + _vi(2, 300) + fixed64 + fixed32 + _ld(1, b"") + _vi(7, 2**64 - 1)
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
    data = _ld(2, b"first") + _vi(2, 5) + _ld(2, b"second") + _ld(3, b"other")
    assert last_bytes(data, 2) == b"second"
    assert last_bytes(data, 9) == b""


def test_envelope_gives_type_meta_and_raw_object() -> None:
    type_meta = _ld(1, b"authorization.k8s.io/v1") + _ld(2, b"SelfSubjectAccessReview")
    body = MAGIC + _ld(1, type_meta) + _ld(2, b"\x0a\x00") + _ld(4, b"application/vnd.kubernetes.protobuf")
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
        _ = unwrap(MAGIC + _ld(1, _vi(2, 1))).kind

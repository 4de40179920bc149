"""The protobuf wire format and the Kubernetes protobuf envelope (sans-IO: bytes in, values out).

Kubernetes clients send ``application/vnd.kubernetes.protobuf`` bodies as the magic ``b"k8s\\x00"``
followed by a ``runtime.Unknown`` message {1: TypeMeta {1: apiVersion, 2: kind}, 2: raw object bytes,
3: contentEncoding, 4: contentType}; ``raw`` is the object's own message. Protobuf is not
self-describing, so this module only splits messages into ``(field number, value)`` pairs; the callers
(the proxy's access-review reader, the sandbox's object and review decoders) know the field numbers.

Wire types: 0 (varint) gives an ``int``, 2 (length-delimited: strings, bytes, embedded messages,
packed repeated) gives ``bytes``; 1 (fixed64) and 5 (fixed32) are skipped; groups (3, 4) and the
unused types are errors. Malformed input raises :class:`ProtobufError`, never anything else.
Writing: ``encode_varint``, ``varint_field`` and ``length_delimited`` (the sandbox's protobuf OpenAPI
document, tests).
"""

from __future__ import annotations

from dataclasses import dataclass

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    """Bytes that are not well-formed protobuf, or a body without the Kubernetes magic prefix."""


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint starting at ``data[pos]`` and the position after it."""
    result = shift = 0
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
    """(field number, value) pairs of one message, in wire order: varints as int, length-delimited as
    bytes (fixed32/fixed64 fields are skipped)."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(data, pos)
            out.append((number, value))
        elif wire == 2:
            length, pos = read_varint(data, pos)
            if pos + length > end:
                raise ProtobufError("truncated length-delimited field")
            out.append((number, data[pos : pos + length]))
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
    return out


def last_bytes(data: bytes, number: int) -> bytes:
    """The last length-delimited field ``number`` of a message (a sub-message, string or bytes), or
    ``b""`` when there is none (fields of that number with another wire type are passed over)."""
    found = b""
    for field_number, value in fields(data):
        if field_number == number and isinstance(value, bytes):
            found = value
    return found


def encode_varint(value: int) -> bytes:
    """A non-negative integer as a varint."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def varint_field(number: int, value: int) -> bytes:
    """Field ``number`` (wire type 0) holding ``value``."""
    return encode_varint(number << 3) + encode_varint(value)


def length_delimited(number: int, payload: bytes | str) -> bytes:
    """Field ``number`` (wire type 2) holding ``payload`` (a ``str`` is written as UTF-8)."""
    data = payload.encode() if isinstance(payload, str) else payload
    return encode_varint(number << 3 | 2) + encode_varint(len(data)) + data


@dataclass(frozen=True, slots=True)
class Unknown:
    """A Kubernetes protobuf body's ``runtime.Unknown`` envelope."""

    type_meta: bytes
    raw: bytes

    @property
    def api_version(self) -> str:
        return _type_meta_string(self.type_meta, 1)

    @property
    def kind(self) -> str:
        return _type_meta_string(self.type_meta, 2)


def unwrap(body: bytes) -> Unknown:
    """The envelope of a ``k8s\\x00`` body: TypeMeta and the raw object message (each the last
    length-delimited occurrence of its field, ``b""`` when absent)."""
    if not body.startswith(MAGIC):
        raise ProtobufError("protobuf body without the k8s magic prefix")
    type_meta = raw = b""
    for number, value in fields(body[len(MAGIC) :]):
        if isinstance(value, bytes):
            if number == 1:
                type_meta = value
            elif number == 2:
                raw = value
    return Unknown(type_meta, raw)


def _type_meta_string(type_meta: bytes, number: int) -> str:
    """A TypeMeta string (strict UTF-8: ``UnicodeDecodeError`` otherwise); a field of that number that
    is not length-delimited is malformed."""
    text = ""
    for field_number, value in fields(type_meta):
        if field_number == number:
            if not isinstance(value, bytes):
                raise ProtobufError("expected a length-delimited string in TypeMeta")
            text = value.decode("utf-8")
    return text

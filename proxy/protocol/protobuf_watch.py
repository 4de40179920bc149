"""Kubernetes protobuf watch streams (``application/vnd.kubernetes.protobuf;stream=watch``), sans-IO.

The apiserver frames each event as a 4-byte big-endian length, then a ``metav1.WatchEvent`` message
{1: type, 2: RawExtension {1: raw}} written by apimachinery's *raw* protobuf serializer (no ``k8s\\x00``
magic, no envelope). ``raw`` is the event's object as the ordinary protobuf serializer writes it: the
magic and a ``runtime.Unknown`` envelope {1: TypeMeta {1: apiVersion, 2: kind}, 2: the object's message}.
client-go decodes it with that serializer, so an ERROR event's ``metav1.Status`` {2: status,
3: message, 4: reason, 6: code} is wrapped the same way (apiVersion ``v1``, kind ``Status``).

:class:`FrameBoundary` follows the frame lengths of a relayed stream, so that an event is only ever
appended between two frames.
"""

from __future__ import annotations

from proxy.protocol.protobuf_wire import MAGIC, fields, last_bytes, length_delimited, varint_field

CONTENT_TYPE = b"application/vnd.kubernetes.protobuf;stream=watch"


def status_message(code: int, reason: str, message: str) -> bytes:
    """A failed ``metav1.Status`` as the protobuf serializer writes it (magic + envelope)."""
    status = (length_delimited(1, b"") + length_delimited(2, "Failure") + length_delimited(3, message)
              + length_delimited(4, reason) + varint_field(6, code))
    type_meta = length_delimited(1, "v1") + length_delimited(2, "Status")
    return MAGIC + length_delimited(1, type_meta) + length_delimited(2, status)


def error_event(code: int, reason: str, message: str) -> bytes:
    """One framed ERROR watch event carrying the Status (``code``, ``reason``, ``message``)."""
    event = length_delimited(1, "ERROR") + length_delimited(2, length_delimited(1, status_message(code, reason, message)))
    return len(event).to_bytes(4, "big") + event


def events(data: bytes) -> list[tuple[str, bytes]]:
    """The (type, raw object) of each whole frame in ``data`` (a partial last frame is left out): how a
    client reads the stream."""
    out: list[tuple[str, bytes]] = []
    pos = 0
    while pos + 4 <= len(data):
        end = pos + 4 + int.from_bytes(data[pos : pos + 4], "big")
        if end > len(data):
            break
        event = fields(data[pos + 4 : end])
        kind = next((v.decode() for n, v in event if n == 1 and isinstance(v, bytes)), "")
        raw = next((last_bytes(v, 1) for n, v in event if n == 2 and isinstance(v, bytes)), b"")
        out.append((kind, raw))
        pos = end
    return out


class FrameBoundary:
    """Whether the bytes fed so far end on a frame boundary (between two events)."""

    __slots__ = ("_header", "_left")

    def __init__(self) -> None:
        self._header = b""  # the part of a frame's length prefix read so far
        self._left = 0  # bytes of the current frame's message still to come

    @property
    def at_boundary(self) -> bool:
        return not self._header and not self._left

    def feed(self, data: bytes) -> None:
        pos, size = 0, len(data)
        while pos < size:
            if self._left:
                step = min(self._left, size - pos)
                self._left -= step
                pos += step
                continue
            need = 4 - len(self._header)
            self._header += data[pos : pos + need]
            pos += need
            if len(self._header) == 4:
                self._left = int.from_bytes(self._header, "big")
                self._header = b""

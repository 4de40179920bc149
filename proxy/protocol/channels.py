"""Kubernetes remotecommand / port-forward framing over WebSocket (sans-IO, WebSocket via wsproto).

Sub-protocols (``Sec-WebSocket-Protocol``), as the apiserver / kubelet define them:

* ``v5.channel.k8s.io``  — binary messages, first byte = channel (0 stdin, 1 stdout, 2 stderr,
  3 error, 4 resize); the error channel carries a ``Status`` JSON (exit code); a message
  ``[255, ch]`` closes channel ``ch`` (half-close: stdin EOF).
* ``v4.channel.k8s.io``, ``v3.channel.k8s.io``, ``v2.channel.k8s.io``, ``channel.k8s.io`` — the same
  without close messages (v4: Status on the error channel; below: plain error text; resize from v3).
* ``base64.channel.k8s.io`` (and ``v4.base64.channel.k8s.io`` / ``v5.base64.channel.k8s.io``) —
  text messages, channel as an ASCII digit, payload base64.
* port-forward: ``SPDY/3.1+portforward.k8s.io`` tunnels a whole SPDY/3.1 connection in binary
  messages (any chunking; see :mod:`proxy.protocol.spdy`); legacy ``portforward.k8s.io`` /
  ``v4.channel.k8s.io`` (and ``base64.portforward.k8s.io``) give each requested port two channels,
  data ``2i`` and error ``2i+1``; the server's FIRST message on every channel carries the port as a
  little-endian uint16 (then data).

:class:`WebSocketServer` does the HTTP/1.1 upgrade answer and the framing with wsproto, from a request
head another codec already parsed. :class:`ChannelCodec` turns messages into ``(channel, data)``.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass

from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason, FrameProtocol
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from proxy.protocol.events import RequestHead

STDIN = 0
STDOUT = 1
STDERR = 2
ERROR = 3
RESIZE = 4
CLOSE = 255

V5_CHANNEL = "v5.channel.k8s.io"
V4_CHANNEL = "v4.channel.k8s.io"
V3_CHANNEL = "v3.channel.k8s.io"
V2_CHANNEL = "v2.channel.k8s.io"
V1_CHANNEL = "channel.k8s.io"
V1_BASE64 = "base64.channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"
V5_BASE64 = "v5.base64.channel.k8s.io"

PORTFORWARD_SPDY_TUNNEL = "SPDY/3.1+portforward.k8s.io"
PORTFORWARD_WS = "portforward.k8s.io"
PORTFORWARD_WS_BASE64 = "base64.portforward.k8s.io"

# Server preference order (newest first), as the kubelet lists them.
EXEC_WS_PROTOCOLS = (V5_CHANNEL, V5_BASE64, V4_CHANNEL, V4_BASE64, V3_CHANNEL, V2_CHANNEL, V1_CHANNEL, V1_BASE64)
PORTFORWARD_WS_PROTOCOLS = (PORTFORWARD_SPDY_TUNNEL, V4_CHANNEL, PORTFORWARD_WS, PORTFORWARD_WS_BASE64)


@dataclass(frozen=True, slots=True)
class ChannelProtocol:
    """What a negotiated sub-protocol means for the framing above WebSocket."""

    name: str
    version: int  # remotecommand version: 1..5 (error channel: Status JSON from 4)
    base64: bool
    close_frames: bool

    @property
    def status_errors(self) -> bool:
        return self.version >= 4

    @property
    def resize(self) -> bool:
        return self.version >= 3


def channel_protocol(name: str) -> ChannelProtocol:
    table = {
        V5_CHANNEL: (5, False), V5_BASE64: (5, True), V4_CHANNEL: (4, False), V4_BASE64: (4, True),
        V3_CHANNEL: (3, False), V2_CHANNEL: (2, False), V1_CHANNEL: (1, False), V1_BASE64: (1, True),
        PORTFORWARD_WS: (1, False), PORTFORWARD_WS_BASE64: (1, True),
    }
    if name not in table:
        raise ValueError(f"unknown channel protocol {name!r}")
    version, b64 = table[name]
    return ChannelProtocol(name, version, b64, version >= 5)


def offered_protocols(head: RequestHead) -> list[str]:
    """The client's ``Sec-WebSocket-Protocol`` list, in its order."""
    offered: list[str] = []
    for raw in head.header_values(b"sec-websocket-protocol"):
        offered += [p.strip() for p in raw.decode("latin-1").split(",") if p.strip()]
    return offered


def choose_protocol(offered: list[str], supported: tuple[str, ...]) -> str | None:
    """The first of the server's ``supported`` that the client offered (server preference)."""
    for name in supported:
        if name in offered:
            return name
    return None


class ChannelFrameError(ValueError):
    """A message that does not fit the channel framing (the peer broke the protocol)."""


class ChannelCodec:
    """(channel, data) <-> WebSocket message payloads for one negotiated protocol."""

    def __init__(self, protocol: ChannelProtocol) -> None:
        self.protocol = protocol

    def encode(self, channel: int, data: bytes) -> bytes | str:
        if self.protocol.base64:
            return str(channel) + base64.b64encode(data).decode("ascii")
        return bytes((channel,)) + data

    def encode_close(self, channel: int) -> bytes | str:
        if not self.protocol.close_frames:
            raise ValueError(f"{self.protocol.name} has no close messages")
        if self.protocol.base64:
            return str(CLOSE) + base64.b64encode(bytes((channel,))).decode("ascii")
        return bytes((CLOSE, channel))

    def decode(self, message: bytes | str) -> tuple[int, bytes]:
        """-> (channel, payload). A v5 close message decodes as (255, bytes([channel]))."""
        if self.protocol.base64:
            if isinstance(message, bytes):
                raise ChannelFrameError("binary message on a base64 channel protocol")
            if not message:
                raise ChannelFrameError("empty message")
            if message.startswith(str(CLOSE)):
                digits, rest = str(CLOSE), message[3:]
            else:
                digits, rest = message[0], message[1:]
            if not digits.isdigit():
                raise ChannelFrameError(f"channel {digits!r} is not an ASCII digit")
            try:
                payload = base64.b64decode(rest, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ChannelFrameError(f"bad base64 payload: {exc}") from exc
            return int(digits), payload
        if isinstance(message, str):
            # The apiserver reads text frames as their UTF-8 bytes too (the Python client sends str
            # stdin as text frames "\x00data").
            message = message.encode("utf-8")
        if not message:
            raise ChannelFrameError("empty message")
        return message[0], message[1:]


def port_prefix(port: int) -> bytes:
    """The legacy port-forward first-message payload: the port as little-endian uint16."""
    return struct.pack("<H", port)


# ----------------------------------------------------------------------------------- WebSocket


_PEER_ERROR_CODES = (1002, 1007, 1009)  # protocol error, invalid payload, message too big


def _request_bytes(head: RequestHead) -> bytes:
    lines = [f"{head.method} {head.target} HTTP/1.1".encode("latin-1")]
    has_host = False
    for name, value in head.headers:
        if name == b"host":
            has_host = True
        lines.append(name + b": " + value)
    if not has_host:
        lines.append(b"host: " + (head.authority or "localhost").encode("latin-1"))
    return b"\r\n".join(lines) + b"\r\n\r\n"


class WebSocketError(Exception):
    """The WebSocket peer broke the protocol (or the handshake was not a WebSocket request)."""


class WebSocketServer:
    """Server side of one WebSocket: the upgrade answer, then messages both ways (wsproto).

    ``receive_data`` returns complete messages (``bytes`` for binary, ``str`` for text) and
    ``None`` when the peer closed (EOF or a close frame); pings are answered automatically. A client
    that breaks the WebSocket protocol gets a close frame (1002/1007/1009) and ``error`` says why.
    """

    def __init__(self, head: RequestHead) -> None:
        self._ws = WSConnection(ConnectionType.SERVER)
        self._out: list[bytes] = []
        self._parts: list[bytes | str] = []
        self.closed = False
        self.error = ""  # set when the client broke the WebSocket protocol
        self.request: Request | None = None
        try:
            self._ws.receive_data(_request_bytes(head))
            for event in self._ws.events():
                if isinstance(event, Request):
                    self.request = event
        except (RemoteProtocolError, LocalProtocolError) as exc:
            raise WebSocketError(f"not a valid WebSocket upgrade request: {exc}") from exc
        if self.request is None:
            raise WebSocketError("not a valid WebSocket upgrade request")

    def accept(self, subprotocol: str | None) -> bytes:
        """The ``101 Switching Protocols`` answer."""
        return self._ws.send(AcceptConnection(subprotocol=subprotocol))

    def reject(self, status: int, body: bytes, content_type: bytes = b"application/json") -> bytes:
        """A non-101 answer (a client falls back to SPDY on it)."""
        out = self._ws.send(RejectConnection(
            status_code=status,
            headers=[(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
            has_body=True,
        ))
        out += self._ws.send(RejectData(data=body, body_finished=True))
        self.closed = True
        return out

    def receive_data(self, data: bytes) -> list[bytes | str | None]:
        out: list[bytes | str | None] = []
        try:
            self._ws.receive_data(data if data else None)
            for event in self._ws.events():
                if isinstance(event, Message):
                    self._parts.append(event.data)
                    if event.message_finished:
                        if isinstance(event, BytesMessage):
                            out.append(b"".join(p for p in self._parts if isinstance(p, bytes)))
                        else:
                            out.append("".join(p for p in self._parts if isinstance(p, str)))
                        self._parts.clear()
                elif isinstance(event, Ping):
                    self._out.append(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if event.code in _PEER_ERROR_CODES and self._ws.state is ConnectionState.OPEN:
                        # wsproto reports a frame it could not parse as a close with this code.
                        self.error = f"WebSocket protocol error by the client: {event.reason} ({int(event.code)})"
                        self._out.append(self._ws.send(CloseConnection(code=event.code, reason=event.reason)))
                    elif self._ws.state is ConnectionState.REMOTE_CLOSING:
                        self._out.append(self._ws.send(event.response()))
                    self.closed = True
                    out.append(None)
        except (RemoteProtocolError, LocalProtocolError) as exc:
            self.closed = True
            raise WebSocketError(f"WebSocket protocol error by the client: {exc}") from exc
        if not data and not self.closed:
            self.closed = True
            out.append(None)
        return out

    def send(self, message: bytes | str) -> bytes:
        if self._ws.state is not ConnectionState.OPEN:
            return b""
        if isinstance(message, str):
            return self._ws.send(TextMessage(data=message))
        return self._ws.send(BytesMessage(data=message))

    def close(self, code: int = 1000, reason: str = "") -> bytes:
        if self._ws.state is not ConnectionState.OPEN:
            return b""
        return self._ws.send(CloseConnection(code=code, reason=reason))

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out


class WebSocketClient:
    """Client side of an established WebSocket (after a 101), for tests and tools."""

    def __init__(self, trailing: bytes = b"") -> None:
        self._conn = Connection(ConnectionType.CLIENT, trailing_data=trailing)
        self._parts: list[bytes | str] = []

    def receive_data(self, data: bytes | None) -> list[bytes | str | None]:
        """Feed bytes (``None``: EOF; ``b""``: only collect what earlier bytes completed)."""
        out: list[bytes | str | None] = []
        if data is None or data:
            self._conn.receive_data(data)
        for event in self._conn.events():
            if isinstance(event, Message):
                self._parts.append(event.data)
                if event.message_finished:
                    if isinstance(event, BytesMessage):
                        out.append(b"".join(p for p in self._parts if isinstance(p, bytes)))
                    else:
                        out.append("".join(p for p in self._parts if isinstance(p, str)))
                    self._parts.clear()
            elif isinstance(event, CloseConnection):
                out.append(None)
        return out

    def send(self, message: bytes | str) -> bytes:
        if isinstance(message, str):
            return self._conn.send(TextMessage(data=message))
        return self._conn.send(BytesMessage(data=message))

    def close(self) -> bytes:
        return self._conn.send(CloseConnection(code=1000))


# ------------------------------------------------------------------------------------------ tap


class ChannelTap:
    """Passive observer of a remotecommand WebSocket relayed as bytes (the proxy's audit tap).

    Feed each direction's raw bytes (after the 101); it parses WebSocket frames with wsproto's frame
    parser (no re-framing, nothing sent), counts payload bytes per channel and keeps the error
    channel's payload so ``exit_code()`` reads the v4+ Status. For ``SPDY/3.1+portforward.k8s.io``
    use ``spdy_tap`` (a :class:`proxy.protocol.spdy.SpdyTap` fed with the message payloads).
    """

    def __init__(self, protocol_name: str, max_error_bytes: int = 64 * 1024) -> None:
        from proxy.protocol.spdy import SpdyTap

        self.protocol_name = protocol_name
        self.spdy_tap: SpdyTap | None = SpdyTap() if protocol_name == PORTFORWARD_SPDY_TUNNEL else None
        self.codec: ChannelCodec | None = None
        if self.spdy_tap is None:
            try:
                self.codec = ChannelCodec(channel_protocol(protocol_name))
            except ValueError:
                self.codec = None
        self._client = FrameProtocol(client=False, extensions=[])  # parses the client's masked frames
        self._server = FrameProtocol(client=True, extensions=[])
        self._pending = {"client": bytearray(), "server": bytearray()}
        self._pending_text = {"client": "", "server": ""}
        self.bytes_from_client: dict[int, int] = {}
        self.bytes_from_server: dict[int, int] = {}
        self.error_data = bytearray()
        self.closed_channels: set[int] = set()
        self.failed = False
        self.failure = ""
        self._max_error = max_error_bytes

    def feed_client(self, data: bytes) -> None:
        self._feed("client", self._client, data)

    def feed_server(self, data: bytes) -> None:
        self._feed("server", self._server, data)

    def _feed(self, side: str, parser: FrameProtocol, data: bytes) -> None:
        if self.failed or not data:
            return
        try:
            parser.receive_bytes(data)
            for frame in parser.received_frames():
                opcode = frame.opcode.name
                if opcode in ("BINARY", "CONTINUATION", "TEXT") and isinstance(frame.payload, (bytes, bytearray)):
                    self._pending[side] += frame.payload
                    if frame.message_finished:
                        self._message(side, bytes(self._pending[side]))
                        self._pending[side].clear()
                elif isinstance(frame.payload, str):
                    self._pending_text[side] += frame.payload
                    if frame.message_finished:
                        self._message(side, self._pending_text[side])
                        self._pending_text[side] = ""
                elif isinstance(frame.payload, CloseReason):
                    pass
        except Exception as exc:  # noqa: BLE001 - a tap never breaks the relay
            self.failed = True
            self.failure = f"{side}: {exc}"

    def _message(self, side: str, message: bytes | str) -> None:
        if self.spdy_tap is not None:
            raw = message.encode("latin-1") if isinstance(message, str) else message
            (self.spdy_tap.feed_client if side == "client" else self.spdy_tap.feed_server)(raw)
            return
        if self.codec is None or not message:
            return
        channel, payload = self.codec.decode(message)
        if channel == CLOSE:
            if payload:
                self.closed_channels.add(payload[0])
            return
        counts = self.bytes_from_client if side == "client" else self.bytes_from_server
        counts[channel] = counts.get(channel, 0) + len(payload)
        if side == "server" and channel == ERROR and len(self.error_data) < self._max_error:
            self.error_data += payload[: self._max_error - len(self.error_data)]

    def exit_code(self) -> int | None:
        from proxy.protocol.spdy import exit_code_from_status

        if self.spdy_tap is not None:
            return self.spdy_tap.exit_code()
        return exit_code_from_status(bytes(self.error_data)) if self.error_data else None

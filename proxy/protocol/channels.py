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
import contextlib
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
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from proxy.protocol.events import RequestHead
from proxy.protocol.spdy import DataObserver, SpdyTap, TapGaveUp, exit_code_from_status

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
                    whole = _reassemble(self._parts, event)
                    if whole is not None:
                        out.append(whole)
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


def _reassemble(parts: list[bytes | str], event: Message) -> bytes | str | None:
    """Collect one fragment of a WebSocket message: the whole message once its last fragment is in
    (``parts`` is then emptied), else None."""
    parts.append(event.data)
    if not event.message_finished:
        return None
    if isinstance(event, BytesMessage):
        whole: bytes | str = b"".join(p for p in parts if isinstance(p, bytes))
    else:
        whole = "".join(p for p in parts if isinstance(p, str))
    parts.clear()
    return whole


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
                whole = _reassemble(self._parts, event)
                if whole is not None:
                    out.append(whole)
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


def _ws_frame(first_byte: int, payload: bytes) -> bytes:
    """A server (unmasked) WebSocket frame: ``first_byte`` is FIN + opcode (0x81 text, 0x82 binary, 0x88 close)."""
    n = len(payload)
    if n < 126:
        head = bytes((first_byte, n))
    elif n < 65536:
        head = bytes((first_byte, 126)) + struct.pack("!H", n)
    else:
        head = bytes((first_byte, 127)) + struct.pack("!Q", n)
    return head + payload


def _header_length(b1: int) -> int:
    """A WebSocket frame header's length, from its second byte (length code and mask bit)."""
    return 2 + {126: 2, 127: 8}.get(b1 & 0x7F, 0) + (4 if b1 & 0x80 else 0)


def _unmask(data: bytes | memoryview, mask: bytes, offset: int) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` starting at mask position ``offset`` (big-int XOR: C speed)."""
    n = len(data)
    if n == 0:
        return b""
    rotated = mask[offset % 4 :] + mask[: offset % 4]
    key = (rotated * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class _WsScan:
    """One direction's WebSocket frame scanner: headers parsed, payloads skipped unless wanted."""

    __slots__ = ("side", "buf", "remaining", "mask", "mask_offset", "opcode", "fin", "message_opcode",
                 "channel", "channel_text", "collect", "b64_carry", "copied")

    def __init__(self, side: str) -> None:
        self.side = side
        self.buf = bytearray()  # the current frame header while a read cut it (at most 14 bytes)
        self.remaining = 0  # payload bytes of the current frame still to come
        self.mask = b""
        self.mask_offset = 0
        self.opcode = 0
        self.fin = True
        self.message_opcode = 0  # opcode of the message in progress (1 text, 2 binary; 0: none)
        self.channel: int | None = None  # channel of the message in progress, once its first byte is seen
        self.channel_text = ""  # base64: "255" needs three characters
        self.collect = False
        self.b64_carry = b""  # base64 + on_data: characters of an incomplete 4-character group
        self.copied = 0  # header bytes ever copied into ``buf``


class ChannelTap:
    """Passive observer of a remotecommand / port-forward WebSocket relayed as bytes (an audit tap).

    Feed each direction's raw bytes after the ``101`` (``feed_client`` / ``feed_server``). It parses
    WebSocket frame headers only and skips payloads without copying them, except the few bytes it
    needs: the channel byte of each message, the error channel's payload (the v4+ exit-code
    ``Status``, kept up to ``max_error_bytes``) and, for ``SPDY/3.1+portforward.k8s.io``, the
    tunnelled bytes, which go to ``spdy_tap`` (a :class:`proxy.protocol.spdy.SpdyTap`). Counts are
    payload bytes per channel (base64 protocols: decoded size, estimated as 3/4 of the text).
    ``on_data(side, channel_name, chunk)`` (see :data:`proxy.protocol.spdy.DataObserver`), when
    given, sees every channel payload as it passes, unmasked and (base64 protocols) decoded; channel
    names are "stdin", "stdout", "stderr", "error", "resize" (port-forward: the channel number).

    Cost is linear and memory bounded whatever the bytes (only a cut frame header, at most 14 bytes,
    is buffered). Nothing is sent and nothing is changed. Bytes that are not WebSocket as RFC 6455
    has it (reserved bits or opcodes, a client frame unmasked or a server frame masked, a fragmented
    or oversized control frame, a continuation without a message) make the tap give up: ``failed``
    is set, ``failure`` says why, and it ignores everything after; relaying is unaffected.
    """

    def __init__(self, protocol_name: str, max_error_bytes: int = 64 * 1024, *,
                 on_data: DataObserver | None = None) -> None:
        self.protocol_name = protocol_name
        self.on_data = on_data
        self.spdy_tap: SpdyTap | None = (SpdyTap(on_data=on_data) if protocol_name == PORTFORWARD_SPDY_TUNNEL
                                         else None)
        try:
            self.base64 = channel_protocol(protocol_name).base64
        except ValueError:
            self.base64 = False
        self._scan = {"client": _WsScan("client"), "server": _WsScan("server")}
        self.bytes_from_client: dict[int, int] = {}
        self.bytes_from_server: dict[int, int] = {}
        self.error_data = bytearray()
        self.closed_channels: set[int] = set()
        self.close_seen = {"client": False, "server": False}
        self._failed = False
        self._failure = ""
        self._max_error = max_error_bytes

    @property
    def failed(self) -> bool:
        """True once this tap, or the SPDY tap inside a port-forward tunnel, gave up."""
        return self._failed or (self.spdy_tap is not None and self.spdy_tap.failed)

    @property
    def failure(self) -> str:
        if self._failure or self.spdy_tap is None:
            return self._failure
        return self.spdy_tap.failure

    @property
    def copied_bytes(self) -> int:
        """Bytes copied into the tap's own buffers so far (frame headers; and the SPDY tunnel's)."""
        inner = self.spdy_tap.copied_bytes if self.spdy_tap is not None else 0
        return self._scan["client"].copied + self._scan["server"].copied + inner

    def feed_client(self, data: bytes | memoryview) -> None:
        self._feed(self._scan["client"], data)

    def feed_server(self, data: bytes | memoryview) -> None:
        self._feed(self._scan["server"], data)

    def exit_code(self) -> int | None:
        if self.spdy_tap is not None:
            return self.spdy_tap.exit_code()
        if not self.error_data:
            return None
        raw = bytes(self.error_data)
        if self.base64:
            try:
                raw = base64.b64decode(raw)
            except (binascii.Error, ValueError):
                return None
        return exit_code_from_status(raw)

    # ---- scanning

    def _feed(self, d: _WsScan, data: bytes | memoryview) -> None:
        if self._failed or not data:
            return
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")  # bytes, whatever shape or item the object handed over has
        try:
            self._scan_bytes(d, view)
        except (ValueError, IndexError) as exc:
            self._failed = True
            self._failure = f"{d.side}: {exc}"
            for scan in self._scan.values():
                scan.buf.clear()
                scan.remaining = 0

    def _scan_bytes(self, d: _WsScan, view: memoryview) -> None:
        pos = 0
        n = len(view)
        # Whole messages of one frame on a data channel, nothing of them read (no on_data, no SPDY inside,
        # not base64): taken in by ``_skim`` without copying the header; anything else by the steps below.
        skim = self.on_data is None and self.spdy_tap is None and not self.base64
        while pos < n:
            if skim and not d.remaining and not d.buf:
                pos = self._skim(d, view, pos, n)
                if pos == n:
                    return
            if d.remaining:
                take = min(d.remaining, n - pos)
                self._payload(d, view[pos : pos + take])
                d.remaining -= take
                pos += take
                if d.remaining == 0:
                    self._frame_done(d)
                continue
            # A frame header: copy exactly its bytes (2, then the rest its second byte announces).
            have = len(d.buf)
            want = 2 if have < 2 else _header_length(d.buf[1])
            take = min(want - have, n - pos)
            d.buf += view[pos : pos + take]
            d.copied += take
            pos += take
            if len(d.buf) == want and (want > 2 or _header_length(d.buf[1]) == 2):
                self._parse_header(d)
                d.buf.clear()
                if d.remaining == 0:
                    self._frame_done(d)

    def _skim(self, d: _WsScan, view: memoryview, pos: int, n: int) -> int:
        """Count the messages from ``pos`` that are one binary frame each (FIN, opcode 2, masked as the side
        must), on a channel whose bytes are only counted (not the error channel, not a close message), with
        their header and channel byte in ``view``: the same counts as the steps of ``_scan_bytes``, a few
        operations per message. Returns where it stopped: at ``n``, inside the last frame (its rest is then
        ``d.remaining``), or before a frame the general steps must take."""
        masked = 0x80 if d.side == "client" else 0
        counts = self.bytes_from_client if d.side == "client" else self.bytes_from_server
        while pos + 2 < n:
            b1 = view[pos + 1]
            if view[pos] != 0x82 or b1 & 0x80 != masked or d.message_opcode:
                return pos
            size = b1 & 0x7F
            head = 2
            if size == 126:
                head = 4
                if pos + 4 < n:
                    size = view[pos + 2] << 8 | view[pos + 3]
            elif size == 127:
                head = 10
                if pos + 10 < n:
                    if view[pos + 2] & 0x80:  # a length with its top bit set: the general steps refuse it
                        return pos
                    size = int.from_bytes(view[pos + 2 : pos + 10], "big")
            mask = b""
            if masked:
                if pos + head + 4 < n:
                    mask = bytes(view[pos + head : pos + head + 4])
                head += 4
            start = pos + head
            if start >= n or size == 0:
                return pos
            channel = view[start] ^ mask[0] if masked else view[start]
            if channel == ERROR or channel == CLOSE:
                return pos
            take = min(size, n - start)
            counts[channel] = counts.get(channel, 0) + take - 1
            pos = start + take
            if take < size:  # the frame goes on in the next read: its state, as _parse_header and _payload leave it
                d.mask = mask
                d.mask_offset = take
                d.opcode = d.message_opcode = 2
                d.fin = True
                d.channel = channel
                d.collect = False
                d.remaining = size - take
                return pos
        return pos

    def _parse_header(self, d: _WsScan) -> None:
        """Check and take in the complete frame header in ``d.buf``."""
        buf = d.buf
        b0, b1 = buf[0], buf[1]
        if b0 & 0x70:
            raise TapGaveUp("RSV bits set (no extension was negotiated): not this WebSocket")
        opcode = b0 & 0x0F
        fin = bool(b0 & 0x80)
        masked = bool(b1 & 0x80)
        if masked != (d.side == "client"):
            raise TapGaveUp("an unmasked client frame" if d.side == "client" else "a masked server frame")
        if opcode in (8, 9, 10):
            if not fin or b1 & 0x7F > 125:
                raise TapGaveUp(f"control frame (opcode {opcode}) fragmented or longer than 125 bytes")
        elif opcode == 0:
            if not d.message_opcode:
                raise TapGaveUp("continuation frame without a message in progress")
        elif opcode in (1, 2):
            if d.message_opcode:
                raise TapGaveUp("a new message before the previous one's last fragment")
        else:
            raise TapGaveUp(f"unknown WebSocket opcode {opcode}")
        length = len(buf)
        size = b1 & 0x7F
        if size == 126:
            size = int.from_bytes(buf[2:4], "big")
        elif size == 127:
            size = int.from_bytes(buf[2:10], "big")
            if size >> 63:
                raise TapGaveUp("frame length with the most significant bit set")
        d.mask = bytes(buf[length - 4 : length]) if masked else b""
        d.mask_offset = 0
        d.opcode = opcode
        d.fin = fin
        d.remaining = size
        if opcode in (1, 2):
            d.message_opcode = opcode
            d.channel = None
            d.channel_text = ""
            d.b64_carry = b""
        elif opcode == 8:
            self.close_seen[d.side] = True

    def _payload(self, d: _WsScan, chunk: memoryview) -> None:
        if d.opcode not in (0, 1, 2):
            d.mask_offset += len(chunk)
            return
        if self.spdy_tap is not None:
            data = _unmask(chunk, d.mask, d.mask_offset) if d.mask else chunk  # (the SPDY tap copies what it keeps)
            d.mask_offset += len(chunk)
            (self.spdy_tap.feed_client if d.side == "client" else self.spdy_tap.feed_server)(data)
            return
        if d.channel is None:
            if not chunk:
                return
            first = chunk[0] ^ d.mask[d.mask_offset % 4] if d.mask else chunk[0]
            d.mask_offset += 1
            chunk = chunk[1:]
            if self.base64:
                digit = chr(first)
                if not digit.isdigit():
                    raise TapGaveUp(f"base64 channel {digit!r} is not a digit")
                channel = int(digit)
                # "255<base64>" closes a channel; clients never send on stderr (2), so from a client
                # a leading "2" can only be the start of "255".
                d.channel = CLOSE if channel == STDERR and d.side == "client" else channel
            else:
                d.channel = first
            d.collect = d.side == "server" and d.channel == ERROR
        channel = d.channel
        if channel == CLOSE:
            # A close message names one channel: its first few bytes are all there is to read.
            head = chunk[:8]
            data = _unmask(head, d.mask, d.mask_offset) if d.mask else bytes(head)
            d.mask_offset += len(chunk)
            if data and not self.base64:
                self.closed_channels.add(data[0])
            elif data:
                text = data.lstrip(b"5")
                with contextlib.suppress(binascii.Error, ValueError, IndexError):
                    self.closed_channels.add(base64.b64decode(text)[0])
            return
        # Only what is read is unmasked: the error channel's kept bytes, and everything for on_data.
        payload: bytes | memoryview = chunk
        if d.mask and self.on_data is not None:
            payload = _unmask(chunk, d.mask, d.mask_offset)
        elif d.mask and d.collect:
            payload = _unmask(chunk[: max(0, self._max_error - len(self.error_data))], d.mask, d.mask_offset)
        d.mask_offset += len(chunk)
        size = len(chunk) * 3 // 4 if self.base64 else len(chunk)
        counts = self.bytes_from_client if d.side == "client" else self.bytes_from_server
        counts[channel] = counts.get(channel, 0) + size
        if d.collect and len(self.error_data) < self._max_error:
            self.error_data += payload[: self._max_error - len(self.error_data)]
        if self.on_data is not None and payload:
            self._observe(d, channel, payload)

    def _observe(self, d: _WsScan, channel: int, payload: bytes | memoryview) -> None:
        assert self.on_data is not None
        if self.base64:
            text = d.b64_carry + bytes(payload)
            whole = len(text) - len(text) % 4
            d.b64_carry = text[whole:]
            try:
                payload = base64.b64decode(text[:whole], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise TapGaveUp(f"bad base64 on channel {channel}: {exc}") from exc
            if not payload:
                return
        self.on_data(d.side, _CHANNEL_NAMES.get(channel, str(channel)), memoryview(payload))

    def server_at_boundary(self) -> bool:
        """True when the server's bytes so far end on a whole message (a frame may be inserted now)."""
        d = self._scan["server"]
        return not self.failed and d.remaining == 0 and not d.buf and not d.message_opcode

    def stdout_frame(self, data: bytes) -> bytes | None:
        """A server message carrying ``data`` on stdout, framed for this protocol (None: no such channel)."""
        if self.spdy_tap is not None:
            return None
        return self._server_message(STDOUT, data)

    def ending(self, message: str, status: bytes) -> bytes | None:
        """The bytes that end this session toward the client and say why: a message on the error channel
        (``status``, a ``Status`` JSON, from v4; ``message`` as text below v4), then a close frame (1000)
        with ``message`` as its reason. None when that cannot be written now: the server's bytes so far end
        inside a message, the tap gave up, or this is a WebSocket port-forward (not told: no client here
        reads its error channels). SPDY tunnelled in WebSocket (kubectl port-forward ≥ 1.31): the SPDY
        error streams' text in one binary message, no close frame (kubectl reads the streams first)."""
        if self.protocol_name in (PORTFORWARD_WS, PORTFORWARD_WS_BASE64) or not self.server_at_boundary():
            return None
        if self.spdy_tap is not None:
            inner = self.spdy_tap.ending(message, status, status_errors=False)
            return _ws_frame(0x82, inner) if inner else None
        try:
            version = channel_protocol(self.protocol_name).version
        except ValueError:
            return None
        told = self._server_message(ERROR, status if version >= 4 else message.encode())
        reason = message.encode()[:123]  # a close frame's reason: at most 123 bytes, valid UTF-8
        reason = reason.decode("utf-8", "ignore").encode()
        return told + _ws_frame(0x88, struct.pack("!H", 1000) + reason)

    def _server_message(self, channel: int, data: bytes) -> bytes:
        """One final unmasked frame (text for base64 protocols, else binary) carrying ``data`` on ``channel``."""
        if self.base64:
            return _ws_frame(0x81, str(channel).encode() + base64.b64encode(data))
        return _ws_frame(0x82, bytes((channel,)) + data)

    def _frame_done(self, d: _WsScan) -> None:
        if d.opcode in (0, 1, 2) and d.fin:
            d.channel = None
            d.collect = False
            d.message_opcode = 0


_CHANNEL_NAMES = {STDIN: "stdin", STDOUT: "stdout", STDERR: "stderr", ERROR: "error", RESIZE: "resize"}


class SessionTap:
    """The audit tap of one relayed exec / attach / port-forward session, whatever the wire.

    Built from the upstream's ``101`` response headers (:meth:`from_response_headers`); then
    ``tap(direction, data)`` for every relayed chunk, ``direction`` being ``"client"`` (bytes from the
    client) or ``"upstream"`` / ``"server"`` (bytes from the API server); ``summary()`` gives the
    fields for the session's audit record (``tap_failed`` when it gave up). ``on_data`` (see
    :data:`proxy.protocol.spdy.DataObserver`) sees the stream content, whatever the wire. It never
    raises on bad bytes: it gives up (``failed``) and ignores the rest; the caller keeps relaying.
    """

    def __init__(self, upgrade: str, subprotocol: str = "", stream_protocol: str = "", *,
                 on_data: DataObserver | None = None) -> None:
        self.upgrade = upgrade
        self.protocol = subprotocol if upgrade.lower() == "websocket" else (stream_protocol or "SPDY/3.1")
        self.tap: SpdyTap | ChannelTap
        if upgrade.lower() == "websocket":
            self.tap = ChannelTap(subprotocol, on_data=on_data)
        else:
            self.tap = SpdyTap(on_data=on_data)

    @classmethod
    def from_response_headers(cls, headers: list[tuple[bytes, bytes]], *,
                              on_data: DataObserver | None = None) -> SessionTap | None:
        found = {k.lower(): v.decode("latin-1").strip() for k, v in headers}
        upgrade = found.get(b"upgrade", "")
        if upgrade.lower() == "websocket":
            return cls("websocket", found.get(b"sec-websocket-protocol", ""), on_data=on_data)
        if upgrade.lower().startswith("spdy/"):
            return cls(upgrade, stream_protocol=found.get(b"x-stream-protocol-version", ""), on_data=on_data)
        return None

    @property
    def failed(self) -> bool:
        """The tap gave up on bytes that are not the protocol it expects (``failure`` says why)."""
        return self.tap.failed

    @property
    def failure(self) -> str:
        return self.tap.failure

    def server_at_boundary(self) -> bool:
        """The server's bytes so far end on a whole frame/message: one may be inserted toward the client."""
        return self.tap.server_at_boundary()

    def stdout_frame(self, data: bytes) -> bytes | None:
        """``data`` framed as a server write on the session's stdout (None when there is none)."""
        return self.tap.stdout_frame(data)

    def ending(self, message: str, status: bytes) -> bytes | None:
        """The bytes that end the session toward the client and say why (``message``; ``status``, the same
        as a ``Status`` JSON for protocols that carry one), or None when nothing can be said now (the
        server's bytes end inside a frame, the tap gave up, no error channel). See the taps' ``ending``."""
        if isinstance(self.tap, SpdyTap):
            try:
                status_errors = channel_protocol(self.protocol).status_errors
            except ValueError:
                status_errors = False
            return self.tap.ending(message, status, status_errors=status_errors)
        return self.tap.ending(message, status)

    def __call__(self, direction: str, data: bytes | memoryview) -> None:
        if direction == "client":
            self.tap.feed_client(data)
        else:
            self.tap.feed_server(data)

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {"stream_protocol": self.protocol, "exit_code": self.tap.exit_code()}
        tap = self.tap
        if isinstance(tap, SpdyTap):
            out["stream_bytes"] = tap.bytes_by_type()
        elif tap.spdy_tap is not None:
            out["stream_bytes"] = tap.spdy_tap.bytes_by_type()
        else:
            names = set(tap.bytes_from_client) | set(tap.bytes_from_server)
            out["stream_bytes"] = {
                _CHANNEL_NAMES.get(c, str(c)): {"from_client": tap.bytes_from_client.get(c, 0),
                                                 "from_server": tap.bytes_from_server.get(c, 0)}
                for c in sorted(names)
            }
        if tap.failed:
            out["tap_failed"] = tap.failure
        return out

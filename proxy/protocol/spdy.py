"""Sans-IO SPDY/3.1 codec, as Kubernetes speaks it (moby/spdystream over Go's SPDY framer).

Bytes in, events out; events in (``send_*``), bytes out (``data_to_send()``). No sockets, no asyncio.

    conn = SpdyConnection(client_side=False)
    for event in conn.receive_data(data):   # SynStream, SynReply, Data, RstStream, Ping, GoAway, ...
        ...
    conn.send_syn_reply(stream_id, [])
    conn.send_data(stream_id, b"hello", fin=True)
    sock.write(conn.data_to_send())

Wire facts (SPDY/3 draft, section 2):

* every frame has an 8-byte header. Control frames: ``1 | version(15) | type(16) | flags(8) |
  length(24)``; data frames: ``0 | stream id(31) | flags(8) | length(24)``; FIN is flag 0x01.
* name/value header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are zlib streams primed with the fixed
  SPDY/3 dictionary. There is ONE compression context per direction for the whole connection: every
  header block is a sync-flushed continuation of the same zlib stream, so a parser must see every
  header-carrying frame of its direction, in order, or it can decode no later one.
* a header value holding several values separates them with NUL bytes.

Flow control: SPDY/3 defines per-stream windows (64 KiB initial) and WINDOW_UPDATE. moby/spdystream,
which kubectl and the kubelet use, implements none of it: it never sends WINDOW_UPDATE and ignores
the ones it receives (and SETTINGS). A sender that waited for credit would stall a kubectl stream
after 64 KiB. So this codec parses WINDOW_UPDATE and SETTINGS into events, lets a caller send them,
and never withholds data for lack of window. Backpressure is the transport's (TCP) job.

Errors: a peer that breaks the protocol makes ``receive_data`` raise :class:`SpdyProtocolError`,
whose ``side`` names the peer ("client" or "server"); misuse by the local caller raises
:class:`SpdyLocalError`. After a ``SpdyProtocolError`` the connection is unusable (the header
compression context may be broken); the caller should send GOAWAY (``send_goaway(PROTOCOL_ERROR)``)
and close.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

SPDY_VERSION = 3

# Control frame types.
SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02

# RST_STREAM status codes.
PROTOCOL_ERROR = 1
INVALID_STREAM = 2
REFUSED_STREAM = 3
UNSUPPORTED_VERSION = 4
CANCEL = 5
INTERNAL_ERROR = 6
FLOW_CONTROL_ERROR = 7
STREAM_IN_USE = 8
STREAM_ALREADY_CLOSED = 9

# GOAWAY status codes.
GOAWAY_OK = 0
GOAWAY_PROTOCOL_ERROR = 1
GOAWAY_INTERNAL_ERROR = 2

STREAM_ID_MASK = 0x7FFFFFFF
MAX_FRAME_LENGTH = 0xFFFFFF
DEFAULT_MAX_DATA_FRAME = 32 * 1024
DEFAULT_MAX_HEADER_BLOCK = 1024 * 1024
DEFAULT_MAX_CONTROL_FRAME = 1024 * 1024  # control frames carry headers only; data frames may use 2^24-1


def _build_dictionary() -> bytes:
    """The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1)."""
    words = (
        "options head post put delete trace accept accept-charset accept-encoding accept-language "
        "accept-ranges age allow authorization cache-control connection content-base "
        "content-encoding content-language content-length content-location content-md5 "
        "content-range content-type date etag expect expires from host if-match if-modified-since "
        "if-none-match if-range if-unmodified-since last-modified location max-forwards pragma "
        "proxy-authenticate proxy-authorization range referer retry-after server te trailer "
        "transfer-encoding upgrade user-agent vary via warning www-authenticate method get status"
    ).split()
    words += ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
    prefix = b"".join(struct.pack("!I", len(w)) + w.encode("ascii") for w in words)
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
        "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
        "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
        "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    )
    return prefix + tail.encode("ascii")


SPDY3_DICTIONARY = _build_dictionary()

Headers = list[tuple[str, str]]


class SpdyError(Exception):
    """Base of the codec's errors."""


class SpdyProtocolError(SpdyError):
    """The peer broke the protocol. ``side`` is the peer's role: "client" or "server"."""

    def __init__(self, message: str, side: str, status: int = PROTOCOL_ERROR) -> None:
        super().__init__(f"SPDY protocol error by the {side}: {message}")
        self.side = side
        self.status = status


class SpdyLocalError(SpdyError):
    """The local caller misused the codec (e.g. sent on a stream it closed)."""


# ------------------------------------------------------------------------------------------ events


@dataclass(slots=True)
class SynStream:
    stream_id: int
    headers: Headers
    fin: bool = False
    unidirectional: bool = False
    associated_stream_id: int = 0
    priority: int = 0

    def header(self, name: str) -> str | None:
        return _first(self.headers, name)


@dataclass(slots=True)
class SynReply:
    stream_id: int
    headers: Headers
    fin: bool = False

    def header(self, name: str) -> str | None:
        return _first(self.headers, name)


@dataclass(slots=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(slots=True)
class Data:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(slots=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(slots=True)
class Settings:
    entries: list[tuple[int, int, int]] = field(default_factory=list)  # (flags, id, value)
    clear: bool = False


@dataclass(slots=True)
class Ping:
    ping_id: int
    # True when the peer started this ping (the codec has already queued the echo).
    from_peer: bool = True


@dataclass(slots=True)
class GoAway:
    last_good_stream_id: int
    status: int


@dataclass(slots=True)
class WindowUpdate:
    stream_id: int
    delta: int


SpdyEvent = SynStream | SynReply | HeadersFrame | Data | RstStream | Settings | Ping | GoAway | WindowUpdate


def _first(headers: Headers, name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value
    return None


# ------------------------------------------------------------------------------- header blocks


def encode_header_block(headers: Headers) -> bytes:
    """The uncompressed name/value block; repeated names are joined with NUL as SPDY/3 wants."""
    merged: dict[str, list[str]] = {}
    for name, value in headers:
        merged.setdefault(name.lower(), []).append(value)
    parts = [struct.pack("!I", len(merged))]
    for name, values in merged.items():
        raw_name = name.encode("latin-1")
        raw_value = "\x00".join(values).encode("latin-1")
        parts.append(struct.pack("!I", len(raw_name)))
        parts.append(raw_name)
        parts.append(struct.pack("!I", len(raw_value)))
        parts.append(raw_value)
    return b"".join(parts)


def decode_header_block(block: bytes) -> Headers:
    """Parse an uncompressed name/value block; raises ValueError on a malformed one."""
    if len(block) < 4:
        raise ValueError("header block shorter than its 4-byte count")
    (count,) = struct.unpack_from("!I", block, 0)
    offset = 4
    headers: Headers = []
    seen: set[str] = set()
    for _ in range(count):
        if offset + 4 > len(block):
            raise ValueError("header block truncated in a name length")
        (name_len,) = struct.unpack_from("!I", block, offset)
        offset += 4
        if name_len == 0 or offset + name_len > len(block):
            raise ValueError("header block has an empty or truncated name")
        name = block[offset : offset + name_len].decode("latin-1")
        offset += name_len
        if offset + 4 > len(block):
            raise ValueError("header block truncated in a value length")
        (value_len,) = struct.unpack_from("!I", block, offset)
        offset += 4
        if offset + value_len > len(block):
            raise ValueError("header block has a truncated value")
        value = block[offset : offset + value_len].decode("latin-1")
        offset += value_len
        if name in seen:
            raise ValueError(f"header block repeats the name {name!r}")
        seen.add(name)
        for part in value.split("\x00"):
            headers.append((name, part))
    if offset != len(block):
        raise ValueError("header block has trailing bytes")
    return headers


class HeaderCompressor:
    """One direction's compression context (a single zlib stream for the whole connection)."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY,
                                   zdict=SPDY3_DICTIONARY)

    def compress(self, headers: Headers) -> bytes:
        block = encode_header_block(headers)
        return self._z.compress(block) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """One direction's decompression context; must see every header block of that direction in order."""

    def __init__(self, max_block: int = DEFAULT_MAX_HEADER_BLOCK) -> None:
        self._z = zlib.decompressobj(zdict=SPDY3_DICTIONARY)
        self._max = max_block

    def decompress(self, data: bytes) -> bytes:
        out = self._z.decompress(data, self._max + 1)
        if len(out) > self._max or self._z.unconsumed_tail:
            raise ValueError(f"decompressed header block exceeds {self._max} bytes")
        return out


# -------------------------------------------------------------------------------------- framing


def control_frame(frame_type: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME_LENGTH:
        raise SpdyLocalError(f"control frame payload of {len(payload)} bytes exceeds 2^24-1")
    return struct.pack("!HHI", 0x8000 | SPDY_VERSION, frame_type, (flags << 24) | len(payload)) + payload


def data_frame_header(stream_id: int, flags: int, length: int) -> bytes:
    return struct.pack("!II", stream_id & STREAM_ID_MASK, (flags << 24) | length)


class SpdyConnection:
    """One end of a SPDY/3.1 connection.

    ``client_side=True`` opens odd stream ids (kubectl's role); ``False`` opens even ones (the
    kubelet's role; Kubernetes servers never open streams, they reply).
    """

    def __init__(
        self,
        client_side: bool,
        *,
        max_data_frame: int = DEFAULT_MAX_DATA_FRAME,
        max_header_block: int = DEFAULT_MAX_HEADER_BLOCK,
        max_control_frame: int = DEFAULT_MAX_CONTROL_FRAME,
        auto_ping_reply: bool = True,
    ) -> None:
        self.client_side = client_side
        self.peer = "server" if client_side else "client"
        self._out: list[bytes] = []
        self._buf = bytearray()
        self._compressor = HeaderCompressor()
        self._decompressor = HeaderDecompressor(max_header_block)
        self._max_data_frame = max_data_frame
        self._auto_ping = auto_ping_reply
        self._max_control_frame = max_control_frame
        self._next_stream_id = 1 if client_side else 2
        self._next_ping_id = 1 if client_side else 2
        self._last_peer_stream = 0
        # stream id -> [local_closed, remote_closed]
        self._streams: dict[int, list[bool]] = {}
        self.goaway_received = False
        self.goaway_sent = False
        self.broken = False

    # ---- receiving

    def receive_data(self, data: bytes) -> list[SpdyEvent]:
        """Feed bytes from the peer; returns the complete frames' events. b"" (EOF) returns []."""
        if self.broken:
            raise SpdyLocalError("the connection already failed; no more input is accepted")
        if data:
            self._buf += data
        events: list[SpdyEvent] = []
        buf = self._buf
        offset = 0
        try:
            while len(buf) - offset >= 8:
                word0, word1 = struct.unpack_from("!II", buf, offset)
                length = word1 & 0xFFFFFF
                if word0 & 0x80000000 and length > self._max_control_frame:
                    raise SpdyProtocolError(
                        f"control frame of {length} bytes exceeds the limit of {self._max_control_frame}",
                        self.peer)
                if len(buf) - offset - 8 < length:
                    break
                flags = word1 >> 24
                payload = bytes(buf[offset + 8 : offset + 8 + length])
                offset += 8 + length
                if word0 & 0x80000000:
                    version = (word0 >> 16) & 0x7FFF
                    if version != SPDY_VERSION:
                        raise SpdyProtocolError(f"unsupported SPDY version {version}", self.peer,
                                                UNSUPPORTED_VERSION)
                    event = self._control(word0 & 0xFFFF, flags, payload)
                    if event is not None:
                        events.append(event)
                else:
                    events.append(self._data(word0 & STREAM_ID_MASK, flags, payload))
        except SpdyProtocolError:
            self.broken = True
            raise
        finally:
            if offset:
                del buf[:offset]
        return events

    def _data(self, stream_id: int, flags: int, payload: bytes) -> Data:
        if stream_id == 0:
            raise SpdyProtocolError("data frame on stream 0", self.peer)
        fin = bool(flags & FLAG_FIN)
        state = self._streams.get(stream_id)
        if state is not None:
            if state[1]:
                raise SpdyProtocolError(f"data frame on stream {stream_id} after its FIN", self.peer,
                                        STREAM_ALREADY_CLOSED)
            if fin:
                state[1] = True
                self._forget_if_closed(stream_id)
        return Data(stream_id, payload, fin)

    def _headers(self, payload: bytes, what: str) -> Headers:
        try:
            block = self._decompressor.decompress(payload)
            return decode_header_block(block)
        except (zlib.error, ValueError) as exc:
            raise SpdyProtocolError(f"bad header block in {what}: {exc}", self.peer) from exc

    def _need(self, payload: bytes, size: int, what: str) -> None:
        if len(payload) < size:
            raise SpdyProtocolError(f"{what} frame of {len(payload)} bytes is too short", self.peer)

    def _control(self, frame_type: int, flags: int, payload: bytes) -> SpdyEvent | None:
        if frame_type == SYN_STREAM:
            self._need(payload, 10, "SYN_STREAM")
            stream_id, assoc = struct.unpack_from("!II", payload, 0)
            stream_id &= STREAM_ID_MASK
            headers = self._headers(payload[10:], "SYN_STREAM")
            if stream_id == 0:
                raise SpdyProtocolError("SYN_STREAM with stream id 0", self.peer)
            peer_parity = 0 if self.client_side else 1
            if stream_id % 2 != peer_parity:
                raise SpdyProtocolError(f"SYN_STREAM with stream id {stream_id} of the wrong parity",
                                        self.peer)
            if stream_id <= self._last_peer_stream:
                raise SpdyProtocolError(
                    f"SYN_STREAM id {stream_id} not above the previous {self._last_peer_stream}", self.peer)
            self._last_peer_stream = stream_id
            fin = bool(flags & FLAG_FIN)
            uni = bool(flags & FLAG_UNIDIRECTIONAL)
            self._streams[stream_id] = [uni, fin]
            self._forget_if_closed(stream_id)
            return SynStream(stream_id, headers, fin, uni, assoc & STREAM_ID_MASK, payload[8] >> 5)
        if frame_type in (SYN_REPLY, HEADERS):
            name = "SYN_REPLY" if frame_type == SYN_REPLY else "HEADERS"
            self._need(payload, 4, name)
            (stream_id,) = struct.unpack_from("!I", payload, 0)
            stream_id &= STREAM_ID_MASK
            headers = self._headers(payload[4:], name)
            fin = bool(flags & FLAG_FIN)
            state = self._streams.get(stream_id)
            if fin and state is not None:
                state[1] = True
                self._forget_if_closed(stream_id)
            if frame_type == SYN_REPLY:
                return SynReply(stream_id, headers, fin)
            return HeadersFrame(stream_id, headers, fin)
        if frame_type == RST_STREAM:
            self._need(payload, 8, "RST_STREAM")
            stream_id, status = struct.unpack_from("!II", payload, 0)
            stream_id &= STREAM_ID_MASK
            self._streams.pop(stream_id, None)
            return RstStream(stream_id, status)
        if frame_type == SETTINGS:
            self._need(payload, 4, "SETTINGS")
            (count,) = struct.unpack_from("!I", payload, 0)
            if len(payload) != 4 + 8 * count:
                raise SpdyProtocolError(f"SETTINGS announces {count} entries in {len(payload)} bytes",
                                        self.peer)
            entries = []
            for i in range(count):
                word, value = struct.unpack_from("!II", payload, 4 + 8 * i)
                entries.append((word >> 24, word & 0xFFFFFF, value))
            return Settings(entries, bool(flags & 0x01))
        if frame_type == PING:
            if len(payload) != 4:
                raise SpdyProtocolError(f"PING frame of {len(payload)} bytes (must be 4)", self.peer)
            (ping_id,) = struct.unpack("!I", payload)
            mine = ping_id % 2 == (1 if self.client_side else 0)
            if not mine and self._auto_ping:
                self._out.append(control_frame(PING, 0, payload))
            return Ping(ping_id, from_peer=not mine)
        if frame_type == GOAWAY:
            self._need(payload, 4, "GOAWAY")
            (last,) = struct.unpack_from("!I", payload, 0)
            status = struct.unpack_from("!I", payload, 4)[0] if len(payload) >= 8 else GOAWAY_OK
            self.goaway_received = True
            return GoAway(last & STREAM_ID_MASK, status)
        if frame_type == WINDOW_UPDATE:
            if len(payload) != 8:
                raise SpdyProtocolError(f"WINDOW_UPDATE frame of {len(payload)} bytes (must be 8)", self.peer)
            stream_id, delta = struct.unpack("!II", payload)
            return WindowUpdate(stream_id & STREAM_ID_MASK, delta & 0x7FFFFFFF)
        # SPDY/3: unknown control frame types are ignored.
        return None

    def _forget_if_closed(self, stream_id: int) -> None:
        state = self._streams.get(stream_id)
        if state is not None and state[0] and state[1]:
            del self._streams[stream_id]

    # ---- sending

    def next_stream_id(self) -> int:
        return self._next_stream_id

    def send_syn_stream(
        self,
        headers: Headers,
        *,
        fin: bool = False,
        unidirectional: bool = False,
        stream_id: int | None = None,
        priority: int = 0,
        associated_stream_id: int = 0,
    ) -> int:
        """Open a stream; returns its id."""
        if stream_id is None:
            stream_id = self._next_stream_id
        if stream_id < self._next_stream_id or stream_id % 2 != self._next_stream_id % 2:
            raise SpdyLocalError(f"cannot open stream {stream_id}; next id is {self._next_stream_id}")
        self._next_stream_id = stream_id + 2
        flags = (FLAG_FIN if fin else 0) | (FLAG_UNIDIRECTIONAL if unidirectional else 0)
        payload = struct.pack("!IIBB", stream_id, associated_stream_id & STREAM_ID_MASK, (priority & 7) << 5, 0)
        payload += self._compressor.compress(headers)
        self._out.append(control_frame(SYN_STREAM, flags, payload))
        self._streams[stream_id] = [fin, unidirectional]
        self._forget_if_closed(stream_id)
        return stream_id

    def send_syn_reply(self, stream_id: int, headers: Headers | None = None, *, fin: bool = False) -> None:
        payload = struct.pack("!I", stream_id) + self._compressor.compress(headers or [])
        self._out.append(control_frame(SYN_REPLY, FLAG_FIN if fin else 0, payload))
        if fin:
            self._local_fin(stream_id)

    def send_headers(self, stream_id: int, headers: Headers, *, fin: bool = False) -> None:
        payload = struct.pack("!I", stream_id) + self._compressor.compress(headers)
        self._out.append(control_frame(HEADERS, FLAG_FIN if fin else 0, payload))
        if fin:
            self._local_fin(stream_id)

    def send_data(self, stream_id: int, data: bytes, *, fin: bool = False) -> None:
        """Queue data frames (split at ``max_data_frame``); ``fin`` closes our half of the stream."""
        state = self._streams.get(stream_id)
        if state is not None and state[0]:
            raise SpdyLocalError(f"stream {stream_id} is already closed for sending")
        size = self._max_data_frame
        view = memoryview(data)
        total = len(view)
        if total <= size:
            self._out.append(data_frame_header(stream_id, FLAG_FIN if fin else 0, total))
            if total:
                self._out.append(bytes(data))
        else:
            for start in range(0, total, size):
                chunk = view[start : start + size]
                last = start + size >= total
                self._out.append(data_frame_header(stream_id, FLAG_FIN if fin and last else 0, len(chunk)))
                self._out.append(bytes(chunk))
        if fin:
            self._local_fin(stream_id)

    def _local_fin(self, stream_id: int) -> None:
        state = self._streams.get(stream_id)
        if state is not None:
            state[0] = True
            self._forget_if_closed(stream_id)

    def send_rst_stream(self, stream_id: int, status: int = CANCEL) -> None:
        self._out.append(control_frame(RST_STREAM, 0, struct.pack("!II", stream_id & STREAM_ID_MASK, status)))
        self._streams.pop(stream_id, None)

    def send_settings(self, entries: list[tuple[int, int, int]]) -> None:
        payload = struct.pack("!I", len(entries)) + b"".join(
            struct.pack("!II", (flags << 24) | (ident & 0xFFFFFF), value) for flags, ident, value in entries
        )
        self._out.append(control_frame(SETTINGS, 0, payload))

    def send_ping(self) -> int:
        ping_id = self._next_ping_id
        self._next_ping_id += 2
        self._out.append(control_frame(PING, 0, struct.pack("!I", ping_id)))
        return ping_id

    def send_goaway(self, status: int = GOAWAY_OK) -> None:
        if self.goaway_sent:
            return
        self.goaway_sent = True
        self._out.append(control_frame(GOAWAY, 0, struct.pack("!II", self._last_peer_stream, status)))

    def send_window_update(self, stream_id: int, delta: int) -> None:
        if not 1 <= delta <= 0x7FFFFFFF:
            raise SpdyLocalError(f"WINDOW_UPDATE delta {delta} out of range")
        self._out.append(control_frame(WINDOW_UPDATE, 0, struct.pack("!II", stream_id, delta)))

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def open_streams(self) -> int:
        """Streams not yet closed in both directions (for leak checks)."""
        return len(self._streams)


# ------------------------------------------------------------------------------------------ tap

DataObserver = Callable[[str, str, memoryview], None]
"""``on_data(side, stream_type, chunk)``: a tap's hook for stream content, called for every piece of a
data payload as it streams by (``side`` is "client" or "server"; ``stream_type`` "stdin", "stdout",
"stderr", "error", "resize", "data", ... ; ``chunk`` a view valid only during the call: copy what you keep)."""

DEFAULT_TAP_MAX_STREAMS = 1024


class TapGaveUp(ValueError):
    """The bytes are not the protocol the tap expects (it stops observing; the relay goes on)."""


@dataclass(slots=True)
class TapStream:
    stream_id: int
    stream_type: str  # "error" | "stdin" | "stdout" | "stderr" | "resize" | "data" | "" (unknown)
    port: str = ""
    request_id: str = ""
    bytes_from_client: int = 0
    bytes_from_server: int = 0
    error_data: bytearray = field(default_factory=bytearray)
    closed_by_client: bool = False
    closed_by_server: bool = False
    reset: bool = False

    @property
    def done(self) -> bool:
        return self.reset or (self.closed_by_client and self.closed_by_server)


class _TapDirection:
    """Frame scanner state for one direction.

    ``pending`` holds only the start of a frame that an earlier read cut: an incomplete 8-byte
    header, or a control frame's header and part of its payload (bounded by ``max_control_frame``).
    Data payloads are never buffered: ``skip`` counts the bytes of the current data frame still to
    stream by. ``copied`` counts every byte ever put in ``pending`` (each input byte at most once).
    """

    __slots__ = ("side", "pending", "skip", "skip_stream", "skip_fin", "decomp", "copied")

    def __init__(self, side: str) -> None:
        self.side = side
        self.pending = bytearray()
        self.skip = 0
        self.skip_stream: TapStream | None = None
        self.skip_fin = False
        self.decomp = HeaderDecompressor()
        self.copied = 0


class SpdyTap:
    """Passive observer of a SPDY connection relayed as bytes (the proxy's audit tap).

    Feed it what each side sent (``feed_client`` / ``feed_server``); it never changes or re-frames
    the bytes. It learns each stream's ``streamtype`` (and ``port`` / ``requestid`` for
    port-forward) from SYN_STREAM, counts data bytes per stream and direction, and keeps the error
    stream's payload so ``exit_code()`` can read the v4 ``Status``. ``on_data`` (see
    :data:`DataObserver`) sees every data payload as it passes, with its stream type.

    Cost and memory are linear and bounded whatever the bytes: data payloads are skipped, not copied
    (only the error stream's first ``max_error_bytes`` are kept); only a control frame cut by a read
    is buffered, and one longer than ``max_control_frame`` ends the tap; at most ``max_streams``
    streams are tracked (finished ones are folded into per-type totals first).

    Bytes that are not SPDY/3 (a control frame of another version, a data frame on a stream never
    opened, a header block that does not inflate, too many open streams) make the tap give up: it
    sets ``failed`` (with ``failure``, naming the side) and ignores everything after; relaying is
    unaffected — the tap only ever reads.
    """

    def __init__(self, max_error_bytes: int = 64 * 1024, *, max_control_frame: int = 64 * 1024,
                 max_streams: int = DEFAULT_TAP_MAX_STREAMS, on_data: DataObserver | None = None) -> None:
        self.streams: dict[int, TapStream] = {}
        self.failed = False
        self.failure = ""
        self.on_data = on_data
        self._dirs = {"client": _TapDirection("client"), "server": _TapDirection("server")}
        self._max_error = max_error_bytes
        self._max_control = max_control_frame
        self._max_streams = max_streams
        self._highest_stream = 0
        self._folded: dict[str, list[int]] = {}  # stream type -> [from_client, from_server] of forgotten streams

    def feed_client(self, data: bytes | memoryview) -> None:
        self._feed(self._dirs["client"], data)

    def feed_server(self, data: bytes | memoryview) -> None:
        self._feed(self._dirs["server"], data)

    @property
    def copied_bytes(self) -> int:
        """Bytes the tap copied into its own buffers so far (a measure of its cost; at most what was fed)."""
        return self._dirs["client"].copied + self._dirs["server"].copied

    @property
    def buffered_bytes(self) -> int:
        """Bytes held right now for frames cut by a read (at most a control frame per direction)."""
        return len(self._dirs["client"].pending) + len(self._dirs["server"].pending)

    def bytes_by_type(self) -> dict[str, dict[str, int]]:
        """{"stdout": {"from_client": 0, "from_server": N}, ...}"""
        totals: dict[str, dict[str, int]] = {}
        for stream_type, (c, s) in self._folded.items():
            totals[stream_type] = {"from_client": c, "from_server": s}
        for stream in self.streams.values():
            entry = totals.setdefault(stream.stream_type or "unknown", {"from_client": 0, "from_server": 0})
            entry["from_client"] += stream.bytes_from_client
            entry["from_server"] += stream.bytes_from_server
        return totals

    def total_bytes(self) -> tuple[int, int]:
        """(data bytes from the client, data bytes from the server)."""
        by_type = self.bytes_by_type().values()
        return sum(e["from_client"] for e in by_type), sum(e["from_server"] for e in by_type)

    def error_stream_text(self) -> str:
        for stream in self.streams.values():
            if stream.stream_type == "error" and stream.error_data:
                return stream.error_data.decode("utf-8", "replace")
        return ""

    def exit_code(self) -> int | None:
        """0 for a Success Status, N for NonZeroExitCode, None when unknown (no Status seen yet)."""
        for stream in self.streams.values():
            if stream.stream_type == "error" and stream.error_data:
                code = exit_code_from_status(bytes(stream.error_data))
                if code is not None:
                    return code
        return None

    def server_at_boundary(self) -> bool:
        """True when the server's bytes so far end on a whole frame (a frame may be inserted now)."""
        d = self._dirs["server"]
        return not self.failed and d.skip == 0 and not d.pending

    def ending(self, message: str, status: bytes, *, status_errors: bool) -> bytes | None:
        """A last data frame (FIN) on the session's error streams saying why it ends: ``status`` (a
        ``Status`` JSON) when the stream protocol carries one (v4+), else ``message`` as text. None when it
        cannot be written now (the server's bytes end inside a frame, no open error stream, tap gave up)."""
        if not self.server_at_boundary():
            return None
        payload = status if status_errors else message.encode()
        open_streams = [stream for stream in self.streams.values() if not stream.closed_by_server and not stream.reset]
        told = b"".join(data_frame_header(stream.stream_id, FLAG_FIN, len(payload)) + payload
                        for stream in open_streams if stream.stream_type == "error")
        if not told:
            return None
        # Port-forward (one error and one data stream per forwarded connection): kubectl reads the error
        # stream once the data stream ended, so that ends too (else kubectl sees the connection close first).
        return told + b"".join(data_frame_header(stream.stream_id, FLAG_FIN, 0)
                               for stream in open_streams if stream.stream_type == "data")

    def stdout_frame(self, data: bytes) -> bytes | None:
        """A data frame carrying ``data`` on the stdout stream (None before the client opened one)."""
        for stream in self.streams.values():
            if stream.stream_type == "stdout" and not stream.closed_by_server:
                return data_frame_header(stream.stream_id, 0, len(data)) + data
        return None

    def _feed(self, d: _TapDirection, data: bytes | memoryview) -> None:
        if self.failed or not data:
            return
        try:
            self._scan(d, memoryview(data))
        except (SpdyProtocolError, ValueError, zlib.error, struct.error) as exc:
            self.failed = True
            self.failure = f"{d.side}: {exc}"
            for direction in self._dirs.values():
                direction.pending = bytearray()
                direction.skip = 0

    def _scan(self, d: _TapDirection, view: memoryview) -> None:
        pos, n = 0, len(view)
        while pos < n:
            if d.skip:  # the rest of a data payload streaming by
                take = min(d.skip, n - pos)
                self._account(d, d.skip_stream, view[pos : pos + take])
                d.skip -= take
                pos += take
                if d.skip == 0:
                    self._finish_data(d, d.skip_stream, d.skip_fin)
            elif d.pending:  # a frame an earlier read cut
                pos = self._continue_pending(d, view, pos)
            elif n - pos < 8:
                self._keep(d, view[pos:])
                pos = n
            else:
                word0, word1 = struct.unpack_from("!II", view, pos)
                length = word1 & 0xFFFFFF
                if not word0 & 0x80000000:
                    pos += 8
                    self._start_data(d, word0, word1)
                    continue
                self._check_control(word0, length)
                if n - pos - 8 < length:
                    self._keep(d, view[pos:])
                    pos = n
                    continue
                payload = view[pos + 8 : pos + 8 + length].tobytes()
                pos += 8 + length
                self._control(d, word0 & 0xFFFF, word1 >> 24, payload)

    def _keep(self, d: _TapDirection, chunk: memoryview) -> None:
        d.pending += chunk
        d.copied += len(chunk)

    def _continue_pending(self, d: _TapDirection, view: memoryview, pos: int) -> int:
        """Add to ``d.pending`` only what completes its frame; returns the new position in ``view``."""
        pending = d.pending
        if len(pending) < 8:
            take = min(8 - len(pending), len(view) - pos)
            self._keep(d, view[pos : pos + take])
            pos += take
            if len(pending) < 8:
                return pos
            word0, word1 = struct.unpack_from("!II", pending, 0)
            if not word0 & 0x80000000:
                pending.clear()
                self._start_data(d, word0, word1)
                return pos
            self._check_control(word0, word1 & 0xFFFFFF)
        word0, word1 = struct.unpack_from("!II", pending, 0)
        length = word1 & 0xFFFFFF
        take = min(8 + length - len(pending), len(view) - pos)
        self._keep(d, view[pos : pos + take])
        pos += take
        if len(pending) == 8 + length:
            payload = bytes(pending[8:])
            pending.clear()
            self._control(d, word0 & 0xFFFF, word1 >> 24, payload)
        return pos

    def _start_data(self, d: _TapDirection, word0: int, word1: int) -> None:
        """A data frame header was read: its payload streams by through ``d.skip``."""
        stream_id = word0 & STREAM_ID_MASK
        stream = self.streams.get(stream_id)
        if stream is None and (stream_id == 0 or stream_id > self._highest_stream):
            raise TapGaveUp(f"data frame on stream {stream_id}, which was never opened: not SPDY")
        d.skip = word1 & 0xFFFFFF
        d.skip_stream = stream  # None: a stream already forgotten (finished); its bytes are not counted
        d.skip_fin = bool(word1 >> 24 & FLAG_FIN)
        if d.skip == 0:
            self._finish_data(d, stream, d.skip_fin)

    def _check_control(self, word0: int, length: int) -> None:
        version = (word0 >> 16) & 0x7FFF
        if version != SPDY_VERSION:
            raise TapGaveUp(f"control frame of version {version}: not SPDY/3")
        if length > self._max_control:
            raise TapGaveUp(f"control frame of {length} bytes exceeds the tap's limit of {self._max_control}")

    def _account(self, d: _TapDirection, stream: TapStream | None, chunk: memoryview) -> None:
        if stream is None or not chunk:
            return
        if d.side == "client":
            stream.bytes_from_client += len(chunk)
        else:
            stream.bytes_from_server += len(chunk)
        if stream.stream_type == "error" and len(stream.error_data) < self._max_error:
            stream.error_data += chunk[: self._max_error - len(stream.error_data)]
        if self.on_data is not None:
            self.on_data(d.side, stream.stream_type, chunk)

    def _finish_data(self, d: _TapDirection, stream: TapStream | None, fin: bool) -> None:
        if stream is not None and fin:
            if d.side == "client":
                stream.closed_by_client = True
            else:
                stream.closed_by_server = True

    def _control(self, d: _TapDirection, frame_type: int, flags: int, payload: bytes) -> None:
        if frame_type == SYN_STREAM and len(payload) >= 10:
            stream_id = struct.unpack_from("!I", payload, 0)[0] & STREAM_ID_MASK
            headers = decode_header_block(d.decomp.decompress(payload[10:]))
            found = dict(headers)
            stream = TapStream(stream_id, found.get("streamtype", ""), found.get("port", ""),
                               found.get("requestid", ""))
            self._track(stream)
            if flags & FLAG_FIN:
                self._finish_data(d, stream, True)
        elif frame_type in (SYN_REPLY, HEADERS) and len(payload) >= 4:
            # Keep the zlib context in step even though the content is not needed.
            d.decomp.decompress(payload[4:])
            if flags & FLAG_FIN:
                stream_id = struct.unpack_from("!I", payload, 0)[0] & STREAM_ID_MASK
                self._finish_data(d, self.streams.get(stream_id), True)
        elif frame_type == RST_STREAM and len(payload) >= 8:
            stream = self.streams.get(struct.unpack_from("!I", payload, 0)[0] & STREAM_ID_MASK)
            if stream is not None:
                stream.reset = True

    def _track(self, stream: TapStream) -> None:
        if len(self.streams) >= self._max_streams:
            for done in [s for s in self.streams.values() if s.done]:
                totals = self._folded.setdefault(done.stream_type or "unknown", [0, 0])
                totals[0] += done.bytes_from_client
                totals[1] += done.bytes_from_server
                del self.streams[done.stream_id]
            if len(self.streams) >= self._max_streams:
                raise TapGaveUp(f"more than {self._max_streams} streams open at once")
        self.streams[stream.stream_id] = stream
        self._highest_stream = max(self._highest_stream, stream.stream_id)


def exit_code_from_status(raw: bytes) -> int | None:
    """The exit code a remotecommand v4+ error-stream ``Status`` carries (0 on Success)."""
    try:
        status = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(status, dict):
        return None
    if status.get("status") == "Success":
        return 0
    if status.get("reason") == "NonZeroExitCode":
        details = status.get("details") or {}
        for cause in details.get("causes") or []:
            if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
                try:
                    return int(cause.get("message", ""))
                except ValueError:
                    return None
    return None

"""Sans-IO HTTP/2 server codec on the ``h2`` library, with the same shape as ``http1``.

Facts the code relies on:
- Pseudo-headers are lifted into ``RequestHead`` fields; ``headers`` holds the rest (lower case).
- Flow control: received DATA is reported as ``RequestBody``; its credit goes back to the peer only
  when ``acknowledge_received(stream_id, nbytes)`` is called (padding is returned at once).
  ``send_body`` never fails for lack of window: what the window cannot take is held by the codec and
  sent as the peer grants credit; ``send_window`` says how much more may be written without being held
  (0 -> wait for ``WindowOpened``).
- ``close()`` sends GOAWAY at once (a frame written beside h2's state machine, so streams already
  open finish normally); streams opened after it are refused (RST_STREAM REFUSED_STREAM); once no
  stream is open ``must_close`` is set.
- Request heads above ``max_header_bytes`` are answered 431 with a ``Status`` body on their stream; the
  rest of the connection goes on. A peer breaking HTTP/2 gets GOAWAY and ``ProtocolError``.
- Writing to a stream the peer reset is silently ignored (the ``StreamReset`` event says so).
- Frames that cost the server work and the peer nothing (RST_STREAM after HEADERS, streams refused as
  malformed, PING, SETTINGS) are counted; each full quantum (``h2_max_resets_per_second``,
  ``h2_max_control_frames_per_second``) is reported as ``FramesCounted`` for the clock's owner to judge;
  ``enhance_your_calm()`` then ends the connection with GOAWAY(ENHANCE_YOUR_CALM). CONTINUATION
  floods and oversized header lists are h2's own connection errors (at most 64 CONTINUATION frames
  per block; the HPACK decoder stops at ``max_header_list_size``).
"""

from __future__ import annotations

import binascii
import logging
import re
import struct

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack.hpack
import hyperframe.frame
from h2.connection import ConnectionInputs
from h2.stream import StreamInputs, StreamState
from hpack.table import HeaderTable
from hyperframe.frame import GoAwayFrame

from proxy.protocol.events import (
    ConnectionClosed,
    Event,
    FramesCounted,
    Headers,
    ProtocolError,
    RequestBody,
    RequestEnd,
    RequestHead,
    ResponseHead,
    ServerLimits,
    StreamReset,
    WindowOpened,
)
from proxy.protocol.http1 import status_json

# Connection-specific headers that must not appear in HTTP/2 (RFC 9113 §8.2.2).
_HOP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"))
_STATUS = {code: str(code).encode() for code in range(100, 600)}


def _short_hex_repr(data: bytes | None) -> str:
    """``hyperframe.frame._raw_data_repr`` with the same output, hexlifying only the 10 bytes it shows.
    h2 builds ``repr(frame)`` for its trace log on EVERY received frame, and the original hexlifies the
    whole payload (~20 us per 16 KiB DATA frame) only to keep 20 characters of it."""
    if not data:
        return "None"
    shown = binascii.hexlify(data[:11]).decode("ascii")
    if len(shown) > 20:
        shown = shown[:20] + "..."
    return "<hex:" + shown + ">"


hyperframe.frame._raw_data_repr = _short_hex_repr  # process-wide; identical text, bounded cost


def _frame_repr(frame: hyperframe.frame.Frame) -> str:
    """``repr`` of a frame without its body: h2 formats ``repr(frame)`` eagerly for its trace log on
    every received frame (then discards it), and the full form cost ~2 us per HEADERS frame."""
    return f"{type(frame).__name__}(stream_id={frame.stream_id}, flags={sorted(frame.flags._flags)!r})"


hyperframe.frame.Frame.__repr__ = _frame_repr  # type: ignore[method-assign,assignment]


class _NoDebug:
    """hpack's module logger minus ``debug``: hpack calls it several times per header field (~0.3 us
    each even when disabled); kubegate keeps the hpack logger at WARNING or above anyway."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log

    def debug(self, *args: object, **kwargs: object) -> None:
        return None

    def __getattr__(self, name: str) -> object:
        return getattr(self._log, name)


if not isinstance(hpack.hpack.log, _NoDebug):
    hpack.hpack.log = _NoDebug(hpack.hpack.log)  # type: ignore[assignment]

_DATA_HEADER = struct.Struct(">HBBBL")  # 24-bit length (as 16 + 8), type 0 = DATA, flags, stream id
_FRAME_HEADER = _DATA_HEADER  # the same 9-byte layout, any frame type
_SENDABLE = (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)
_WS = (0x20, 0x09)
_BAD_NAME = re.compile(rb"[\x00-\x20A-Z\x7f-\xff]")  # RFC 9113 §8.2.1 (":" only leads pseudo-headers)
_CONNECTION_SPECIFIC = frozenset((b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"))
_GOOD_NAMES: set[bytes] = set()  # regular request header names already found valid (process-wide, bounded)
_END_STREAM = 0x1
_END_HEADERS = 0x4


# --- response header blocks ------------------------------------------------------------------------
# h2's send_headers runs each response head through generator pipelines, HPACK with Huffman coding and
# dynamic-table bookkeeping, and hyperframe objects: most of an h2 response's CPU. Response heads are
# encoded here instead, statelessly: ":status" indexed or literal, every other field a "literal without
# indexing" (the static table's name index when there is one, else the literal name), no Huffman. Such
# blocks never touch the peer's dynamic table, so h2's encoder (still used for the rare fallbacks:
# informational heads, a pending table-size update, blocks over one frame) stays in step with the peer.


def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    """RFC 7541 §5.1 integer with an N-bit prefix; ``first`` holds the representation's high bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_STATIC_NAME_INDEX: dict[bytes, int] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, 1):
    _STATIC_NAME_INDEX.setdefault(_name, _index)
_STATUS_FIELD: dict[int, bytes] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, 1):
    if _name == b":status":
        _STATUS_FIELD[int(_value)] = bytes((0x80 | _index,))  # fully indexed
for _code in range(100, 600):
    # literal without indexing, name = static ":status" (index 8), 3-byte value
    _STATUS_FIELD.setdefault(_code, b"\x08\x03" + str(_code).encode())
_NAME_PREFIX: dict[bytes, bytes] = {}  # header name as given -> encoded representation + name part
_NAME_CACHE_MAX = 2048


def _name_prefix(name: bytes) -> bytes:
    lower = name.lower()
    index = _STATIC_NAME_INDEX.get(lower)
    if index is not None:
        prefix = _hpack_int(index, 4, 0x00)
    else:
        prefix = b"\x00" + _hpack_int(len(lower), 7, 0x00) + lower
    if len(_NAME_PREFIX) < _NAME_CACHE_MAX:
        _NAME_PREFIX[name] = prefix
    return prefix


def encode_response_block(status: int, headers: Headers) -> bytes:
    """An HPACK header block for a response head (see above); names are lower-cased."""
    parts = [_STATUS_FIELD[status]]
    append = parts.append
    names = _NAME_PREFIX
    for name, value in headers:
        prefix = names.get(name) or _name_prefix(name)
        size = len(value)
        append(prefix + (_SMALL_LENGTH[size] if size < 127 else _hpack_int(size, 7, 0x00)) + value)
    return b"".join(parts)


_SMALL_LENGTH = [bytes((n,)) for n in range(127)]


class _Out:
    """Response bytes a stream could not send yet for lack of flow-control window."""

    __slots__ = ("chunks", "size", "end")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.end = False


class Http2ServerConnection:
    """HTTP/2 server side of one connection. Implements ``events.ServerConnection``."""

    http_version = "2"

    def __init__(self, limits: ServerLimits | None = None) -> None:
        self._limits = limits or ServerLimits()
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            # Request heads are checked (RFC 9113 §8.2, §8.3) and cookies joined in one pass in
            # _head(): h2's chain of per-header generators cost more than the rest of the head.
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self._h2 = h2.connection.H2Connection(config=config)
        # Let the HPACK decoder take somewhat more than the limit, so an oversized head becomes a 431
        # on its stream rather than a connection error.
        self._h2.decoder.max_header_list_size = self._limits.max_header_bytes * 2 + 4096
        self._max_head = self._limits.max_header_bytes
        window = self._limits.h2_initial_window
        self._h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self._limits.h2_max_concurrent_streams,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: self._limits.max_header_bytes,
                h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 0,
            },
        )
        self._h2.initiate_connection()
        if window > 65535:
            self._h2.increment_flow_control_window(window - 65535)
        # Output pieces, joined once by data_to_send() (large bodies are not copied frame by frame).
        self._out: list[bytes | memoryview] = [self._h2.data_to_send()]
        self._held: dict[int, _Out] = {}
        self._ignored: set[int] = set()  # streams the codec answered itself (431) or refused
        self._open: set[int] = set()  # streams with a request head seen and the response not ended
        self._goaway_sent = False
        self._must_close = False
        self._terminated = False
        self._max_body = self._limits.max_body_bytes
        self._body_sizes: dict[int, int] = {}
        self._refusal = (431, "request header fields too large")  # why _head() refused the last stream
        # Costly frames counted towards the next FramesCounted report, by kind.
        self._reset_quantum = max(1, self._limits.h2_max_resets_per_second)
        self._control_quantum = max(1, self._limits.h2_max_control_frames_per_second)
        self._resets = 0
        self._pings = 0
        self._settings = 0

    @property
    def held_bytes(self) -> int:
        """Response bytes held for lack of flow-control window (bounded: writers wait on ``send_window``)."""
        return sum(held.size for held in self._held.values())

    @property
    def must_close(self) -> bool:
        """True once the connection is to be closed after ``data_to_send()`` has been written."""
        return self._must_close

    # ------------------------------------------------------------------ receiving

    def receive_data(self, data: bytes) -> list[Event]:
        if self._terminated:
            return []
        if not data:
            self._terminated = True
            self._must_close = True
            return [ConnectionClosed("peer closed the connection")]
        try:
            h2_events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            return self._connection_error(exc)
        out: list[Event] = []
        for ev in h2_events:
            kind = type(ev)
            if kind is h2.events.DataReceived:
                sid = ev.stream_id
                padding = ev.flow_controlled_length - len(ev.data)
                if padding:
                    self._h2.acknowledge_received_data(padding, sid)
                if sid in self._ignored:
                    self._h2.acknowledge_received_data(len(ev.data), sid)
                    if ev.stream_ended is not None:
                        self._ignored.discard(sid)
                    continue
                if self._max_body is not None:
                    total = self._body_sizes.get(sid, 0) + len(ev.data)
                    self._body_sizes[sid] = total
                    if total > self._max_body:
                        self._refuse(sid, 413, f"request body larger than {self._max_body} bytes")
                        out.append(ProtocolError("request body too large", 413, sid))
                        out.append(StreamReset(sid, h2.errors.ErrorCodes.CANCEL))
                        continue
                if ev.data:
                    out.append(RequestBody(sid, ev.data))
                if ev.stream_ended is not None:
                    out.append(RequestEnd(sid))
            elif kind is h2.events.RequestReceived:
                head = self._head(ev)
                if head is not None:
                    out.append(head)
                    if ev.stream_ended is not None:
                        out.append(RequestEnd(ev.stream_id))
                else:
                    if not self._goaway_sent:
                        status, message = self._refusal
                        out.append(ProtocolError(message, status, ev.stream_id))
                    if ev.stream_ended is not None:
                        self._ignored.discard(ev.stream_id)  # nothing more will come on it
                    self._resets += 1
                    if self._resets >= self._reset_quantum:
                        self._resets = 0
                        out.append(FramesCounted("h2_rapid_reset", self._reset_quantum))
            elif kind is h2.events.StreamEnded:
                continue  # reported with the DataReceived / RequestReceived it came with
            elif kind is h2.events.StreamReset:
                sid = ev.stream_id
                self._drop(sid)
                self._ignored.discard(sid)
                if ev.remote_reset:
                    out.append(StreamReset(sid, int(ev.error_code)))
                    self._resets += 1
                    if self._resets >= self._reset_quantum:
                        self._resets = 0
                        out.append(FramesCounted("h2_rapid_reset", self._reset_quantum))
            elif kind is h2.events.WindowUpdated:
                out.extend(self._flush_held(ev.stream_id))
            elif kind is h2.events.RemoteSettingsChanged:
                if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in ev.changed_settings:
                    out.extend(self._flush_held(0))
                self._settings += 1
                if self._settings >= self._control_quantum:
                    self._settings = 0
                    out.append(FramesCounted("h2_settings_flood", self._control_quantum))
            elif kind is h2.events.ConnectionTerminated:
                self._terminated = True
                self._must_close = True
                out.append(ConnectionClosed(f"peer sent GOAWAY ({ev.error_code!s})"))
            elif kind is h2.events.TrailersReceived:
                # Request trailers are not used by Kubernetes clients and never forwarded (an Impersonate-*
                # there must not count); the request ends with them.
                sid = ev.stream_id
                if sid in self._ignored:
                    self._ignored.discard(sid)
                elif ev.stream_ended is not None:
                    out.append(RequestEnd(sid))
            elif kind is h2.events.PingReceived or kind is h2.events.PingAckReceived:
                self._pings += 1
                if self._pings >= self._control_quantum:
                    self._pings = 0
                    out.append(FramesCounted("h2_ping_flood", self._control_quantum))
        self._pull()
        return out

    def _head(self, ev: h2.events.RequestReceived) -> RequestHead | None:
        sid = ev.stream_id
        if self._goaway_sent:
            self._ignored.add(sid)
            self._h2.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            return None
        method = target = authority = scheme = None
        headers: Headers = []
        size = 0
        content_length: int | None = None
        host: bytes | None = None
        cookies: list[bytes] | None = None
        regular = False
        good_names = _GOOD_NAMES
        for key, value in ev.headers:
            size += len(key) + len(value) + 32
            if value and (value[0] in _WS or value[-1] in _WS or b"\r" in value or b"\n" in value or b"\0" in value):
                return self._malformed(sid, f"header {key!r} has an invalid value")
            if key[:1] == b":":
                if regular:
                    return self._malformed(sid, f"pseudo-header {key!r} after a regular header")
                if key == b":method":
                    if method is not None:
                        return self._malformed(sid, "duplicate :method")
                    method = value.decode("ascii", "replace")
                elif key == b":path":
                    if target is not None:
                        return self._malformed(sid, "duplicate :path")
                    target = value.decode("ascii", "replace")
                elif key == b":authority":
                    if authority is not None:
                        return self._malformed(sid, "duplicate :authority")
                    authority = value.decode("ascii", "replace")
                elif key == b":scheme":
                    if scheme is not None:
                        return self._malformed(sid, "duplicate :scheme")
                    scheme = value.decode("ascii", "replace")
                else:
                    return self._malformed(sid, f"pseudo-header {key!r} not allowed in a request")
                continue
            regular = True
            if key not in good_names:
                if not key or _BAD_NAME.search(key) is not None:
                    return self._malformed(sid, f"invalid header name {key!r}")
                if key in _CONNECTION_SPECIFIC:
                    return self._malformed(sid, f"connection-specific header {key.decode('latin-1')!r}")
                if len(good_names) < 4096:
                    good_names.add(key)
            if key == b"content-length":
                content_length = int(value)  # h2 has validated it against the body
            elif key == b"te":
                if value != b"trailers":
                    return self._malformed(sid, "TE other than trailers")
            elif key == b"host":
                host = value
            elif key == b"cookie":
                if cookies is None:
                    cookies = [value]
                    headers.append((key, value))
                else:
                    cookies.append(value)
                continue
            headers.append((key, value))
        if method is None:
            return self._malformed(sid, "request without :method")
        if method == "CONNECT":
            if authority is None or target is not None or scheme is not None:
                return self._malformed(sid, "CONNECT needs :authority and no :path or :scheme")
        elif target is None or scheme is None:
            return self._malformed(sid, "request without :path or :scheme")
        elif not target:
            return self._malformed(sid, "empty :path")
        if host is not None:
            host_text = host.decode("ascii", "replace")
            if authority is None:
                authority = host_text
            elif authority != host_text:
                return self._malformed(sid, "Host and :authority differ")
        elif authority is None:
            return self._malformed(sid, "request without :authority or Host")
        if cookies is not None and len(cookies) > 1:  # RFC 9113 §8.2.3: one field for HTTP/1.1
            headers = [(b"cookie", b"; ".join(cookies)) if k == b"cookie" else (k, v) for k, v in headers]
        if size > self._max_head:
            self._refusal = (431, "request header fields too large")
            self._refuse(sid, 431, f"request header fields larger than {self._max_head} bytes")
            return None
        if ev.stream_ended is not None and content_length is None:
            content_length = 0
        self._open.add(sid)
        return RequestHead(sid, method, target or "", headers, "2", authority, scheme or "https", False, content_length)

    def _malformed(self, sid: int, message: str) -> None:
        """A malformed request (RFC 9113 §8.1.1): reset its stream with PROTOCOL_ERROR; others go on."""
        self._ignored.add(sid)
        self._refusal = (400, f"malformed request: {message}")
        try:
            self._h2.reset_stream(sid, h2.errors.ErrorCodes.PROTOCOL_ERROR)
        except h2.exceptions.H2Error:
            pass
        return None

    def _refuse(self, sid: int, status: int, message: str) -> None:
        self._ignored.add(sid)
        self._open.discard(sid)
        self._held.pop(sid, None)
        body = status_json(status, message)
        try:
            self._h2.send_headers(
                sid,
                [
                    (b":status", _STATUS[status]),
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            )
            if len(body) <= self._h2.local_flow_control_window(sid):
                self._h2.send_data(sid, body, end_stream=True)
            else:
                self._h2.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
        except h2.exceptions.H2Error:
            pass

    def _connection_error(self, exc: Exception) -> list[Event]:
        self._terminated = True
        self._must_close = True
        self._pull()
        code = getattr(exc, "error_code", h2.errors.ErrorCodes.PROTOCOL_ERROR)
        try:
            self._h2.close_connection(error_code=code)
        except h2.exceptions.H2Error:
            pass
        self._pull()
        return [ProtocolError(f"HTTP/2 protocol error: {exc}", 400, 0), ConnectionClosed(str(exc))]

    # ------------------------------------------------------------------ sending

    def _pull(self) -> None:
        data = self._h2.data_to_send()
        if data:
            self._out.append(data)

    def send_response_head(self, head: ResponseHead, *, end_stream: bool = False) -> None:
        sid = head.stream_id
        if sid in self._ignored or sid not in self._open:
            return
        headers: Headers = []
        has_length = False
        for key, value in head.headers:
            if key in _HOP:
                continue
            if key == b"content-length":
                has_length = True
            headers.append((key, value))
        if head.content_length is not None and not has_length:
            headers.append((b"content-length", b"%d" % head.content_length))
        try:
            if not self._send_headers_fast(sid, head.status, headers, end_stream):
                headers.insert(0, (b":status", _STATUS[head.status]))
                self._h2.send_headers(sid, headers, end_stream=end_stream)
        except h2.exceptions.StreamClosedError:
            self._drop(sid)
            return
        if end_stream:
            self._ended(sid)

    def _send_headers_fast(self, sid: int, status: int, headers: Headers, end_stream: bool) -> bool:
        """Queue a final response head as one HEADERS frame encoded here, driving h2's connection and
        stream state machines exactly as ``send_headers`` would. False when h2 must do it (an
        informational head, a pending HPACK table-size update, a block larger than one frame)."""
        conn = self._h2
        if status < 200 or conn.encoder.table_size_changes:
            return False
        stream = conn.streams.get(sid)
        if stream is None:
            return False
        block = encode_response_block(status, headers)
        size = len(block)
        if size > conn.max_outbound_frame_size:
            return False
        conn.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
        machine = stream.state_machine
        machine.process_input(StreamInputs.SEND_HEADERS)
        flags = _END_HEADERS
        if end_stream:
            machine.process_input(StreamInputs.SEND_END_STREAM)
            flags |= _END_STREAM
        self._pull()
        self._out.append(_FRAME_HEADER.pack(size >> 8, size & 0xFF, 0x1, flags, sid) + block)
        return True

    def send_body(self, stream_id: int, data: bytes, *, end_stream: bool = False) -> None:
        if stream_id in self._ignored or stream_id not in self._open:
            return
        held = self._held.get(stream_id)
        if held is not None:
            if data:
                held.chunks.append(data)
                held.size += len(data)
            held.end = held.end or end_stream
            return
        try:
            sent = self._write(stream_id, data, end_stream)
        except h2.exceptions.StreamClosedError:
            self._drop(stream_id)
            return
        if sent == len(data):
            if end_stream:
                self._ended(stream_id)
            return
        held = _Out()
        held.chunks.append(data[sent:])
        held.size = len(data) - sent
        held.end = end_stream
        self._held[stream_id] = held

    def _write(self, sid: int, data: bytes, end_stream: bool) -> int:
        """Send as much of ``data`` as the flow-control window allows; END_STREAM only with the last
        byte. Returns how many bytes went out. Bodies larger than a frame are framed here, straight
        into the output buffer (h2 would copy each frame several times): h2's window accounting is
        updated the same way its ``send_data`` does; the frame carrying END_STREAM goes through h2 so
        its stream state machine sees it."""
        conn = self._h2
        size = len(data)
        window = conn.local_flow_control_window(sid)
        max_frame = conn.max_outbound_frame_size
        stream = conn.streams.get(sid)
        if stream is None or stream.state_machine.state not in _SENDABLE:
            raise h2.exceptions.StreamClosedError(sid)
        if size <= window and size <= max_frame:
            # One frame: queued here with the state-machine inputs and window accounting of h2's
            # send_data, without its frame objects.
            conn.state_machine.process_input(ConnectionInputs.SEND_DATA)
            machine = stream.state_machine
            machine.process_input(StreamInputs.SEND_DATA)
            if end_stream:
                machine.process_input(StreamInputs.SEND_END_STREAM)
            conn.outbound_flow_control_window -= size
            stream.outbound_flow_control_window -= size
            self._pull()
            header = _DATA_HEADER.pack(size >> 8, size & 0xFF, 0, _END_STREAM if end_stream else 0, sid)
            if size < 4096:
                self._out.append(header + data)
            else:
                self._out.append(header)
                self._out.append(data if type(data) is bytes else bytes(data))
            return size
        total = min(size, window)
        # Frames below reference ``data`` until data_to_send(): only immutable bytes may be referenced.
        view = memoryview(data if type(data) is bytes else bytes(data))
        self._pull()  # frames h2 already queued go first
        append = self._out.append
        pack = _DATA_HEADER.pack
        pos = 0
        while pos < total:
            frame = min(max_frame, total - pos)
            if end_stream and pos + frame == size:
                break  # the final frame, with END_STREAM, goes through h2 below
            append(pack(frame >> 8, frame & 0xFF, 0, 0, sid))
            append(view[pos : pos + frame])
            pos += frame
        conn.outbound_flow_control_window -= pos
        stream.outbound_flow_control_window -= pos
        if pos < total:
            conn.send_data(sid, bytes(view[pos:total]), end_stream=True)
            pos = total
        return pos

    def send_end(self, stream_id: int) -> None:
        if stream_id in self._ignored or stream_id not in self._open:
            return
        held = self._held.get(stream_id)
        if held is not None:
            held.end = True
            return
        try:
            self._end_stream(stream_id)
        except h2.exceptions.StreamClosedError:
            self._drop(stream_id)
            return
        self._ended(stream_id)

    def _end_stream(self, sid: int) -> None:
        """An empty DATA frame with END_STREAM (what h2's ``end_stream`` queues), without frame objects."""
        conn = self._h2
        stream = conn.streams.get(sid)
        if stream is None:
            raise h2.exceptions.StreamClosedError(sid)
        conn.state_machine.process_input(ConnectionInputs.SEND_DATA)
        stream.state_machine.process_input(StreamInputs.SEND_END_STREAM)
        self._pull()
        self._out.append(_DATA_HEADER.pack(0, 0, 0, _END_STREAM, sid))

    def _flush_held(self, stream_id: int) -> list[Event]:
        """Send what the new window allows; report the streams that may write again."""
        sids = list(self._held) if stream_id == 0 else [stream_id]
        for sid in sids:
            held = self._held.get(sid)
            if held is None:
                continue
            try:
                while held.chunks:
                    chunk = held.chunks[0]
                    last = len(held.chunks) == 1
                    sent = self._write(sid, chunk, held.end and last)
                    held.size -= sent
                    if sent < len(chunk):
                        held.chunks[0] = chunk[sent:]
                        break
                    held.chunks.pop(0)
                if not held.chunks:
                    del self._held[sid]
                    if held.end:
                        self._ended(sid)
            except h2.exceptions.StreamClosedError:
                self._drop(sid)
        return [WindowOpened(stream_id)]

    def _ended(self, sid: int) -> None:
        self._open.discard(sid)
        self._body_sizes.pop(sid, None)
        if self._goaway_sent and not self._open:
            self._must_close = True

    def _drop(self, sid: int) -> None:
        self._held.pop(sid, None)
        self._ended(sid)

    def reset_stream(self, stream_id: int, error_code: int = 0) -> None:
        """Abandon a stream (RST_STREAM); h2 itself absorbs whatever the peer still sends on it."""
        self._drop(stream_id)
        try:
            self._h2.reset_stream(stream_id, error_code or h2.errors.ErrorCodes.CANCEL)
        except h2.exceptions.H2Error:
            pass

    def acknowledge_received(self, stream_id: int, nbytes: int) -> None:
        if nbytes <= 0:
            return
        try:
            self._h2.acknowledge_received_data(nbytes, stream_id)
        except h2.exceptions.H2Error:
            pass

    def send_window(self, stream_id: int) -> int:
        held = self._held.get(stream_id)
        if held is not None:
            return 0
        try:
            return max(0, self._h2.local_flow_control_window(stream_id))
        except h2.exceptions.H2Error:
            return 0

    def enhance_your_calm(self) -> None:
        """End the connection now for abuse: GOAWAY(ENHANCE_YOUR_CALM); nothing more is read or sent
        on any stream (``must_close``)."""
        if self._terminated:
            return
        self._terminated = True
        self._must_close = True
        self._held.clear()
        self._pull()
        try:
            self._h2.close_connection(error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        except h2.exceptions.H2Error:
            pass
        self._pull()

    def close(self) -> None:
        """Send GOAWAY now; let open streams finish; ``must_close`` once none is left."""
        if self._goaway_sent or self._terminated:
            self._must_close = self._must_close or not self._open
            return
        self._goaway_sent = True
        self._pull()
        frame = GoAwayFrame(0)
        frame.last_stream_id = self._h2.highest_inbound_stream_id
        frame.error_code = 0
        self._out.append(frame.serialize())
        if not self._open:
            self._must_close = True

    def data_to_send(self) -> bytes:
        self._pull()
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 and type(out[0]) is bytes else b"".join(out)

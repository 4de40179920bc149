"""Sans-IO HTTP/2 server codec (RFC 9113), with the same shape as ``http1``: bytes in, events out.

kubegate's own frame layer and stream states; header blocks are decoded by ``h2fields`` (on the
``hpack`` library's tables and Huffman decoder) and response heads encoded statelessly by
``h2wire.encode_response_block``. It replaced the ``h2`` library on the server side, whose per-frame
objects, event objects and state-machine transitions cost ~400,000 instructions per GET (issue 9).

Facts the code relies on:
- Pseudo-headers are lifted into ``RequestHead`` fields; ``headers`` holds the rest (lower case).
- Stream states (§5.1): a stream exists from its HEADERS until both sides have ended it or either
  reset it. Frames on a stream the codec reset are ignored (DATA still counts against, and is credited
  back to, the connection window); DATA or HEADERS on a stream closed otherwise get RST_STREAM
  (STREAM_CLOSED); frames on idle streams, frames carrying the wrong stream id, and frames of the
  wrong size are connection errors (GOAWAY, ``ProtocolError``, ``ConnectionClosed``).
- Flow control: received DATA is reported as ``RequestBody``; its credit goes back to the peer only
  when ``acknowledge_received(stream_id, nbytes)`` is called (padding, and DATA the codec drops, are
  credited at once); WINDOW_UPDATE goes out once half a window is owed. ``send_body`` never fails for
  lack of window: what the window cannot take is held by the codec and sent as the peer grants credit;
  ``send_window`` says how much more may be written without being held (0 -> wait for ``WindowOpened``).
- ``close()`` sends GOAWAY at once, so streams already open finish normally; streams opened after it
  are refused (RST_STREAM REFUSED_STREAM); once no stream is open ``must_close`` is set.
- Request heads above ``max_header_bytes`` are answered 431 with a ``Status`` body on their stream; the
  rest of the connection goes on. Malformed heads (§8.1.1) reset their stream with PROTOCOL_ERROR.
  A request body that does not match its content-length resets the stream (PROTOCOL_ERROR).
- Writing to a stream the peer reset is silently ignored (the ``StreamReset`` event says so).
- Frames that cost the server work and the peer nothing (RST_STREAM after HEADERS, streams refused as
  malformed, frames on closed streams answered with RST_STREAM, PING, SETTINGS) are counted; each full
  quantum (``h2_max_resets_per_second``, ``h2_max_control_frames_per_second``) is reported as
  ``FramesCounted`` for the clock's owner to judge; ``enhance_your_calm()`` then ends the connection
  with GOAWAY(ENHANCE_YOUR_CALM). A header block of more than 64 CONTINUATION frames or more than 4x
  the decoder's header list limit is GOAWAY(ENHANCE_YOUR_CALM); the HPACK decoder stops at its
  header list limit, 2 x ``max_header_bytes`` + 4 KiB (GOAWAY ENHANCE_YOUR_CALM), and refuses bad
  blocks and table sizes above 4096 (GOAWAY COMPRESSION_ERROR).
- A header block made only of indexed fields decodes to the same fields while the dynamic table is
  unchanged: such a block's checked result is kept per connection (cleared whenever a block that may
  change the table is decoded), so a client repeating a request costs no HPACK decoding or checks.
"""

from __future__ import annotations

from hpack.exceptions import HPACKError, OversizedHeaderListError

from proxy.protocol import h2wire as w
from proxy.protocol.events import (
    ConnectionClosed,
    Event,
    FramesCounted,
    ProtocolError,
    RequestBody,
    RequestEnd,
    RequestHead,
    ResponseHead,
    ServerLimits,
    StreamReset,
    WindowOpened,
)
from proxy.protocol.h2fields import FieldDecoder
from proxy.protocol.h2wire import (
    ACK,
    CANCEL,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    DEFAULT_MAX_FRAME,
    DEFAULT_WINDOW,
    ENABLE_CONNECT_PROTOCOL,
    ENABLE_PUSH,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_CEILING,
    MAX_FRAME_SIZE,
    MAX_HEADER_LIST_SIZE,
    MAX_WINDOW,
    NO_ERROR,
    PADDED,
    PING,
    PRIORITY,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    encode_response_block,
)
from proxy.protocol.http1 import status_json

__all__ = ["Http2ServerConnection", "encode_response_block"]

_MAX_CONTINUATIONS = 64
_MAX_RESET_MEMORY = 1024  # streams reset by the codec whose late frames are ignored (older ones: RST again)
_MEMO_MAX = 16  # checked heads kept per connection
_MEMO_BLOCK_MAX = 256  # bytes: larger all-indexed blocks are decoded each time
_unpack_header = w.FRAME_HEADER.unpack_from
_pack_header = w.FRAME_HEADER.pack
_unpack_u32 = w.U32.unpack_from


class _Failed(Exception):
    """A connection error (RFC 9113 §5.4.1): GOAWAY with ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Out:
    """Response bytes a stream could not send yet for lack of flow-control window."""

    __slots__ = ("chunks", "size", "end")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.end = False


class _Stream:
    """One stream that is open or half-closed (RFC 9113 §5.1) and whose request head was reported."""

    __slots__ = ("sid", "recv_window", "recv_owed", "send_window", "remote_ended", "local_ended", "expected",
                 "received", "held")  # fmt: skip

    def __init__(self, sid: int, recv_window: int, send_window: int, remote_ended: bool, expected: int | None) -> None:
        self.sid = sid
        self.recv_window = recv_window  # what the peer may still send on it
        self.recv_owed = 0  # credit consumed by the application, not yet returned by WINDOW_UPDATE
        self.send_window = send_window
        self.remote_ended = remote_ended
        self.local_ended = False  # the response has ended (END_STREAM sent)
        self.expected = expected  # content-length, if the request declared one
        self.received = 0  # request body bytes so far
        self.held: _Out | None = None


class Http2ServerConnection:
    """HTTP/2 server side of one connection. Implements ``events.ServerConnection``."""

    http_version = "2"

    def __init__(self, limits: ServerLimits | None = None) -> None:
        self._limits = limits = limits or ServerLimits()
        self._max_head = limits.max_header_bytes
        # Let the HPACK decoder take somewhat more than the limit, so an oversized head becomes a 431
        # on its stream rather than a connection error.
        self._decoder = FieldDecoder(self._max_head * 2 + 4096)
        self._max_block = 4 * self._decoder.max_header_list_size
        self._memo: dict[bytes, w.RequestFields] = {}
        self._max_streams = limits.h2_max_concurrent_streams
        window = limits.h2_initial_window
        self._window = window  # our SETTINGS_INITIAL_WINDOW_SIZE: each stream's receive window
        # Until the peer acknowledges our SETTINGS it may still count on the default window.
        self._stream_recv_initial = max(window, DEFAULT_WINDOW)
        self._conn_max = max(window, DEFAULT_WINDOW)
        self._recv_window = self._conn_max  # what the peer may still send on the connection
        self._recv_owed = 0
        self._send_window = DEFAULT_WINDOW  # the peer's connection window for our DATA
        self._peer_initial = DEFAULT_WINDOW  # the peer's SETTINGS_INITIAL_WINDOW_SIZE
        self._max_send_frame = DEFAULT_MAX_FRAME
        self._streams: dict[int, _Stream] = {}
        self._holding: dict[int, _Stream] = {}  # streams with response bytes held for lack of window
        self._reset_by_us: dict[int, None] = {}  # recently reset streams whose late frames are ignored
        self._highest = 0  # highest stream id the peer has used
        self._buf = b""
        self._preface = True  # the client preface is still expected
        self._settings_seen = False  # the peer's first frame (SETTINGS) has arrived
        self._block: list[bytes] | None = None  # a header block awaiting CONTINUATION frames
        self._block_sid = 0
        self._block_flags = 0
        self._block_bad_priority = False
        self._block_size = 0
        self._goaway_sent = False
        self._must_close = False
        self._terminated = False
        self._max_body = limits.max_body_bytes
        # Costly frames counted towards the next FramesCounted report, by kind.
        self._reset_quantum = max(1, limits.h2_max_resets_per_second)
        self._control_quantum = max(1, limits.h2_max_control_frames_per_second)
        self._resets = 0
        self._pings = 0
        self._settings = 0
        ours = {MAX_CONCURRENT_STREAMS: self._max_streams, INITIAL_WINDOW_SIZE: window,
                MAX_HEADER_LIST_SIZE: self._max_head}  # fmt: skip
        self._out: list[bytes | memoryview] = [w.settings(ours)]
        if self._conn_max > DEFAULT_WINDOW:
            self._out.append(w.window_update(0, self._conn_max - DEFAULT_WINDOW))

    @property
    def held_bytes(self) -> int:
        """Response bytes held for lack of flow-control window (bounded: writers wait on ``send_window``)."""
        return sum(s.held.size for s in self._holding.values() if s.held is not None)

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
        buf = self._buf + data if self._buf else data
        out: list[Event] = []
        try:
            pos = 0
            if self._preface:
                if len(buf) < 24:
                    if not w.PREFACE.startswith(buf):
                        raise _Failed(PROTOCOL_ERROR, "invalid connection preface")
                    self._buf = buf
                    return out
                if buf[:24] != w.PREFACE:
                    raise _Failed(PROTOCOL_ERROR, "invalid connection preface")
                self._preface = False
                pos = 24
            end = len(buf)
            while end - pos >= 9:
                high, low, kind, flags, sid = _unpack_header(buf, pos)
                length = (high << 8) | low
                if length > DEFAULT_MAX_FRAME:
                    raise _Failed(FRAME_SIZE_ERROR, f"frame of {length} bytes exceeds SETTINGS_MAX_FRAME_SIZE")
                stop = pos + 9 + length
                if stop > end:
                    break
                sid &= 0x7FFFFFFF
                start = pos + 9
                pos = stop
                if self._block is not None:
                    if kind != CONTINUATION or sid != self._block_sid:
                        raise _Failed(PROTOCOL_ERROR, "header block interrupted by another frame")
                    self._continuation(flags, buf[start:stop], out)
                elif kind == HEADERS:
                    self._headers(sid, flags, buf[start:stop], out)
                elif kind == DATA:
                    self._data(sid, flags, buf[start:stop], out)
                elif kind == WINDOW_UPDATE:
                    if length != 4:
                        raise _Failed(FRAME_SIZE_ERROR, "WINDOW_UPDATE of a size other than 4")
                    self._window_update(sid, _unpack_u32(buf, start)[0] & 0x7FFFFFFF, out)
                elif kind == SETTINGS:
                    self._on_settings(sid, flags, buf[start:stop], out)
                elif kind == PING:
                    self._ping(sid, flags, buf[start:stop], out)
                elif kind == RST_STREAM:
                    if length != 4:
                        raise _Failed(FRAME_SIZE_ERROR, "RST_STREAM of a size other than 4")
                    self._rst_stream(sid, _unpack_u32(buf, start)[0], out)
                elif kind == PRIORITY:
                    self._priority(sid, buf[start:stop], out)
                elif kind == GOAWAY:
                    self._on_goaway(sid, buf[start:stop], out)
                    return out
                elif kind == CONTINUATION:
                    raise _Failed(PROTOCOL_ERROR, "CONTINUATION without a header block")
                elif kind == PUSH_PROMISE:
                    raise _Failed(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
                if not self._settings_seen:
                    raise _Failed(PROTOCOL_ERROR, "the client's first frame is not SETTINGS")
                # other frame types are ignored (§5.5)
            self._buf = buf[pos:] if pos < end else b""
        except _Failed as exc:
            return self._connection_error(exc.code, str(exc))
        return out

    def _headers(self, sid: int, flags: int, payload: bytes, out: list[Event]) -> None:
        if sid == 0 or not sid & 1:
            raise _Failed(PROTOCOL_ERROR, f"HEADERS on stream {sid}")
        start = 0
        stop = len(payload)
        if flags & PADDED:
            if not stop or payload[0] >= stop:
                raise _Failed(PROTOCOL_ERROR, "padding as long as the HEADERS frame")
            start = 1
            stop -= payload[0]
        bad_priority = False
        if flags & PRIORITY_FLAG:
            if stop - start < 5:
                raise _Failed(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            bad_priority = _unpack_u32(payload, start)[0] & 0x7FFFFFFF == sid
            start += 5
        block = payload[start:stop] if start or stop != len(payload) else payload
        if flags & END_HEADERS:
            self._header_block(sid, flags, block, bad_priority, out)
            return
        self._block = [block]
        self._block_sid = sid
        self._block_flags = flags
        self._block_bad_priority = bad_priority
        self._block_size = len(block)

    def _continuation(self, flags: int, payload: bytes, out: list[Event]) -> None:
        block = self._block
        assert block is not None
        block.append(payload)
        self._block_size += len(payload)
        if len(block) > _MAX_CONTINUATIONS + 1 or self._block_size > self._max_block:
            raise _Failed(ENHANCE_YOUR_CALM, "header block of too many CONTINUATION frames")
        if flags & END_HEADERS:
            self._block = None
            self._header_block(self._block_sid, self._block_flags, b"".join(block), self._block_bad_priority, out)

    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        try:
            fields = self._decoder.decode(block)
        except OversizedHeaderListError as exc:
            raise _Failed(ENHANCE_YOUR_CALM, f"header list too large: {exc}") from None
        except HPACKError as exc:
            raise _Failed(COMPRESSION_ERROR, f"cannot decode header block: {exc}") from None
        return fields

    def _header_block(self, sid: int, flags: int, block: bytes, bad_priority: bool, out: list[Event]) -> None:
        stream = self._streams.get(sid)
        if stream is not None:
            self._trailers(stream, flags, self._decode(block), out)
            return
        if sid <= self._highest:  # a closed stream: the block still updates the HPACK table
            self._decode(block)
            self._memo.clear()
            if sid not in self._reset_by_us:
                self._closed_stream(sid, out)
            return
        self._highest = sid
        if len(self._streams) >= self._max_streams:
            raise _Failed(PROTOCOL_ERROR, f"more than {self._max_streams} concurrent streams")
        end_stream = bool(flags & END_STREAM)
        parsed = self._memo.get(block)
        if parsed is None:
            fields = self._decode(block)
            if len(block) <= _MEMO_BLOCK_MAX and w.all_indexed(block):
                checked = w.request_fields(fields, self._max_head)
                if type(checked) is tuple:
                    if len(self._memo) >= _MEMO_MAX:
                        self._memo.clear()
                    self._memo[block] = checked
            else:
                self._memo.clear()
                checked = w.request_fields(fields, self._max_head)
        else:
            checked = parsed
        if self._goaway_sent:
            self._reset(sid, REFUSED_STREAM)
            self._count_reset(out)
            return
        if bad_priority:
            checked = w.Refusal(400, "malformed request: stream depends on itself")
        if type(checked) is not tuple:
            self._refuse_head(sid, end_stream, checked, out)  # type: ignore[arg-type]
            return
        method, target, authority, scheme, headers, length = checked  # type: ignore[misc]
        if end_stream:
            if length:
                self._refuse_head(sid, end_stream, w.Refusal(400, "malformed request: content-length without a body"), out)
                return
            length = 0
        stream = _Stream(sid, self._stream_recv_initial, self._peer_initial, end_stream, length)
        self._streams[sid] = stream
        out.append(RequestHead(sid, method, target, list(headers), "2", authority, scheme, False, length))
        if end_stream:
            out.append(RequestEnd(sid))

    def _refuse_head(self, sid: int, end_stream: bool, refusal: w.Refusal, out: list[Event]) -> None:
        """A head the codec answers itself: 431 with a ``Status`` body, or RST_STREAM(PROTOCOL_ERROR)."""
        if refusal.status == 431:
            self._answer(sid, end_stream, 431, refusal.message)
        else:
            self._reset(sid, PROTOCOL_ERROR)
        out.append(ProtocolError(refusal.message, refusal.status, sid))
        self._count_reset(out)

    def _trailers(self, stream: _Stream, flags: int, fields: list[tuple[bytes, bytes]], out: list[Event]) -> None:
        """A second header block on an open stream: request trailers. Never forwarded (an Impersonate-*
        there must not count); the request ends with them."""
        self._memo.clear()
        if stream.remote_ended:
            self._stream_error(stream, STREAM_CLOSED, out)
            return
        expected = stream.expected
        if (
            not flags & END_STREAM
            or w.trailer_problem(fields) is not None
            or (expected is not None and stream.received != expected)
        ):
            self._stream_error(stream, PROTOCOL_ERROR, out)
            return
        self._remote_end(stream, out)

    def _data(self, sid: int, flags: int, payload: bytes, out: list[Event]) -> None:
        if sid == 0:
            raise _Failed(PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        if size > self._recv_window:
            raise _Failed(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self._recv_window -= size
        stream = self._streams.get(sid)
        if stream is None:
            if sid > self._highest:
                raise _Failed(PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            self._credit(size)
            if sid not in self._reset_by_us:
                self._closed_stream(sid, out)
            return
        if stream.remote_ended:
            self._credit(size)
            self._stream_error(stream, STREAM_CLOSED, out)
            return
        if size > stream.recv_window:
            raise _Failed(FLOW_CONTROL_ERROR, f"DATA beyond the window of stream {sid}")
        stream.recv_window -= size
        data = payload
        if flags & PADDED:
            if not size or payload[0] >= size:
                raise _Failed(PROTOCOL_ERROR, "padding as long as the DATA frame")
            data = payload[1 : size - payload[0]]
            self._credit(size - len(data), stream)
        received = stream.received + len(data)
        stream.received = received
        expected = stream.expected
        end = flags & END_STREAM
        if expected is not None and (received > expected or (end and received != expected)):
            self._credit(len(data))
            self._stream_error(stream, PROTOCOL_ERROR, out)
            return
        if self._max_body is not None and received > self._max_body:
            self._credit(len(data))
            message = f"request body larger than {self._max_body} bytes"
            self._remove(sid)
            self._answer(sid, bool(end), 413, message)
            out.append(ProtocolError("request body too large", 413, sid))
            out.append(StreamReset(sid, CANCEL))
            self._closed_app_stream()
            return
        if data:
            out.append(RequestBody(sid, data))
        if end:
            self._remote_end(stream, out)

    def _remote_end(self, stream: _Stream, out: list[Event]) -> None:
        stream.remote_ended = True
        out.append(RequestEnd(stream.sid))
        if stream.local_ended:
            self._remove(stream.sid)

    def _window_update(self, sid: int, increment: int, out: list[Event]) -> None:
        if sid == 0:
            if not increment:
                raise _Failed(PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise _Failed(FLOW_CONTROL_ERROR, "connection window above 2^31-1")
            self._flush_held(0, out)
            return
        stream = self._streams.get(sid)
        if stream is None:
            if sid > self._highest or not sid & 1:
                raise _Failed(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            return  # a closed stream: credit that arrived late
        if not increment:
            self._stream_error(stream, PROTOCOL_ERROR, out)
            return
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            self._stream_error(stream, FLOW_CONTROL_ERROR, out)
            return
        self._flush_held(sid, out)

    def _on_settings(self, sid: int, flags: int, payload: bytes, out: list[Event]) -> None:
        if sid != 0:
            raise _Failed(PROTOCOL_ERROR, "SETTINGS on a stream")
        size = len(payload)
        if flags & ACK:
            if size:
                raise _Failed(FRAME_SIZE_ERROR, "SETTINGS acknowledgement with a payload")
            if not self._settings_seen:
                raise _Failed(PROTOCOL_ERROR, "the client's first frame is not SETTINGS")
            self._stream_recv_initial = self._window  # the peer now counts with our window
            return
        if size % 6:
            raise _Failed(FRAME_SIZE_ERROR, "SETTINGS of a size not a multiple of 6")
        self._settings_seen = True
        initial = None
        for offset in range(0, size, 6):
            ident, value = w.SETTING.unpack_from(payload, offset)
            if ident == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise _Failed(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1")
                initial = value  # applied once below: a frame repeating it costs one pass over the streams
            elif ident == MAX_FRAME_SIZE:
                if not DEFAULT_MAX_FRAME <= value <= MAX_FRAME_CEILING:
                    raise _Failed(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self._max_send_frame = value
            elif ident == ENABLE_PUSH or ident == ENABLE_CONNECT_PROTOCOL:
                if value > 1:
                    raise _Failed(PROTOCOL_ERROR, f"setting {ident} is neither 0 nor 1")
            # HEADER_TABLE_SIZE: responses never use the dynamic table; the others bind a client only
        window_changed = False
        if initial is not None and initial != self._peer_initial:
            delta = initial - self._peer_initial
            self._peer_initial = initial
            for stream in self._streams.values():
                stream.send_window += delta
                if stream.send_window > MAX_WINDOW:
                    raise _Failed(FLOW_CONTROL_ERROR, "a stream window above 2^31-1")
            window_changed = True
        self._out.append(w.frame(SETTINGS, ACK, 0))
        if window_changed:
            self._flush_held(0, out)
        self._settings += 1
        if self._settings >= self._control_quantum:
            self._settings = 0
            out.append(FramesCounted("h2_settings_flood", self._control_quantum))

    def _ping(self, sid: int, flags: int, payload: bytes, out: list[Event]) -> None:
        if sid != 0:
            raise _Failed(PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise _Failed(FRAME_SIZE_ERROR, "PING of a size other than 8")
        if not flags & ACK:
            self._out.append(w.frame(PING, ACK, 0, payload))
        self._pings += 1
        if self._pings >= self._control_quantum:
            self._pings = 0
            out.append(FramesCounted("h2_ping_flood", self._control_quantum))

    def _rst_stream(self, sid: int, code: int, out: list[Event]) -> None:
        if sid == 0:
            raise _Failed(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        stream = self._remove(sid)
        if stream is None:
            if sid > self._highest or not sid & 1:
                raise _Failed(PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
            return  # already closed
        out.append(StreamReset(sid, code))
        self._count_reset(out)
        if not stream.local_ended:
            self._closed_app_stream()

    def _priority(self, sid: int, payload: bytes, out: list[Event]) -> None:
        """PRIORITY is deprecated (RFC 9113 §5.3.2) and ignored, but still checked."""
        if sid == 0:
            raise _Failed(PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            raise _Failed(FRAME_SIZE_ERROR, "PRIORITY of a size other than 5")
        stream = self._streams.get(sid)
        if stream is not None and _unpack_u32(payload)[0] & 0x7FFFFFFF == sid:
            self._stream_error(stream, PROTOCOL_ERROR, out)

    def _on_goaway(self, sid: int, payload: bytes, out: list[Event]) -> None:
        if sid != 0:
            raise _Failed(PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(payload) < 8:
            raise _Failed(FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
        code = w.GOAWAY_BODY.unpack_from(payload)[1]
        self._terminated = True
        self._must_close = True
        out.append(ConnectionClosed(f"peer sent GOAWAY ({w.ERROR_NAMES.get(code, hex(code))})"))

    def _closed_stream(self, sid: int, out: list[Event]) -> None:
        """DATA or HEADERS on a stream closed without a reset from us: a stream error (STREAM_CLOSED)."""
        self._out.append(w.rst_stream(sid, STREAM_CLOSED))
        self._count_reset(out)

    def _stream_error(self, stream: _Stream, code: int, out: list[Event]) -> None:
        """RST_STREAM for a stream the application knows: it is told with ``StreamReset``."""
        self._remove(stream.sid)
        self._reset(stream.sid, code)
        out.append(StreamReset(stream.sid, code))
        if not stream.local_ended:
            self._closed_app_stream()

    def _count_reset(self, out: list[Event]) -> None:
        self._resets += 1
        if self._resets >= self._reset_quantum:
            self._resets = 0
            out.append(FramesCounted("h2_rapid_reset", self._reset_quantum))

    def _credit(self, nbytes: int, stream: _Stream | None = None) -> None:
        """Return credit for ``nbytes`` received: on the connection, and on ``stream`` if given and it
        may still send. WINDOW_UPDATE once half a window is owed."""
        if nbytes <= 0:
            return
        owed = self._recv_owed + nbytes
        if owed >= self._conn_max >> 1:
            self._out.append(w.window_update(0, owed))
            self._recv_window += owed
            owed = 0
        self._recv_owed = owed
        if stream is not None and not stream.remote_ended:
            owed = stream.recv_owed + nbytes
            if owed >= self._window >> 1:
                self._out.append(w.window_update(stream.sid, owed))
                stream.recv_window += owed
                owed = 0
            stream.recv_owed = owed

    def _reset(self, sid: int, code: int) -> None:
        """RST_STREAM from us; the stream's late frames are ignored from now on."""
        self._out.append(w.rst_stream(sid, code))
        memory = self._reset_by_us
        memory[sid] = None
        if len(memory) > _MAX_RESET_MEMORY:
            del memory[next(iter(memory))]

    def _answer(self, sid: int, peer_ended: bool, status: int, message: str) -> None:
        """Answer a stream the application never sees with a ``Status`` (or REFUSED_STREAM when the
        windows cannot take it); RST_STREAM(NO_ERROR) after it if the peer is still sending (§8.1)."""
        body = status_json(status, message)
        window = min(self._send_window, self._peer_initial)
        if len(body) > window or len(body) > self._max_send_frame:
            self._reset(sid, REFUSED_STREAM)
            return
        block = encode_response_block(status, [(b"content-type", b"application/json"),
                                               (b"content-length", b"%d" % len(body))])  # fmt: skip
        self._out.append(w.frame(HEADERS, END_HEADERS, sid, block))
        self._out.append(w.frame(DATA, END_STREAM, sid, body))
        self._send_window -= len(body)
        if not peer_ended:
            self._reset(sid, NO_ERROR)

    def _connection_error(self, code: int, message: str) -> list[Event]:
        self._terminated = True
        self._must_close = True
        self._out.append(w.goaway(self._highest, code))
        return [ProtocolError(f"HTTP/2 protocol error: {message}", 400, 0), ConnectionClosed(message)]

    # ------------------------------------------------------------------ sending

    def _sendable(self, sid: int) -> _Stream | None:
        """The stream if its response may still be written."""
        stream = self._streams.get(sid)
        if stream is None or stream.local_ended or self._terminated:
            return None
        return stream

    def send_response_head(self, head: ResponseHead, *, end_stream: bool = False) -> None:
        stream = self._sendable(head.stream_id)
        if stream is not None:
            self._send_block(stream, encode_response_block(head.status, head.headers, head.content_length), end_stream)

    def send_response_block(self, stream_id: int, block: bytes, *, end_stream: bool = False) -> None:
        """A response head already encoded as ``encode_response_block`` encodes one (the fast path's
        ``relayed_head.relayed_block``)."""
        stream = self._sendable(stream_id)
        if stream is not None:
            self._send_block(stream, block, end_stream)

    def _send_block(self, stream: _Stream, block: bytes, end_stream: bool) -> None:
        """A response head's block framed as HEADERS (and CONTINUATION beyond the peer's frame size)."""
        sid = stream.sid
        flags = END_STREAM if end_stream else 0
        max_frame = self._max_send_frame
        size = len(block)
        if size <= max_frame:
            self._out.append(_pack_header(size >> 8, size & 0xFF, HEADERS, flags | END_HEADERS, sid) + block)
        else:
            self._out.append(w.frame(HEADERS, flags, sid, block[:max_frame]))
            for pos in range(max_frame, size, max_frame):
                last = END_HEADERS if pos + max_frame >= size else 0
                self._out.append(w.frame(CONTINUATION, last, sid, block[pos : pos + max_frame]))
        if end_stream:
            self._local_end(stream)

    def send_body(self, stream_id: int, data: bytes, *, end_stream: bool = False) -> None:
        stream = self._sendable(stream_id)
        if stream is None:
            return
        held = stream.held
        if held is not None:
            if data:
                held.chunks.append(data)
                held.size += len(data)
            held.end = held.end or end_stream
            return
        sent = self._write(stream, data, end_stream)
        if sent == len(data):
            if end_stream:
                self._local_end(stream)
            return
        held = stream.held = _Out()
        self._holding[stream_id] = stream
        held.chunks.append(data[sent:])
        held.size = len(data) - sent
        held.end = end_stream

    def _write(self, stream: _Stream, data: bytes, end_stream: bool) -> int:
        """Send as much of ``data`` as the flow-control windows allow; END_STREAM only with the last
        byte. Returns how many bytes went out. Large bodies are framed straight into the output
        buffer, referencing (never copying) immutable ``bytes``."""
        size = len(data)
        sid = stream.sid
        flag = END_STREAM if end_stream else 0
        window = min(self._send_window, stream.send_window)
        max_frame = self._max_send_frame
        if size <= window and size <= max_frame:
            self._send_window -= size
            stream.send_window -= size
            header = _pack_header(size >> 8, size & 0xFF, DATA, flag, sid)
            if size < 4096:
                self._out.append(header + data)
            else:
                self._out.append(header)
                self._out.append(data if type(data) is bytes else bytes(data))
            return size
        if not size:  # END_STREAM alone takes no window
            if end_stream:
                self._out.append(_pack_header(0, 0, DATA, flag, sid))
            return 0
        total = min(size, max(window, 0))
        view = memoryview(data if type(data) is bytes else bytes(data))
        append = self._out.append
        pos = 0
        while pos < total:
            n = min(max_frame, total - pos)
            last = flag if pos + n == size else 0
            append(_pack_header(n >> 8, n & 0xFF, DATA, last, sid))
            append(view[pos : pos + n])
            pos += n
        self._send_window -= pos
        stream.send_window -= pos
        return pos

    def send_end(self, stream_id: int) -> None:
        stream = self._sendable(stream_id)
        if stream is None:
            return
        if stream.held is not None:
            stream.held.end = True
            return
        self._out.append(_pack_header(0, 0, DATA, END_STREAM, stream_id))
        self._local_end(stream)

    def _flush_held(self, sid: int, out: list[Event]) -> None:
        """Send what the new window allows; report the streams that may write again."""
        holding = self._holding
        for stream in list(holding.values()) if sid == 0 else [self._streams[sid]]:
            held = stream.held
            if held is None or self._streams.get(stream.sid) is not stream:
                holding.pop(stream.sid, None)  # sent, or the stream went away
                continue
            while held.chunks:
                chunk = held.chunks[0]
                last = len(held.chunks) == 1
                sent = self._write(stream, chunk, held.end and last)
                held.size -= sent
                if sent < len(chunk):
                    held.chunks[0] = chunk[sent:]
                    break
                held.chunks.pop(0)
            if not held.chunks:
                stream.held = None
                del holding[stream.sid]
                if held.end:
                    self._local_end(stream)
        out.append(WindowOpened(sid))

    def _local_end(self, stream: _Stream) -> None:
        stream.local_ended = True
        if stream.held is not None:
            stream.held = None
            self._holding.pop(stream.sid, None)
        if stream.remote_ended:
            self._remove(stream.sid)
        self._closed_app_stream()

    def _remove(self, sid: int) -> _Stream | None:
        """The stream is closed: forget it and anything it still held."""
        stream = self._streams.pop(sid, None)
        if stream is not None and stream.held is not None:
            stream.held = None
            del self._holding[sid]
        return stream

    def _closed_app_stream(self) -> None:
        """A stream's response ended or was abandoned: after GOAWAY the last one closes the connection."""
        if self._goaway_sent and not self._responding():
            self._must_close = True

    def _responding(self) -> bool:
        """Some stream's response has not ended yet."""
        return any(not s.local_ended for s in self._streams.values())

    def reset_stream(self, stream_id: int, error_code: int = 0) -> None:
        """Abandon a stream (RST_STREAM); whatever the peer still sends on it is absorbed."""
        stream = self._remove(stream_id)
        if stream is None or self._terminated:
            return
        self._reset(stream_id, error_code or CANCEL)
        self._closed_app_stream()

    def acknowledge_received(self, stream_id: int, nbytes: int) -> None:
        if nbytes > 0 and not self._terminated:
            self._credit(nbytes, self._streams.get(stream_id))

    def send_window(self, stream_id: int) -> int:
        stream = self._streams.get(stream_id)
        if stream is None or stream.held is not None:
            return 0
        return max(0, min(self._send_window, stream.send_window))

    def enhance_your_calm(self) -> None:
        """End the connection now for abuse: GOAWAY(ENHANCE_YOUR_CALM); nothing more is read or sent
        on any stream (``must_close``)."""
        if self._terminated:
            return
        self._terminated = True
        self._must_close = True
        self._out.append(w.goaway(self._highest, ENHANCE_YOUR_CALM))

    def close(self) -> None:
        """Send GOAWAY now; let open streams finish; ``must_close`` once none is left."""
        if self._goaway_sent or self._terminated:
            self._must_close = self._must_close or not self._responding()
            return
        self._goaway_sent = True
        self._out.append(w.goaway(self._highest, NO_ERROR))
        self._closed_app_stream()

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 and type(out[0]) is bytes else b"".join(out)

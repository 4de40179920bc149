"""HTTP/2 client connection to an API server: the ``h2`` state machine (sans-IO) driven by an asyncio
protocol. Many exchanges (ordinary requests and long-lived watches) share one TLS connection.

Flow control: response DATA is buffered per stream and its credit is returned to the server only when
the forwarding task reports the bytes ``consumed`` (they left towards the client), so a slow client
stalls its own stream at the server, not the proxy's memory. Request bodies are sent as the server's
window allows; the remainder waits for WINDOW_UPDATE.

DATA frames of response bodies without a ``content-length`` (watches, ``logs -f``, streamed lists) do
not go through the ``h2`` state machine (issue 9: ~90 Python calls per frame there, a hex repr of
every frame among them): ``data_received`` cuts the input into whole frames, hands such a frame's
payload straight to its exchange and everything else, in order, to ``h2``. Their flow control is kept
here: each such stream's receive window is checked (a server overrunning it breaks the connection, as
``h2`` would), and the credit of consumed bytes is announced in batches (``_STREAM_CREDIT_BATCH`` per
stream, ``_CONNECTION_CREDIT_BATCH`` for the connection) instead of one WINDOW_UPDATE per event. A
frame that ends its stream or is padded still goes through ``h2`` (the stream's state is its), as does
one that came in the same read as its stream's response head (the stream is known to be direct only
once ``h2`` has handed the head over); ``h2`` credits those on arrival: a few frames at most (the last
of the stream, the first events, a padding the apiserver never sends), so a slow client still holds
the rest of the window.
"""

from __future__ import annotations

import asyncio
import struct

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from proxy.protocol import h2lib
from proxy.protocol.events import Headers
from proxy.upstream.base import BodyBuffer, UpstreamError

try:
    import cython
except ImportError:  # run as Python where Cython is not installed: the same as Cython's own shadow module says
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)  # type: ignore[assignment]

h2lib.speed_up_h2()

_CONNECTION_WINDOW = 16 * 1024 * 1024
_STREAM_WINDOW = 1024 * 1024
# Consumed bytes of direct DATA frames are announced to the server once this many have gathered: a few
# WINDOW_UPDATE frames per window instead of one per event; the server keeps >= 3/4 of its window.
_STREAM_CREDIT_BATCH = _STREAM_WINDOW // 4
_CONNECTION_CREDIT_BATCH = _CONNECTION_WINDOW // 16

_FRAME_HEAD = 9
_DATA, _HEADERS, _PUSH_PROMISE, _CONTINUATION = 0, 1, 5, 9
_END_STREAM, _END_HEADERS, _PADDED = 0x1, 0x4, 0x8
_UNPACK_HEAD = struct.Struct(">BHBBL").unpack_from  # a frame head: length (24 bits), type, flags, stream id
_WINDOW_UPDATE = struct.Struct(">BHBBLL")  # length (24 bits: 0, 4), type 8, flags 0, stream id, increment


def window_update(stream_id: int, increment: int) -> bytes:
    """A WINDOW_UPDATE frame (RFC 9113 §6.9)."""
    return _WINDOW_UPDATE.pack(0, 4, 8, 0, stream_id, increment)


def _push(exchange: H2Exchange, parts: list[bytes]) -> None:
    exchange.body.push(parts[0] if len(parts) == 1 else b"".join(parts))


class H2Exchange:
    """One request/response on an ``H2Upstream``: an ``UpstreamStream`` (``proxy.upstream.base``) by its
    methods, not by inheritance, which the compiled build (an extension type, ``http2.pxd``) cannot have."""

    __slots__ = (
        "conn", "stream_id", "status", "headers", "body", "_head", "_pending", "_end_pending", "_drain", "_closed",
        "direct", "window", "owed", "unannounced",
    )  # fmt: skip

    def __init__(self, conn: H2Upstream, stream_id: int, high_water: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.status = 0
        self.headers: Headers = []
        self.body = BodyBuffer(high_water)
        self._head: asyncio.Future[tuple[int, Headers]] = asyncio.get_running_loop().create_future()
        self._pending: list[bytes] = []
        self._end_pending = False
        self._drain: asyncio.Future[None] | None = None
        self._closed = False
        # Direct DATA (see the module docstring): set once the response head shows no content-length.
        self.direct = False
        self.window = _STREAM_WINDOW  # bytes the server may still send on this stream, as far as we know
        self.owed = 0  # direct bytes received and not yet consumed
        self.unannounced = 0  # direct bytes consumed and not yet announced in a WINDOW_UPDATE

    def send_body(self, data: bytes) -> None:
        if data and not self._closed:
            self._pending.append(data)
            self.conn.flush_stream(self)

    def end_request(self) -> None:
        if not self._closed:
            self._end_pending = True
            self.conn.flush_stream(self)

    async def drain(self) -> None:
        while (self._pending or self.conn.write_paused) and not self._closed:
            self._drain = asyncio.get_running_loop().create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    @property
    def writable(self) -> bool:
        return not self._pending and not self.conn.write_paused

    async def response_head(self) -> tuple[int, Headers]:
        return await self._head

    async def read(self) -> bytes:
        return await self.body.read()

    def consumed(self, nbytes: int) -> None:
        if not self.direct:
            if nbytes:
                self.conn.acknowledge(self.stream_id, nbytes)
            return
        if nbytes > self.owed:  # the frames h2 saw of this stream were credited on arrival
            nbytes = self.owed
        if nbytes:
            self.owed -= nbytes
            self.unannounced += nbytes
            conn = self.conn
            conn.unannounced += nbytes
            if self.unannounced >= _STREAM_CREDIT_BATCH or conn.unannounced >= _CONNECTION_CREDIT_BATCH:
                conn.announce(self)

    def abort(self) -> None:
        if not self._closed:
            self.conn.reset(self)

    def release(self) -> None:
        if not self._closed:
            self.conn.reset(self)  # forgotten before the end: tell the server

    def wake_drain(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def fail(self, error: UpstreamError) -> None:
        self._closed = True
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()
        self.body.finish(error)
        self.wake_drain()


class H2Upstream:
    """One multiplexed HTTP/2 connection to an API server: an asyncio protocol (every method an event loop
    calls is defined here; no ``asyncio.Protocol`` base, which the compiled build, an extension type
    declared by ``http2.pxd``, cannot have)."""

    def __init__(self, cluster_name: str, authority: str, high_water: int) -> None:
        self.cluster_name = cluster_name
        self.authority = authority.encode("latin-1")
        self.high_water = high_water
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = h2.connection.H2Connection(config)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2Exchange] = {}
        self._inbox = b""  # the start of a frame not all here yet
        self._header_block = False  # a HEADERS/PUSH_PROMISE without END_HEADERS awaits its CONTINUATION
        self.unannounced = 0  # direct bytes consumed on all streams and not yet announced for the connection
        self.closed = False
        self.retiring = False  # no new streams; close once the open ones are done
        self.write_paused = False
        self.max_streams = 100

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000,
            },
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(_CONNECTION_WINDOW - 65535)
        self._flush()

    @property
    def capacity(self) -> int:
        if self.closed or self.retiring:
            return 0
        limit = min(self.max_streams, self.h2.remote_settings.max_concurrent_streams)
        return limit - len(self.streams)

    def start(self, method: str, target: str, headers: Headers, *, end_stream: bool, body: bytes = b"") -> H2Exchange:
        if self.closed:
            raise UpstreamError(502, f"connection to cluster {self.cluster_name} is closed", "reset")
        stream_id = self.h2.get_next_available_stream_id()
        exchange = H2Exchange(self, stream_id, self.high_water)
        self.streams[stream_id] = exchange
        h2_headers = [
            (b":method", method.encode("ascii")),
            (b":scheme", b"https"),
            (b":authority", self.authority),
            (b":path", target.encode("latin-1")),
        ]
        h2_headers.extend(h for h in headers if h[0] != b"host")
        if body or (end_stream and method not in ("GET", "HEAD", "DELETE", "OPTIONS")):
            h2_headers.append((b"content-length", str(len(body)).encode()))
        try:
            self.h2.send_headers(stream_id, h2_headers, end_stream=end_stream and not body)
        except h2.exceptions.ProtocolError as exc:
            del self.streams[stream_id]
            raise UpstreamError(502, f"cannot send request to cluster {self.cluster_name}: {exc}", "protocol") from exc
        if body:
            exchange._pending.append(body)
            exchange._end_pending = end_stream
            self.flush_stream(exchange)
        self._flush()
        return exchange

    # --- asyncio.Protocol -------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        """Whole frames only: direct DATA frames to their exchange, the rest in order to ``h2``. Direct
        payloads of one stream that arrive together go to it as one chunk (one write to its client)."""
        if self._inbox:
            data = self._inbox + data
            self._inbox = b""
        size = len(data)
        if size > _FRAME_HEAD and not self._header_block:  # the common read of a watch: one whole event
            if cython.compiled:  # the frame head read in place (C integers)
                length = data[0] << 16 | data[1] << 8 | data[2]
                kind = data[3]
                flags = data[4]
                stream_id = (data[5] & 0x7F) << 24 | data[6] << 16 | data[7] << 8 | data[8]
            else:
                high, low, kind, flags, stream_id = _UNPACK_HEAD(data)
                length = high << 16 | low
                stream_id &= 0x7FFFFFFF
            if kind == _DATA and not flags and length == size - _FRAME_HEAD and length <= self.h2.max_inbound_frame_size:
                exchange = self.streams.get(stream_id)
                if exchange is not None and exchange.direct and length <= exchange.window:
                    exchange.window -= length
                    exchange.owed += length
                    body = exchange.body
                    sink = body.sink
                    if sink is not None:  # ``BodyBuffer.push``'s first case, without its call
                        sink.body_chunk(data[_FRAME_HEAD:])
                    else:
                        body.push(data[_FRAME_HEAD:])
                    return
        pos = fed = 0
        to_h2 = False  # whether h2 was given frames (it may have frames to send in return)
        gathering: H2Exchange | None = None  # the stream whose consecutive direct payloads are in ``parts``
        parts: list[bytes] = []
        max_frame = self.h2.max_inbound_frame_size
        streams = self.streams
        while size - pos >= _FRAME_HEAD:
            high, low, kind, flags, stream_id = _UNPACK_HEAD(data, pos)
            length = high << 16 | low
            if length > max_frame:
                pos = size  # h2 refuses it (FRAME_SIZE_ERROR)
                break
            end = pos + _FRAME_HEAD + length
            if end > size:
                break
            if kind == _DATA:
                if not flags & (_END_STREAM | _PADDED) and not self._header_block:
                    exchange = streams.get(stream_id & 0x7FFFFFFF)
                    if exchange is not None and exchange.direct:
                        if fed < pos:
                            if gathering is not None:
                                _push(gathering, parts)
                                gathering = None
                            if not self._feed(data[fed:pos]):
                                return
                            to_h2 = True
                        fed = end
                        if length:
                            if length > exchange.window:
                                self._broken(f"cluster {self.cluster_name} sent beyond the stream's flow-control window",
                                             h2.errors.ErrorCodes.FLOW_CONTROL_ERROR)
                                return
                            exchange.window -= length
                            exchange.owed += length
                            if exchange is not gathering:
                                if gathering is not None:
                                    _push(gathering, parts)
                                gathering = exchange
                                parts = []
                            parts.append(data[pos + _FRAME_HEAD:end])
            elif kind == _HEADERS or kind == _PUSH_PROMISE or kind == _CONTINUATION:
                self._header_block = not flags & _END_HEADERS
            pos = end
        if gathering is not None:
            _push(gathering, parts)
        if fed < pos:
            if not self._feed(data if fed == 0 and pos == size else data[fed:pos]):
                return
            to_h2 = True
        if pos < size:
            self._inbox = data[pos:]
        if self.retiring and not self.streams:
            self.close()
            return
        if to_h2:
            self._flush()

    def _feed(self, data: bytes) -> bool:
        """Whole frames through ``h2``; False once the connection broke."""
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._fail_all(UpstreamError(502, f"cluster {self.cluster_name} broke HTTP/2: {exc}", "protocol"))
            self.close()
            return False
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                exchange = self.streams.get(event.stream_id)
                # forgotten; or a frame of a direct stream h2 saw (see the module docstring): credited now
                if exchange is None or exchange.direct:
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    if exchange is None:
                        continue
                else:
                    padding = event.flow_controlled_length - len(event.data)
                    if padding:
                        self.h2.acknowledge_received_data(padding, event.stream_id)
                if event.data:
                    exchange.body.push(event.data)
            elif isinstance(event, h2.events.ResponseReceived):
                exchange = self.streams.get(event.stream_id)
                if exchange is not None:
                    status = 0
                    sized = False
                    headers: Headers = []
                    for key, value in event.headers:
                        if key == b":status":
                            status = int(value)
                        elif not key.startswith(b":"):
                            headers.append((key, value))
                            if key == b"content-length":
                                sized = True  # h2 checks the length: every frame goes through it
                    if status >= 200 and not exchange._head.done():
                        exchange.status = status
                        exchange.headers = headers
                        exchange.direct = not sized
                        exchange._head.set_result((status, headers))
            elif isinstance(event, h2.events.StreamEnded):
                exchange = self.streams.pop(event.stream_id, None)
                if exchange is not None:
                    exchange._closed = True
                    if not exchange._head.done():
                        exchange.fail(UpstreamError(502, f"cluster {self.cluster_name} ended a stream without a response", "protocol"))
                    exchange.body.finish()
                    exchange.wake_drain()
                    if self.retiring and not self.streams:
                        self.close()
            elif isinstance(event, h2.events.StreamReset):
                exchange = self.streams.pop(event.stream_id, None)
                if exchange is not None:
                    exchange.fail(UpstreamError(502, f"cluster {self.cluster_name} reset the stream (code {event.error_code})", "reset"))
            elif isinstance(event, h2.events.WindowUpdated):
                if event.stream_id == 0:
                    for exchange in list(self.streams.values()):
                        if exchange._pending or exchange._end_pending:
                            self.flush_stream(exchange)
                else:
                    exchange = self.streams.get(event.stream_id)
                    if exchange is not None:
                        self.flush_stream(exchange)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.closed = True  # GOAWAY: no new streams; streams above last_stream_id are gone
                last = event.last_stream_id or 0
                for sid in [s for s in self.streams if s > last]:
                    self.streams.pop(sid).fail(UpstreamError(502, f"cluster {self.cluster_name} refused the stream (GOAWAY)", "reset"))
        return True

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself; connection_lost fails the open streams

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail_all(UpstreamError(502, f"connection to cluster {self.cluster_name} was lost", "reset"))

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for exchange in list(self.streams.values()):
            exchange.wake_drain()

    # --- used by exchanges ------------------------------------------------------------------------
    def flush_stream(self, exchange: H2Exchange) -> None:
        sid = exchange.stream_id
        try:
            while exchange._pending:
                window = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
                if window <= 0:
                    break
                chunk = exchange._pending[0]
                if len(chunk) <= window:
                    exchange._pending.pop(0)
                    self.h2.send_data(sid, chunk)
                else:
                    exchange._pending[0] = chunk[window:]
                    self.h2.send_data(sid, chunk[:window])
            if not exchange._pending and exchange._end_pending:
                exchange._end_pending = False
                self.h2.end_stream(sid)
        except h2.exceptions.StreamClosedError:
            exchange._pending.clear()
            exchange._end_pending = False
        except h2.exceptions.ProtocolError as exc:
            exchange.fail(UpstreamError(502, f"cannot send to cluster {self.cluster_name}: {exc}", "protocol"))
        if not exchange._pending:
            exchange.wake_drain()
        self._flush()

    def announce(self, exchange: H2Exchange) -> None:
        """Announce the consumed credit gathered on ``exchange`` and on the connection once it makes a batch."""
        frames = b""
        if exchange.unannounced >= _STREAM_CREDIT_BATCH:
            if not exchange._closed:
                frames = window_update(exchange.stream_id, exchange.unannounced)
                exchange.window += exchange.unannounced
            exchange.unannounced = 0
        if self.unannounced >= _CONNECTION_CREDIT_BATCH:
            frames += window_update(0, self.unannounced)
            self.unannounced = 0
        if frames and self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.h2.data_to_send() + frames)

    def acknowledge(self, stream_id: int, nbytes: int) -> None:
        try:
            self.h2.acknowledge_received_data(nbytes, stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self._flush()

    def reset(self, exchange: H2Exchange) -> None:
        exchange._closed = True
        if exchange.direct:  # received, never consumed: give the connection window back
            if exchange.owed:
                self.unannounced += exchange.owed
                exchange.owed = 0
                self.announce(exchange)
        elif exchange.body.size:
            self.acknowledge(exchange.stream_id, exchange.body.size)
        if self.streams.pop(exchange.stream_id, None) is not None:
            try:
                self.h2.reset_stream(exchange.stream_id, error_code=8)  # CANCEL
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                pass
            self._flush()
        if self.retiring and not self.streams:
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            try:
                self.h2.close_connection()
                self._flush()
            except h2.exceptions.ProtocolError:
                pass
            self.transport.close()

    # --- internals ----------------------------------------------------------------------------------
    def _broken(self, message: str, code: h2.errors.ErrorCodes) -> None:
        """The server broke the protocol where ``h2`` does not look: GOAWAY with ``code``, every stream fails."""
        self._fail_all(UpstreamError(502, message, "protocol"))
        self.closed = True
        if self.transport is not None:
            try:
                self.h2.close_connection(error_code=code)
                self._flush()
            except h2.exceptions.ProtocolError:
                pass
            self.transport.close()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail_all(self, error: UpstreamError) -> None:
        streams, self.streams = self.streams, {}
        for exchange in streams.values():
            exchange.fail(error)

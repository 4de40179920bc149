"""HTTP/1.1 client connection to an API server (asyncio protocol + httptools response parser).

One exchange at a time; keep-alive when both sides allow it. Upgrades (exec/attach/portforward) use a
fresh connection: ``Http1Upstream.start_upgrade`` writes the head and waits for the response head; on
``101`` the caller takes the transport over as a raw byte pipe (``take_over``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools

from proxy.protocol.events import Headers
from proxy.upstream.base import BodyBuffer, UpstreamError, UpstreamStream


def encode_request_head(method: str, target: str, headers: Headers) -> bytes:
    parts = [method.encode("ascii"), b" ", target.encode("latin-1"), b" HTTP/1.1\r\n"]
    for key, value in headers:
        parts += (key, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class Http1Exchange(UpstreamStream):
    __slots__ = ("conn", "headers", "status", "body", "_head", "_chunked", "_ended", "_done")

    def __init__(self, conn: Http1Upstream, chunked: bool, high_water: int) -> None:
        self.conn = conn
        self.status = 0
        self.headers: Headers = []
        self.body = BodyBuffer(high_water)
        # The connection's loop, not asyncio.get_running_loop(): on CPython 3.11 that costs a getpid()
        # system call, once per request here.
        loop = conn.loop if conn.loop is not None else asyncio.get_running_loop()
        self._head: asyncio.Future[tuple[int, Headers]] = loop.create_future()
        self._chunked = chunked
        self._ended = False
        self._done = False

    def send_body(self, data: bytes) -> None:
        if not data or self.conn.transport is None:
            return
        if self._chunked:
            self.conn.transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.conn.transport.write(data)

    def end_request(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self._chunked and self.conn.transport is not None:
            self.conn.transport.write(b"0\r\n\r\n")

    async def drain(self) -> None:
        await self.conn.drain()

    @property
    def writable(self) -> bool:
        return not self.conn._write_paused

    async def response_head(self) -> tuple[int, Headers]:
        return await self._head

    async def read(self) -> bytes:
        data = await self.body.read()
        if self.conn.reading_paused and self.body.size <= self.body.high_water // 2:
            self.conn.resume()
        return data

    def consumed(self, nbytes: int) -> None:
        pass

    def abort(self) -> None:
        self.conn.close()

    def release(self) -> None:
        self._done = True
        self.conn.exchange_released(self)

    # called by the connection
    def on_head(self, status: int, headers: Headers) -> None:
        self.status = status
        self.headers = headers
        if not self._head.done():
            self._head.set_result((status, headers))

    def on_error(self, error: UpstreamError) -> None:
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # mark retrieved: the reader may be gone already
        self.body.finish(error)

    def on_data(self, data: bytes) -> bool:
        """A piece of the response body; True when the connection should stop reading for now."""
        return self.body.push(data)

    def on_done(self) -> None:
        """The response body ended."""
        self.body.finish()

    @property
    def complete(self) -> bool:
        return self.body.eof


class Http1Upstream:
    """One HTTP/1.1 connection to an API server: an asyncio protocol (every method an event loop calls is
    defined here; no ``asyncio.Protocol`` base, which the compiled build, an extension type, cannot have)."""

    def __init__(self, cluster_name: str, high_water: int, on_idle: object = None) -> None:
        self.cluster_name = cluster_name
        self.high_water = high_water
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Http1Exchange | None = None
        self.closed = False
        self.reading_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._cur_headers: Headers = []
        self._message_done = False
        self._keep_alive = True
        self._upgrade_data: bytes | None = None
        self._head_request = False
        self._on_idle = on_idle  # callable(conn) when it can serve another request
        self.raw_protocol: asyncio.Protocol | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # set by connection_made
        # A fast-path answer whose head came whole in the first read and whose sink took it as bytes
        # (``raw_head``: HTTP/1.1, one Content-Length, no Connection field but keep-alive) is framed here by
        # counting its body; ``_framing``, a parser with no callbacks at all, still checks its syntax (and
        # stays in step for the next answer) in C. ``_active`` parses the current answer.
        self._framing = httptools.HttpResponseParser(_NO_CALLBACKS)
        self._active = self.parser
        self._fresh = False  # the next read starts the answer to a fast-path request
        self._left = 0  # bytes of a counted answer still to come

    # --- the asyncio protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        if self.raw_protocol is not None:
            self.raw_protocol.data_received(data)
            return
        body = data
        if self._fresh:
            self._fresh = False
            self._active = self.parser
            if self.exchange is not None:
                left = self.exchange.raw_head(data)
                if left is not None:  # the sink took the head and the body's bytes of this read
                    self._active = self._framing
                    self._left = left
                    body = b""
        active = self._active
        try:
            active.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            self._upgrade_data = data[offset:]
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(502, f"cluster {self.cluster_name} sent an invalid HTTP response: {exc}", "protocol"))
            self.close()
            return
        if active is not self._framing:
            return
        # A piece of an answer framed by counting (see ``_framing``), here rather than in a method of its
        # own: a Python call costs ~1,000 instructions, on every fast-path request.
        left = self._left - len(body)
        self._left = left
        exchange = self.exchange
        if exchange is None:
            return
        if left < 0:  # bytes past the answer's end: nothing was asked for them
            self._fail(UpstreamError(502, f"cluster {self.cluster_name} sent more than its Content-Length", "protocol"))
            self.close()
            return
        # ``body`` is empty only for the read the sink took (``raw_head``): what it holds is written now
        # (``on_data(b"")``) when more is to come, with the answer's end otherwise.
        if (body or left) and exchange.on_data(body) and not self.reading_paused:
            self.pause()
        if left == 0:
            self._keep_alive = True  # HTTP/1.1 with no Connection field but keep-alive (``raw_head``)
            self._message_done = True
            exchange.on_done()
            if exchange._done and self.exchange is exchange:  # ``_maybe_idle`` in place (keep-alive, message done)
                self.exchange = None
                if self.reading_paused:
                    self.resume()
                if self._on_idle is not None:
                    self._on_idle(self)  # type: ignore[operator]

    def eof_received(self) -> bool | None:
        if self.raw_protocol is not None:
            return self.raw_protocol.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.raw_protocol is not None:
            self.raw_protocol.connection_lost(exc)
            return
        self._fail(UpstreamError(502, f"connection to cluster {self.cluster_name} was closed mid-response", "reset"))
        self._wake_drain()
        if self.exchange is not None:  # closed while serving (an aborted exchange): no longer busy
            self.exchange = None
            if self._on_idle is not None:
                self._on_idle(self)  # type: ignore[operator]

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.raw_protocol is not None:
            self.raw_protocol.pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()
        if self.raw_protocol is not None:
            self.raw_protocol.resume_writing()

    # --- httptools callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._cur_headers = []
        self._message_done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._cur_headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self._keep_alive = self.parser.should_keep_alive()
        if status < 200 and status != 101:
            self._cur_headers = []  # interim response (100 Continue): wait for the real one
            return
        if self.exchange is not None:
            self.exchange.on_head(status, self._cur_headers)
            if self._head_request or status in (204, 304):
                # No body follows whatever the headers say; httptools cannot be told so for HEAD, so the
                # exchange ends here and the connection is not reused.
                self._keep_alive = self._keep_alive and not self._head_request
                self._message_done = True
                self.exchange.on_done()
                if self._head_request:
                    self.parser = httptools.HttpResponseParser(self)
                self._maybe_idle()  # a fast-path sink is done with it (``start_raw``)

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is not None and exchange.on_data(body) and not self.reading_paused:
            self.pause()

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if exchange is not None and exchange.status >= 200 and not exchange.complete:
            self._message_done = True
            exchange.on_done()
            self._maybe_idle()

    # --- use ----------------------------------------------------------------------------------------
    def start(self, method: str, target: str, headers: Headers, *, chunked: bool, body: bytes = b"") -> Http1Exchange:
        assert self.transport is not None and self.exchange is None
        self._active = self.parser
        exchange = Http1Exchange(self, chunked, self.high_water)
        self.exchange = exchange
        self._message_done = False
        self._head_request = method == "HEAD"
        head = encode_request_head(method, target, headers)
        self.transport.write(head + body if body else head)
        return exchange

    def start_raw(self, head: bytes, sink: Any) -> None:
        """Send a complete bodiless request (``head``, already encoded); the answer goes to ``sink``, which
        has ``Http1Exchange``'s callbacks (``on_head``, ``on_data``, ``on_done``, ``on_error``,
        ``complete``, ``status``) and ``raw_head`` (``proxy.fastpath``: it takes the answer's first read and
        writes it with ``on_data(b"")`` when more is to come, or ``on_done``). A sink that sets ``_done`` in
        ``on_done`` is done with the connection: it goes back to its pool when ``on_done`` returns
        (``_maybe_idle``), with no ``exchange_released`` call."""
        assert self.transport is not None and self.exchange is None
        self.exchange = sink
        self._message_done = False
        self._head_request = False
        self._fresh = True
        self.transport.write(head)

    async def start_upgrade(self, method: str, target: str, headers: Headers) -> tuple[int, Headers, bytes]:
        """Send an upgrade request; return (status, headers, bytes after the head). On 101 the caller
        then calls ``take_over``; otherwise it reads the refusal's body with ``exchange.read()``."""
        exchange = self.start(method, target, headers, chunked=False)
        status, resp_headers = await exchange.response_head()
        if status == 101:
            # httptools raises HttpParserUpgrade in the same feed_data call that completed the head.
            return status, resp_headers, self._upgrade_data or b""
        return status, resp_headers, b""

    def take_over(self, protocol: asyncio.Protocol) -> None:
        """From now on bytes from the upstream go to ``protocol`` (raw relay after a 101)."""
        self.raw_protocol = protocol
        self.exchange = None

    def pause(self) -> None:
        if self.transport is not None and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    async def drain(self) -> None:
        while self._write_paused and not self.closed:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def exchange_released(self, exchange: Http1Exchange) -> None:
        if exchange is not self.exchange:
            return
        if not self._message_done or not exchange._ended:
            self.close()  # half-read response or half-sent request: the connection is unusable
            return
        self._maybe_idle()

    @property
    def reusable(self) -> bool:
        return not self.closed and self.exchange is None and self._keep_alive and self.raw_protocol is None

    # --- internals ----------------------------------------------------------------------------------
    def _maybe_idle(self) -> None:
        exchange = self.exchange
        if exchange is None or not exchange._done or not self._message_done:
            return
        self.exchange = None
        if self.reading_paused:
            self.resume()
        if not self._keep_alive:
            self.close()
            return
        if self._on_idle is not None:
            self._on_idle(self)  # type: ignore[operator]

    def _fail(self, error: UpstreamError) -> None:
        exchange = self.exchange
        if exchange is not None and not (self._message_done and exchange.complete):
            exchange.on_error(error)

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _NoCallbacks:
    """httptools calls only the callbacks its target has: none here (``Http1Upstream._framing``)."""

    __slots__ = ()


_NO_CALLBACKS = _NoCallbacks()

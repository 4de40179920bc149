"""One client connection: TLS already established; drives the HTTP/1.1 or HTTP/2 server codec chosen by
ALPN, hands request events to ``forward.Exchange`` objects, writes what they answer.

Limits: a request head must complete within ``header_timeout`` of its first byte (slowloris), an idle
connection (no request in flight) closes after ``idle_timeout``. Backpressure: ``drain(stream_id)``
waits while the socket's write buffer is above the high-water mark (transport ``pause_writing``) or the
HTTP/2 stream has no send window; HTTP/1.1 request bodies pause reading from the socket while the
exchange cannot pass them on.

Abuse: the HTTP/2 codec counts frames that cost the proxy work and the client nothing (resets,
PING, SETTINGS) and reports each quantum (``FramesCounted``); two quanta of one kind within a second
(more than ``h2_max_*_per_second``) end the connection with GOAWAY(ENHANCE_YOUR_CALM). A client that
does not read what is queued for it is cut once more than ``client_write_buffer_max`` bytes wait.
An HTTP/1.1 client pipelining more than ``http1_max_pipelined`` requests is not read from until half of
them have been answered.
Each is counted in ``kubegate_client_connections_rejected_total`` by reason and logged (rate-limited).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from proxy.fastpath import (
    FAST_SID,
    MAX_PLANNED_REQUEST,
    PLANS_PER_CONNECTION,
    CodecFastExchange,
    FastExchange,
    h2_key,
    usable,
)
from proxy.forward import Exchange
from proxy.protocol.events import (
    ConnectionClosed,
    FramesCounted,
    ProtocolError,
    RequestBody,
    RequestEnd,
    RequestHead,
    ResponseHead,
    StreamReset,
    UpgradeRequested,
    WindowOpened,
)
from rbac.identity import Identity

if TYPE_CHECKING:
    from proxy.fastpath import Plan
    from proxy.forward import Forwarder

log = logging.getLogger("kubegate.proxy.connection")


_CLOSE_GRACE = 2.0  # seconds a closing connection may take to hand its last bytes to the peer


_STALLED = object()  # a drain waiter's result when the client took nothing for client_send_timeout


def _stall(waiter: asyncio.Future[object]) -> None:
    if not waiter.done():
        waiter.set_result(_STALLED)


class _Cut(Exception):
    """Raised from ``_dispatch`` once the connection was cut for abuse: the rest of the events are dropped."""


class ClientConnection:
    """An asyncio protocol (every method an event loop calls is defined here; no ``asyncio.Protocol`` base,
    which the compiled build, an extension type, cannot have)."""

    __slots__ = (
        "fwd", "peer_ip", "transport", "codec", "identity", "exchanges", "closed", "write_paused", "_read_paused",
        "_drain_waiters", "_window_waiters", "_header_timer", "_idle_timer", "_closing_after_flush", "upgraded",
        "detached", "_served", "_idle_since", "_frame_marks", "_max_pipelined", "plans", "h2_plans", "fast", "_held_data", "_flush_due", "_plan_candidate",
        "_writable_hooks", "__weakref__",
    )  # fmt: skip

    def __init__(self, fwd: Forwarder, peer_ip: str) -> None:
        self.fwd = fwd
        self.peer_ip = peer_ip
        self.transport: asyncio.Transport | None = None
        self.codec: Any = None
        self.identity: Identity | None = None
        self.exchanges: dict[int, Exchange] = {}
        self.closed = False
        self.write_paused = False
        self._read_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._window_waiters: dict[int, asyncio.Future[None]] = {}
        self._header_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._closing_after_flush = False
        self.upgraded = False  # the codec stopped at an upgrade head
        self.detached = False  # the raw transport belongs to an upgrade relay
        self._served = False  # a request head has been seen on this connection
        self._idle_since = 0.0  # loop time the connection last became idle (no request in flight)
        self._frame_marks: dict[str, float] | None = None  # loop time of the last FramesCounted, by kind
        self._max_pipelined = fwd.settings.http1_max_pipelined  # exchanges in flight before reading pauses
        # HTTP/1.1: request bytes → what the full pipeline made of them (``proxy.fastpath``); None: no fast path
        self.plans: dict[bytes, Plan] | None = None
        self.h2_plans: dict[tuple[Any, ...], Plan] | None = None  # HTTP/2: request head → plan (fastpath.h2_key)
        self.fast: FastExchange | None = None  # the fast-path exchange in flight
        self._held_data: list[bytes] = []  # bytes that arrived while it was in flight
        self._writable_hooks: list[Callable[[], None]] = []  # called once the transport takes writes again
        self._flush_due = False  # flush_soon() scheduled a flush for the end of this loop iteration
        self._plan_candidate: bytes | None = None  # while dispatching: the bytes of the one request they hold

    # --- set-up -------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        fwd = self.fwd
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        # No certificate: identity stays None; kubegate's own endpoints (sign-in) answer, every other
        # request gets a 401 Status (Forwarder.new_exchange).
        problem, identity = fwd.identify(der) if der else (None, None)
        if der and identity is None:
            fwd.handshake_failed("client_cert_rejected")
            log.info("client certificate rejected", extra={"peer": self.peer_ip, "problem": problem})
            transport.abort()
            self.closed = True
            return
        self.identity = identity
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        self.codec = fwd.new_codec(alpn == "h2")
        if alpn == "h2":
            self._max_pipelined = 1 << 62  # HTTP/2 bounds its streams itself (h2_max_concurrent_streams)
            if identity is not None and fwd.fast_path:
                self.h2_plans = {}
        elif identity is not None and fwd.fast_path:
            self.plans = {}
        fwd.connection_opened(self)
        self._flush()
        self._arm_idle()

    # --- the asyncio protocol -------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        codec = self.codec
        if codec is None:
            return
        plans = self.plans
        candidate = None
        if plans is not None:
            if self.fast is not None:  # answers go out in order: these wait for the fast exchange's end
                self._held_data.append(data)
                self.pause_reading()
                return
            if not self.exchanges and len(data) <= MAX_PLANNED_REQUEST and codec.idle:
                plan = plans.get(data)
                if plan is not None:
                    upstream = usable(self.fwd, self, plan)
                    if upstream is not None:
                        self._served = True
                        FastExchange(self.fwd, self, plan, data, upstream)  # started as it is made
                        return
                if data.endswith(b"\r\n\r\n") and data.count(b"\r\n\r\n") == 1:  # one bodiless head
                    candidate = data
        if self.upgraded:  # bytes of the new protocol before the relay started: keep them for it
            for ex in self.exchanges.values():
                if ex.upgrade is not None:
                    ex.upgrade.trailing += data
            return
        idle = not self.exchanges
        events = codec.receive_data(data)
        # One whole request in one read: the full pipeline may remember what it made of these bytes.
        self._plan_candidate = candidate if len(events) == 2 and type(events[1]) is RequestEnd else None
        try:
            for event in events:
                self._dispatch(event)
        except _Cut:
            return
        finally:
            self._plan_candidate = None
        if len(self.exchanges) > self._max_pipelined:
            self.pause_reading()  # pipelined requests: read no more until answers have gone out
        if (
            idle
            and not self.exchanges
            and self._header_timer is None
            and not self.closed
            and not self.upgraded
            and not (self._served and codec.http_version == "2")
        ):
            # Bytes arrived but no request head completed: it must complete in time (from now, its first
            # bytes). Heads that arrive whole (the usual case) arm no timer at all. On HTTP/2 only the
            # first head: later, frames between requests (PING, SETTINGS, WINDOW_UPDATE) are normal and
            # the idle timeout governs.
            self._header_timer = self.fwd.loop.call_later(self.fwd.settings.header_timeout, self._header_timeout)
        self._flush()

    def _dispatch(self, event: object) -> None:
        if isinstance(event, RequestHead):
            self._served = True
            self._cancel_header_timer()  # the idle timer stays armed: _idle_timeout sees the request
            h2_plans = self.h2_plans
            key = self._plan_candidate  # HTTP/1.1: the request's bytes when it came whole and alone
            if h2_plans is not None:
                key = h2_key(event)
                if key is not None:
                    plan = h2_plans.get(key)
                    if plan is not None:
                        upstream = usable(self.fwd, self, plan)
                        if upstream is not None:
                            CodecFastExchange(self.fwd, self, plan, event, upstream)  # started as it is made
                            return
            ex = self.fwd.new_exchange(self, event)
            self.exchanges[event.stream_id] = ex
            if type(ex) is Exchange:
                ex.plan_key = key
            ex.start()
        elif isinstance(event, RequestBody):
            ex = self.exchanges.get(event.stream_id)
            if ex is not None:
                ex.on_body(event.data)
        elif isinstance(event, RequestEnd):
            ex = self.exchanges.get(event.stream_id)
            if ex is not None:
                ex.on_end()
        elif isinstance(event, WindowOpened):
            self._window_opened(event.stream_id)
        elif isinstance(event, StreamReset):
            ex = self.exchanges.pop(event.stream_id, None)
            if ex is not None:
                ex.on_reset()
        elif isinstance(event, UpgradeRequested):
            self._cancel_header_timer()
            self._cancel_idle()
            self.upgraded = True
            ex = self.fwd.new_exchange(self, event.head)
            self.exchanges[event.stream_id] = ex
            ex.start_upgrade(event.trailing)
        elif isinstance(event, ProtocolError):
            self._cancel_header_timer()
            self.fwd.protocol_error(self, event)
            self._closing_after_flush = True
        elif isinstance(event, ConnectionClosed):
            self._end()
        elif isinstance(event, FramesCounted):
            self._frames_counted(event.kind)

    def _frames_counted(self, kind: str) -> None:
        """Another quantum of costly frames: within a second of the previous one, the client is flooding."""
        now = self.fwd.loop.time()
        marks = self._frame_marks
        if marks is None:
            marks = self._frame_marks = {}
        last = marks.get(kind)
        marks[kind] = now
        if last is not None and now - last < 1.0:
            self.codec.enhance_your_calm()
            self.cut(kind)
            raise _Cut

    def eof_received(self) -> bool | None:
        if self.codec is not None and not self.detached:
            for event in self.codec.receive_data(b""):
                self._dispatch(event)
            self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._close_all()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        hooks, self._writable_hooks = self._writable_hooks, []
        for hook in hooks:
            hook()

    # --- used by the fast path (proxy.fastpath) ---------------------------------------------------------
    def when_writable(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` once the transport takes writes again (after ``pause_writing``)."""
        self._writable_hooks.append(hook)

    def remember(self, key: bytes | tuple[Any, ...], plan: Plan) -> None:
        """What the full pipeline made of a request: ``key`` is its bytes (HTTP/1.1) or its decoded head
        (HTTP/2, ``fastpath.h2_key``); see ``proxy.fastpath``."""
        plans: Any = self.plans if type(key) is bytes else self.h2_plans
        if plans is not None:
            if len(plans) >= PLANS_PER_CONNECTION:
                plans.clear()
            plans[key] = plan

    def start_exchange(self, head: RequestHead, *, ended: bool) -> None:
        """Serve ``head`` through the full pipeline (a request an HTTP/2 fast exchange gave up on before
        answering); ``ended``: its body (none) has been received whole."""
        if self.closed:
            return
        ex = self.fwd.new_exchange(self, head)
        self.exchanges[head.stream_id] = ex
        if type(ex) is Exchange:
            ex.start_pipeline()
        else:
            ex.start()
        if ended:
            ex.on_end()
        self._flush()

    def fast_done(self) -> None:
        """The fast exchange was handed to the full pipeline (its end is ``exchange_done(FAST_SID)``): bytes
        that arrived meanwhile are read now, in order."""
        self.fast = None
        self.exchanges.pop(FAST_SID, None)
        self._read_held()

    def _read_held(self) -> None:
        if self._held_data and not self.closed:
            self.fwd.loop.call_soon(self._release_held)

    def replay(self, raw: bytes) -> None:
        """Serve ``raw`` (a request a fast exchange gave up on) through the full pipeline."""
        self._held_data.insert(0, raw)
        self.pause_reading()
        self.fwd.loop.call_soon(self._release_held)

    def _release_held(self) -> None:
        if self.closed or self.fast is not None or not self._held_data:
            return
        data = b"".join(self._held_data)
        self._held_data = []
        plans, self.plans = self.plans, None  # not the fast path for these: they may be several requests
        try:
            self.data_received(data)
        finally:
            self.plans = plans
        if not self.exchanges or len(self.exchanges) <= self._max_pipelined // 2:
            self.resume_reading()

    # --- used by exchanges ----------------------------------------------------------------------------
    def send_head(self, head: ResponseHead, end_stream: bool = False) -> None:
        if not self.closed:
            self.codec.send_response_head(head, end_stream=end_stream)

    def send_head_block(self, stream_id: int, block: bytes, end_stream: bool = False) -> None:
        """An HTTP/2 response head already encoded (see ``Http2ServerConnection.send_response_block``)."""
        if not self.closed:
            self.codec.send_response_block(stream_id, block, end_stream=end_stream)

    def send_relayed_head(self, stream_id: int, head: bytes, content_length: int) -> None:
        """An HTTP/1.1 response head made elsewhere (see ``Http1ServerConnection.send_relayed_head``)."""
        if not self.closed:
            self.codec.send_relayed_head(stream_id, head, content_length)

    def send_body(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        if not self.closed:
            self.codec.send_body(stream_id, data, end_stream=end_stream)

    def send_end(self, stream_id: int) -> None:
        if not self.closed:
            self.codec.send_end(stream_id)

    def reset(self, stream_id: int) -> None:
        if not self.closed:
            self.codec.reset_stream(stream_id)
            self._flush()

    def acknowledge(self, stream_id: int, nbytes: int) -> None:
        if not self.closed:
            self.codec.acknowledge_received(stream_id, nbytes)

    def flush(self) -> None:
        self._flush()

    def flush_soon(self) -> None:
        """Flush once the callbacks ready now have run: answers of several HTTP/2 streams finished by one
        read (or by reads of several upstream connections in one loop iteration) leave in one TLS write."""
        if not self._flush_due:
            self._flush_due = True
            self.fwd.loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_due = False
        self._flush()

    def writable(self, stream_id: int) -> bool:
        """Whether ``drain(stream_id)`` would return at once: the socket takes more and, on HTTP/2, the
        stream has send window."""
        if self.write_paused or self.closed:
            return False
        return self.codec.http_version != "2" or self.codec.send_window(stream_id) > 0

    async def drain(self, stream_id: int) -> None:
        """Wait until this stream may be written again (socket buffer below high water, h2 window open).
        A client that takes nothing for ``client_send_timeout`` has stalled: a full socket buffer cuts
        the connection, a window that stays shut resets the stream (its exchange ends, the upstream with it)."""
        loop = self.fwd.loop
        timeout = self.fwd.settings.client_send_timeout
        while not self.closed:
            if self.write_paused:
                waiter = loop.create_future()
                self._drain_waiters.append(waiter)
                timer = loop.call_later(timeout, _stall, waiter)
                try:
                    stalled = await waiter is _STALLED
                finally:
                    timer.cancel()
                if stalled:
                    self.cut("client_send_timeout")
                continue
            if self.codec.http_version == "2" and self.codec.send_window(stream_id) <= 0:
                waiter = loop.create_future()
                self._window_waiters[stream_id] = waiter
                timer = loop.call_later(timeout, _stall, waiter)
                try:
                    stalled = await waiter is _STALLED
                finally:
                    timer.cancel()
                    self._window_waiters.pop(stream_id, None)
                if stalled:
                    self.fwd.abuse(self.peer_ip, "client_send_timeout")
                    self.reset(stream_id)
                    ex = self.exchanges.pop(stream_id, None)
                    if ex is not None:
                        ex.on_reset()
                    return
                continue
            return

    def pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None and not self.closed:
            self._read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._read_paused and self.transport is not None and not self.closed:
            self._read_paused = False
            self.transport.resume_reading()

    def exchange_done(self, stream_id: int) -> None:
        """An exchange ended. The end of the HTTP/1.1 fast exchange (``FAST_SID``) too, in this one call (a
        call costs ~1,000 instructions per request): bytes that arrived while it was in flight are read
        now, in order."""
        exchanges = self.exchanges
        exchanges.pop(stream_id, None)
        if self._read_paused and len(exchanges) <= self._max_pipelined // 2:
            self.resume_reading()
        if not exchanges and not self.upgraded:
            if self._closing_after_flush or (self.codec is not None and self.codec.must_close):
                self._flush()
            elif self.fwd.shutting_down:
                self.close()
            elif not self.closed:  # ``_arm_idle`` in place: once per request
                loop = self.fwd.loop
                self._idle_since = loop.time()
                if self._idle_timer is None:
                    self._idle_timer = loop.call_later(self.fwd.settings.idle_timeout, self._idle_timeout)
        if stream_id == FAST_SID:
            self.fast = None
            if self._held_data:
                self._read_held()

    def detach(self) -> asyncio.Transport:
        """Hand the raw transport over (upgrade relay); this object stops handling the connection."""
        assert self.transport is not None
        self.upgraded = True
        self.detached = True
        self._cancel_idle()
        self._cancel_header_timer()
        return self.transport

    def close(self) -> None:
        """Close gracefully: HTTP/2 GOAWAY, then the socket once the queued bytes are written."""
        if self.closed or self.transport is None:
            return
        if self.codec is not None and not self.detached:
            self.codec.close()
            self._flush()
        if not self.exchanges or self.detached:
            self.transport.close()

    def cut(self, reason: str) -> None:
        """End the connection for abuse: count and log it, then ``_end`` it."""
        self.fwd.abuse(self.peer_ip, reason)
        self._end()

    def _end(self) -> None:
        """The codec is done with the connection (the peer closed it, broke the protocol, or abused it):
        write what the codec queued last (a GOAWAY), close, and abort after ``_CLOSE_GRACE`` seconds if the
        peer does not take the bytes (a client that never reads must not keep the socket)."""
        transport = self.transport
        if transport is not None and not self.closed and not self.detached:
            data = self.codec.data_to_send()
            if data and not transport.is_closing():
                transport.write(data)
            transport.close()
            self.fwd.loop.call_later(_CLOSE_GRACE, transport.abort)
        self._close_all()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._close_all()

    # --- internals ----------------------------------------------------------------------------------
    def _flush(self) -> None:
        if self.closed or self.codec is None or self.detached:
            return
        data = self.codec.data_to_send()
        transport = self.transport
        if data and transport is not None:
            transport.write(data)
            if self.write_paused and self.check_write_buffer():
                return
        if (self._closing_after_flush or self.codec.must_close) and transport is not None:
            if not self.exchanges:
                transport.close()
                self._close_all()

    def check_write_buffer(self) -> bool:
        """While writing is paused: cut a client that leaves more than ``client_write_buffer_max`` bytes
        unread (True if it was cut)."""
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size() > self.fwd.settings.client_write_buffer_max:
            self.cut("write_buffer_full")
            return True
        return False

    def _window_opened(self, stream_id: int) -> None:
        if stream_id == 0:
            waiters, self._window_waiters = self._window_waiters, {}
            for waiter in waiters.values():
                if not waiter.done():
                    waiter.set_result(None)
            return
        waiter = self._window_waiters.pop(stream_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self.exchanges and not self.closed:
            self.fwd.connection_rejected("header_timeout")
            self.fwd.throttled_log.info("header_timeout", "request head not complete in time; closing", {"peer": self.peer_ip})
            self.abort()

    def _idle_timeout(self) -> None:
        """One timer per connection, not one per request: it is armed when the connection goes idle and
        left running while requests come and go; when it fires it closes the connection if it has been
        idle for the whole timeout, re-arms for the rest if it went idle again later, and otherwise
        (a request in flight, or a request head arriving under its own timer) lets the end of that
        request arm it again."""
        self._idle_timer = None
        if self.exchanges or self.closed or self._header_timer is not None or self.detached:
            return
        loop = self.fwd.loop
        remaining = self._idle_since + self.fwd.settings.idle_timeout - loop.time()
        if remaining > 0:
            self._idle_timer = loop.call_later(remaining, self._idle_timeout)
            return
        self.close()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _arm_idle(self) -> None:
        if self.closed:
            return
        loop = self.fwd.loop
        self._idle_since = loop.time()
        if self._idle_timer is None:
            self._idle_timer = loop.call_later(self.fwd.settings.idle_timeout, self._idle_timeout)

    def _cancel_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _close_all(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._cancel_idle()
        self._cancel_header_timer()
        exchanges, self.exchanges = self.exchanges, {}
        for ex in exchanges.values():
            ex.on_reset()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        for waiter in self._window_waiters.values():
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters = []
        self._window_waiters = {}
        self.fwd.connection_closed(self)

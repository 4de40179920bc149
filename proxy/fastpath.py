"""The fast path: a GET without a body answered with no asyncio Task, no future and no event object.

A GET a connection sends again is answered from a ``Plan``: what the full pipeline (``forward.Exchange``,
or its direct path) made of it the first time, the encoded upstream request head and the decision, kept
on the client connection when that exchange was plain (allowed with no response filter or review, not
long-lived, the target unchanged, forwarded over a pooled HTTP/1.1 upstream connection). On HTTP/1.1
the plan is keyed by the request's exact bytes (a read holding one whole bodiless head, e.g. kubectl's
and client libraries' polling, health probes, a benchmark) and answered by ``FastExchange``, the bytes
never reaching the codec; on HTTP/2 by the decoded head (``h2_key``) and answered by
``CodecFastExchange`` on the request's stream, through the codec.

The same request again on the same connection (so the same certificate) is checked for everything that
may have changed since (``usable``): the certificate's expiry, the lock list (asked only when its
``generation`` is not the one the identity was last found unlocked under, or when it has none: no watch,
or a shared list whose backend watch is broken), the role set, the cluster (removed, changed,
unhealthy), its catalog and upstream credentials, each by object identity. Then the
remembered head goes to an idle upstream connection, and the exchange is that connection's sink: the
answer is relayed from the upstream parser's callbacks. Metrics and the audit line are the full
pipeline's.

``forward.Exchange.start_direct`` uses ``CodecFastExchange`` too, for a GET with no plan whose decision
it reaches without waiting (a memoised or synchronous one), with the head rewritten for it; that exchange
leaves the plan behind.

Whatever is unusual takes the full pipeline before a byte is written: a check that does not hold, no
idle upstream connection, another request in flight on an HTTP/1.1 connection, a client whose clock is
faked (tests). An upstream connection that fails before any answer reached the client (the server had
closed a pooled connection) hands the request to the full pipeline, which retries as for any GET.
"""

from __future__ import annotations

import asyncio
import logging
from operator import itemgetter
from time import monotonic, perf_counter
from time import time as wall_time
from typing import TYPE_CHECKING, Any

from proxy import metrics
from proxy.audit import request_audit_event, request_line_parts
from proxy.headers import content_length, rewrite_response_headers
from proxy.protocol.audit_line import request_line
from proxy.protocol.events import RequestHead, ResponseHead
from proxy.protocol.http1 import response_head_bytes
from proxy.protocol.relayed_head import relayable_head, relayed_block
from proxy.tally import request_abandoned, request_finished, request_started
from proxy.upstream.base import UpstreamError
from rbac.status import REASONS, status_body

if TYPE_CHECKING:
    from discovery.model import Cluster, UpstreamCredentials
    from proxy.connection import ClientConnection
    from proxy.forward import Forwarder
    from proxy.policy import Verdict
    from proxy.upstream.http1 import Http1Upstream
    from proxy.upstream.pool import ClusterPool

log = logging.getLogger("kubegate.proxy")

_FLUSH_AT_ONCE = 64 * 1024  # an h2 answer's piece this large is written at once, not with the iteration's batch
MAX_PLANNED_REQUEST = 8192  # longest request (bytes) remembered; longer ones always take the full pipeline
PLANS_PER_CONNECTION = 16  # remembered requests per connection (all forgotten when full): ~1 KB each
FAST_SID = 0  # the key of a fast exchange in ``ClientConnection.exchanges`` (codec streams are odd)


class Plan:
    """What the full pipeline made of one request, and the objects it was made from."""

    __slots__ = (
        "cluster", "roles", "catalog", "pool", "credentials", "usable_until", "head", "verdict", "path",
        "locks_generation", "audit_parts", "catalog_entry",
    )  # fmt: skip

    def __init__(
        self, cluster: Cluster, roles: Any, catalog: Any, pool: ClusterPool, credentials: UpstreamCredentials | None,
        usable_until: float, head: bytes, verdict: Verdict, path: str, locks_generation: object | None,
        audit_parts: tuple[bytes, bytes, bytes] | None = None, catalog_entry: tuple[int, float, Any] | None = None,
    ) -> None:
        self.cluster = cluster
        self.roles = roles
        self.catalog = catalog
        self.pool = pool
        self.credentials = credentials
        # Unix time the plan holds until: the client certificate's expiry or, earlier, the end of its
        # credentials' freshness (``ClusterPool.fresh_until``); inf when neither expires.
        self.usable_until = usable_until
        self.head = head  # the upstream request head
        self.verdict = verdict
        self.path = path  # for the audit line
        self.locks_generation = locks_generation  # the lock list's generation when the identity was last found unlocked
        self.audit_parts = audit_parts  # audit.request_line_parts, made at first use
        # The catalog cache's entry ``catalog`` came from (``CatalogCache.entries``), or None: while the
        # cache holds that same entry and it is not due for a refresh, the catalog is still the one.
        self.catalog_entry = catalog_entry


def usable(fwd: Forwarder, conn: ClientConnection, plan: Plan) -> Http1Upstream | None:
    """An idle upstream connection to send ``plan``'s request on when nothing decided since has changed,
    else None (the request takes the full pipeline, which answers whatever changed)."""
    if plan.usable_until <= wall_time() or fwd.shutting_down:
        return None
    locks = fwd.locks
    if locks is not None:
        # The identity was not locked under plan.locks_generation, and a lock becomes active only by a
        # change of the list (``until`` only ends one): the same generation needs no check.
        generation = locks.generation
        if generation is None or generation is not plan.locks_generation:
            if locks.is_locked(conn.identity):
                return None
            plan.locks_generation = generation
    cluster = plan.cluster
    if fwd.served_cluster(cluster.name) is not cluster or cluster.health == "unhealthy":
        return None
    if fwd.role_source.current() is not plan.roles:
        return None
    pool = plan.pool
    if pool.credentials is not plan.credentials or fwd.pools.pools.get(cluster.name) is not pool:
        return None  # credentials refreshed (their freshness: ``usable_until``), or another pool
    # ``catalogs.cached`` answers the plan's catalog without a Python call while the cache holds the entry
    # the plan was made from (a frozen cluster's generation, the same catalog) and it is not due for a
    # refresh; else ``cached`` itself answers (and starts the refresh it is due).
    catalogs = fwd.catalogs
    entry = catalogs.entries.get(cluster.name)
    if entry is None or entry is not plan.catalog_entry or monotonic() - entry[1] > catalogs.max_age:
        if catalogs.cached(cluster, pool) is not plan.catalog:
            return None
    return pool.idle_http1()


class FastExchange:
    """One request on the fast path: the sink of an ``Http1Upstream`` (``on_head``/``on_data``/``on_done``/
    ``on_error``) that writes the answer to the client's transport, and an exchange to the forwarder
    (``stop``, ``on_reset``, ``audit_event``) like ``forward.Exchange``.

    Made for one request and started as it is made (``__init__``). Each step of a planned request is one
    Python call where it can be: a call costs ~1,000 instructions with its frame and attribute traffic,
    about as much as the work of most steps, so construction and start are one call, and the end of an
    answer (``_finish``: metrics, audit line, the client connection's bookkeeping) another."""

    __slots__ = (
        "fwd", "conn", "plan", "raw", "identity", "cluster", "verdict", "request_id", "started", "status",
        "bytes_out", "upstream", "finished", "head_seconds", "sid", "_done", "_head", "_chunked", "_written",
        "_stop_reason", "_stall_timer", "_length", "_drainer",
    )  # fmt: skip
    # The same for every fast exchange (class attributes: nothing to store per request)
    kind = None  # never long-lived
    stream = None
    _ended = True  # the request (a GET without a body) is sent whole with its head

    def __init__(
        self, fwd: Forwarder, conn: ClientConnection, plan: Plan, raw: bytes, upstream: Http1Upstream,
        sid: int = FAST_SID,
    ) -> None:
        """Start the request: registered with the forwarder and the client connection (as stream ``sid``:
        ``FAST_SID``, the connection's one fast exchange, on HTTP/1.1), counted in flight, and its remembered
        head sent on ``upstream`` (idle, from ``usable``)."""
        self.fwd = fwd
        self.conn = conn
        self.plan = plan
        self.raw = raw
        self.identity = conn.identity
        self.cluster = plan.cluster
        self.verdict = plan.verdict
        self.request_id = fwd.next_request_id()
        self.started = perf_counter()  # the sweep answers 504 after response_head_timeout without a head
        self.head_seconds = -1.0  # the time to the answer's head, observed with the rest at the end
        self.status = 0
        self.bytes_out = 0
        self.upstream = upstream
        self.finished = False
        self._done = False  # released: the upstream connection may serve another request once the answer ended
        self._head: bytes | None = None  # the response head, written with the first body bytes
        self._chunked = False
        self._length = 0  # the body's length when the head is relayed as bytes
        self._written = False  # a byte of the answer reached the client's transport
        self._stop_reason: str | None = None
        self._stall_timer: Any = None  # HTTP/1.1: the client has this long to take what was written
        self._drainer: asyncio.Task[None] | None = None  # through the codec: waits for the client (``_drain``)
        self.sid = sid
        fwd.exchanges.add(self)
        conn.exchanges[sid] = self
        if sid == FAST_SID:
            conn.fast = self
        request_started()
        upstream.start_raw(plan.head, self)

    # --- the upstream connection's sink --------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return self._done

    def raw_head(self, data: bytes) -> int | None:
        """Take the answer's first read (``data``: its head and the body's first bytes) as the bytes the
        upstream sent when ``relayable_head`` allows it, the request id added: written with the next body
        bytes or the answer's end. Returns how many of the body's bytes are still to come, or None:
        ``on_head`` gets the parsed fields instead."""
        if self.finished:
            return None
        relayable = relayable_head(data, self.request_id.encode("ascii"))
        if relayable is None:
            return None
        relayed, self.status, length, head_size = relayable
        self._head = relayed
        self._length = length
        self.bytes_out = received = len(relayed) - head_size
        self.head_seconds = perf_counter() - self.started
        return length - received

    def on_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self.finished:
            return
        if status == 101:  # switching protocols on a request that asked for none: not an answer to relay
            self.upstream.close()
            self._answer(502, f"cluster {self.cluster.name} switched protocols on a plain GET")
            return
        self.status = status
        self._send_head(status, rewrite_response_headers(headers, request_id=self.request_id))
        self.head_seconds = perf_counter() - self.started

    def _send_head(self, status: int, fields: list[tuple[bytes, bytes]]) -> None:
        """The answer's head from its rewritten fields: written with the first body bytes."""
        self._head, self._chunked = response_head_bytes(status, fields)

    def on_data(self, data: bytes) -> bool:
        if self.finished:
            return False
        self.bytes_out += len(data)
        if self._chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        head = self._head
        if head is not None:
            self._head = None
            data = head + data
        conn = self.conn
        transport = conn.transport
        if conn.closed or transport is None:
            return False
        self._written = True
        transport.write(data)
        if conn.write_paused:  # a slow reader slows the server: read no more until the client took these
            if self._stall_timer is None:  # one read from the upstream may hold several chunks: arm once
                conn.when_writable(self._client_writable)
                self._stall_timer = self.fwd.loop.call_later(self.fwd.settings.client_send_timeout, self._stalled)
            return True
        return False

    def on_done(self) -> None:
        if self.finished:
            return
        tail = b"0\r\n\r\n" if self._chunked else b""
        head = self._head
        if head is not None:
            self._head = None
            tail = head + tail
        if tail and not self.conn.closed and self.conn.transport is not None:
            self._written = True
            self.conn.transport.write(tail)
        self._done = True  # the upstream connection gives itself back to its pool on return (``_maybe_idle``)
        self._finish()

    def on_error(self, error: UpstreamError) -> None:
        if self.finished:
            return
        if not self._written and self._stop_reason is None:
            # Nothing reached the client: the full pipeline serves the request (and retries it).
            self._abandon()
            self._replay()
            return
        metrics.upstream_error(self.cluster.name, error.kind)
        log.warning("upstream failed mid-response", extra={"request_id": self.request_id, "problem": error.message})
        self.status = self.status or 502
        self._finish()
        self._cut_answer()

    # --- the forwarder's and the client connection's exchange -----------------------------------------
    def on_reset(self) -> None:
        """The client went away."""
        if self.finished:
            return
        self.upstream.close()
        self._finish()

    def stop(self, reason: str, code: int = 503) -> None:
        """kubegate ends this request (its cluster changed or went, shutdown): answered with a Status saying
        why when the answer has not begun, else the connection closes."""
        if self.finished:
            return
        self._stop_reason = reason
        self.upstream.close()
        if self._written:
            self._finish()
            self._cut_answer()
            return
        self._answer(code, reason)

    def head_timed_out(self) -> None:
        """Called by the forwarder's sweep once ``response_head_timeout`` passed without an answer."""
        if self.finished or self.status:
            return
        self.upstream.close()
        message = f"cluster {self.cluster.name} did not answer in time"
        metrics.upstream_error(self.cluster.name, "timeout")
        log.warning("upstream error", extra={"request_id": self.request_id, "code": 504, "problem": message})
        self._answer(504, message)

    def audit_event(self) -> dict[str, Any]:
        return request_audit_event(
            self.request_id, self.identity, self.verdict, self.cluster, "GET", self.plan.path, self.status,
            self.started, self.bytes_out, 0, self.conn.peer_ip, self._stop_reason,
        )

    # --- internals ------------------------------------------------------------------------------------
    def _status_answer(self, code: int, message: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """kubegate's own answer: a Kubernetes ``Status`` body and its fields."""
        body = status_body(code, REASONS.get(code, "InternalError"), message)
        fields = [
            (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
            (b"x-kubegate-request-id", self.request_id.encode("ascii")),
        ]
        return body, fields

    def _answer(self, code: int, message: str) -> None:
        body, fields = self._status_answer(code, message)
        head, _ = response_head_bytes(code, fields)
        self.status = code
        if not self.conn.closed and self.conn.transport is not None:
            self._written = True
            self.conn.transport.write(head + body)
        self._finish()

    def _replay(self) -> None:
        self.conn.replay(self.raw)

    def _cut_answer(self) -> None:
        """End an answer that has begun and cannot be finished."""
        self.conn.abort()  # HTTP/1.1 cannot say it otherwise: the client sees a short body

    def _client_writable(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if not self.finished:
            self.upstream.resume()

    def _stalled(self) -> None:
        self._stall_timer = None
        if not self.finished:
            self.conn.cut("client_send_timeout")

    def _abandon(self) -> None:
        """Forget this exchange without counting it (its request is served again by the full pipeline)."""
        self.finished = True
        self.fwd.exchanges.discard(self)
        request_abandoned()
        self._forget_client()

    def _forget_client(self) -> None:
        self.conn.fast_done()

    def _finish(self) -> None:
        """The exchange ended (answered, failed, cut or stopped): counted, audited, and the client connection
        told (``exchange_done``, which also ends the connection's fast exchange on HTTP/1.1)."""
        if self.finished:
            return
        self.finished = True
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if self._drainer is not None:
            self._drainer.cancel()
            self._drainer = None
        fwd = self.fwd
        fwd.exchanges.discard(self)
        request_finished(self.cluster.name, self.verdict.verb, self.status, self.bytes_out, self.head_seconds)
        if fwd.audit_line is not None and self._stop_reason is None:
            plan = self.plan
            parts = plan.audit_parts
            if parts is None:
                parts = plan.audit_parts = request_line_parts(
                    self.identity, self.verdict, self.cluster.name, "GET", plan.path, self.conn.peer_ip)
            fwd.audit_line(request_line(
                parts, self.request_id.encode("ascii"), self.status, (perf_counter() - self.started) * 1000,
                wall_time(), self.bytes_out))
        elif fwd.audit is not None:
            fwd.audit(self.audit_event())
        self.conn.exchange_done(self.sid)


class CodecFastExchange(FastExchange):
    """A request answered without a task through the client connection's codec, on the request's own
    stream: an HTTP/2 request whose plan (keyed by its decoded head: ``h2_key``) holds, or any GET without
    a body (HTTP/1.1 or HTTP/2) whose decision the full pipeline's checks reach without waiting
    (``forward.Exchange.start_direct``), which leaves a plan behind when ``key`` is given. Requests on other
    HTTP/2 streams go on meanwhile. A stream that may not be written (a full socket buffer, a shut
    window) waits like the full pipeline (``ClientConnection.drain``), the upstream paused meanwhile."""

    __slots__ = ("key", "request", "_block")

    def __init__(
        self, fwd: Forwarder, conn: ClientConnection, plan: Plan, request: RequestHead, upstream: Http1Upstream,
        key: bytes | tuple[Any, ...] | None = None,
    ) -> None:
        """Start the request (``FastExchange.__init__``) on its own stream."""
        self.request = request  # served again by the full pipeline if the upstream fails before answering
        self.key = key  # remembered with ``plan`` once answered
        self._block: bytes | None = None  # HTTP/2: the answer's head as an HPACK block (``raw_head``)
        FastExchange.__init__(self, fwd, conn, plan, b"", upstream, request.stream_id)

    def on_body(self, data: bytes) -> None:  # pragma: no cover - a planned request has no body (content-length 0)
        pass

    def on_end(self) -> None:
        pass

    def raw_head(self, data: bytes) -> int | None:
        """As ``FastExchange.raw_head`` when the codec can write such a head for this request (HTTP/1.1,
        keep-alive, no HEAD; ``Http1ServerConnection.takes_relayed_head``). HTTP/2 takes the same answers
        as the HPACK block of their head (``relayed_block``: written in C in one pass over the head's lines,
        without the parser's call per field), which its codec frames."""
        codec = self.conn.codec
        if codec.http_version == "2":
            if self.finished:
                return None
            taken = relayed_block(data, self.request_id.encode("ascii"))
            if taken is None:
                return None
            self._block, self.status, length, body = taken
            self._head = body  # the body's bytes that came with the head, sent after it
            self._length = length
            self.bytes_out = len(body)
            self.head_seconds = perf_counter() - self.started
            return length - len(body)
        if not codec.takes_relayed_head(self.sid):
            return None
        return FastExchange.raw_head(self, data)

    def _send_relayed_head(self, end: bool = False) -> None:
        """The head ``raw_head`` took to the codec (HTTP/1.1: as bytes; HTTP/2: its HPACK block), then the body's
        bytes that came with it; ``end``: they are the whole answer (the stream ends with them)."""
        relayed = self._head
        if relayed is None:
            return
        self._head = None
        self._written = True
        received = self.bytes_out  # the body's bytes that came with the head (no more counted yet)
        conn = self.conn
        block = self._block
        if block is not None:
            self._block = None
            conn.send_head_block(self.sid, block, end and not received)
            if received:
                conn.send_body(self.sid, relayed, end)
        elif received:
            conn.send_relayed_head(self.sid, relayed[:-received], self._length)
            conn.send_body(self.sid, relayed[-received:], end)
        else:
            conn.send_relayed_head(self.sid, relayed, self._length)

    def _send_head(self, status: int, fields: list[tuple[bytes, bytes]]) -> None:
        self._written = True
        length = content_length(fields)
        self._length = -1 if length is None else length
        self.conn.send_head(ResponseHead(self.sid, status, fields, content_length=length))

    def on_data(self, data: bytes) -> bool:
        if self.finished:
            return False
        if self._head is not None:
            self._send_relayed_head()
        self.bytes_out += len(data)
        conn = self.conn
        if self.bytes_out == self._length:  # the last bytes end the stream (no frame of its own)
            conn.send_body(self.sid, data, True)
            conn.flush_soon()
            return False
        conn.send_body(self.sid, data)
        if conn.codec.http_version == "2" and len(data) < _FLUSH_AT_ONCE:
            conn.flush_soon()  # answers of several streams finished in one loop iteration leave in one write
        else:
            # Written now, so that the transport says whether it takes more: one read of the upstream's TLS
            # can bring a whole large answer, and batched (HTTP/1.1 answers one at a time; h2 pieces this
            # large, or a client granting huge windows) it would go past the pause into kubegate's memory.
            conn.flush()
        if conn.writable(self.sid) or conn.closed:
            return False
        if self._drainer is None:  # the client (or the stream's window) is behind: wait for it, upstream paused
            self._drainer = self.fwd.loop.create_task(self._drain())
        return True

    async def _drain(self) -> None:
        try:
            await self.conn.drain(self.sid)
        finally:
            self._drainer = None
        if not self.finished:
            self.upstream.resume()

    def on_done(self) -> None:
        if self.finished:
            return
        if self._head is not None:
            self._send_relayed_head(True)
        self._written = True
        self.conn.send_end(self.sid)  # nothing more when the answer's last bytes ended the stream
        self.conn.flush_soon()
        self._done = True  # the upstream connection gives itself back to its pool on return (``_maybe_idle``)
        self._finish()
        if self.key is not None:
            self.conn.remember(self.key, self.plan)

    def _cut_answer(self) -> None:
        self.conn.reset(self.sid)

    def _answer(self, code: int, message: str) -> None:
        body, fields = self._status_answer(code, message)
        self.status = code
        self._written = True
        conn = self.conn
        conn.send_head(ResponseHead(self.sid, code, fields, content_length=len(body)))
        conn.send_body(self.sid, body, end_stream=True)
        conn.flush()
        self._finish()

    def _replay(self) -> None:
        self.conn.start_exchange(self.request, ended=True)

    def _forget_client(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            self._drainer = None
        self.conn.exchanges.pop(self.sid, None)


_FIELD_NAME = itemgetter(0)


def h2_key(head: RequestHead) -> tuple[Any, ...] | None:
    """The plan key of an HTTP/2 request (its target, authority and fields), or None when the fast path
    never takes it (anything but a GET without a body). The fields are ordered by name (a stable sort:
    the values of one name keep their order, which is part of the request): Go's HTTP/2 client, kubectl's,
    writes them in map order, another order for each request."""
    if head.method != "GET" or head.content_length != 0:
        return None
    return (head.target, head.authority, tuple(sorted(head.headers, key=_FIELD_NAME)))

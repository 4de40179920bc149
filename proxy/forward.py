"""The per-request pipeline: route → authorize once → rewrite headers once → stream both ways.

``Forwarder`` holds what every request shares (cluster source, policy, pools, catalogs, limits, metrics,
audit); ``Exchange`` is one request. Its work after the head is bytes only: the response body goes
through the decision's filter when there is one, and otherwise straight to the client codec. Each
chunk is written and flushed as it arrives (watch events, ``logs -f``), then the exchange waits for the
client side to drain before crediting the upstream (``consumed``): a slow reader slows the server.
No timeout applies to a body in flight; only the upstream response head has one.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from certs.locks import StateUnavailable
from discovery.model import Cluster, ClusterSource
from proxy import metrics
from proxy.audit import request_audit_event
from proxy.catalogs import CatalogCache
from proxy.endpoints import PREFIX, LocalExchange, LocalHandler, endpoint_name, no_identity
from proxy.fastpath import CodecFastExchange, FastExchange, Plan
from proxy.headers import REQUEST_ID_HEADER, rewrite_request_headers, rewrite_response_headers
from proxy.identity import IdentityCache
from proxy.policy import Policy, Verdict
from proxy.protocol import protobuf_watch
from proxy.protocol.events import Headers, ProtocolError, RequestHead, ResponseHead, ServerLimits
from proxy.recording.join import SESSIONS_PREFIX
from proxy.relay.live import LiveRelay
from proxy.routing import Route, pinned_route, split_target, upstream_target
from proxy.throttled_log import ThrottledLog
from proxy.tls import check_client_certificate
from proxy.upgrade import upgrade_kind
from proxy.upstream import ClusterPools, UpstreamError, UpstreamStream
from proxy.upstream.base import BodyBuffer
from proxy.upstream.http1 import Http1Exchange, encode_request_head
from proxy.upstream.pool import ClusterPool
from rbac.identity import Identity
from rbac.status import REASONS, status_body

log = logging.getLogger("kubegate.proxy")

_JSON = b"application/json"
_REQUEST_BODY_HIGH_WATER = 1024 * 1024
_REPLAYABLE = frozenset({"GET", "HEAD", "OPTIONS"})
# A request carrying one of these is never remembered for the fast path (framing, connection management,
# interim answers: the full codec handles them).
_UNPLANNED_HEADERS = frozenset({b"connection", b"expect", b"transfer-encoding", b"content-length", b"upgrade", b"te"})


def _bodiless_get(head: RequestHead) -> bool:
    """A GET with no body, over HTTP/1.1 or h2: what the fast path serves."""
    return head.method == "GET" and head.content_length == 0 and head.http_version != "1.0"


def _answered_as_is(verdict: Verdict) -> bool:
    """The decision needs nothing of kubegate between the upstream and the client: no response filter, no
    review to take part in, the query unchanged, the resource known to the catalog."""
    return verdict.filter is None and verdict.review is None and verdict.query is None and not verdict.catalog_miss


def _plannable_fields(head: RequestHead) -> bool:
    """No field that makes a request's framing or connection handling other than the plain case."""
    return not any(name in _UNPLANNED_HEADERS for name, _ in head.headers)


class RequestBodyTimeout(Exception):
    """The request body kubegate waits for whole did not arrive within ``request_body_timeout``."""
# Largest create body read to find the object's name when max_body_bytes is not set (the apiserver's own
# default request body limit).
_NAME_BODY_LIMIT = 3 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ProxySettings:
    header_timeout: float = 10.0
    idle_timeout: float = 90.0
    max_connections: int = 20000
    max_header_bytes: int = 64 * 1024
    shutdown_grace: float = 10.0
    response_head_timeout: float = 60.0
    tap_sessions: bool = True  # decode exec/attach/portforward streams for the audit (exit code, bytes)
    max_body_bytes: int | None = None  # request bodies larger than this are refused (413); None: streamed
    h2_initial_window: int = 1024 * 1024
    h2_max_concurrent_streams: int = 1000
    h2_max_resets_per_second: int = 200  # streams reset by the client (or refused as malformed)
    h2_max_control_frames_per_second: int = 200  # PING, SETTINGS (each kind)
    client_write_buffer_max: int = 64 * 1024 * 1024  # bytes queued for a client that does not read
    request_body_timeout: float = 60.0  # a request body must arrive whole within this of its head
    http1_max_pipelined: int = 64  # HTTP/1.1 requests in flight on one connection before reading pauses
    client_send_timeout: float = 60.0  # a client that takes no response bytes this long has stalled


def _request_ids() -> Callable[[], str]:
    """Request ids ``<pid><time>-<counter>`` (hex). Made by C code only (``map`` over a counter): a
    Python function here cost a frame, ~1,000 instructions, on every request."""
    prefix = f"{os.getpid():x}{int(time.time()) & 0xFFFFFF:06x}"
    return map(f"{prefix}-%x".__mod__, itertools.count(1)).__next__


def stream_kind(verdict: Verdict, head: RequestHead, path: str, query: str) -> str | None:
    """The long-lived stream kind of a request (for metrics and closing on expiry), or None."""
    if verdict.verb == "watch" or "watch=true" in query or "watch=1" in query or "/watch/" in path:
        return "watch"
    if path.endswith("/log") and "follow=true" in query:
        return "log"
    if head.upgrade:
        return upgrade_kind(path)
    return None


class Forwarder:
    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        clusters: ClusterSource,
        policy: Policy,
        pools: ClusterPools,
        catalogs: CatalogCache,
        settings: ProxySettings,
        audit: Callable[[dict[str, Any]], None] | None = None,
        locks: Any = None,
        identity_cache: IdentityCache | None = None,
        clock: Callable[[], datetime] | None = None,
        recordings: Any = None,
        endpoints: dict[str, LocalHandler] | None = None,
    ) -> None:
        self.loop = loop
        self.endpoints = dict(endpoints or {})  # /kubegate/<name>/… answered by kubegate itself
        self.clusters = clusters
        # ``clusters.get``; the registry's live view's when it has one (C code, no Python frame per request).
        served = getattr(clusters, "served", None)
        self.served_cluster: Callable[[str], Cluster | None] = served.get if served is not None else clusters.get
        self.policy = policy
        self.pools = pools
        self.catalogs = catalogs
        self.settings = settings
        self.audit = audit
        # Audit lines the fast path encodes itself (proxy.audit.request_line), when the sink takes them.
        self.audit_line: Callable[[bytes], None] | None = getattr(audit, "append_line", None)
        self.recordings = recordings  # proxy.recording.Recordings, or None: sessions are not recorded
        self.locks = locks
        self.identities = identity_cache or IdentityCache()
        self.clock = clock or (lambda: datetime.now(UTC))
        # The HTTP/1.1 fast path (proxy.fastpath) checks the role set and certificate expiry itself: only
        # with the role source's own objects and the real clock (tests that fake the clock do without it).
        self.role_source: Any = getattr(policy, "roles", None)
        self.fast_path = clock is None and callable(getattr(self.role_source, "current", None))
        self._swept_roles: object = None  # the role set the last sweep decided streams with
        self.limits = ServerLimits(
            max_header_bytes=settings.max_header_bytes,
            max_body_bytes=settings.max_body_bytes,
            h2_initial_window=settings.h2_initial_window,
            h2_max_concurrent_streams=settings.h2_max_concurrent_streams,
            h2_max_resets_per_second=settings.h2_max_resets_per_second,
            h2_max_control_frames_per_second=settings.h2_max_control_frames_per_second,
        )
        self.connections: set[Any] = set()
        self.exchanges: set[Exchange] = set()
        self.next_request_id = _request_ids()
        self.shutting_down = False
        self._codec_h1: Any = None
        self._codec_h2: Any = None
        self.throttled_log = ThrottledLog(log)  # lines about hostile clients, one a second per reason

    # --- connections --------------------------------------------------------------------------------
    def identify(self, der: bytes) -> tuple[str | None, Identity | None]:
        try:
            cert, identity = self.identities.get(der)
        except Exception as exc:  # unparsable certificate or kubegate extension
            return f"cannot read identity: {exc}", None
        # Expired certificates pass the handshake and this check: every request then gets a 401 Status
        # saying so (kubectl prints it) instead of a TLS alert that kubectl shows as a bare EOF.
        problem = check_client_certificate(cert, self.clock(), allow_expired=True)
        if problem is not None:
            return problem, None
        if not identity.user:
            return "certificate has no common name", None
        return None, identity

    def new_codec(self, h2: bool) -> Any:
        if h2:
            from proxy.protocol.http2 import Http2ServerConnection

            return Http2ServerConnection(self.limits)
        from proxy.protocol.http1 import Http1ServerConnection

        return Http1ServerConnection(self.limits)

    def connection_opened(self, conn: Any) -> None:
        self.connections.add(conn)
        metrics.CONNECTIONS.inc()

    def connection_closed(self, conn: Any) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            metrics.CONNECTIONS.dec()

    def handshake_failed(self, reason: str) -> None:
        metrics.TLS_HANDSHAKE_FAILURES.labels(reason).inc()

    def connection_rejected(self, reason: str) -> None:
        metrics.CONNECTIONS_REJECTED.labels(reason).inc()

    def abuse(self, peer_ip: str, reason: str) -> None:
        """A client was cut off (a flood, a client that does not read, a body that does not come): counted by
        reason, logged at most once a second per reason."""
        metrics.CONNECTIONS_REJECTED.labels(reason).inc()
        self.throttled_log.info(reason, "hostile or stalled client cut off", {"peer": peer_ip, "reason": reason})

    def protocol_error(self, conn: Any, event: ProtocolError) -> None:
        metrics.PROTOCOL_ERRORS.labels(str(event.status)).inc()
        self.throttled_log.info(
            f"protocol_error_{event.status}",
            "client request refused by the HTTP codec",
            {"peer": conn.peer_ip, "status": event.status, "problem": event.message},
        )

    def new_exchange(self, conn: Any, head: RequestHead) -> Exchange | LocalExchange:
        own = head.target.startswith(PREFIX)
        if own:
            name = endpoint_name(head.path)
            handler = self.endpoints.get(name) if name else None
            if handler is not None:
                return LocalExchange(self, conn, head, name, handler)  # type: ignore[arg-type]
        if conn.identity is None:  # no client certificate: nothing but kubegate's endpoints is served
            return LocalExchange(self, conn, head, "unauthenticated", no_identity)
        if own and head.path.startswith(SESSIONS_PREFIX):
            return SessionJoinExchange(self, conn, head)
        return Exchange(self, conn, head)

    # --- long-lived streams -------------------------------------------------------------------------
    def sweep(self) -> None:
        """End the long-lived streams of identities whose certificate expired, that were locked (the lock
        list is asked once per identity per sweep) or whose roles no longer allow the stream (decided
        again, only in a sweep that finds a new role set: idle watches cost nothing otherwise)."""
        now = self.clock()
        locked: dict[int, str | None] = {}
        watcher = getattr(self.policy, "roles", None)
        role_set = watcher.current() if watcher is not None else object()  # another policy: always decide
        recheck = role_set is not self._swept_roles
        self._swept_roles = role_set
        head_started_before = time.perf_counter() - self.settings.response_head_timeout
        for ex in list(self.exchanges):
            if ex.kind is None or ex.finished:
                if isinstance(ex, FastExchange) and ex.started < head_started_before:
                    ex.head_timed_out()
                continue
            identity = ex.identity
            if identity.not_after is not None and identity.not_after <= now:
                ex.stop(expired_message(identity), 401)
                continue
            if self.locks is not None:
                key = id(identity)
                if key not in locked:
                    locked[key] = self.locks.is_locked(identity)
                if locked[key]:
                    ex.stop(f"kubegate ended this stream: {locked[key]}", 403)
                    continue
            revoked = self._revoked(ex) if recheck else None
            if revoked is not None:
                ex.stop(f"kubegate ended this stream: your roles no longer allow it: {revoked}", 403)

    def _revoked(self, ex: Exchange) -> str | None:
        """Why the current roles deny what this long-lived exchange was allowed, or None."""
        if ex.cluster is None or ex.verdict is None or not ex.verdict.allowed:
            return None
        head = ex.head
        route = split_target(head.target)
        if route is None and ex.identity.pinned_cluster:
            route = pinned_route(ex.identity.pinned_cluster, head.target)
        if route is None:
            return None
        if not self.policy.visible(ex.identity, ex.cluster):
            return f"they no longer give access to cluster {ex.cluster.name!r}"
        verdict = self.policy.decide(ex.identity, ex.cluster, head.method, route.path, route.query, head.headers, ex.catalog)
        if verdict.allowed:
            return None
        try:
            return str(json.loads(verdict.body)["message"])
        except (ValueError, KeyError, TypeError):
            return verdict.reason or "denied"

    def stop_cluster(self, name: str, *, removed: bool = False) -> None:
        """The cluster was removed (404: clients stop) or changed its address or credentials (503: clients
        such as kubectl get -w watch again, through the new connection): end its streams, saying so."""
        if removed:
            reason, code = f"kubegate ended this stream: cluster {name} was removed", 404
        else:
            reason, code = f"kubegate ended this stream: cluster {name} changed (address or credentials)", 503
        for ex in list(self.exchanges):
            if ex.cluster is not None and ex.cluster.name == name and not ex.finished:
                ex.stop(reason, code)


class Exchange:
    """One request, from its head to the end of its response."""

    __slots__ = (
        "fwd", "conn", "head", "sid", "identity", "request_id", "started", "body_parts", "body_size",
        "request_ended", "stream", "task", "finished", "kind", "cluster", "verdict", "status",
        "bytes_out", "bytes_in", "_body_waiter", "reset", "_response_started", "_stop_reason", "_stop_code",
        "_stop_note", "_at_line_end", "_frames", "upgrade",
        "catalog", "full_body", "_unacked", "_ack_task", "error_headers", "plan_key", "_roles",
        "_relay_waiter", "_locks_generation",
    )  # fmt: skip

    def __init__(self, fwd: Forwarder, conn: Any, head: RequestHead) -> None:
        self.fwd = fwd
        self.conn = conn
        self.head = head
        self.sid = head.stream_id
        self.identity: Identity = conn.identity
        self.request_id = fwd.next_request_id()
        self.started = time.perf_counter()
        self.body_parts: list[bytes] = []
        self.body_size = 0
        self.request_ended = False
        self.stream: UpstreamStream | None = None
        self.task: asyncio.Task[None] | None = None
        self.finished = False
        self.kind: str | None = None
        self.cluster: Cluster | None = None
        self.verdict: Verdict | None = None
        self.status = 0
        self.bytes_out = 0
        self.bytes_in = 0
        self._body_waiter: asyncio.Future[None] | None = None
        self.reset = False
        self._response_started = False
        self._stop_reason: str | None = None
        self._stop_code = 503
        # How a stop is told to the client of a long-lived response: "watch" (an ERROR event, JSON
        # watches), "log" (a last line, then an abort) or "" (nothing can be said: just end).
        self._stop_note = ""
        self._at_line_end = True  # the relayed body so far ends a line (an event may be appended)
        self._frames: protobuf_watch.FrameBoundary | None = None  # a protobuf watch's frames (an event goes between two)
        self.upgrade: Any = None
        self.catalog: Any = None
        self.full_body: bytes | None = None
        self._unacked = 0
        self._ack_task: asyncio.Task[None] | None = None
        self.error_headers: list[tuple[bytes, bytes]] = []  # extra headers for kubegate's own error answer
        # the request's bytes (HTTP/1.1) or decoded head (HTTP/2), when the fast path may remember it
        self.plan_key: bytes | tuple[Any, ...] | None = None
        self._roles: Any = None  # the role set the decision was made with (for the fast path's plan)
        self._locks_generation: object | None = None  # the lock list's generation the lock check saw
        # The body relay of a long-lived response by callbacks (_relay_live): the relay task's waiter.
        self._relay_waiter: asyncio.Future[None] | None = None

    # --- events from the client codec -------------------------------------------------------------
    def start(self) -> None:
        if self.fwd.fast_path and self.start_direct():
            return
        self.start_pipeline()

    def start_pipeline(self) -> None:
        """Serve the request with the full pipeline (a task: it may wait for a catalog, credentials, a
        connection, a body)."""
        self.fwd.exchanges.add(self)
        metrics.request_started()
        self.task = self.fwd.loop.create_task(self._run())

    def start_direct(self) -> bool:
        """Serve a GET without a body at once when everything its answer needs is at hand — the route, the
        cached catalog, a memoised or synchronous decision that allows it as is (no filter, review or
        changed query; not long-lived), fresh upstream credentials, an idle HTTP/1.1 upstream connection —
        through a ``fastpath.CodecFastExchange`` (no task); or refuse it at once when the checks before the
        decision refuse it. False: nothing was done, the full pipeline serves it."""
        head = self.head
        if not _bodiless_get(head):
            return False
        fwd = self.fwd
        first = self.authorize()
        if first[0] is None:
            fwd.exchanges.add(self)
            metrics.request_started()
            _, code, body = first
            self._respond_error(code, body, "denied")  # type: ignore[arg-type]
            self._finish()
            return True
        cluster, route = first
        pool = fwd.pools.get(cluster)  # type: ignore[arg-type]
        catalog = fwd.catalogs.cached(cluster, pool)  # type: ignore[arg-type]
        if catalog is None or not pool.credentials_fresh:
            return False
        roles = fwd.role_source.current()
        verdict = fwd.policy.decide(self.identity, cluster, "GET", route.path, route.query, head.headers, catalog)  # type: ignore[arg-type, union-attr]
        if (
            not verdict.allowed
            or not _answered_as_is(verdict)
            or stream_kind(verdict, head, route.path, route.query) is not None  # type: ignore[union-attr]
            or fwd.role_source.current() is not roles
        ):
            return False
        upstream = pool.idle_http1()
        if upstream is None:
            return False
        headers = self._upstream_headers(verdict, pool)
        plan = self._plan(cluster, roles, catalog, pool, encode_request_head("GET", upstream_target(cluster, route), headers), verdict)  # type: ignore[arg-type]
        key = self.plan_key if _plannable_fields(head) else None
        CodecFastExchange(fwd, self.conn, plan, head, upstream, key)  # started as it is made
        return True

    def start_upgrade(self, trailing: bytes) -> None:
        from proxy.upgrade import UpgradeSession

        self.fwd.exchanges.add(self)
        metrics.request_started()
        self.upgrade = UpgradeSession(self, trailing)
        self.task = self.fwd.loop.create_task(self.upgrade.run())

    def on_body(self, data: bytes) -> None:
        self.bytes_in += len(data)
        stream = self.stream
        if stream is not None:
            stream.send_body(data)
            if stream.writable and not self._unacked:
                self.conn.acknowledge(self.sid, len(data))
                return
            # The upstream is not taking bytes as fast: hold the client's credit (h2) or stop reading
            # from it (HTTP/1.1) until they have left.
            self._unacked += len(data)
            if self.conn.codec.http_version != "2":
                self.conn.pause_reading()
            if self._ack_task is None:
                self._ack_task = self.fwd.loop.create_task(self._ack_after_drain(stream))
            return
        self.body_parts.append(data)
        self.body_size += len(data)
        if self.body_size > _REQUEST_BODY_HIGH_WATER and self.conn.codec.http_version != "2":
            self.conn.pause_reading()
        self._wake_body()

    async def _ack_after_drain(self, stream: UpstreamStream) -> None:
        try:
            while self._unacked and not self.reset:
                await stream.drain()
                unacked, self._unacked = self._unacked, 0
                self.conn.acknowledge(self.sid, unacked)
            self.conn.resume_reading()
            self.conn.flush()
        finally:
            self._ack_task = None

    def on_end(self) -> None:
        self.request_ended = True
        if self.stream is not None:
            self.stream.end_request()
        self._wake_body()

    def on_reset(self) -> None:
        """The client abandoned the request (stream reset or connection gone)."""
        if self.finished:
            return
        self.reset = True
        if self.stream is not None:
            self.stream.abort()
        if self.upgrade is not None:
            self.upgrade.client_gone()
        elif self.task is not None and not self.task.done():
            self.task.cancel()
            # A task cancelled before its first step never runs _run (nor its finally): finish here then.
            self.task.add_done_callback(self._finish_if_never_run)
        self._wake_body()

    def _finish_if_never_run(self, task: asyncio.Task[None]) -> None:
        if not self.finished:
            self._finish()

    def stop(self, reason: str, code: int = 503) -> None:
        """End a long-lived response and tell the client why (``reason``, a sentence; ``code`` the HTTP
        code of the Status that carries it), as far as its protocol can carry it: a JSON watch gets an
        ERROR event with the Status (kubectl prints it), ``logs -f`` a last line and an abort (kubectl
        exits non-zero), exec/attach the error channel's Status (see ``UpgradeSession.stop``)."""
        self._stop_reason = reason
        self._stop_code = code
        log.info("ending stream", extra={"request_id": self.request_id, "user": self.identity.user, "reason": reason})
        if self.upgrade is not None:
            self.upgrade.stop(reason, code)
            return
        if self.stream is not None:
            self.stream.abort()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def _tell_stop(self) -> None:
        """The client of a stopped long-lived response learns why (see ``stop``); then its response ends."""
        conn, sid, reason = self.conn, self.sid, self._stop_reason or "stream ended"
        status = status_body(self._stop_code, REASONS.get(self._stop_code, "InternalError"), reason)
        if not self._response_started:  # stopped before the upstream's head (a watch's comes with its
            self._respond_error(self._stop_code, status, "stopped")  # first event): an ordinary error answer
            return
        if self._stop_note == "watch" and self._at_line_end:
            event = b'{"type":"ERROR","object":' + status.rstrip(b"\n") + b"}\n"  # kubectl get -w prints it
            self.bytes_out += len(event)
            conn.send_body(sid, event)
        elif self._frames is not None and self._frames.at_boundary:  # client-go returns it as an error
            event = protobuf_watch.error_event(self._stop_code, REASONS.get(self._stop_code, "InternalError"), reason)
            self.bytes_out += len(event)
            conn.send_body(sid, event)
        elif self._stop_note == "log":
            # A log is text: the reason is its last line. Not a clean end: kubectl logs -f then reports the
            # broken stream and exits non-zero (after a clean end it exits 0, as if the log had finished).
            line = (b"" if self._at_line_end else b"\n") + f"kubegate: {reason}\n".encode()
            self.bytes_out += len(line)
            conn.send_body(sid, line)
            conn.reset(sid)
            return
        conn.send_end(sid)  # a watch ends cleanly (an abort only adds a decode error to what kubectl prints)
        conn.flush()

    def _wake_body(self) -> None:
        waiter = self._body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- the pipeline -------------------------------------------------------------------------------
    def authorize(self) -> tuple[Cluster, Route] | tuple[None, int, bytes]:
        """The checks before the role decision (no I/O): route, cluster visibility, certificate expiry,
        locks, cluster health. Returns (cluster, route) or (None, status, Status body)."""
        head = self.head
        fwd = self.fwd
        identity = self.identity
        refused = self.identity_refusal()
        if refused is not None:
            return None, *refused
        route = split_target(head.target)
        if route is None and identity.pinned_cluster:
            route = pinned_route(identity.pinned_cluster, head.target)
        if route is None:
            return None, 404, status_body(
                404, "NotFound", f"the path {head.path!r} is not served here: kubegate serves clusters at /k8s/clusters/<name>/"
            )
        cluster = fwd.served_cluster(route.cluster_name)
        if cluster is None or not fwd.policy.visible(identity, cluster):
            metrics.DENIALS.labels("cluster_not_visible" if cluster else "unknown_cluster").inc()
            return None, 404, status_body(
                404, "NotFound", f'cluster "{route.cluster_name}" not found', {"name": route.cluster_name, "kind": "clusters"}
            )
        self.cluster = cluster
        if cluster.health == "unhealthy":
            # The health checker found the cluster broken: answer now instead of connecting (and maybe
            # hanging until the connect timeout). "unknown" (not checked yet) still forwards.
            return None, 503, self._unhealthy(cluster)
        return cluster, route

    def identity_refusal(self) -> tuple[int, bytes] | None:
        """(code, Status body) when the caller's certificate has expired (401) or is locked (403)."""
        identity = self.identity
        fwd = self.fwd
        if identity.not_after is not None and identity.not_after <= fwd.clock():
            metrics.DENIALS.labels("certificate_expired").inc()
            message = expired_message(identity)
            # kubectl's discovery (its first request) prints no Status message for a 401, but it prints
            # Warning headers: the person sees why either way.
            self.error_headers = [(b"warning", warning_header(message))]
            return 401, status_body(401, "Unauthorized", message)
        locks = fwd.locks
        if locks is not None:
            self._locks_generation = locks.generation  # read before the check: a change after it is a new one
            reason = locks.is_locked(identity)
            if reason:
                if isinstance(reason, StateUnavailable):  # shared state out of reach too long: fail closed
                    metrics.DENIALS.labels("state_unavailable").inc()
                    return 503, status_body(503, "ServiceUnavailable", reason)
                metrics.DENIALS.labels("locked").inc()
                self.error_headers = [(b"warning", warning_header(f"kubegate: {reason}"))]  # for kubectl's discovery
                return 403, status_body(403, "Forbidden", reason)
        return None

    async def _refuse(self, code: int, body: bytes) -> None:
        try:
            self._respond_error(code, body, "denied")
        finally:
            self._finish()

    def _unhealthy(self, cluster: Cluster) -> bytes:
        detail = cluster.health_detail or "failed its health check"
        message = f'cluster "{cluster.name}" is unhealthy: {detail}'
        metrics.upstream_error(cluster.name, "unhealthy")
        log.warning(
            "cluster unhealthy: request refused",
            extra={"request_id": self.request_id, "cluster": cluster.name, "code": 503, "problem": detail},
        )
        # kubectl's discovery (its first request) reads no Status from an error (client-go returns its
        # generic "the server is currently unable to handle the request"), but it prints Warning headers.
        self.error_headers = [(b"warning", warning_header(message))]
        return status_body(
            503, "ServiceUnavailable", message, {"name": cluster.name, "kind": "clusters", "causes": [
                {"reason": "ClusterUnhealthy", "message": detail}]},
        )

    async def _decide(self) -> tuple[Cluster, Verdict, str] | tuple[None, int, bytes]:
        first = self.authorize()
        if first[0] is None:
            return first
        cluster, route = first
        fwd = self.fwd
        head = self.head
        pool = fwd.pools.get(cluster)  # type: ignore[arg-type]
        catalog = fwd.catalogs.cached(cluster, pool)  # type: ignore[arg-type]
        if catalog is None:
            catalog = await fwd.catalogs.fetch(cluster, pool)  # type: ignore[arg-type]
        roles = fwd.role_source.current() if self.plan_key is not None else None
        verdict = fwd.policy.decide(self.identity, cluster, head.method, route.path, route.query, head.headers, catalog)  # type: ignore[arg-type, union-attr]
        if roles is not None and fwd.role_source.current() is roles:
            self._roles = roles
        if verdict.catalog_miss and fwd.catalogs.may_refresh(cluster):  # type: ignore[arg-type]
            catalog = await fwd.catalogs.fetch(cluster, pool, force=True)  # type: ignore[arg-type]
            verdict = fwd.policy.decide(self.identity, cluster, head.method, route.path, route.query, head.headers, catalog)  # type: ignore[arg-type, union-attr]
        if not verdict.allowed and verdict.status == 403 and verdict.verb == "create" and not verdict.name:
            # A create names its object in the body only: a role limited to certain names allows it or not
            # by that name. Buffer the (bounded) body, decide with it; the buffered body is then forwarded.
            body = await self._body_within(fwd.settings.max_body_bytes or _NAME_BODY_LIMIT)
            if body:
                verdict = fwd.policy.decide(self.identity, cluster, head.method, route.path, route.query, head.headers, catalog, body=body)  # type: ignore[arg-type, union-attr]
        self.verdict = verdict
        self.catalog = catalog
        if not verdict.allowed:
            metrics.DENIALS.labels(verdict.reason or "denied").inc()
            return None, verdict.status or 403, verdict.body or status_body(403, "Forbidden", "forbidden by kubegate roles")
        target = upstream_target(cluster, route)  # type: ignore[arg-type]
        if verdict.query is not None and verdict.query != route.query:  # type: ignore[union-attr]
            target = target.split("?", 1)[0] + ("?" + verdict.query if verdict.query else "")
        return cluster, verdict, target  # type: ignore[return-value]

    async def _run(self) -> None:
        fwd = self.fwd
        conn = self.conn
        head = self.head
        try:
            try:
                decided = await self._decide()
                if decided[0] is None:
                    _, code, body = decided
                    self._respond_error(code, body, "denied")  # type: ignore[arg-type]
                    return
                cluster, verdict, target = decided
                assert isinstance(verdict, Verdict)
                self.kind = stream_kind(verdict, head, head.path, head.query)
                pool = fwd.pools.get(cluster)
                await pool.ensure_credentials()
                if verdict.review == "selfsubjectaccessreviews":
                    answer = fwd.policy.review_access(self.identity, cluster, await self._whole_body(), self.catalog)
                    if answer is not None:
                        self._respond(201, answer)
                        return
                headers = self._upstream_headers(verdict, pool)
                body = await self._whole_body_if_ready()
                for attempt in (1, 2):
                    stream = await pool.open(
                        head.method, target, headers, body=body, streaming_body=body is None, long_lived=self.kind is not None
                    )
                    self.stream = stream
                    if body is None:
                        for part in self._take_parts():
                            stream.send_body(part)
                        if self.request_ended:
                            stream.end_request()
                    if self.kind is not None:
                        metrics.OPEN_STREAMS.labels(self.kind).inc()
                    try:
                        await self._relay_response(stream, verdict)
                        if self.plan_key is not None:
                            self._remember(pool, target, headers, stream)
                        break
                    except UpstreamError as exc:
                        # A pooled connection the server had just closed: retry a replayable request once.
                        if attempt == 2 or exc.kind != "reset" or self._response_started or body is None or head.method not in _REPLAYABLE:
                            raise
                        metrics.upstream_error(cluster.name, "retried")
                        stream.abort()
                    finally:
                        if self.kind is not None:
                            metrics.OPEN_STREAMS.labels(self.kind).dec()
            except RequestBodyTimeout:
                self._body_timed_out()
            except UpstreamError as exc:
                metrics.upstream_error(self.cluster.name if self.cluster else "", exc.kind)
                if self._stop_reason is not None:
                    self._tell_stop()  # kubegate ended the stream (and so its upstream): say why
                elif self._response_started:
                    log.warning("upstream failed mid-response", extra={"request_id": self.request_id, "problem": exc.message})
                    conn.reset(self.sid)
                    self.status = self.status or 502
                else:
                    log.warning("upstream error", extra={"request_id": self.request_id, "code": exc.status, "problem": exc.message})
                    self._respond_error(exc.status, status_body(exc.status, REASONS.get(exc.status, "InternalError"), exc.message), exc.kind)
        except asyncio.CancelledError:
            if self._stop_reason is not None:
                self._tell_stop()  # why, as the stream's protocol can say it; then the end
            elif not self.reset:
                conn.reset(self.sid)
        except Exception as exc:
            log.exception("internal error serving request", extra={"request_id": self.request_id})
            if not self._response_started:
                self._respond_error(500, status_body(500, "InternalError", f"kubegate internal error (request id {self.request_id})"), "internal")
            else:
                conn.reset(self.sid)
            del exc
        finally:
            self._finish()

    def _remember(self, pool: ClusterPool, target: str, headers: Headers, stream: UpstreamStream) -> None:
        """Leave the connection a ``fastpath.Plan`` for these request bytes when this exchange was plain: a
        GET without a body, allowed as is (no filter, review or changed query), not long-lived, forwarded
        over HTTP/1.1 with the role set it was decided with."""
        head = self.head
        verdict = self.verdict
        if (
            type(stream) is not Http1Exchange
            or verdict is None
            or self.kind is not None
            or not _answered_as_is(verdict)
            or not _bodiless_get(head)
            or self._roles is None
            or self._stop_reason is not None
            or self.reset
            or self.cluster is None
            or not _plannable_fields(head)
        ):
            return
        plan = self._plan(self.cluster, self._roles, self.catalog, pool, encode_request_head("GET", target, headers), verdict)
        self.conn.remember(self.plan_key, plan)

    def _upstream_headers(self, verdict: Verdict, pool: ClusterPool) -> Headers:
        """The request's header fields as the upstream gets them (``headers.rewrite_request_headers``)."""
        return rewrite_request_headers(
            self.head.headers,
            user=verdict.user or self.identity.user,
            groups=verdict.groups,
            client_ip=self.conn.peer_ip,
            upstream_authority=pool.authority,
            bearer_token=pool.bearer_token,
            accept=verdict.accept,
        )

    def _plan(self, cluster: Cluster, roles: Any, catalog: Any, pool: ClusterPool, upstream_head: bytes, verdict: Verdict) -> Plan:
        not_after = self.identity.not_after
        credentials = pool.credentials
        return Plan(
            cluster=cluster,
            roles=roles,
            catalog=catalog,
            pool=pool,
            credentials=credentials,
            usable_until=min(
                math.inf if not_after is None else not_after.timestamp(),
                -math.inf if credentials is None else pool.fresh_until(credentials),
            ),
            head=upstream_head,
            verdict=verdict,
            path=self.head.path,
            locks_generation=self._locks_generation,
            catalog_entry=self.fwd.catalogs.entry_holding(cluster, catalog),
        )

    async def _whole_body_if_ready(self) -> bytes | None:
        """The request body when it is all here already (or declared small); None to stream it."""
        if self.full_body is not None or self.request_ended:
            return await self._whole_body()
        declared = self.head.content_length
        if declared is not None and declared <= _REQUEST_BODY_HIGH_WATER:
            return await self._whole_body()
        return None

    async def _relay_response(self, stream: UpstreamStream, verdict: Verdict) -> None:
        conn = self.conn
        sid = self.sid
        timeout = self.fwd.settings.response_head_timeout
        timer = self.fwd.loop.call_later(timeout, _head_timeout, stream, self.cluster.name if self.cluster else "")
        try:
            status, up_headers = await stream.response_head()
        finally:
            timer.cancel()
        self.status = status
        if verdict.review == "selfsubjectrulesreviews" and 200 <= status < 300:
            await self._relay_rules_review(stream, status, up_headers)
            return
        filt = verdict.filter() if verdict.filter is not None and 200 <= status < 300 else None
        headers = rewrite_response_headers(up_headers, request_id=self.request_id, body_rewritten=filt is not None)
        length = None
        if filt is None:
            for key, value in up_headers:
                if key == b"content-length":
                    try:
                        length = int(value)
                    except ValueError:
                        length = None
                    break
        conn.send_head(ResponseHead(sid, status, headers, content_length=length))
        self._response_started = True
        if self.kind is not None and 200 <= status < 300:
            self._stop_note = _stop_note(self.kind, up_headers)
            if self._stop_note == "protobuf-watch":
                self._frames = protobuf_watch.FrameBoundary()
        self._observe_head()
        body = stream.body  # type: ignore[attr-defined]
        if not body.size and not body.eof:
            # Nothing of the body is here yet (a watch before its first event, logs -f): the client gets
            # the head now, as from the apiserver, instead of with the first event.
            conn.flush()
        if self.kind is not None:
            await self._relay_live(stream, body, filt)
        else:
            while True:
                data = await stream.read()
                if not data:
                    break
                n = len(data)
                if self._pass_on(data, filt):
                    if body.eof and not body.size and body.error is None:
                        stream.consumed(n)
                        break  # the end goes out with this last chunk: one write
                    conn.flush()
                    await conn.drain(sid)
                stream.consumed(n)
        if filt is not None:
            tail = filt.close()
            if tail:
                self.bytes_out += len(tail)
                conn.send_body(sid, tail)
        conn.send_end(sid)
        conn.flush()
        stream.release()

    def _pass_on(self, data: bytes, filt: Any) -> bool:
        """One body chunk to the client, through the response filter if any; False if it kept it all back."""
        if filt is not None:
            data = filt.feed(data)
            if not data:
                return False
        self.bytes_out += len(data)
        self.conn.send_body(self.sid, data)
        if self._frames is not None:
            self._frames.feed(data)
        elif self._stop_note:
            self._at_line_end = data.endswith(b"\n")
        return True

    async def _relay_live(self, stream: UpstreamStream, body: BodyBuffer, filt: Any) -> None:
        """The body of a long-lived response (watch, ``logs -f``) by callbacks: while the client keeps up,
        the upstream protocol hands each chunk to a ``LiveRelay`` (it goes out and is credited upstream at
        once: no future, no task wakeup per event); this task wakes only when the client falls behind (it
        waits for the client, credits the held bytes, then relays what was buffered meanwhile) and at the end."""
        conn, sid = self.conn, self.sid
        relay = LiveRelay(self, stream, filt, self._frames, bool(self._stop_note))
        relay.at_line_end = self._at_line_end
        try:
            while True:
                while body.size:  # buffered before the relay was attached, or while the client was behind
                    data = await stream.read()
                    n = len(data)
                    if relay.pass_on(data):
                        conn.flush()
                        await conn.drain(sid)
                    stream.consumed(n)
                if body.eof:
                    break
                self._relay_waiter = self.fwd.loop.create_future()
                body.sink = relay
                try:
                    await self._relay_waiter
                finally:  # woken (the client is behind, the body ended) or cancelled (stop, client reset)
                    body.sink = None
                    self._relay_waiter = None
                    relay.settle()
                if relay.held:
                    await conn.drain(sid)
                    held, relay.held = relay.held, 0
                    stream.consumed(held)
        finally:  # what a stop tells the client (_tell_stop) and the audit line count on these
            self.bytes_out += relay.bytes_out
            self._at_line_end = relay.at_line_end
        await stream.read()  # at the end: b"", or the upstream's error raised

    def wake_relay(self) -> None:
        """The ``LiveRelay`` detached itself (the client is behind) or the body ended: the task takes over."""
        waiter = self._relay_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def relay_failed(self, exc: Exception) -> None:
        """The ``LiveRelay`` failed on a chunk: the exchange fails (its task raises ``exc``), not the upstream connection."""
        waiter = self._relay_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def _relay_rules_review(self, stream: UpstreamStream, status: int, up_headers: list[tuple[bytes, bytes]]) -> None:
        chunks = []
        while chunk := await stream.read():
            chunks.append(chunk)
            stream.consumed(len(chunk))
        stream.release()
        assert self.cluster is not None
        try:
            body = self.fwd.policy.restrict_rules(self.identity, self.cluster, b"".join(chunks), self.catalog)
        except ValueError:
            body = status_body(502, "InternalError", f"cluster {self.cluster.name} sent an unreadable SelfSubjectRulesReview")
            status = 502
        self._respond(status, body)

    def _take_parts(self) -> list[bytes]:
        """The request body parts buffered so far; their flow-control credit goes back to the client."""
        parts, self.body_parts = self.body_parts, []
        if self.body_size:
            self.conn.acknowledge(self.sid, self.body_size)
            self.body_size = 0
        self.conn.resume_reading()
        return parts

    async def _body_within(self, limit: int) -> bytes | None:
        """The whole request body when it is at most ``limit`` bytes, else None (what arrived stays buffered
        for whoever answers). Credit for buffered bytes goes back to the client as they arrive, so a body
        bigger than one h2 window or the HTTP/1.1 read high-water mark still arrives in full."""
        if self.full_body is not None:
            return self.full_body if len(self.full_body) <= limit else None
        declared = self.head.content_length
        if declared is not None and declared > limit:
            return None
        received = sum(len(part) for part in self.body_parts)
        while received <= limit and not self.request_ended and not self.reset:
            if self.body_size:
                self.conn.acknowledge(self.sid, self.body_size)
                self.body_size = 0
            self.conn.resume_reading()
            self.conn.flush()
            before = len(self.body_parts)
            self._body_waiter = self.fwd.loop.create_future()
            try:
                await self._body_waiter
            finally:
                self._body_waiter = None
            received += sum(len(part) for part in self.body_parts[before:])
        if received > limit or self.reset:
            return None
        return await self._whole_body()

    async def _whole_body(self) -> bytes:
        """The whole request body; it must have arrived ``request_body_timeout`` after the head (a body
        dribbled in, slowloris-style, would hold the connection and the exchange forever)."""
        if self.full_body is not None:
            return self.full_body
        if not self.request_ended and not self.reset:
            loop = self.fwd.loop
            remaining = self.fwd.settings.request_body_timeout - (time.perf_counter() - self.started)
            timer = loop.call_later(max(0.0, remaining), self._wake_body)
            try:
                while not self.request_ended and not self.reset:
                    if loop.time() >= timer.when():
                        raise RequestBodyTimeout
                    self._body_waiter = loop.create_future()
                    try:
                        await self._body_waiter
                    finally:
                        self._body_waiter = None
            finally:
                timer.cancel()
        self.full_body = b"".join(self._take_parts())
        return self.full_body

    def _body_timed_out(self) -> None:
        """Answer 408 to a request whose body did not arrive in time; the rest of it is not read (HTTP/1.1:
        the connection closes after the answer; HTTP/2: the stream is reset after it)."""
        conn = self.conn
        timeout = self.fwd.settings.request_body_timeout
        self.fwd.abuse(conn.peer_ip, "request_body_timeout")
        http2 = conn.codec.http_version == "2"
        if not http2:
            conn.close()
        body = status_body(408, "Timeout", f"the request body did not arrive within {timeout:g} s")
        self._respond_error(408, body, "request_body_timeout")
        if http2:
            conn.reset(self.sid)

    def _respond(self, code: int, body: bytes) -> None:
        """A complete JSON response of kubegate's own making (review answers)."""
        self.status = code
        headers = [
            (b"content-type", _JSON),
            (b"content-length", str(len(body)).encode()),
            (REQUEST_ID_HEADER, self.request_id.encode()),
        ]
        self.conn.send_head(ResponseHead(self.sid, code, headers, content_length=len(body)))
        self.conn.send_body(self.sid, body, end_stream=True)
        self._response_started = True
        self.conn.flush()
        self._observe_head()

    def _observe_head(self) -> None:
        verb = self.verdict.verb if self.verdict else ""
        cluster = self.cluster.name if self.cluster else ""
        metrics.observe_latency(cluster, verb, time.perf_counter() - self.started)

    def _respond_error(self, code: int, body: bytes, reason: str) -> None:
        if self._response_started or self.reset:
            return
        self.status = code
        conn = self.conn
        if reason != "denied":
            log.info("request refused", extra={"request_id": self.request_id, "code": code, "reason": reason})
        headers = [
            (b"content-type", _JSON),
            (b"content-length", str(len(body)).encode()),
            (REQUEST_ID_HEADER, self.request_id.encode()),
            *self.error_headers,
        ]
        conn.send_head(ResponseHead(self.sid, code, headers, content_length=len(body)))
        conn.send_body(self.sid, body, end_stream=True)
        self._response_started = True
        conn.flush()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        fwd = self.fwd
        fwd.exchanges.discard(self)
        stream = self.stream
        if stream is not None and (self.reset or self.status == 0):
            stream.abort()
        if self._ack_task is not None:
            self._ack_task.cancel()
        verdict = self.verdict
        cluster = self.cluster.name if self.cluster else ""
        verb = verdict.verb if verdict else ""
        metrics.request_finished(cluster, verb, self.status, self.bytes_out)
        if fwd.audit is not None:
            fwd.audit(self.audit_event())
        self.conn.exchange_done(self.sid)

    def audit_event(self) -> dict[str, Any]:
        return request_audit_event(
            self.request_id, self.identity, self.verdict, self.cluster, self.head.method, self.head.path, self.status,
            self.started, self.bytes_out, self.bytes_in, self.conn.peer_ip, self._stop_reason,
        )



def _stop_note(kind: str, up_headers: list[tuple[bytes, bytes]]) -> str:
    """How a stop can be told to the client of this long-lived response (see ``Exchange._tell_stop``)."""
    if kind == "log":
        return "log"
    if kind == "watch":
        for key, value in up_headers:
            if key == b"content-type":
                if value.startswith(b"application/json"):
                    return "watch"
                return "protobuf-watch" if value.startswith(protobuf_watch.CONTENT_TYPE) else ""
    return ""



class SessionJoinExchange(Exchange):
    """``/kubegate/sessions/<id>/stream``: a live session streamed read-only to an observer
    (``proxy.recording.join``), chosen by ``Forwarder.new_exchange`` beside kubegate's other endpoints,
    so that ordinary requests pay no test for it."""

    __slots__ = ()

    def start(self) -> None:
        from proxy.recording.join import serve_join

        self.fwd.exchanges.add(self)
        metrics.request_started()
        refused = self.identity_refusal()  # the listener lets expired certificates through
        self.task = self.fwd.loop.create_task(self._refuse(*refused) if refused else serve_join(self))


def expired_message(identity: Identity) -> str:
    """What kubectl prints for a request with an expired certificate (inside "You must be logged in")."""
    when = identity.not_after.strftime("%Y-%m-%dT%H:%M:%SZ") if identity.not_after else "?"
    if identity.kind == "bot":
        return f"kubegate: the certificate of {identity.user} expired at {when}; is kubegate bot start running?"
    return f"kubegate: your certificate expired at {when}; run kubegate login"


def warning_header(text: str) -> bytes:
    """A ``Warning`` header value (RFC 7234 §5.5, as the apiserver sends: code 299, agent ``-``) that
    client-go prints as ``Warning: <text>``; non-printable and non-ASCII characters become ``?``."""
    clean = "".join(c if " " <= c <= "~" else "?" for c in text)
    return b'299 - "' + clean.replace("\\", "\\\\").replace('"', '\\"').encode("ascii") + b'"'


def _head_timeout(stream: UpstreamStream, cluster: str) -> None:
    head = getattr(stream, "_head", None)
    if head is not None and not head.done():
        head.set_exception(UpstreamError(504, f"cluster {cluster} did not answer in time", "timeout"))
    stream.abort()

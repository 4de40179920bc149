"""Per-cluster upstream connection pools.

``ClusterPool`` keeps, for one cluster: HTTP/2 connections (multiplexed; a new one only when the others
are at the server's concurrent-stream limit) when the API server speaks h2, otherwise idle HTTP/1.1
keep-alive connections; upgrades always get a fresh HTTP/1.1 connection. Bookkeeping is synchronous;
only connecting awaits. Connection failures become ``UpstreamError`` with the status the client gets:
503 unreachable, 502 TLS failure or broken connection, 504 timeout — each naming the cluster.

``ClusterPools`` maps cluster name → pool and drops a pool when its cluster changes or disappears
(open streams on the old connections finish or are ended by the registry listener in the proxy).
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from discovery.model import Cluster, UpstreamCredentials
from discovery.tls import ClusterTLSError
from proxy.protocol.events import Headers
from proxy.routing import upstream_address
from proxy.tls import handshake_within, tls_layer, upstream_context
from proxy.upstream.base import UpstreamError, UpstreamStream
from proxy.upstream.http1 import Http1Upstream
from proxy.upstream.http2 import H2Upstream

log = logging.getLogger("kubegate.proxy.upstream")

# ``proxy.tls_direct.TLSTransport`` where it runs here (else None: uvloop's own TLS transport).
_TLS_LAYER = tls_layer()


@dataclass(frozen=True, slots=True)
class PoolSettings:
    connect_timeout: float = 10.0
    response_head_timeout: float = 60.0
    high_water: int = 256 * 1024  # response bytes buffered per exchange before the upstream is paused
    max_idle_http1: int = 256  # idle keep-alive connections kept per cluster (more are closed after use)
    use_h2: bool = True  # offer h2 by ALPN (HTTP/1.1 when the server does not take it)
    # Which exchanges ride HTTP/2 when the server speaks it: "streams" (watches and followed logs, the
    # long-lived ones, multiplexed so idle watches cost no connection each; short requests use HTTP/1.1
    # keep-alive, which costs far less CPU per request in Python) or "all".
    h2_for: str = "streams"
    credentials_refresh_margin: float = 60.0


class ClusterPool:
    def __init__(self, cluster: Cluster, settings: PoolSettings, on_error: Callable[[str, str], None] | None = None) -> None:
        self.cluster = cluster
        self.settings = settings
        self.host, self.port, self.authority = upstream_address(cluster.server)
        self.server_hostname = cluster.tls_server_name or self.host
        self._on_error = on_error
        # The credentials requests are made with now: a new object after each refresh (``ensure_credentials``).
        self.credentials: UpstreamCredentials | None = None
        self._creds_at = 0.0
        self._ctx: ssl.SSLContext | None = None
        self._ctx_h1: ssl.SSLContext | None = None
        self._ctx_key: tuple[bytes | None, bytes | None] | None = None
        # For each of the two contexts: the last TLS layer made with it, whose session the next connection
        # made with it resumes (``_resumable_session``); emptied when the contexts are made anew.
        self._session_sources: dict[ssl.SSLContext, Any] = {}
        self.h2_mode: bool | None = None if settings.use_h2 else False
        self.h2_conns: list[H2Upstream] = []
        self.h1_idle: list[Http1Upstream] = []
        self.h1_busy = 0
        self._connecting: asyncio.Future[H2Upstream] | None = None
        self.closed = False

    # --- credentials / TLS ------------------------------------------------------------------------
    @property
    def bearer_token(self) -> str | None:
        return self.credentials.bearer_token if self.credentials else None

    @property
    def credentials_fresh(self) -> bool:
        """Whether requests may go out with the credentials held now (``ensure_credentials`` would not wait)."""
        creds = self.credentials
        return creds is not None and time.time() < self.fresh_until(creds)

    def fresh_until(self, creds: UpstreamCredentials) -> float:
        """Unix time until which requests may go out with ``creds`` (``credentials_refresh_margin`` before
        they expire; inf when they do not). A fast-path plan made with them is usable until then."""
        expires_at = creds.expires_at
        return math.inf if expires_at is None else expires_at - self.settings.credentials_refresh_margin

    async def ensure_credentials(self) -> None:
        if self.credentials_fresh:
            return
        try:
            self.credentials = await self.cluster.credentials.get()
        except Exception as exc:  # a provider failure (EKS/AKS token) must not crash the request
            raise UpstreamError(503, f"cannot get credentials for cluster {self.cluster.name}: {exc}", "credentials") from exc
        self._creds_at = time.time()

    def _contexts(self) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        creds = self.credentials or UpstreamCredentials()
        key = (creds.client_cert_pem, creds.client_key_pem)
        if self._ctx is None or self._ctx_h1 is None or key != self._ctx_key:
            alpn: tuple[str, ...] = ("h2", "http/1.1") if self.settings.use_h2 else ("http/1.1",)
            try:
                self._ctx = upstream_context(self.cluster, creds, alpn=alpn)
                self._ctx_h1 = upstream_context(self.cluster, creds, alpn=("http/1.1",))
            except ClusterTLSError as exc:
                raise UpstreamError(503, f"cluster {self.cluster.name} cannot be used: {exc}", "tls_config") from exc
            self._ctx_key = key
            self._session_sources = {}  # sessions of other credentials are not resumed
        return self._ctx, self._ctx_h1

    # --- connecting -------------------------------------------------------------------------------
    async def _connect(self, factory: Callable[[], asyncio.Protocol], ctx: ssl.SSLContext) -> tuple[asyncio.Transport, asyncio.Protocol]:
        loop = asyncio.get_running_loop()
        name = self.cluster.name
        timeout = self.settings.connect_timeout
        try:
            if _TLS_LAYER is not None:
                transport, protocol = await self._connect_through_layer(loop, factory(), ctx, timeout)
            else:
                transport, protocol = await asyncio.wait_for(
                    loop.create_connection(
                        factory,
                        self.host,
                        self.port,
                        ssl=ctx,
                        server_hostname=self.server_hostname,
                        ssl_handshake_timeout=timeout,
                    ),
                    timeout,
                )
        except TimeoutError as exc:
            self._error("timeout")
            raise UpstreamError(504, f"timed out connecting to cluster {name} at {self.authority}", "timeout") from exc
        except ssl.SSLError as exc:
            self._error("tls")
            detail = getattr(exc, "verify_message", None) or exc.reason or str(exc)
            raise UpstreamError(502, f"TLS handshake with cluster {name} at {self.authority} failed: {detail}", "tls") from exc
        except OSError as exc:
            self._error("connect")
            raise UpstreamError(503, f"cluster {name} is unreachable at {self.authority}: {exc.strerror or exc}", "connect") from exc
        return transport, protocol  # type: ignore[return-value]

    async def _connect_through_layer(
        self, loop: asyncio.AbstractEventLoop, app: asyncio.Protocol, ctx: ssl.SSLContext, timeout: float
    ) -> tuple[asyncio.Transport, asyncio.Protocol]:
        """TCP by uvloop, TLS by ``proxy.tls_direct.TLSTransport`` (the listener's layer, its client side),
        offering the session to resume: ``app`` made the connection's protocol once the handshake is
        done, all within ``timeout``. A failed handshake raises what uvloop's would (the ``ssl``
        module's exception)."""
        assert _TLS_LAYER is not None
        layer = _TLS_LAYER(ctx, app, loop, False, self.server_hostname, self._resumable_session(ctx))
        deadline = loop.time() + timeout
        raw, _ = await asyncio.wait_for(loop.create_connection(lambda: layer, self.host, self.port), timeout)
        await handshake_within(layer, raw, max(0.0, deadline - loop.time()))
        self._session_sources[ctx] = layer
        return layer, app

    def _resumable_session(self, ctx: ssl.SSLContext) -> ssl.SSLSession | None:
        """The TLS session a new connection made with ``ctx`` offers to resume: the one the last connection
        made with it holds now, or ended with (read now, not at its handshake: a TLS 1.3 server's ticket
        comes after the handshake, with the first records read), or None. The API server decides: an
        expired or unknown session is a full handshake, with the certificate checks. The session of a
        connection made with other credentials (another context) is never offered."""
        source = self._session_sources.get(ctx)
        if source is None:
            return None
        session = source.tls_session()
        return session if session is not None and (session.has_ticket or session.id) else None

    def _error(self, kind: str) -> None:
        if self._on_error is not None:
            self._on_error(self.cluster.name, kind)

    async def _new_connection(self, http1: bool = False) -> H2Upstream | Http1Upstream:
        """A new connection; on the first one ALPN decides between h2 and HTTP/1.1 for the pool."""
        await self.ensure_credentials()
        ctx, ctx_h1 = self._contexts()
        high_water = self.settings.high_water
        name = self.cluster.name
        if http1 or self.h2_mode is False:
            _, proto = await self._connect(lambda: Http1Upstream(name, high_water, self._h1_idle), ctx_h1)
            return proto  # type: ignore[return-value]
        holder: dict[str, asyncio.Protocol] = {}

        def factory() -> asyncio.Protocol:
            proto = _AlpnSwitch(name, self.authority, high_water, self._h1_idle)
            holder["p"] = proto
            return proto

        transport, _ = await self._connect(factory, ctx)
        switch = holder["p"]
        assert isinstance(switch, _AlpnSwitch)
        chosen = switch.chosen
        assert chosen is not None
        self.h2_mode = isinstance(chosen, H2Upstream)
        return chosen

    # --- requests ---------------------------------------------------------------------------------
    async def open(
        self, method: str, target: str, headers: Headers, *, body: bytes | None, streaming_body: bool, long_lived: bool = False
    ) -> UpstreamStream:
        """Start one exchange. ``body`` is the whole request body when already known (``None`` when it will be
        streamed with ``send_body`` / ``end_request``); ``long_lived`` for watches and followed logs."""
        if self.closed:
            raise UpstreamError(503, f"cluster {self.cluster.name} was removed", "connect")
        if self.h2_mode is not False and (long_lived or self.settings.h2_for == "all"):
            conn = self._h2_with_capacity()
            if conn is None and self.h2_mode is None:
                first = await self._first_connection()
                if isinstance(first, H2Upstream):
                    conn = first
                else:
                    return self._start_h1(first, method, target, headers, body, streaming_body)
            if conn is None and self.h2_mode:
                conn = await self._more_h2()
            if conn is not None:
                end = body is not None and not streaming_body
                return conn.start(method, target, headers, end_stream=end, body=body or b"")
        return self._start_h1(await self._h1_connection(), method, target, headers, body, streaming_body)

    def _start_h1(self, conn: Http1Upstream, method: str, target: str, headers: Headers, body: bytes | None, streaming_body: bool) -> UpstreamStream:
        self.h1_busy += 1
        if streaming_body:
            headers = headers + [(b"transfer-encoding", b"chunked")]
            exchange = conn.start(method, target, headers, chunked=True)
        else:
            if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
                headers = headers + [(b"content-length", str(len(body or b"")).encode())]
            exchange = conn.start(method, target, headers, chunked=False, body=body or b"")
            exchange.end_request()
        return exchange

    def _h2_with_capacity(self) -> H2Upstream | None:
        best: H2Upstream | None = None
        for conn in self.h2_conns:
            if conn.closed:
                continue
            if conn.capacity > 0 and (best is None or len(conn.streams) < len(best.streams)):
                best = conn
                if not conn.streams:
                    break
        if len(self.h2_conns) > 4 or (best is not None and any(c.closed for c in self.h2_conns)):
            self.h2_conns = [c for c in self.h2_conns if not c.closed]
        return best

    async def _first_connection(self) -> H2Upstream | Http1Upstream:
        if self._connecting is not None:
            conn = await asyncio.shield(self._connecting)
            if conn.capacity > 0:
                return conn
        return await self._more_h2_or_h1()

    async def _more_h2_or_h1(self) -> H2Upstream | Http1Upstream:
        conn = await self._new_connection()
        if isinstance(conn, H2Upstream):
            self.h2_conns.append(conn)
        return conn

    async def _more_h2(self) -> H2Upstream:
        while True:
            if self._connecting is None:
                fut: asyncio.Future[H2Upstream] = asyncio.get_running_loop().create_future()
                self._connecting = fut
                try:
                    conn = await self._new_connection()
                    if not isinstance(conn, H2Upstream):  # the server stopped offering h2
                        conn.close()
                        self.h2_mode = False
                        raise UpstreamError(502, f"cluster {self.cluster.name} no longer speaks HTTP/2", "protocol")
                    self.h2_conns.append(conn)
                    fut.set_result(conn)
                    return conn
                except BaseException as exc:
                    fut.set_exception(exc)
                    fut.exception()
                    raise
                finally:
                    self._connecting = None
            conn = await asyncio.shield(self._connecting)
            if conn.capacity > 0:
                return conn

    async def _h1_connection(self) -> Http1Upstream:
        while self.h1_idle:
            conn = self.h1_idle.pop()
            if conn.reusable:
                return conn
        conn = await self._new_connection(http1=True)
        assert isinstance(conn, Http1Upstream)
        return conn

    def idle_http1(self) -> Http1Upstream | None:
        """An idle keep-alive connection, counted busy, or None (no waiting: ``proxy.fastpath``)."""
        idle = self.h1_idle
        while idle:
            conn = idle.pop()
            # ``conn.reusable``, without the property's call (on every fast-path request)
            if not conn.closed and conn.exchange is None and conn._keep_alive and conn.raw_protocol is None:
                self.h1_busy += 1
                return conn
        return None

    def _h1_idle(self, conn: Http1Upstream) -> None:
        if self.h1_busy > 0:  # never below 0 (a plain test: ``max`` is a call, on every request's end)
            self.h1_busy -= 1
        if self.closed or conn.closed or len(self.h1_idle) >= self.settings.max_idle_http1:
            conn.close()
        else:
            self.h1_idle.append(conn)

    async def open_upgrade(self, method: str, target: str, headers: Headers) -> tuple[Http1Upstream, int, Headers, bytes]:
        """A fresh HTTP/1.1 connection carrying one upgrade request; returns it with the response head."""
        if self.closed:
            raise UpstreamError(503, f"cluster {self.cluster.name} was removed", "connect")
        await self.ensure_credentials()
        _, ctx_h1 = self._contexts()
        _, proto = await self._connect(lambda: Http1Upstream(self.cluster.name, self.settings.high_water), ctx_h1)
        assert isinstance(proto, Http1Upstream)
        status, resp_headers, trailing = await proto.start_upgrade(method, target, headers)
        return proto, status, resp_headers, trailing

    # --- state --------------------------------------------------------------------------------------
    def state(self) -> dict[str, int]:
        return {
            "h2_connections": sum(1 for c in self.h2_conns if not c.closed),
            "h2_streams": sum(len(c.streams) for c in self.h2_conns),
            "http1_idle": len(self.h1_idle),
            "http1_busy": self.h1_busy,
        }

    def close(self) -> None:
        self.closed = True
        for conn in self.h2_conns:
            if not conn.streams:
                conn.close()
            else:
                conn.retiring = True  # no new streams; closes when the open ones finish
        for conn in self.h1_idle:
            conn.close()
        self.h1_idle.clear()


class _AlpnSwitch(asyncio.Protocol):
    """Becomes an ``H2Upstream`` or an ``Http1Upstream`` once the handshake told which protocol won."""

    def __init__(self, name: str, authority: str, high_water: int, on_idle: Callable[[Http1Upstream], None]) -> None:
        self._args = (name, authority, high_water, on_idle)
        self.chosen: H2Upstream | Http1Upstream | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        name, authority, high_water, on_idle = self._args
        chosen: H2Upstream | Http1Upstream
        if alpn == "h2":
            chosen = H2Upstream(name, authority, high_water)
        else:
            chosen = Http1Upstream(name, high_water, on_idle)
        self.chosen = chosen
        transport.set_protocol(chosen)
        chosen.connection_made(transport)


class ClusterPools:
    """cluster name → ClusterPool, replaced when the cluster's generation or address changes."""

    def __init__(self, settings: PoolSettings, on_error: Callable[[str, str], None] | None = None) -> None:
        self.settings = settings
        self.pools: dict[str, ClusterPool] = {}
        self._on_error = on_error

    def get(self, cluster: Cluster) -> ClusterPool:
        pool = self.pools.get(cluster.name)
        if pool is not None and pool.cluster is cluster:
            return pool
        if pool is not None and not connection_changed(pool.cluster, cluster):
            pool.cluster = cluster
            return pool
        if pool is not None:
            pool.close()
        pool = ClusterPool(cluster, self.settings, self._on_error)
        self.pools[cluster.name] = pool
        return pool

    def drop(self, name: str) -> None:
        pool = self.pools.pop(name, None)
        if pool is not None:
            pool.close()

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()


def connection_changed(old: Cluster, new: Cluster) -> bool:
    """Whether connections made for ``old`` are wrong for ``new`` (address, trust or credentials)."""
    return (
        old.server != new.server
        or old.ca_pem != new.ca_pem
        or old.insecure_skip_tls_verify != new.insecure_skip_tls_verify
        or old.tls_server_name != new.tls_server_name
        or old.credentials is not new.credentials
    )

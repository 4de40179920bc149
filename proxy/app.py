"""``Proxy``: one full kubegate data path on the running event loop (one per worker process).

    proxy = Proxy(clusters=registry, roles=role_watcher, ssl_context=server_context(cert, key, ca),
                  locks=lock_list, audit=AuditLog(path), settings=ProxySettings(...))
    await proxy.start([sock])            # or start() with host/port given to the constructor
    ...
    await proxy.shutdown(grace=10)       # stop accepting, let requests finish, end streams cleanly

Everything arrives as explicit values: no configuration parsing here (``from_config`` only reads the
attributes of an already validated config object). Without a role source or an explicit ``policy`` the
proxy refuses to start: it never allows everything by default.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from datetime import datetime
from typing import Any

from discovery.model import Cluster, ClusterSource
from proxy import metrics
from proxy.catalogs import CatalogCache
from proxy.endpoints import LocalHandler
from proxy.forward import Forwarder, ProxySettings
from proxy.memory import Trimmer
from proxy.policy import Policy, RbacPolicy
from proxy.server import Listener, listening_socket
from proxy.tls import server_context
from proxy.upstream import ClusterPools, PoolSettings
from proxy.upstream.pool import connection_changed

log = logging.getLogger("kubegate.proxy")

__all__ = ["Proxy", "ProxySettings", "PoolSettings"]


class Proxy:
    def __init__(
        self,
        *,
        clusters: ClusterSource,
        roles: Any = None,
        policy: Policy | None = None,
        ssl_context: ssl.SSLContext | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        client_ca_file: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        reuse_port: bool = False,
        locks: Any = None,
        audit: Callable[[dict[str, Any]], None] | None = None,
        settings: ProxySettings | None = None,
        pool_settings: PoolSettings | None = None,
        sweep_interval: float = 1.0,
        clock: Callable[[], datetime] | None = None,
        recordings: Any = None,
        endpoints: dict[str, LocalHandler] | None = None,
    ) -> None:
        if policy is None:
            if roles is None:
                raise ValueError("kubegate refuses to start without roles (a roles directory): nothing would be allowed")
            policy = RbacPolicy(roles)
        if ssl_context is None:
            if not (cert_file and key_file and client_ca_file):
                raise ValueError("the proxy needs a server certificate, its key and the client CA (or an ssl_context)")
            ssl_context = server_context(cert_file, key_file, client_ca_file)
        self.clusters = clusters
        self.policy = policy
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        self.locks = locks
        self.audit = audit
        self.recordings = recordings  # proxy.recording.recorder.Recordings (None: no session recording)
        self.settings = settings or ProxySettings()
        self.pool_settings = pool_settings or PoolSettings(response_head_timeout=self.settings.response_head_timeout)
        self.sweep_interval = sweep_interval
        self.clock = clock  # UTC "now" for certificate expiry checks (tests move it)
        self.endpoints = endpoints  # /kubegate/<name>/… handlers (proxy.endpoints), e.g. {"auth": …}
        self.fwd: Forwarder | None = None
        self.listener: Listener | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._own_sockets: list[socket.socket] = []
        self.started = False
        self.stopping = False

    @classmethod
    def from_config(cls, cfg: Any, **kwargs: Any) -> Proxy:
        """Read limits from a validated ``kubegate.config.Config`` (attributes only; no parsing here)."""
        limits = cfg.proxy.limits
        settings = ProxySettings(
            header_timeout=limits.header_timeout,
            idle_timeout=limits.idle_timeout,
            max_connections=limits.max_connections,
            max_header_bytes=limits.max_header_bytes,
            shutdown_grace=getattr(limits, "shutdown_grace", 10.0),
            response_head_timeout=getattr(limits, "upstream_response_timeout", 60.0),
            max_body_bytes=getattr(limits, "max_body_bytes", None),
            h2_initial_window=getattr(limits, "h2_initial_window", 1024 * 1024),
            h2_max_concurrent_streams=getattr(limits, "h2_max_concurrent_streams", 1000),
            h2_max_resets_per_second=limits.h2_max_resets_per_second,
            h2_max_control_frames_per_second=limits.h2_max_control_frames_per_second,
            client_write_buffer_max=limits.client_write_buffer_max,
            request_body_timeout=limits.request_body_timeout,
            http1_max_pipelined=limits.http1_max_pipelined,
            client_send_timeout=limits.client_send_timeout,
        )
        pool_settings = PoolSettings(
            connect_timeout=getattr(limits, "upstream_connect_timeout", 10.0),
            response_head_timeout=settings.response_head_timeout,
            high_water=getattr(limits, "write_high_water", 256 * 1024),
        )
        kwargs.setdefault("settings", settings)
        kwargs.setdefault("pool_settings", pool_settings)
        return cls(**kwargs)

    # --- life cycle ---------------------------------------------------------------------------------
    async def start(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        pools = ClusterPools(self.pool_settings, on_error=metrics.upstream_error)
        self.fwd = Forwarder(
            loop=loop,
            clusters=self.clusters,
            policy=self.policy,
            pools=pools,
            catalogs=CatalogCache(),
            settings=self.settings,
            audit=self.audit,
            locks=self.locks,
            clock=self.clock,
            recordings=self.recordings,
            endpoints=self.endpoints,
        )
        if not sockets:
            sock = listening_socket(self.host, self.port, reuse_port=self.reuse_port)
            self._own_sockets.append(sock)
            sockets = [sock]
        watch = getattr(self.locks, "watch", None)
        if watch is not None:  # the lock list follows its file from this loop (certs.locks)
            watch(loop)
        if self.recordings is not None:
            try:
                await loop.run_in_executor(None, self.recordings.sweep_interrupted)
            except Exception:  # the index unreachable: the records stay live, which is what they said
                log.exception("could not look for sessions left live by a process that is gone")
        self.listener = Listener(self.fwd, self.ssl_context)
        await self.listener.listen(sockets)
        self.port = self.listener.ports[0]
        self._unsubscribe = self.clusters.subscribe(self._cluster_changed)
        self._sweeper = loop.create_task(self._sweep_loop())
        self.started = True

    def readiness(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "shutting down"
        if not self.started:
            return False, "starting"
        return True, ""

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting; let in-flight requests finish within ``grace``; then end streams cleanly."""
        if self.fwd is None or self.stopping:
            return
        self.stopping = True
        fwd = self.fwd
        grace = self.settings.shutdown_grace if grace is None else grace
        fwd.shutting_down = True
        if self.listener is not None:
            self.listener.close()
        if self._unsubscribe is not None:
            self._unsubscribe()
        # Idle connections close now (HTTP/2 GOAWAY); busy ones after their last exchange.
        for conn in list(fwd.connections):
            conn.close()
        # Long-lived streams would never finish: end them now; ordinary requests get the grace period.
        for ex in list(fwd.exchanges):
            if ex.kind is not None:
                ex.stop("kubegate ended this stream: kubegate is shutting down", 503)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while fwd.exchanges and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for ex in list(fwd.exchanges):
            ex.stop("kubegate ended this stream: kubegate is shutting down", 503)
        for _ in range(50):
            if not fwd.exchanges:
                break
            await asyncio.sleep(0.01)
        for conn in list(fwd.connections):
            conn.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
        fwd.pools.close()
        unwatch = getattr(self.locks, "unwatch", None)
        if unwatch is not None:
            unwatch()  # closes the inotify descriptor
        if self.recordings is not None:
            await loop.run_in_executor(None, self.recordings.close)  # queued writes, fsync, index
        for sock in self._own_sockets:
            sock.close()
        self._own_sockets.clear()

    # --- introspection (tests, /readyz) ---------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        fwd = self.fwd
        if fwd is None:
            return {}
        return {
            "connections": len(fwd.connections),
            "exchanges": len(fwd.exchanges),
            "handshakes": len(self.listener.handshakes) if self.listener else 0,
            "streams": sorted(ex.kind for ex in fwd.exchanges if ex.kind),
            "pools": {name: pool.state() for name, pool in fwd.pools.pools.items()},
            # bytes waiting for clients (codec-held for lack of h2 window + transport write buffers), and
            # bytes read from upstreams not yet relayed: bounded even when a client never reads
            "to_clients_bytes": sum(
                conn.codec.held_bytes + conn.transport.get_write_buffer_size()
                for conn in fwd.connections
                if conn.codec is not None and conn.transport is not None
            ),
            "from_upstreams_bytes": sum(
                ex.stream.body.size for ex in fwd.exchanges if ex.stream is not None and hasattr(ex.stream, "body")
            ),
        }

    # --- internals ----------------------------------------------------------------------------------
    def _cluster_changed(self, name: str, cluster: Cluster | None) -> None:
        fwd = self.fwd
        if fwd is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not fwd.loop:  # registry updated from another thread: hop onto the proxy's loop
            fwd.loop.call_soon_threadsafe(self._cluster_changed, name, cluster)
            return
        old = fwd.pools.pools.get(name)
        if cluster is None or (old is not None and connection_changed(old.cluster, cluster)):
            # Streams first: each is told why before dropping the pool breaks its upstream connection.
            fwd.stop_cluster(name, removed=cluster is None)
            fwd.pools.drop(name)

    async def _sweep_loop(self) -> None:
        fwd = self.fwd
        assert fwd is not None
        trimmer = Trimmer()
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                fwd.sweep()
                trimmer.check(len(fwd.connections) + (len(self.listener.handshakes) if self.listener else 0), fwd.loop.time())
                metrics.flush()
                metrics.record_upstream({name: pool.state() for name, pool in fwd.pools.pools.items()})
            except Exception:
                log.exception("stream sweep failed")

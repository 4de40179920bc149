"""Wiring: config → CA / serving certificate → roles → cluster registry + discovery service → lock list →
audit sink → ``proxy.app.Proxy``; one ``ProxyService`` per process (see ``kubegate.workers``).

    service = ProxyService(cfg, host, port, worker_index)
    await service.start()          # bind (SO_REUSEPORT), serve; service.port is the bound port
    service.readiness()            # (True, "") once listening with roles and clusters loaded
    await service.stop(grace)      # graceful: stop accepting, drain, close

``prepare(cfg)`` does the one-time, process-independent work (CA, serving certificate, directories)
so that with several workers the supervisor does it once before the workers start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubegate.config import Config

log = logging.getLogger("kubegate.app")


READY_FAILOVER_GRACE = 2.0  # seconds a broken backend watch may take to resume before /readyz says 503


class StartupError(RuntimeError):
    """kubegate cannot start with this configuration (the message says why and what to do)."""


@dataclass(frozen=True)
class TLSFiles:
    cert_file: str
    key_file: str
    client_ca_file: str


def prepare(cfg: Config, backend: Any = None) -> TLSFiles:
    """Create the state directory, the CA (first start) and the serving certificate when the config
    does not name its own. Idempotent; safe to call in every process. With a shared backend the CA is
    the one stored there (``certs.shared_ca``): every replica trusts and issues with the same CA."""
    from certs.ca import CAError, CertificateAuthority, server_hosts

    Path(cfg.state_dir).mkdir(parents=True, exist_ok=True)
    tls = cfg.proxy.tls
    ca = None
    if (tls.cert_file is None or cfg.proxy.client_ca_file is None) and backend is not None:
        from backend.base import BackendError
        from certs.shared_ca import sync_ca

        try:
            ca, how = sync_ca(backend, cfg.ca_dir, cfg.backend.ca_key_file)
        except (CAError, BackendError) as exc:
            raise StartupError(f"the shared CA: {exc}") from None
        if how != "current":
            log.info("the shared kubegate CA was %s", how, extra={"fingerprint": ca.fingerprint_sha256})
    elif tls.cert_file is None or cfg.proxy.client_ca_file is None:
        ca, created = CertificateAuthority.load_or_create(cfg.ca_dir)
        if created:
            log.info("created the kubegate CA", extra={"ca_dir": cfg.ca_dir,
                                                       "fingerprint": ca.fingerprint_sha256})
    if tls.cert_file is not None and tls.key_file is not None:
        cert_file, key_file = tls.cert_file, tls.key_file
    else:
        assert ca is not None
        hosts = server_hosts([cfg.proxy.public_address, cfg.proxy.peer_address], str(cfg.proxy.listen))
        cert_path, key_path, issued = ca.ensure_server_certificate(hosts)
        if issued:
            log.info("issued the proxy's serving certificate", extra={"hosts": hosts})
        cert_file, key_file = str(cert_path), str(key_path)
    client_ca = cfg.proxy.client_ca_file or (str(ca.cert_path) if ca is not None else "")
    for what, path in (("proxy.tls.cert_file", cert_file), ("proxy.tls.key_file", key_file),
                       ("proxy.client_ca_file", client_ca)):
        if not os.path.isfile(path):
            raise StartupError(f"{what}: {path} does not exist")
    return TLSFiles(cert_file, key_file, client_ca)


def certificate_expiry_collector(tls: TLSFiles) -> Any:
    """``kubegate_certificate_expiry_timestamp_seconds{certificate="serving"|"client_ca"}``, read from the
    files at scrape time (so a renewed certificate shows without a restart)."""
    from kubegate.metrics_server import FunctionCollector

    def families() -> list[Any]:
        from cryptography import x509
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("kubegate_certificate_expiry_timestamp_seconds",
                                   "Expiry (Unix time) of the proxy's serving certificate and client CA.",
                                   labels=["certificate"])
        for name, path in (("serving", tls.cert_file), ("client_ca", tls.client_ca_file)):
            try:
                cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
            except (OSError, ValueError):
                continue
            family.add_metric([name], cert.not_valid_after_utc.timestamp())
        return [family]

    return FunctionCollector(families)


def cluster_health_collector(cfg: Config) -> Any:
    """``kubegate_cluster_healthy{cluster}``: 1 when the latest health check of the cluster passed, 0
    when it failed (clusters not checked yet are left out), read at scrape time from the health the
    proxy records after each round (``<state_dir>/clusters/health.state``, also what ``clusters ls``
    shows): the same in one process and under the supervisor, and a removed cluster's series goes
    away with it."""
    from kubegate.metrics_server import FunctionCollector

    def families() -> list[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from discovery.store import read_health

        family = GaugeMetricFamily("kubegate_cluster_healthy",
                                   "1 when the cluster's latest health check passed, 0 when it failed.",
                                   labels=["cluster"])
        for name, state in sorted(read_health(cfg.registry_dir).items()):
            health = state.get("health") if isinstance(state, dict) else None
            if health in ("healthy", "unhealthy"):
                family.add_metric([name], 1.0 if health == "healthy" else 0.0)
        return [family]

    return FunctionCollector(families)


def load_roles(cfg: Config, backend: Any = None) -> Any:
    """The hot-reloading role source; refuses to start without a roles directory. A role file that
    fails to load is refused on its own (logged with the file, role and key, counted in
    ``kubegate_role_files_refused``); the other files' roles are served. With a shared backend: the
    roles stored there (``kubegate roles apply``), followed by watch."""
    from proxy import metrics
    from rbac.roles import RoleError, RoleSet, RoleWatcher

    if backend is not None:
        from kubegate.shared_roles import SharedRoles

        shared = SharedRoles(backend)
        log.info("roles loaded from the shared backend", extra={"roles": shared.names()})
        return shared

    roles_dir = Path(cfg.auth.roles_dir)
    if not roles_dir.is_dir():
        raise StartupError(
            f"auth.roles_dir: {roles_dir} is not a directory: kubegate needs roles to decide anything "
            "(see examples/roles/)")

    def on_error(exc: RoleError) -> None:
        log.error("role file refused: its roles are not served", extra={
            "file": exc.file, "role": exc.role, "field": exc.field, "error": exc.detail})

    def count(roles: RoleSet) -> None:
        metrics.ROLES_LOADED.set(len(roles))
        metrics.ROLE_FILES_REFUSED.set(len(roles.refused))

    def on_reload(roles: RoleSet) -> None:
        count(roles)
        log.info("roles reloaded", extra={"roles": roles.names(), "refused_files": sorted(roles.refused)})

    try:
        watcher = RoleWatcher(roles_dir, time.monotonic, on_error=on_error, on_reload=on_reload)
    except RoleError as exc:
        raise StartupError(f"auth.roles_dir: {exc}") from None
    current = watcher.current()
    count(current)
    if not len(current):
        log.warning("the roles directory holds no usable roles: every request will be denied",
                    extra={"roles_dir": str(roles_dir)})
    log.info("roles loaded", extra={"roles": current.names(), "refused_files": sorted(current.refused)})
    return watcher


def build_registry(cfg: Config) -> Any:
    """The cluster registry the proxy reads, serving the clusters that match
    ``kubernetes_service.resources``; the discovery service fills it."""
    from discovery.registry import ClusterRegistry

    return ClusterRegistry([dict(r.labels) for r in cfg.kubernetes_service.resources])


def build_discovery(cfg: Config, registry: Any, worker_index: int, backend: Any = None,
                    leader: Any = None) -> Any:
    """The discovery service feeding ``registry`` from kubeconfig files, ``clusters_dir``, the state
    store (``kubegate clusters add``) and, in worker 0 only, the EKS/AKS pollers (one poller per
    deployment, not per worker: the others pick the results up from the store). With a shared backend
    the store is the shared one and the pollers run only while ``leader`` leads the discovery group."""
    from discovery.service import DiscoveryService
    from kubegate.shared import cluster_store

    extra: dict[str, Any] = {}
    if backend is not None:
        extra = {"store": cluster_store(cfg, backend), "leader": leader}
    return DiscoveryService.from_config(cfg, registry, cloud=worker_index == 0, **extra)


def build_election(cfg: Config, backend: Any, worker_index: int, port: int) -> Any:
    """Discovery leadership across replicas: only with a shared backend, cloud discovery enabled, and in
    worker 0 (the only worker that polls clouds)."""
    if backend is None or worker_index != 0 or not cfg.discovery_service.enabled:
        return None
    import socket

    from backend.election import Election

    identity = f"{socket.gethostname()}:{os.getpid()}:{port}"
    return Election(backend, f"discovery/{cfg.discovery_service.discovery_group}", identity=identity,
                    ttl=cfg.backend.lease_ttl)


@dataclass
class ProxyService:
    """One full proxy in this process (see the module docstring)."""

    cfg: Config
    host: str
    port: int
    worker_index: int = 0
    proxy: Any = None
    registry: Any = None
    roles: Any = None
    audit: Any = None
    discovery: Any = None
    backend: Any = None
    election: Any = None
    locks: Any = None
    _election_task: Any = None
    presence: Any = None  # backend.presence.Presence: this process's key, with a shared backend
    _presence_task: Any = None
    _sockets: list[Any] = field(default_factory=list)
    _role_check: Any = None
    _started: bool = False
    _stopping: bool = False

    @classmethod
    def factory(cls, cfg: Config, host: str, port: int, worker_index: int) -> ProxyService:
        return cls(cfg, host, port, worker_index)

    async def start(self) -> None:
        import asyncio

        from kubegate.shared import lock_list, open_backend
        from kubegate.workers import reuseport_socket

        self.backend = open_backend(self.cfg)
        tls = await asyncio.to_thread(prepare, self.cfg, self.backend)
        self.roles = await asyncio.to_thread(load_roles, self.cfg, self.backend)
        self.registry = build_registry(self.cfg)
        self.election = build_election(self.cfg, self.backend, self.worker_index, self.port)
        if self.election is not None:
            self._election_task = asyncio.get_running_loop().create_task(self.election.run(), name="election")
        self.discovery = build_discovery(self.cfg, self.registry, self.worker_index, self.backend, self.election)
        await self.discovery.start()  # the first sync of every local source is done when this returns
        log.info("clusters", extra={"served": [c.name for c in self.registry.list()],
                                    "worker": self.worker_index})
        self.audit = _audit_sink(self.cfg)
        ssl_context = _server_context(tls)
        self.locks = await asyncio.to_thread(lock_list, self.cfg, self.backend, watch=True)
        auth = build_auth_service(self.cfg, self.registry, self.roles, self.audit, self.locks)
        endpoints = {"auth": auth.handler()} if auth is not None else {}
        self.proxy = _make_proxy(self.cfg, ssl_context, self.registry, self.roles, self.locks, self.audit,
                                 endpoints)
        if self.backend is not None:  # other hosts can tell this process's live sessions from dead ones
            from backend.presence import Presence

            self.presence = Presence(self.backend, self.cfg.proxy.peer_address, ttl=self.cfg.backend.lease_ttl)
            self._presence_task = asyncio.get_running_loop().create_task(self.presence.run(), name="presence")
        sock = reuseport_socket(self.host, self.port, listen=True, backlog=min(
            4096, self.cfg.proxy.limits.max_connections))
        self._sockets.append(sock)
        self.port = sock.getsockname()[1]
        await self.proxy.start([sock])
        self._role_check = asyncio.get_running_loop().create_task(_check_roles(self.roles),
                                                                   name="roles:check")
        self._started = True
        log.info("proxy listening", extra={"listen": f"{self.host}:{self.port}", "worker": self.worker_index})

    def readiness(self) -> tuple[bool, str]:
        if self._stopping:
            return False, "shutting down"
        if not self._started:
            return False, "starting"
        broken = self.shared_state_problem()
        if broken:
            return False, broken
        ready = getattr(self.proxy, "readiness", None)
        if callable(ready):
            return ready()
        return True, ""

    def shared_state_problem(self) -> str:
        """Why the shared backend is not usable now ("" when it is, or when there is none): the watched
        copies of clusters, locks and roles each report their watch's health."""
        if self.backend is None:
            return ""
        now = time.monotonic()
        for what, holder in (("locks", self.locks), ("roles", self.roles),
                             ("clusters", getattr(self.discovery, "store", None))):
            cache = getattr(holder, "cache", None)
            if cache is None or cache.healthy:
                continue
            since = cache.unreachable_since
            if since is not None and now - since < READY_FAILOVER_GRACE:
                continue  # a watch moving to another etcd member: not worth leaving the load balancer
            return f"shared state backend ({self.backend.name}) unreachable ({what}): {cache.error}"
        return ""

    async def stop(self, grace: float) -> None:
        import asyncio

        self._stopping = True
        if self._role_check is not None:
            self._role_check.cancel()
        if self.proxy is not None and self._started:
            await self.proxy.shutdown(grace)
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self._sockets.clear()
        if self.election is not None:
            await self.election.resign()
            await _cancelled(self._election_task)
        if self.presence is not None:
            await self.presence.stop()
            await _cancelled(self._presence_task)
        if self.discovery is not None:
            await self.discovery.stop()
        unwatch = getattr(self.locks, "unwatch", None)
        if unwatch is not None:  # the proxy's shutdown did it, unless the start failed before it ran
            unwatch()
        for holder in (self.locks, self.roles):
            stop = getattr(holder, "stop", None)
            if callable(stop):
                await asyncio.to_thread(stop)
        if self.audit is not None and hasattr(self.audit, "close"):
            self.audit.close()


async def _cancelled(task: Any) -> None:
    """``task`` (if any) cancelled and waited for, whatever it ends with."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _check_roles(roles: Any, interval: float = 2.0) -> None:
    """Look at the roles directory every ``interval`` seconds even without requests, so that an edit
    is loaded — and a refused file logged and counted — when it is made, not at the next request."""
    while True:
        await asyncio.sleep(interval)
        try:
            roles.current()
        except Exception:  # the watcher reports load errors itself; never let this task die
            log.exception("checking the roles directory failed")


def _server_context(tls: TLSFiles) -> ssl.SSLContext:
    from proxy.tls import server_context

    return server_context(tls.cert_file, tls.key_file, tls.client_ca_file)


def _audit_sink(cfg: Config) -> Any:
    from proxy.audit import AuditLog

    if not cfg.audit.enabled:
        return None
    path = cfg.audit_log_file
    if path != "-":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return AuditLog(path, max_size=cfg.audit.max_size, max_files=cfg.audit.max_files)


def _make_proxy(cfg: Config, ssl_context: ssl.SSLContext, registry: Any, roles: Any, locks: Any,
                audit: Any, endpoints: dict[str, Any] | None = None) -> Any:
    from proxy.app import Proxy

    return Proxy.from_config(cfg, ssl_context=ssl_context, clusters=registry, roles=roles, locks=locks,
                             audit=audit, recordings=recordings_from_config(cfg), endpoints=endpoints)


def recording_store(cfg: Config) -> Any:
    """The recording store the config names: S3-compatible when ``proxy.recording.s3.bucket`` is set, else
    files under ``sessions_dir``."""
    from proxy.recording.stores import FileStore, S3Store

    s3 = cfg.proxy.recording.s3
    if s3.bucket:
        return S3Store(s3.bucket, s3.prefix, s3.endpoint, s3.region, s3.part_size)
    return FileStore(cfg.sessions_dir)


def session_index(cfg: Config, backend: Any = None) -> Any:
    """The session index: files under ``sessions_dir``, or the shared backend's (``backend.type: etcd``)."""
    from kubegate.shared import open_backend
    from proxy.recording.index import FileSessionIndex

    backend = backend if backend is not None else open_backend(cfg)
    if backend is not None:
        from kubegate.shared_sessions import SharedSessionIndex

        return SharedSessionIndex(backend)
    return FileSessionIndex(cfg.sessions_dir)


def recordings_from_config(cfg: Config) -> Any:
    """Session recording; each session's index record names this replica (``proxy.peer_addr``), and with a
    shared backend (replicas on several hosts) a join of a session another replica holds is asked
    of that one (``proxy.recording.peer``, signing as the joiner with the shared CA's key)."""
    import functools

    from kubegate.shared import open_backend
    from proxy.recording.recorder import Recordings

    rec = cfg.proxy.recording
    backend = open_backend(cfg)
    peer = present = None
    if backend is not None:
        from backend.presence import is_present

        present = functools.partial(is_present, backend)
        if os.path.isfile(os.path.join(cfg.ca_dir, "ca-key.pem")):
            from certs.ca import CertificateAuthority
            from proxy.recording.peer import PeerSessions

            peer = PeerSessions(CertificateAuthority.load(cfg.ca_dir))
    return Recordings(recording_store(cfg), session_index(cfg, backend), mode=rec.mode,
                      flush_interval=rec.flush_interval, max_buffered=rec.max_buffered,
                      origin=cfg.proxy.peer_address, peer=peer, present=present)


def auth_store(cfg: Config, backend: Any = None) -> Any:
    """Bots, join tokens, pending logins, issued serials: ``<state_dir>/auth``, or the shared backend's."""
    from certs.store import FileAuthStore
    from kubegate.shared import open_backend

    backend = backend if backend is not None else open_backend(cfg)
    if backend is not None:
        from certs.shared_auth_store import SharedAuthStore

        return SharedAuthStore(backend)
    return FileAuthStore.in_state_dir(cfg.state_dir)


def build_auth_service(cfg: Config, registry: Any, roles: Any, audit: Any = None,
                       locks: Any = None) -> Any:
    """The ``/kubegate/auth/`` endpoint: the kubegate CA (its key stays in this process), the store in
    ``<state_dir>/auth``, the connectors of ``auth.connectors``, lifetimes from ``auth.*_ttl``; ``locks``:
    the proxy's lock list (the shared one with ``backend.type: etcd``), else the ``locks`` file."""
    from datetime import timedelta

    from certs.ca import CertificateAuthority
    from certs.issuance import Issuer, LifetimePolicy
    from certs.locks import LockList
    from kubegate.auth.github import GitHubConnector
    from kubegate.auth.oidc import OIDCConnector
    from kubegate.auth.service import AuthService

    if not os.path.isfile(os.path.join(cfg.ca_dir, "ca-key.pem")):
        log.warning("no kubegate CA key in this state directory: /kubegate/auth/ (sign-in, bots) is off",
                    extra={"ca_dir": cfg.ca_dir})
        return None
    ca = CertificateAuthority.load(cfg.ca_dir)
    store = auth_store(cfg)
    auth = cfg.auth
    policy = LifetimePolicy(user_ttl=timedelta(seconds=auth.user_certificate_ttl),
                            bot_ttl=timedelta(seconds=auth.bot_certificate_ttl),
                            max_ttl=timedelta(seconds=auth.max_certificate_ttl))
    connectors = {c.name: (c, OIDCConnector(c) if c.type == "oidc" else GitHubConnector(c))
                  for c in auth.connectors}
    return AuthService(ca=ca, issuer=Issuer(ca, store, roles.current, policy), store=store,
                       connectors=connectors, roles=roles.current, clusters=registry.list,
                       locks=locks if locks is not None else LockList(cfg.locks_file), audit=audit)

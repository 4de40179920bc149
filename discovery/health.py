"""Cluster health: is the API server reachable, is its TLS right, and may kubegate's upstream identity
impersonate users, groups and service accounts (what every forwarded request needs)?

One check (``check_cluster``):

1. current upstream credentials (a failure → unhealthy ``credentials: …``);
2. TLS connection with the cluster's CA / server name / client certificate (refused, timeout → unhealthy
   ``unreachable: …``; certificate problems → unhealthy ``tls: …``);
3. three ``SelfSubjectAccessReview``s: ``impersonate`` on ``users``, ``groups`` and ``serviceaccounts``.
   All allowed → healthy; any denied → unhealthy ``impersonation not permitted: cannot impersonate …``; 401 → unhealthy
   ``unauthorized``;
4. when the review API is not served (404), ``GET /readyz`` → 200 means healthy (``readyz`` in the detail).

The HTTP client is the standard library's ``http.client`` over ``ssl``, run in a worker thread (no
hand-written HTTP parsing). ``HealthChecker`` runs the checks periodically, a bounded number at a time,
and stores the result on the cluster (``Cluster.health`` / ``health_detail`` via the registry).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from discovery import metrics
from discovery.model import Cluster, UpstreamCredentials
from discovery.registry import ClusterRegistry
from discovery.tls import ClusterTLSError, load_client_certificate, load_cluster_ca

log = logging.getLogger(__name__)

HEALTHY, UNHEALTHY, UNKNOWN = "healthy", "unhealthy", "unknown"
IMPERSONATED = ("users", "groups", "serviceaccounts")


@dataclass(frozen=True, slots=True)
class HealthResult:
    health: str
    detail: str


_CONTEXTS_MAX = 1024
_contexts: dict[tuple[bool, bytes | None, bytes | None, bytes | None], ssl.SSLContext] = {}


def client_context(cluster: Cluster, creds: UpstreamCredentials) -> ssl.SSLContext:
    """The TLS context for checking ``cluster`` with ``creds``: built once per (trust, credentials) and
    reused by every round (building one loads the system CA bundle or the cluster's CA and the client
    key: milliseconds, every 30 s per cluster otherwise). Renewed credentials make a new key."""
    key = (cluster.insecure_skip_tls_verify, cluster.ca_pem, creds.client_cert_pem, creds.client_key_pem)
    ctx = _contexts.get(key)
    if ctx is None:
        if len(_contexts) >= _CONTEXTS_MAX:
            _contexts.clear()
        ctx = _contexts[key] = _new_client_context(cluster, creds)
    return ctx


def _new_client_context(cluster: Cluster, creds: UpstreamCredentials) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if cluster.insecure_skip_tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif cluster.ca_pem:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        load_cluster_ca(ctx, cluster.ca_pem)
    if creds.client_cert_pem and creds.client_key_pem:
        load_client_certificate(ctx, creds.client_cert_pem, creds.client_key_pem)
    return ctx


def _request(
    cluster: Cluster, creds: UpstreamCredentials, timeout: float, requests: list[tuple[str, str, bytes | None]]
) -> list[tuple[int, bytes]]:
    """Blocking: send ``requests`` (method, path, body) over one connection; returns (status, body)s."""
    url = urlsplit(cluster.server)
    host, port = url.hostname or "", url.port or 443
    prefix = url.path.rstrip("/")
    ctx = client_context(cluster, creds)
    conn: http.client.HTTPSConnection
    if cluster.tls_server_name:
        # SNI and hostname verification against tls-server-name, TCP to the server's host
        conn = _ServerNameConnection(host, port, timeout=timeout, context=ctx, server_name=cluster.tls_server_name)
    else:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
    headers = {"Accept": "application/json", "User-Agent": "kubegate-health"}
    if creds.bearer_token:
        headers["Authorization"] = f"Bearer {creds.bearer_token}"
    out = []
    try:
        for method, path, body in requests:
            h = dict(headers)
            if body is not None:
                h["Content-Type"] = "application/json"
            conn.request(method, prefix + path, body=body, headers=h)
            response = conn.getresponse()
            out.append((response.status, response.read(1 << 20)))
    finally:
        conn.close()
    return out


class _ServerNameConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, *, timeout: float, context: ssl.SSLContext, server_name: str) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._server_name = server_name
        self._ctx = context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self._server_name)


def _ssar(resource: str) -> bytes:
    return json.dumps({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "impersonate", "resource": resource,
                                        "group": ""}},
    }).encode()


def check_cluster_sync(cluster: Cluster, creds: UpstreamCredentials, timeout: float) -> HealthResult:
    ssar_path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    try:
        answers = _request(cluster, creds, timeout, [("POST", ssar_path, _ssar(r)) for r in IMPERSONATED])
    except ClusterTLSError as exc:
        return HealthResult(UNHEALTHY, f"tls: {exc}")
    except ssl.SSLCertVerificationError as exc:
        return HealthResult(UNHEALTHY, f"tls: {exc.verify_message or exc}")
    except ssl.SSLError as exc:
        return HealthResult(UNHEALTHY, f"tls: {exc.reason or exc}")
    except (OSError, http.client.HTTPException) as exc:
        return HealthResult(UNHEALTHY, f"unreachable: {exc or type(exc).__name__}")
    statuses = {status for status, _ in answers}
    if statuses == {404}:
        try:
            [(status, _)] = _request(cluster, creds, timeout, [("GET", "/readyz", None)])
        except (OSError, http.client.HTTPException) as exc:
            return HealthResult(UNHEALTHY, f"unreachable: {exc}")
        return HealthResult(HEALTHY, "readyz") if status == 200 else HealthResult(UNHEALTHY, f"readyz: HTTP {status}")
    if 401 in statuses:
        return HealthResult(UNHEALTHY, "unauthorized: the API server rejected kubegate's credentials")
    denied = []
    for resource, (status, body) in zip(IMPERSONATED, answers, strict=True):
        allowed = False
        if status in (200, 201):
            with contextlib.suppress(ValueError, AttributeError):
                allowed = bool(json.loads(body).get("status", {}).get("allowed"))
        elif status != 403:
            return HealthResult(UNHEALTHY, f"selfsubjectaccessreview: HTTP {status}")
        if not allowed:
            denied.append(resource)
    if denied:
        return HealthResult(UNHEALTHY, f"impersonation not permitted: cannot impersonate {', '.join(denied)} "
                                       f"(see `kubegate clusters setup {cluster.name}`)")
    return HealthResult(HEALTHY, "")


async def check_cluster(cluster: Cluster, timeout: float = 5.0) -> HealthResult:
    try:
        creds = await asyncio.wait_for(cluster.credentials.get(), timeout * 2)
    except TimeoutError:
        return HealthResult(UNHEALTHY, "credentials: timed out")
    except Exception as exc:  # any provider failure makes the cluster unusable
        return HealthResult(UNHEALTHY, f"credentials: {exc}")
    try:
        return await asyncio.wait_for(asyncio.to_thread(check_cluster_sync, cluster, creds, timeout), timeout * 4)
    except TimeoutError:
        return HealthResult(UNHEALTHY, "unreachable: timed out")


class HealthChecker:
    """Checks every known cluster every ``interval`` seconds (``concurrency`` at a time)."""

    def __init__(
        self,
        registry: ClusterRegistry,
        *,
        interval: float = 30.0,
        timeout: float = 5.0,
        concurrency: int = 16,
        on_round: Callable[[], None] | None = None,
    ) -> None:
        self.registry = registry
        self.interval, self.timeout = interval, timeout
        self._semaphore = asyncio.Semaphore(concurrency)
        self._on_round = on_round
        self._wake = asyncio.Event()
        self.rounds = 0

    def check_soon(self) -> None:
        """Start the next round now (e.g. after new clusters appeared)."""
        self._wake.set()

    async def check_one(self, cluster: Cluster) -> HealthResult:
        """Check one cluster and record the result; whatever goes wrong is this cluster's result only."""
        async with self._semaphore:
            started = time.monotonic()
            try:
                result = await check_cluster(cluster, self.timeout)
            except Exception as exc:  # never let one cluster's surprise end the round of the others
                log.exception("health check of cluster %s failed", cluster.name)
                result = HealthResult(UNHEALTHY, f"health check failed: {type(exc).__name__}: {exc}")
        metrics.HEALTH_CHECKS.labels(result.health).inc()
        current = self.registry.peek(cluster.name)
        if current is not None and current.server == cluster.server:
            if current.health != result.health:
                (log.warning if result.health == UNHEALTHY else log.info)(
                    "cluster %s is %s%s (%.0f ms)", cluster.name, result.health,
                    f": {result.detail}" if result.detail else "", (time.monotonic() - started) * 1000,
                )
            self.registry.set_health(cluster.name, result.health, result.detail)
        return result

    async def run_round(self) -> None:
        clusters = self.registry.all()
        # Each check is isolated (check_one records its own failure); return_exceptions keeps a round
        # whole even if recording one result fails.
        for cluster, outcome in zip(clusters, await asyncio.gather(
                *(self.check_one(c) for c in clusters), return_exceptions=True), strict=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                log.error("health check of cluster %s failed: %r", cluster.name, outcome)
        self.rounds += 1
        if self._on_round:
            self._on_round()

    async def run(self) -> None:
        while True:
            try:
                await self.run_round()
            except Exception:
                log.exception("health round failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

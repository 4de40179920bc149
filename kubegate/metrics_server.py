"""The metrics listener: plain HTTP (loopback by default), apart from the mTLS proxy port.

    GET /metrics   Prometheus text format (prometheus-client). With several worker processes the
                   supervisor serves it in multiprocess mode: every worker writes its samples to
                   ``$PROMETHEUS_MULTIPROC_DIR`` and ``MultiProcessCollector`` sums them at scrape time.
    GET /healthz   200 "ok" while the process runs.
    GET /readyz    200 when the proxy is ready to serve (every worker listening, not shutting down),
                   503 with the reason otherwise.

The server is a small asyncio protocol (one request per connection, bounded head size and time): it
runs on the proxy's own event loop with one worker, on the supervisor's loop with several.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any

log = logging.getLogger("kubegate.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_MAX_HEAD = 8192
_HEAD_TIMEOUT = 5.0

Readiness = Callable[[], tuple[bool, str]]


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()) or None


class FunctionCollector:
    """A prometheus-client collector whose metric families come from a function, at scrape time
    (the supervisor's worker counts, certificate expiry times): nothing to keep in step."""

    def __init__(self, fn: Callable[[], Iterable[Any]]) -> None:
        self._fn = fn

    def collect(self) -> Iterable[Any]:
        return list(self._fn())


def render_metrics(extra: Sequence[Any] = ()) -> tuple[bytes, str]:
    """The current exposition (body, content type); sums all processes in multiprocess mode, then
    appends the ``extra`` collectors. No ``*_created`` series (prometheus-client's default adds one
    per counter and histogram child: noise nobody queries, and not there with several workers)."""
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        disable_created_metrics,
        generate_latest,
    )

    disable_created_metrics()

    from proxy import metrics as proxy_metrics

    proxy_metrics.flush()  # this process's hot-path tallies (a single-process proxy serves from its loop)
    path = multiprocess_dir()
    registry = REGISTRY
    if path:
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)
    body = generate_latest(registry)
    if extra:
        own = CollectorRegistry()
        for collector in extra:
            own.register(collector)
        body += generate_latest(own)
    return body, CONTENT_TYPE_LATEST


def _response(status: int, reason: str, body: bytes, content_type: str = "text/plain; charset=utf-8",
              head_only: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n"
    ).encode("latin-1")
    return head if head_only else head + body


def handle_request(method: str, path: str, readiness: Readiness,
                   render: Callable[[], tuple[bytes, str]] = render_metrics) -> bytes:
    """The full response bytes for one request (pure apart from ``readiness``/``render``)."""
    path = path.split("?", 1)[0]
    head_only = method == "HEAD"
    if method not in ("GET", "HEAD"):
        return _response(405, "Method Not Allowed", b"only GET\n")
    if path == "/healthz":
        return _response(200, "OK", b"ok\n", head_only=head_only)
    if path == "/readyz":
        ready, why = readiness()
        if ready:
            return _response(200, "OK", b"ok\n", head_only=head_only)
        return _response(503, "Service Unavailable", f"not ready: {why}\n".encode(), head_only=head_only)
    if path == "/metrics":
        try:
            body, ctype = render()
        except Exception:  # a broken collector must not kill the listener
            log.exception("rendering metrics failed")
            return _response(500, "Internal Server Error", b"metrics unavailable\n")
        return _response(200, "OK", body, ctype, head_only=head_only)
    return _response(404, "Not Found", b"not found: try /metrics, /healthz, /readyz\n")


class _MetricsProtocol(asyncio.Protocol):
    def __init__(self, server: MetricsServer) -> None:
        self.server = server
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        self.timer = asyncio.get_running_loop().call_later(_HEAD_TIMEOUT, transport.close)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > _MAX_HEAD:
                self._finish(_response(431, "Request Header Fields Too Large", b"too large\n"))
            return
        line = self.buf.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._finish(_response(400, "Bad Request", b"bad request\n"))
            return
        self._finish(handle_request(parts[0], parts[1], self.server.readiness, self.server.render))

    def _finish(self, payload: bytes) -> None:
        assert self.transport is not None
        if self.timer:
            self.timer.cancel()
        self.transport.write(payload)
        self.transport.close()
        self.buf = b""

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer:
            self.timer.cancel()


class MetricsServer:
    """``await MetricsServer(host, port, readiness).start()``; ``.port`` is the bound port."""

    def __init__(self, host: str, port: int, readiness: Readiness,
                 render: Callable[[], tuple[bytes, str]] | None = None, collectors: Sequence[Any] = ()) -> None:
        self.host = host
        self.port = port
        self.readiness = readiness
        self.render = render or (lambda: render_metrics(collectors))
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            where = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
            raise OSError(exc.errno, f"metrics listener cannot listen on {where}: {exc.strerror or exc}") from None
        sock.listen(128)
        sock.setblocking(False)
        self._server = await loop.create_server(lambda: _MetricsProtocol(self), sock=sock)
        self.port = sock.getsockname()[1]
        log.info("metrics listener started", extra={"address": f"{self.host}:{self.port}"})

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

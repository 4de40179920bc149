"""kubegate's own HTTP endpoints on the proxy listener: ``/kubegate/<name>/…`` is answered by the handler
registered under ``<name>`` (``auth`` for sign-in and certificates, ``sessions`` …), never forwarded.

The one shared dispatch: ``Forwarder.new_exchange`` asks ``endpoint_name(path)`` (a string prefix test,
nothing more on the request path of ordinary Kubernetes requests) and hands a matching request to a
``LocalExchange``, which buffers the (bounded) request body, awaits the handler with a ``LocalRequest``
and writes its ``LocalResponse``. A handler sees the caller's identity when the connection presented a
certificate from the kubegate CA — possibly an expired one (``identity.not_after`` says; the handler
decides) — or None when it presented none.

``LocalExchange`` also answers requests that cannot be forwarded because the connection has no usable
identity (no client certificate): a 401 ``Status`` saying how to get one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from proxy import metrics
from proxy.headers import REQUEST_ID_HEADER
from proxy.protocol.events import RequestHead, ResponseHead
from rbac.identity import Identity
from rbac.status import status_body

log = logging.getLogger("kubegate.proxy.endpoints")

PREFIX = "/kubegate/"
MAX_BODY_BYTES = 64 * 1024

__all__ = ["PREFIX", "LocalExchange", "LocalHandler", "LocalRequest", "LocalResponse", "endpoint_name"]


@dataclass(frozen=True, slots=True)
class LocalRequest:
    method: str
    path: str  # the path below /kubegate/<name>/ (no leading slash), e.g. "login/start"
    query: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    identity: Identity | None  # from the client certificate (may be expired); None without one
    peer_ip: str


@dataclass(frozen=True, slots=True)
class LocalResponse:
    status: int
    body: bytes
    content_type: bytes = b"application/json"
    headers: tuple[tuple[bytes, bytes], ...] = field(default=())


LocalHandler = Callable[[LocalRequest], Awaitable[LocalResponse]]


def endpoint_name(path: str) -> str | None:
    """``/kubegate/auth/login`` → ``auth``; None for any path outside ``/kubegate/``."""
    if not path.startswith(PREFIX):
        return None
    return path[len(PREFIX) :].split("/", 1)[0]


def _json_error(code: int, reason: str, message: str) -> LocalResponse:
    return LocalResponse(code, status_body(code, reason, message))


async def no_identity(request: LocalRequest) -> LocalResponse:
    """The answer to a Kubernetes request on a connection without a client certificate."""
    return _json_error(
        401, "Unauthorized", "kubegate: no client certificate was presented; run kubegate login (or use a "
        "kubeconfig that kubegate wrote)"
    )


class LocalExchange:
    """One request answered by kubegate itself (see the module docstring)."""

    __slots__ = ("fwd", "conn", "head", "sid", "name", "handler", "request_id", "body", "too_large", "ended",
                 "task", "finished", "_ended_waiter", "identity", "kind", "cluster", "upgrade")  # fmt: skip

    def __init__(self, fwd: Any, conn: Any, head: RequestHead, name: str, handler: LocalHandler) -> None:
        self.fwd = fwd
        self.conn = conn
        self.head = head
        self.sid = head.stream_id
        self.name = name
        self.handler = handler
        self.request_id = fwd.next_request_id()
        self.body = bytearray()
        self.too_large = False
        self.ended = False
        self.task: asyncio.Task[None] | None = None
        self.finished = False
        self._ended_waiter: asyncio.Future[None] | None = None
        self.identity = conn.identity
        self.kind = None  # never a long-lived stream: the expiry sweep passes it by
        self.cluster = None
        self.upgrade = None

    # --- events from the connection -------------------------------------------------------------------
    def start(self) -> None:
        self.task = self.fwd.loop.create_task(self._run())

    def start_upgrade(self, trailing: bytes) -> None:
        self.ended = True  # the codec stopped at the head; the answer is a refusal and the connection ends
        self.start()

    def on_body(self, data: bytes) -> None:
        self.conn.acknowledge(self.sid, len(data))
        if len(self.body) + len(data) > MAX_BODY_BYTES:
            self.too_large = True
            return
        self.body += data

    def on_end(self) -> None:
        self.ended = True
        waiter = self._ended_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_reset(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def stop(self, reason: str) -> None:
        self.on_reset()

    # --- answering --------------------------------------------------------------------------------------
    async def _run(self) -> None:
        head = self.head
        try:
            if not self.ended:
                self._ended_waiter = self.fwd.loop.create_future()
                await self._ended_waiter
            if head.upgrade:
                response = _json_error(400, "BadRequest", f"{head.path} does not switch protocols")
            elif self.too_large:
                response = _json_error(413, "RequestEntityTooLarge", f"request body above {MAX_BODY_BYTES} bytes")
            else:
                sub = head.path[len(PREFIX) + len(self.name) :].lstrip("/")
                request = LocalRequest(head.method, sub, head.query, head.headers, bytes(self.body),
                                       self.identity, self.conn.peer_ip)
                try:
                    response = await self.handler(request)
                except Exception:
                    log.exception("endpoint failed", extra={"endpoint": self.name, "request_id": self.request_id})
                    response = _json_error(500, "InternalError",
                                           f"kubegate internal error (request id {self.request_id})")
            self._send(response)
        except asyncio.CancelledError:
            pass
        finally:
            self.finished = True
            self.conn.exchange_done(self.sid)
            if head.upgrade:
                self.conn.close()

    def _send(self, response: LocalResponse) -> None:
        conn = self.conn
        headers = [
            (b"content-type", response.content_type),
            (b"content-length", str(len(response.body)).encode()),
            (b"cache-control", b"no-store"),
            (REQUEST_ID_HEADER, self.request_id.encode()),
            *response.headers,
        ]
        conn.send_head(ResponseHead(self.sid, response.status, headers, content_length=len(response.body)))
        conn.send_body(self.sid, response.body, end_stream=True)
        conn.flush()
        metrics.child(metrics.ENDPOINT_REQUESTS, self.name, str(response.status)).inc()  # type: ignore[attr-defined]
        if response.status >= 400:
            log.info("endpoint refused request", extra={
                "endpoint": self.name, "path": self.head.path, "code": response.status, "peer": conn.peer_ip,
                "user": self.identity.user if self.identity else None, "request_id": self.request_id})

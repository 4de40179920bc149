"""The sandbox cluster's HTTPS server: asyncio (uvloop) I/O around the sans-IO HTTP codecs.

    server = SandboxServer(api=api, authorizer=authorizer, pki=pki, tokens=tokens, serve_stream=serve_stream)
    await server.start()            # binds host:port (port 0: a free one), TLS with ALPN h2 + http/1.1
    ...
    await server.stop(grace=5.0)    # stop accepting, GOAWAY / Connection: close, end streams, close

Per connection: ALPN picks ``Http2ServerConnection`` or ``Http1ServerConnection``; the client
certificate (optional at the TLS level, verified against the sandbox CA when sent) is read once.
Per request: authenticate (certificate, else bearer token, else 401), apply ``Impersonate-*`` (403 /
500 like the apiserver), then ``api.handle()``; a streamed ``ApiResponse`` (watch, logs -f) is written
and flushed chunk by chunk, waiting while the socket's write buffer is above its high-water mark or
the HTTP/2 stream has no send window. HTTP/1.1 requests of one connection are served one at a time,
in order. An HTTP/1.1 Upgrade request (exec / attach / port-forward) goes to ``api.resolve_stream()``
and, when allowed, to ``serve_stream(target, head, ByteStream, initial_bytes)`` on the raw connection.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote

from proxy.protocol.events import (
    ConnectionClosed,
    ProtocolError,
    RequestBody,
    RequestEnd,
    RequestHead,
    ResponseHead,
    ServerLimits,
    StreamReset,
    UpgradeRequested,
    WindowOpened,
)
from proxy.protocol.http1 import Http1ServerConnection
from proxy.protocol.http2 import Http2ServerConnection
from sandbox.api import Api
from sandbox.auth import (
    Authenticator,
    ImpersonationFailure,
    TokenFile,
    impersonate,
    status_body,
    unauthorized_body,
    user_from_certificate,
)
from sandbox.authz import (
    PROTOBUF_MAGIC,
    RbacAuthorizer,
    ReviewError,
    ReviewService,
    bootstrap_rbac_objects,
    decode_review_protobuf,
)
from sandbox.store import Store
from sandbox.streams import serve_stream
from sandbox.tls import SandboxPKI, write_kubeconfig
from sandbox.types import ApiRequest, ApiResponse, Authorizer, ByteStream, StreamTarget, UserInfo

log = logging.getLogger("sandbox.server")

DEFAULT_LIMITS = ServerLimits(max_header_bytes=1024 * 1024, max_body_bytes=3 * 1024 * 1024)
READ_HIGH_WATER = 1024 * 1024
H1_PIPELINE_DEPTH = 16
HANDSHAKE_TIMEOUT = 10.0  # seconds a client may take to complete the TLS handshake
IDLE_TIMEOUT = 90.0  # seconds a connection may sit with no request being served (slow or idle clients)


class ApiLike(Protocol):
    async def handle(self, req: ApiRequest) -> ApiResponse: ...

    def resolve_stream(
        self, req: ApiRequest
    ) -> StreamTarget | ApiResponse | Awaitable[StreamTarget | ApiResponse]: ...


ServeStream = Callable[[StreamTarget, RequestHead, ByteStream, bytes], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]


class _Request:
    __slots__ = ("head", "body", "task", "upgrade", "trailing", "streaming", "answered")

    def __init__(self, head: RequestHead) -> None:
        self.head = head
        self.body: list[bytes] = []
        self.task: asyncio.Task[None] | None = None
        self.upgrade = False
        self.trailing = b""
        self.streaming = False
        self.answered = False  # a response head went out


class RawStream:
    """``sandbox.types.ByteStream`` over an upgraded connection (what ``serve_stream`` reads and writes)."""

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self._buf: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    def feed(self, data: bytes) -> None:
        self._buf.append(data)
        self._size += len(data)
        if self._size > READ_HIGH_WATER and not self._paused and self._conn.transport is not None:
            self._paused = True
            self._conn.transport.pause_reading()
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> bytes:
        while not self._buf:
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._buf.popleft() if len(self._buf) == 1 else b"".join(self._buf)
        self._buf.clear()
        self._size = 0
        if self._paused and self._conn.transport is not None and not self._conn.closed:
            self._paused = False
            self._conn.transport.resume_reading()
        return data

    def write(self, data: bytes) -> None:
        if not self._conn.closed and data:
            self._conn.transport.write(data)

    async def drain(self) -> None:
        await self._conn.drain()

    def write_eof(self) -> None:
        transport = self._conn.transport
        if not self._conn.closed and transport.can_write_eof():
            transport.write_eof()

    def close(self) -> None:
        self._conn.close_transport()

    @property
    def closed(self) -> bool:
        return self._conn.closed


class _Connection(asyncio.Protocol):
    def __init__(self, server: SandboxServer) -> None:
        self.server = server
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.codec: Http1ServerConnection | Http2ServerConnection = None  # type: ignore[assignment]
        self.h2 = False
        self.cert_user: UserInfo | None = None
        self.requests: dict[int, _Request] = {}
        self.queue: deque[_Request] = deque()
        self.current: _Request | None = None
        self.raw: RawStream | None = None
        self.closed = False
        self.shutting_down = False
        self.paused_writing = False
        self.reading_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._window_waiters: dict[int, asyncio.Future[None]] = {}
        self.peer = ""
        self.last_activity = time.monotonic()
        self.idle_reset = self.last_activity  # when the last request finished

    # ------------------------------------------------------------------ transport callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's SSL transport is duck-typed
        self.server._connections.add(self)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        self.h2 = alpn == "h2"
        limits = self.server.limits
        self.codec = Http2ServerConnection(limits) if self.h2 else Http1ServerConnection(limits)
        if ssl_object is not None:
            der = ssl_object.getpeercert(binary_form=True)
            if der:
                try:
                    self.cert_user = user_from_certificate(der)
                except ValueError:
                    log.warning("unreadable client certificate from %s", self.peer)
        if self.server._stopping:
            self.codec.close()
        self.flush()

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        if self.raw is not None:
            self.raw.feed(data)
            return
        try:
            events = self.codec.receive_data(data)
        except Exception:  # a codec bug must not take the server down
            log.exception("codec failure on connection from %s", self.peer)
            self.close_transport()
            return
        for event in events:
            kind = type(event)
            if kind is RequestHead:
                self.requests[event.stream_id] = _Request(event)
            elif kind is RequestBody:
                req = self.requests.get(event.stream_id)
                if req is not None:
                    req.body.append(event.data)
                self.codec.acknowledge_received(event.stream_id, len(event.data))
            elif kind is RequestEnd:
                req = self.requests.get(event.stream_id)
                if req is not None:
                    self._schedule(req)
            elif kind is UpgradeRequested:
                req = _Request(event.head)
                req.upgrade = True
                req.trailing = event.trailing
                self.requests[event.stream_id] = req
                self.raw = RawStream(self)
                self._schedule(req)
            elif kind is WindowOpened:
                self._wake_windows(event.stream_id)
            elif kind is StreamReset:
                req = self.requests.pop(event.stream_id, None)
                if req is not None and req.task is not None:
                    req.task.cancel()
            elif kind is ProtocolError:
                log.warning(
                    "bad request from %s (stream %d): %s -> %d",
                    self.peer,
                    event.stream_id,
                    event.message,
                    event.status,
                )
            elif kind is ConnectionClosed:
                self._cancel_all()
        self.flush()

    def eof_received(self) -> bool | None:
        if self.raw is not None:
            self.raw.feed_eof()  # over TLS the transport closes after EOF whatever is returned
            return None
        self.data_received_eof()
        return None

    def data_received_eof(self) -> None:
        self.codec.receive_data(b"")
        self._cancel_all()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server._connections.discard(self)
        if self.raw is not None:
            self.raw.feed_eof()
        self._cancel_all()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        self._wake_windows(0)
        self.server._check_all_closed()

    def pause_writing(self) -> None:
        self.paused_writing = True

    def resume_writing(self) -> None:
        self.paused_writing = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # ------------------------------------------------------------------ plumbing

    def flush(self) -> None:
        if self.closed:
            return
        data = self.codec.data_to_send()
        if data:
            self.transport.write(data)
        if self.codec.must_close and self.raw is None:
            self.close_transport()

    def close_transport(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()
            self.server._check_all_closed()

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("client went away")
        if self.paused_writing:
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(waiter)
            await waiter
            if self.closed:
                raise ConnectionResetError("client went away")

    async def _writable(self, sid: int) -> None:
        await self.drain()
        while self.codec.send_window(sid) <= 0:
            if self.closed:
                raise ConnectionResetError("client went away")
            waiter = self._window_waiters.get(sid)
            if waiter is None or waiter.done():
                waiter = asyncio.get_running_loop().create_future()
                self._window_waiters[sid] = waiter
            await waiter

    def _wake_windows(self, sid: int) -> None:
        if sid == 0:
            waiters = list(self._window_waiters.values())
            self._window_waiters.clear()
        else:
            waiter = self._window_waiters.pop(sid, None)
            waiters = [waiter] if waiter is not None else []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _schedule(self, req: _Request) -> None:
        if self.h2:
            req.task = self.server._spawn(self._run(req))
            return
        self.queue.append(req)
        if len(self.queue) > H1_PIPELINE_DEPTH and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()
        self._next_h1()

    def _next_h1(self) -> None:
        if self.current is not None or not self.queue or self.closed:
            return
        req = self.queue.popleft()
        self.current = req
        if self.reading_paused and len(self.queue) <= H1_PIPELINE_DEPTH // 2:
            self.reading_paused = False
            self.transport.resume_reading()
        req.task = self.server._spawn(self._run(req))
        req.task.add_done_callback(self._h1_done)

    def _h1_done(self, _task: asyncio.Task[None]) -> None:
        self.current = None
        self._next_h1()

    def _cancel_all(self) -> None:
        self.queue.clear()
        for req in list(self.requests.values()):
            if req.task is not None:
                req.task.cancel()
        self.requests.clear()

    def idle_since(self, now: float) -> float:
        """Seconds without any request being served (0 while one is: requests, streams, upgrades).
        A request whose head or body is still trickling in does not count as being served."""
        if self.closed or self.raw is not None or self.current is not None or self.queue:
            return 0.0
        if any(req.task is not None for req in self.requests.values()):
            return 0.0
        if self.h2 and not self.requests:
            return 0.0  # an idle HTTP/2 connection is kept (clients multiplex over one for long)
        return now - max(self.last_activity, self.idle_reset)

    def shutdown(self) -> None:
        """Graceful stop: no new requests; end streaming responses; close when idle."""
        self.shutting_down = True
        if self.closed:
            return
        self.codec.close()
        for req in list(self.requests.values()):
            if (req.streaming or req.upgrade) and req.task is not None:
                req.task.cancel()
        if self.raw is not None and self.current is None:
            self.close_transport()
        self.flush()

    # ------------------------------------------------------------------ requests

    async def _run(self, req: _Request) -> None:
        head = req.head
        sid = head.stream_id
        counts = self.server.requests_by_protocol
        counts[head.http_version] = counts.get(head.http_version, 0) + 1
        try:
            user = self.server.authenticator.authenticate(self.cert_user, head.header(b"authorization"))
            if user is None:
                self._answer(sid, 401, unauthorized_body())
                return
            acting = impersonate(user, head.headers, self.server.authorizer)
            if isinstance(acting, ImpersonationFailure):
                log.info("impersonation refused for %s: %s", user.username, acting.message)
                self._answer(sid, acting.status, acting.body)
                return
            if acting is not None:
                user = acting
            api_request = self._api_request(req, user)
            if req.upgrade:
                await self._run_upgrade(req, api_request)
                return
            response = await self.server.api.handle(api_request)
            await self._respond(req, response)
        except asyncio.CancelledError:
            if not self.closed:
                if req.streaming and self.shutting_down:
                    self.codec.send_end(sid)  # a watch ended by a graceful stop ends cleanly
                else:
                    self.codec.reset_stream(sid)
                self.flush()
            raise
        except ConnectionError:
            pass
        except Exception:
            log.exception("request %s %s failed", head.method, head.target)
            if not self.closed:
                if req.answered:
                    self.codec.reset_stream(sid)  # too late for a Status: abandon the stream
                    self.flush()
                else:
                    self._answer(
                        sid,
                        500,
                        status_body(500, "InternalError", "Internal error occurred: see the sandbox log"),
                    )
        finally:
            self.requests.pop(sid, None)
            self.idle_reset = time.monotonic()

    def _api_request(self, req: _Request, user: UserInfo) -> ApiRequest:
        head = req.head
        headers: dict[str, str] = {}
        for key, value in head.headers:
            if key == b"authorization" or key.startswith(b"impersonate-"):
                continue  # consumed by authentication / impersonation, as the apiserver's filters do
            name = key.decode("latin-1")
            text = value.decode("latin-1")
            if name in headers:
                headers[name] = f"{headers[name]}, {text}"
            else:
                headers[name] = text
        query = head.query
        body = b"".join(req.body) if req.body else b""
        if body[:4] == PROTOBUF_MAGIC and head.path.rsplit("/", 1)[-1] in ReviewService.RESOURCES:
            # kubectl sends review objects as protobuf; the Api speaks JSON: translate these few kinds.
            try:
                body = json.dumps(decode_review_protobuf(body)).encode()
                headers["content-type"] = "application/json"
                headers["accept"] = "application/json"
            except (ReviewError, UnicodeDecodeError) as exc:
                log.info("undecodable protobuf review body from %s: %s", self.peer, exc)
        return ApiRequest(
            method=head.method.upper(),
            path=unquote(head.path),
            query=parse_qs(query, keep_blank_values=True) if query else {},
            headers=headers,
            body=body,
            user=user,
            raw_target=head.target,
        )

    def _answer(self, sid: int, status: int, body: bytes) -> None:
        req = self.requests.get(sid)
        if req is not None and req.upgrade:
            self.raw = None  # refused before the switch: the answer goes through the codec, which closes
        self.codec.send_response_head(ResponseHead(sid, status, list(_JSON), content_length=len(body)))
        self.codec.send_body(sid, body, end_stream=True)
        self.flush()

    async def _respond(self, req: _Request, response: ApiResponse) -> None:
        sid = req.head.stream_id
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        codec = self.codec
        req.answered = True
        if response.stream is None:
            body = response.body
            codec.send_response_head(ResponseHead(sid, response.status, headers, content_length=len(body)))
            if body and req.head.method != "HEAD":
                codec.send_body(sid, body)
            codec.send_end(sid)
            self.flush()
            return
        stream = response.stream
        req.streaming = True
        codec.send_response_head(ResponseHead(sid, response.status, headers))
        self.flush()
        try:
            async for chunk in stream:
                if self.closed:
                    raise ConnectionResetError("client went away")
                if chunk:
                    codec.send_body(sid, chunk)
                    self.flush()
                    await self._writable(sid)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        codec.send_end(sid)
        self.flush()

    async def _run_upgrade(self, req: _Request, api_request: ApiRequest) -> None:
        api = self.server.api
        resolved = api.resolve_stream(api_request)
        if inspect.isawaitable(resolved):
            resolved = await resolved
        if isinstance(resolved, ApiResponse):
            self.raw = None  # the refusal goes through the codec, which then closes
            await self._respond(req, resolved)
            return
        serve = self.server.serve_stream
        if serve is None:
            raise RuntimeError("this sandbox server was built without a stream server (serve_stream)")
        raw = self.raw
        assert raw is not None
        self.flush()  # earlier pipelined answers leave before the raw protocol starts
        try:
            await serve(resolved, req.head, raw, req.trailing)
        finally:
            self.close_transport()


class SandboxServer:
    """The sandbox's HTTPS listener. ``api`` answers requests, ``authorizer`` checks impersonation."""

    def __init__(
        self,
        *,
        api: ApiLike,
        authorizer: Authorizer,
        ssl_context: ssl.SSLContext,
        tokens: Any = None,
        serve_stream: ServeStream | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: ServerLimits | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
        pod_root: Path | None = None,
    ) -> None:
        self.api = api
        self.pod_root = pod_root  # where exec/attach processes get their per-pod working directories
        self.idle_timeout = idle_timeout
        self._sweeper: asyncio.Task[None] | None = None
        self.authorizer = authorizer
        self.authenticator = Authenticator(tokens)
        self.ssl_context = ssl_context
        self.serve_stream = serve_stream
        self.host = host
        self.port = port
        self.limits = limits or DEFAULT_LIMITS
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._all_closed = asyncio.Event()
        self.requests_by_protocol: dict[str, int] = {}  # "1.1" / "1.0" / "2" -> requests served

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    @property
    def task_count(self) -> int:
        return len(self._tasks)

    def _check_all_closed(self) -> None:
        """Graceful stop waits until every connection is closed or closing (TLS close_notify sent)."""
        if all(conn.closed for conn in self._connections):
            self._all_closed.set()

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.pod_root is not None:
            from sandbox.processes import use_pod_root

            use_pod_root(self.pod_root)
        self._all_closed = asyncio.Event()
        self._server = await loop.create_server(
            lambda: _Connection(self),
            self.host,
            self.port,
            ssl=self.ssl_context,
            reuse_address=True,
            backlog=1024,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
        )
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        self._sweeper = asyncio.ensure_future(self._sweep())
        log.info("sandbox API server listening on %s", self.url)

    async def _sweep(self) -> None:
        """Close connections that serve no request for ``idle_timeout`` seconds: idle keep-alive
        connections and clients trickling a request head or body (slowloris)."""
        interval = max(0.05, min(5.0, self.idle_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for conn in list(self._connections):
                if conn.idle_since(now) > self.idle_timeout:
                    log.info("closing connection from %s: idle for %.0fs", conn.peer, self.idle_timeout)
                    conn.codec.close()
                    conn.flush()
                    conn.close_transport()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let plain requests finish within ``grace`` seconds, end streams, close."""
        self._stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.shutdown()
        if any(not conn.closed for conn in self._connections):
            self._all_closed.clear()
            try:
                await asyncio.wait_for(self._all_closed.wait(), grace)
            except TimeoutError:
                log.warning(
                    "%d connection(s) still open after %.1fs: closing them", len(self._connections), grace
                )
        for conn in list(self._connections):
            if not conn.closed:
                log.warning("closing connection from %s at stop", conn.peer)
            conn.closed = True
            conn.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            except TimeoutError:
                pass
        log.info("sandbox API server on %s stopped", self.url)


# --------------------------------------------------------------------------- assembly


class SandboxParts:
    """Everything a running sandbox is made of (built by ``build_sandbox``)."""

    def __init__(
        self,
        server: SandboxServer,
        store: Store,
        pki: SandboxPKI,
        tokens: TokenFile,
        state_dir: Path,
        admin_kubeconfig: Path,
    ) -> None:
        self.server = server
        self.store = store
        self.pki = pki
        self.tokens = tokens
        self.state_dir = state_dir
        self.admin_kubeconfig = admin_kubeconfig


def build_sandbox(
    state_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: bool = True,
    seed_files: Sequence[str | os.PathLike[str]] = (),
    store: Store | None = None,
    limits: ServerLimits | None = None,
    token_file: str | os.PathLike[str] | None = None,
) -> SandboxParts:
    """The real sandbox: seeded Store + bootstrap RBAC, Api, RbacAuthorizer, streams, PKI, token file.
    The server is built, not started (``await parts.server.start()``); the admin kubeconfig is written
    once the port is known (``write_admin_kubeconfig``)."""
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    if store is None:
        store = Store.with_seed_data() if seed else Store()
    if seed_files:
        store.load_yaml_files([str(p) for p in seed_files])
    for group, resource, obj in bootstrap_rbac_objects():
        name = obj["metadata"]["name"]
        if store.get_object(group, resource, None, name) is None:
            store.put_object(group, resource, obj)
    authorizer = RbacAuthorizer(store)
    api = Api(store, authorizer, ReviewService(authorizer))
    pki = SandboxPKI(state, extra_hosts=() if host in ("127.0.0.1", "::1", "localhost", "") else (host,))
    tokens = TokenFile(token_file if token_file is not None else state / "tokens.csv")
    server = SandboxServer(
        api=api,
        authorizer=authorizer,
        ssl_context=pki.server_ssl_context(),
        tokens=tokens,
        serve_stream=serve_stream,
        host=host,
        port=port,
        limits=limits,
        pod_root=state / "pods",
    )
    return SandboxParts(server, store, pki, tokens, state, state / "admin.kubeconfig")


def write_admin_kubeconfig(parts: SandboxParts) -> Path:
    """A kubeconfig for ``sandbox-admin`` (``O=system:masters``) pointing at the started server."""
    users = parts.state_dir / "users"
    cert_path, key_path = users / "sandbox-admin.crt", users / "sandbox-admin.key"
    if not (cert_path.exists() and key_path.exists()):
        users.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert_pem, key_pem = parts.pki.issue_client_cert_pem("sandbox-admin", ["system:masters"])
        cert_path.write_bytes(cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, key_pem)
        finally:
            os.close(fd)
    url = parts.server.url
    return write_kubeconfig(
        parts.admin_kubeconfig,
        url,
        parts.pki.ca_cert_path,
        user="sandbox-admin",
        cert_path=cert_path,
        key_path=key_path,
    )

"""An efficient asyncio load generator for the Kubernetes API with client certificates.

- HTTP/1.1: one keep-alive TLS connection per client, responses parsed with httptools.
- HTTP/2: the h2 library; clients are spread over connections, at most ``H2_STREAMS_PER_CONN``
  concurrent streams each (kubectl/client-go multiplex everything over one connection; several
  connections keep one connection's flow control from being the bottleneck at 64 clients).
- Idle watches: many long-lived h2 streams (or HTTP/1.1 connections), held open.
- Exec: a WebSocket (``v5.channel.k8s.io``) exec session relaying bytes through ``cat``.

Everything is bounded by a request count and/or a deadline. Run on uvloop (``install_uvloop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import statistics
import time
from array import array
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings
import httptools

H2_STREAMS_PER_CONN = 16
_H2_WINDOW = 16 * 1024 * 1024

@dataclass(frozen=True)
class Endpoint:
    """Where to send requests: host/port, TLS material, and the path prefix (``/k8s/clusters/x``)."""

    host: str
    port: int
    ca_file: str
    cert_file: str
    key_file: str
    prefix: str = ""
    server_hostname: str | None = None

    def ssl_context(self, alpn: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        ctx.set_alpn_protocols([alpn])
        ctx.check_hostname = self.server_hostname is not None
        return ctx

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    bytes: int = 0
    elapsed: float = 0.0
    latencies: array = field(default_factory=lambda: array("d"))
    statuses: dict[int, int] = field(default_factory=dict)

    def record(self, status: int, nbytes: int, latency: float) -> None:
        self.requests += 1
        self.bytes += nbytes
        self.latencies.append(latency)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status >= 400:
            self.errors += 1

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return ordered[index]

    def summary(self) -> dict[str, float | int]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "rps": round(self.rps, 1),
            "p50_ms": round(self.percentile(0.5) * 1000, 3),
            "p99_ms": round(self.percentile(0.99) * 1000, 3),
            "mean_ms": round(statistics.fmean(self.latencies) * 1000, 3) if self.latencies else float("nan"),
            "bytes_per_response": round(self.bytes / self.requests) if self.requests else 0,
        }

def install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

# ------------------------------------------------------------------------------------------ HTTP/1.1

class H1Client(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, int]] | None = None
        self.nbytes = 0
        self.on_body_chunk: object = None
        self.body: list[bytes] | None = None  # set to [] to collect the next response body
        self.closed = asyncio.get_event_loop().create_future()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.nbytes = 0

    def on_body(self, body: bytes) -> None:
        self.nbytes += len(body)
        if self.body is not None:
            self.body.append(body)
        if self.on_body_chunk is not None:
            self.on_body_chunk(body)  # type: ignore[operator]

    def on_headers_complete(self) -> None:
        if self.on_body_chunk is not None and self.waiter is not None and not self.waiter.done():
            # streaming mode (watch): the head is the answer; the body keeps coming
            self.waiter.set_result((self.parser.get_status_code(), 0))

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), self.nbytes))

    async def request(self, raw: bytes) -> tuple[int, int]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter

def h1_request_bytes(method: str, path: str, authority: str, body: bytes = b"") -> bytes:
    head = (f"{method} {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: kubegate-bench/1\r\n"
            f"Accept: application/json\r\n")
    if body or method in ("POST", "PUT", "PATCH"):
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


async def h1_connect(ep: Endpoint) -> H1Client:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(H1Client, ep.host, ep.port, ssl=ep.ssl_context("http/1.1"),
                                            server_hostname=ep.server_hostname or ep.host)
    return proto

# -------------------------------------------------------------------------------------------- HTTP/2

class H2Client(asyncio.Protocol):
    """One HTTP/2 connection with many concurrent streams."""

    def __init__(self) -> None:
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None, validate_inbound_headers=False,
                                        validate_outbound_headers=False, normalize_outbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, list] = {}  # id -> [future, status, nbytes, head_future]
        self.ready = asyncio.get_event_loop().create_future()
        self.closed = asyncio.get_event_loop().create_future()
        self.max_streams = 100

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _H2_WINDOW,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 1 << 20,
        })
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(_H2_WINDOW)
        transport.write(self.conn.data_to_send())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except Exception as exc:  # protocol error from the server side
            self._fail_all(exc)
            assert self.transport is not None
            self.transport.close()
            return
        for event in events:
            kind = type(event)
            if kind is h2.events.DataReceived:
                entry = self.streams.get(event.stream_id)
                if entry is not None:
                    entry[2] += len(event.data)
                if event.flow_controlled_length:
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif kind is h2.events.ResponseReceived:
                entry = self.streams.get(event.stream_id)
                if entry is not None:
                    for name, value in event.headers:
                        if name == b":status":
                            entry[1] = int(value)
                    head = entry[3]
                    if head is not None and not head.done():
                        head.set_result(entry[1])
            elif kind is h2.events.StreamEnded or kind is h2.events.StreamReset:
                entry = self.streams.pop(event.stream_id, None)
                if entry is not None:
                    fut = entry[0]
                    if not fut.done():
                        if kind is h2.events.StreamReset:
                            fut.set_exception(ConnectionError(f"stream reset {event.error_code}"))
                        else:
                            fut.set_result((entry[1], entry[2]))
                    if entry[3] is not None and not entry[3].done():
                        entry[3].set_exception(ConnectionError("stream ended before headers"))
            elif kind is h2.events.RemoteSettingsChanged:
                self.max_streams = self.conn.remote_settings.max_concurrent_streams
                if not self.ready.done():
                    self.ready.set_result(None)
            elif kind is h2.events.ConnectionTerminated:
                self._fail_all(ConnectionError("GOAWAY"))
        out = self.conn.data_to_send()
        if out:
            assert self.transport is not None
            self.transport.write(out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(exc or ConnectionError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before settings"))

    def _fail_all(self, exc: BaseException) -> None:
        for entry in self.streams.values():
            for fut in (entry[0], entry[3]):
                if fut is not None and not fut.done():
                    fut.set_exception(exc)
        self.streams.clear()

    def start(self, headers: list[tuple[bytes, bytes]], *, want_head: bool = False) -> tuple[int, list]:
        loop = asyncio.get_running_loop()
        stream_id = self.conn.get_next_available_stream_id()
        entry = [loop.create_future(), 0, 0, loop.create_future() if want_head else None]
        for fut in (entry[0], entry[3]):
            if fut is not None:
                fut.add_done_callback(_consume)
        self.streams[stream_id] = entry
        self.conn.send_headers(stream_id, headers, end_stream=True)
        assert self.transport is not None
        self.transport.write(self.conn.data_to_send())
        return stream_id, entry

    async def request(self, headers: list[tuple[bytes, bytes]]) -> tuple[int, int]:
        _, entry = self.start(headers)
        return await entry[0]

def _consume(fut: asyncio.Future) -> None:
    """Mark a future's exception as retrieved (streams abandoned at close are expected to fail)."""
    if not fut.cancelled():
        fut.exception()


def h2_headers(method: str, path: str, authority: str) -> list[tuple[bytes, bytes]]:
    return [(b":method", method.encode()), (b":scheme", b"https"), (b":authority", authority.encode()),
            (b":path", path.encode()), (b"user-agent", b"kubegate-bench/1"), (b"accept", b"application/json")]

async def h2_connect(ep: Endpoint) -> H2Client:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(
        H2Client, ep.host, ep.port, ssl=ep.ssl_context("h2"), server_hostname=ep.server_hostname or ep.host)
    if transport.get_extra_info("ssl_object").selected_alpn_protocol() != "h2":
        transport.close()
        raise ConnectionError("server did not negotiate h2")
    await asyncio.wait_for(proto.ready, 10)
    return proto

# ------------------------------------------------------------------------------------- request load

async def run_load(ep: Endpoint, path: str, *, protocol: str, concurrency: int, duration: float,
                   max_requests: int | None = None, warmup: int = 0, rate: float | None = None) -> LoadResult:
    """``concurrency`` clients each sending ``GET ep.prefix+path`` back to back for ``duration`` seconds
    (or until ``max_requests`` in total). ``warmup`` requests per client are not counted. With ``rate``
    (requests per second in total), each client sends on a fixed schedule (``concurrency / rate``
    apart, staggered) instead of back to back: a paced load, as a steady production rate is."""
    full = ep.prefix + path
    result = LoadResult()
    if protocol == "h1":
        conns: list = await asyncio.gather(*(h1_connect(ep) for _ in range(concurrency)))
        raw = h1_request_bytes("GET", full, ep.authority)

        def sender(i: int):  # noqa: ANN202
            conn = conns[i]
            return lambda: conn.request(raw)
    else:
        nconn = max(1, -(-concurrency // H2_STREAMS_PER_CONN))
        conns = await asyncio.gather(*(h2_connect(ep) for _ in range(nconn)))
        headers = h2_headers("GET", full, ep.authority)

        def sender(i: int):  # noqa: ANN202
            conn = conns[i % nconn]
            return lambda: conn.request(headers)

    for i in range(concurrency):
        send = sender(i)
        for _ in range(warmup):
            await send()

    remaining = [max_requests if max_requests is not None else 1 << 62]
    clock = time.perf_counter
    deadline = clock() + duration

    interval = concurrency / rate if rate else 0.0

    async def client(i: int) -> None:
        send = sender(i)
        due = clock() + interval * i / concurrency
        while remaining[0] > 0 and clock() < deadline:
            if interval:
                wait = due - clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                due += interval
                if clock() >= deadline:
                    return
            remaining[0] -= 1
            t0 = clock()
            try:
                status, nbytes = await send()
            except (ConnectionError, OSError):
                result.errors += 1
                result.requests += 1
                return
            result.record(status, nbytes, clock() - t0)

    start = clock()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    result.elapsed = clock() - start
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    return result

# ----------------------------------------------------------------------------------------- watches

class WatchHolder:
    """Opens ``count`` idle watches over h2 (``per_conn`` streams per connection) or, with
    ``protocol="h1"``, one HTTP/1.1 connection each (as client-go without h2); ``close()`` ends them."""

    def __init__(self, ep: Endpoint, path: str, count: int, per_conn: int = 100, protocol: str = "h2") -> None:
        self.ep = ep
        self.path = ep.prefix + path
        self.count = count
        self.per_conn = per_conn
        self.protocol = protocol
        self.conns: list = []
        self.opened = 0
        self.failed = 0
        self.failures: dict[str, int] = {}

    async def open(self, timeout: float = 120.0, trigger=None) -> None:  # noqa: ANN001
        """Start every watch; then ``await trigger()`` (if given: e.g. create one object so that a
        server which sends the response head only with the first event sends it) and wait for every
        response head."""
        h1 = self.protocol == "h1"
        nconn = self.count if h1 else max(1, -(-self.count // self.per_conn))
        sem = asyncio.Semaphore(32)

        async def connect() -> H1Client | H2Client:
            async with sem:
                return await (h1_connect(self.ep) if h1 else h2_connect(self.ep))

        self.conns = list(await asyncio.gather(*(connect() for _ in range(nconn))))
        heads = []
        if h1:
            raw = h1_request_bytes("GET", self.path, self.ep.authority)
            for conn in self.conns:
                conn.on_body_chunk = _ignore  # streaming: the head answers the request
                heads.append(asyncio.ensure_future(conn.request(raw)))
        else:
            headers = h2_headers("GET", self.path, self.ep.authority)
            for i in range(self.count):
                conn = self.conns[i // self.per_conn]
                _, entry = conn.start(headers, want_head=True)
                heads.append(entry[3])
        if trigger is not None:
            await trigger()
        done, pending = await asyncio.wait(heads, timeout=timeout)
        for fut in pending:
            fut.cancel()
        for fut in done:
            error = fut.exception()
            status = None if error is not None else fut.result()[0] if h1 else fut.result()
            if status == 200:
                self.opened += 1
            else:
                self.failed += 1
                why = repr(error) if error is not None else f"HTTP {status}"
                self.failures[why] = self.failures.get(why, 0) + 1
        if pending:
            self.failures["no response head in time"] = len(pending)

    async def close(self) -> None:
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.close()
        await asyncio.gather(*(c.closed for c in self.conns), return_exceptions=True)

def _ignore(_chunk: bytes) -> None:
    pass


async def get_json(ep: Endpoint, path: str) -> dict:
    """One GET over HTTP/1.1, the body parsed as JSON."""
    import json

    conn = await h1_connect(ep)
    try:
        conn.body = []
        status, _ = await conn.request(h1_request_bytes("GET", ep.prefix + path, ep.authority))
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}")
        return json.loads(b"".join(conn.body))
    finally:
        assert conn.transport is not None
        conn.transport.close()


async def current_resource_version(ep: Endpoint, list_path: str) -> str:
    """The resourceVersion of a list (a watch from it sees every later change, whenever it starts)."""
    return (await get_json(ep, list_path + ("&" if "?" in list_path else "?") + "limit=1"))["metadata"][
        "resourceVersion"]


async def watch_events(ep: Endpoint, path: str, expect: int, trigger, timeout: float = 120.0) -> tuple[int, float]:
    """Open one HTTP/1.1 watch (``path`` should carry a ``resourceVersion`` so no event is missed), call
    ``await trigger()`` to make the server emit events, and count newline-delimited events until
    ``expect`` arrived. Returns (events, seconds from the trigger to the last event)."""
    conn = await h1_connect(ep)
    seen = [0]
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def on_chunk(chunk: bytes) -> None:
        seen[0] += chunk.count(b"\n")
        if seen[0] >= expect and not done.done():
            done.set_result(None)

    conn.on_body_chunk = on_chunk
    head = asyncio.ensure_future(conn.request(h1_request_bytes("GET", ep.prefix + path, ep.authority)))
    head.add_done_callback(_consume)
    t0 = time.perf_counter()
    try:
        await trigger()
        await asyncio.wait_for(done, timeout)
        if head.done() and head.exception() is None and head.result()[0] != 200:
            raise RuntimeError(f"watch answered {head.result()[0]}")
    finally:
        # aborted, not closed: a close sends TLS close_notify and keeps the socket open until the peer
        # answers it (up to 30 s), and a proxy that does not read its client while relaying a watch (nginx)
        # would go on relaying this watch's events meanwhile, into the next measured watch's time
        assert conn.transport is not None
        conn.transport.abort()
    return seen[0], time.perf_counter() - t0


# -------------------------------------------------------------------------------------------- exec

async def exec_stdout_spdy(ep: Endpoint, pod_path: str, total_bytes: int,
                           command: list[str] | None = None) -> tuple[int, float]:
    """Exec ``head -c total_bytes /dev/zero`` (or ``command``) over SPDY/3.1 (``v4.channel.k8s.io``, as
    kubectl before 1.30) and read its stdout to the end. Returns (stdout bytes received, seconds from
    the 101 to the end of the session: the error stream's end)."""
    from urllib.parse import quote

    from proxy.protocol import spdy

    argv = command or ["head", "-c", str(total_bytes), "/dev/zero"]
    query = "&".join(f"command={quote(arg, safe='')}" for arg in argv) + "&stdout=true&stderr=true"
    reader, writer = await asyncio.open_connection(ep.host, ep.port, ssl=ep.ssl_context("http/1.1"),
                                                   server_hostname=ep.server_hostname or ep.host,
                                                   limit=1 << 20)
    writer.write((f"POST {ep.prefix}{pod_path}/exec?{query} HTTP/1.1\r\nHost: {ep.authority}\r\n"
                  "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
                  "Content-Length: 0\r\n\r\n").encode())
    try:
        head = b""
        while b"\r\n\r\n" not in head:
            more = await asyncio.wait_for(reader.read(65536), 120)
            if not more:
                raise RuntimeError("exec: the connection closed before the answer's head")
            head += more
        head, _, data = head.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"exec refused: {head[:100]!r}")
        t0 = time.perf_counter()
        conn = spdy.SpdyConnection(client_side=True)
        for kind in ("error", "stdout", "stderr"):  # stream ids 1, 3, 5
            conn.send_syn_stream([("streamtype", kind)])
        writer.write(conn.data_to_send())
        received = 0
        while True:
            for event in conn.receive_data(data):
                if isinstance(event, spdy.Data):
                    if event.stream_id == 3:
                        received += len(event.data)
                    elif event.stream_id == 1 and event.fin:
                        return received, time.perf_counter() - t0
            writer.write(conn.data_to_send())  # window updates, ping answers
            data = await asyncio.wait_for(reader.read(1 << 20), 120)
            if not data:
                return received, time.perf_counter() - t0
    finally:
        writer.close()


async def exec_stdout(ep: Endpoint, pod_path: str, total_bytes: int,
                      command: list[str] | None = None) -> tuple[int, float]:
    """Exec ``head -c total_bytes /dev/zero`` (or ``command``) over WebSocket (``v5.channel.k8s.io``) and
    read its stdout to the end. Returns (stdout bytes received, seconds from the 101 to the end of the
    session)."""
    from urllib.parse import quote

    import wsproto
    import wsproto.events as wse

    argv = command or ["head", "-c", str(total_bytes), "/dev/zero"]
    query = "&".join(f"command={quote(arg, safe='')}" for arg in argv) + "&stdout=true&stderr=true"
    target = f"{ep.prefix}{pod_path}/exec?{query}"
    reader, writer = await asyncio.open_connection(ep.host, ep.port, ssl=ep.ssl_context("http/1.1"),
                                                   server_hostname=ep.server_hostname or ep.host,
                                                   limit=1 << 20)
    ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    writer.write(ws.send(wse.Request(host=ep.authority, target=target,
                                     subprotocols=["v5.channel.k8s.io", "v4.channel.k8s.io"])))
    received = 0
    channel: int | None = None
    t0 = 0.0
    try:
        while True:
            data = await asyncio.wait_for(reader.read(1 << 20), 120)
            ws.receive_data(data or None)
            done = not data
            for event in ws.events():
                if isinstance(event, wse.AcceptConnection):
                    t0 = time.perf_counter()
                elif isinstance(event, wse.RejectConnection):
                    raise RuntimeError(f"exec refused: HTTP {event.status_code}")
                elif isinstance(event, wse.BytesMessage):
                    # wsproto hands one message over in as many fragments as reads cut it into: the
                    # message's first byte (in whichever fragment it comes, even after an empty one) is
                    # the channel; the count is per message, closed by ``message_finished``.
                    payload = event.data
                    if channel is None and payload:
                        channel = payload[0]
                        payload = payload[1:]
                    if channel == 1:
                        received += len(payload)
                    if event.message_finished:
                        channel = None
                elif isinstance(event, wse.Ping):
                    writer.write(ws.send(event.response()))
                elif isinstance(event, wse.CloseConnection):
                    with contextlib.suppress(Exception):
                        writer.write(ws.send(event.response()))
                    done = True
            if done:
                break
        return received, time.perf_counter() - t0
    finally:
        writer.close()

"""What the fast-path tests share (``test_proxy_fast_path.py`` for HTTP/1.1 clients and both protocols,
``test_proxy_fast_path_h2.py`` for HTTP/2 ones): a kubegate proxy of their own in front of their own
sandbox API server, so locks, roles and clusters can change under it without touching the session's;
ways to look at the proxy's connection objects (the plans they hold) and at its audit lines and metrics;
the clients: raw TLS sockets speaking HTTP/1.1 (``Client``, answers parsed by httptools) or HTTP/2
driven by the ``h2`` library (``H2Client``: a real HTTP/2 implementation, its frames, HPACK and flow
control, with the stream windows set per test). Both have ``get(path, fields)``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import httptools
import pytest
from prometheus_client import REGISTRY

import proxy.server
from proxy import metrics
from proxy.connection import ClientConnection
from proxy.testing import wait_for

C = TypeVar("C")

CLUSTER = "fast"
POD = f"/k8s/clusters/{CLUSTER}/api/v1/namespaces/dev/pods/web-1"
OTHER_POD = f"/k8s/clusters/{CLUSTER}/api/v1/namespaces/dev/pods/web-2"
BULK_NAMESPACE = "bulk"
BULK_LIST = f"/k8s/clusters/{CLUSTER}/api/v1/namespaces/{BULK_NAMESPACE}/configmaps"
BULK_ITEMS = 1000  # ~1.2 KB each: a LIST answer of ~1.2 MB, far above the transports' high water
LONG_NAMESPACE = "long"  # 2,000 more (``running_gate(long_list=True)``): ~1.8 MB gzipped, a long chunked answer
LONG_ITEMS = 2000
SEND_TIMEOUT = 2.0  # the proxy's client_send_timeout here

READER_ROLE = """
kind: role
version: v8
metadata: {name: reader}
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources:
      - {kind: pods, api_group: '', namespace: NAMESPACE, name: '*', verbs: [get, list]}
    kubernetes_groups: ['system:masters']
"""


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


class HasSocket(Protocol):
    sock: socket.socket


@dataclass
class Gate:
    sandbox: Any
    px: Any
    registry: Any
    roles_dir: Path
    locks: Any

    def proxy_connection(self, client: HasSocket) -> ClientConnection:
        """The proxy's object for ``client``'s connection (found by the client's address)."""
        local = client.sock.getsockname()

        async def find() -> ClientConnection:
            for conn in self.px.proxy.fwd.connections:
                if conn.transport is not None and conn.transport.get_extra_info("peername") == local:
                    return conn
            raise LookupError(local)

        return self.px.call(find)

    def shrink_send_buffer(self, client: HasSocket, size: int = 16384) -> None:
        """Give the proxy's socket to ``client`` a small kernel send buffer (loopback autotunes it to
        megabytes) and its transport a 64 KiB high-water mark (uvloop's TLS default is 512 KiB): what
        the client does not read then soon stays in the proxy's transport, which pauses writing, as on
        a real network with a slow reader."""
        conn = self.proxy_connection(client)

        async def shrink() -> None:
            conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
            conn.transport.set_write_buffer_limits(high=65536)

        self.px.call(shrink)

    def shrink_upstream_send_buffers(self, size: int = 16384) -> None:
        """Give the sandbox's sockets to the proxy small kernel send buffers: what the proxy does not read
        of an answer then stays in the sandbox's transport (not in kernel buffers, which loopback
        autotunes to megabytes), so an answer can be cut off by ending the connection mid-answer."""

        async def shrink() -> None:
            for conn in self.sandbox.server._connections:
                conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)

        self.sandbox.call(shrink)

    def plans(self, client: HasSocket) -> dict[Any, Any]:
        """The plans the proxy's connection for ``client`` holds: keyed by request bytes (HTTP/1.1) or
        by decoded request head (HTTP/2)."""
        conn = self.proxy_connection(client)

        async def read() -> dict[Any, Any]:
            return dict(conn.plans or conn.h2_plans or {})

        return self.px.call(read)

    def audit(self, request_id: str) -> dict[str, Any]:
        """The audit line of one request (waits for it)."""
        wait_for(lambda: any(e.get("request_id") == request_id for e in self.px.audit_events), timeout=10)
        return next(e for e in self.px.audit_events if e.get("request_id") == request_id)

    def audited(self, user: str) -> list[dict[str, Any]]:
        """The audit lines of ``user``'s requests so far, in order."""
        return [e for e in self.px.audit_events if e.get("user") == user]

    def requests_counted(self, verb: str, code: int, cluster: str = CLUSTER) -> float:
        async def flush() -> None:
            metrics.flush()

        self.px.call(flush)
        return REGISTRY.get_sample_value(
            "kubegate_requests_total", {"cluster": cluster, "verb": verb, "code": str(code)}) or 0.0

    def role_set(self) -> Any:
        """The role set the proxy decides with now (a new object after each change of the role files)."""

        async def read() -> Any:
            return self.px.proxy.fwd.role_source.current()

        return self.px.call(read)

    def add_cluster(self, name: str) -> None:
        """Another cluster, ``name``, served by the same sandbox (removed by the test)."""
        from proxy.testing import cluster_for_sandbox

        self.registry.upsert(cluster_for_sandbox(self.sandbox, name=name), "test-fast")

    def close_upstream_connections(self) -> None:
        """What the sandbox's idle sweep does to an idle keep-alive connection: close it from the server
        side (call on the sandbox's loop)."""
        for conn in list(self.sandbox.server._connections):
            conn.codec.close()
            conn.flush()
            conn.close_transport()

    @contextlib.contextmanager
    def sandbox_held(self, then: Callable[[], None] = lambda: None) -> Iterator[None]:
        """The sandbox's event loop held for the block (it reads and answers nothing); ``then`` runs on
        that loop before it goes on."""
        holding, release = threading.Event(), threading.Event()

        def hold() -> None:
            holding.set()
            release.wait(30)
            then()

        self.sandbox.loop.call_soon_threadsafe(hold)
        assert holding.wait(10)
        try:
            yield
        finally:
            release.set()


@contextlib.contextmanager
def running_gate(base: Path, *, long_list: bool = False, locks: Any = None) -> Iterator[Gate]:
    """The proxy (``client_send_timeout`` = ``SEND_TIMEOUT``, roles from files, a lock list: ``locks``, by
    default the file ``base/locks``, which the proxy watches) and its sandbox as cluster ``fast``, with
    pods web-1..3 in ``dev``, ``BULK_ITEMS`` configmaps in ``bulk`` and, with ``long_list``,
    ``LONG_ITEMS`` in ``long``."""
    from certs.locks import LockList
    from discovery.registry import ClusterRegistry
    from proxy.forward import ProxySettings
    from proxy.testing import cluster_for_sandbox, running_proxy
    from rbac import RoleWatcher
    from sandbox.testing import running_sandbox
    from tests.proxy.conftest import write_roles

    roles_dir = write_roles(base / "roles")
    (roles_dir / "reader.yaml").write_text(READER_ROLE.replace("NAMESPACE", "dev"))
    roles = RoleWatcher(str(roles_dir), time.time, min_check_interval=0.0)
    locks = LockList(base / "locks") if locks is None else locks
    with running_sandbox(base / "sandbox") as sb:
        lists = ((BULK_NAMESPACE, BULK_ITEMS), (LONG_NAMESPACE, LONG_ITEMS))
        for namespace, items in lists if long_list else lists[:1]:
            for n in range(items):
                sb.store.put_object("", "configmaps", {
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": f"cm-{n:04d}", "namespace": namespace, "labels": {"n": str(n)}},
                    "data": {"blob": base64.b64encode(random.Random(n).randbytes(750)).decode()},  # gzip: -25 %
                })
        registry = ClusterRegistry()
        registry.upsert(cluster_for_sandbox(sb, name=CLUSTER), "test")
        settings = ProxySettings(client_send_timeout=SEND_TIMEOUT)
        with running_proxy(base / "proxy", clusters=registry, roles=roles, locks=locks, settings=settings) as px:
            yield Gate(sb, px, registry, roles_dir, locks)


# The sandbox frames every answer that is not a stream (watch, logs -f: never on the fast path) with a
# content-length and has no ETag: these answers come from nginx (a real server, the benchmarks' upstream)
# in front of the sandbox, as cluster ``edge``. nginx serves one pod from a file captured from the sandbox
# (ETag: a 304 on If-None-Match; gzip for a client that accepts it: a chunked answer), a 204, and proxies
# everything else (discovery) to the sandbox.
EDGE_POD = "/api/v1/namespaces/dev/pods/web-1"
EDGE_EMPTY = "/api/v1/namespaces/dev/configmaps/nothing"
EDGE_BLANK = "/api/v1/namespaces/dev/configmaps/blank"  # a 200 with Content-Length: 0
EDGE_EXTRA = f"""
        gzip on; gzip_types application/json; gzip_min_length 1; gzip_proxied any;
        location = {EDGE_EMPTY} {{ return 204; }}
        location = {EDGE_BLANK} {{ default_type application/json; return 200 ""; }}
"""


@contextlib.contextmanager
def running_edge(gate: Gate, base: Path) -> Iterator[bytes]:
    """Cluster ``edge``: nginx in front of the gate's sandbox; yields the pod file nginx serves."""
    import dataclasses
    import os

    from benchmarks.nginx import NginxProcess, UpstreamTLS, fast_upstream_conf, fetch_raw, find_nginx
    from kubegate.demo import free_port
    from proxy.testing import cluster_for_sandbox

    binary = find_nginx()
    assert binary is not None, "nginx is not installed: scripts/install-tools.sh installs it into .tools/bin"
    sb = gate.sandbox
    cert, key = sb.issue_client_cert("edge-nginx", ["system:masters"])
    pod, ctype = fetch_raw(sb.port, EDGE_POD, str(sb.ca_pem_path), str(cert), str(key))
    (base / "web-1.json").write_bytes(pod)
    pki = Path(sb.ca_pem_path).parent
    port = free_port()
    conf = fast_upstream_conf(base / "nginx", port, str(pki / "server.crt"), str(pki / "server.key"),
                              {EDGE_POD: (base / "web-1.json", ctype)},
                              UpstreamTLS("sandbox", sb.port, str(sb.ca_pem_path), str(cert), str(key)), EDGE_EXTRA)
    if os.geteuid() == 0:  # nginx's worker would run as nobody, who cannot read a private temp dir
        conf = "user root;\n" + conf
    nginx = NginxProcess(binary, base / "nginx", conf, port, None)
    try:
        cluster = dataclasses.replace(cluster_for_sandbox(sb, name="edge"), server=f"https://127.0.0.1:{port}")
        gate.registry.upsert(cluster, "test-edge")
        yield pod
    finally:
        gate.registry.remove("edge", "test-edge")
        nginx.close()


class _ObservedExchanges(set):  # type: ignore[type-arg]
    """The forwarder's set of exchanges in flight (``Forwarder.exchanges``), which also shows each exchange
    added to it to the ``listeners`` (tests only: every exchange, the fast ones included, is added as it
    starts)."""

    def __init__(self, items: set[Any]) -> None:
        super().__init__(items)
        self.listeners: list[Callable[[Any], None]] = []

    def add(self, exchange: Any) -> None:
        super().add(exchange)
        for listener in self.listeners:
            listener(exchange)


def record_starts(monkeypatch: pytest.MonkeyPatch, gate: Gate, *classes: type, planned: bool = True) -> list[Any]:
    """Every exchange of exactly these classes started from a plan from now until the test ends, in order
    (the fast path taken): seen as it registers with the forwarder (``Forwarder.exchanges``, replaced once
    by a set that shows what is added to it; a listener set with monkeypatch, no product code for it; the
    compiled fast exchanges are extension types whose ``__init__`` cannot be wrapped). A
    ``CodecFastExchange`` the direct path starts for a request with no plan (its plan is new, not one of
    the connection's) is counted only with ``planned=False`` (then every start is)."""
    started: list[Any] = []
    fwd = gate.px.proxy.fwd

    async def observed() -> _ObservedExchanges:
        if type(fwd.exchanges) is not _ObservedExchanges:
            fwd.exchanges = _ObservedExchanges(fwd.exchanges)  # on the proxy's loop: no start missed
        return fwd.exchanges

    def seen(self: Any) -> None:
        if type(self) not in classes:  # a CodecFastExchange is a FastExchange too: only the classes named
            return
        conn = self.conn
        if not planned or any(self.plan is plan for plan in (conn.plans or conn.h2_plans or {}).values()):
            started.append(self)

    exchanges = gate.px.call(observed)
    monkeypatch.setattr(exchanges, "listeners", [*exchanges.listeners, seen])
    return started


def connections_made_as(monkeypatch: pytest.MonkeyPatch, cls: type[ClientConnection]) -> None:
    """The proxy makes the client connections accepted from now until the test ends as ``cls``: a subclass
    of ``ClientConnection`` that observes one of its methods (set with monkeypatch where ``proxy.server``
    makes them; the compiled class is an extension type whose methods cannot be replaced)."""
    monkeypatch.setattr(proxy.server, "ClientConnection", cls)


@contextlib.contextmanager
def opened_clients(gate: Gate, kind: Callable[..., C]) -> Iterator[Callable[..., C]]:
    """``make(user, roles, **kw)`` → a client of ``kind`` (``Client``, ``H2Client``) for ``user`` with a
    new certificate; all closed at the end."""
    opened: list[Any] = []

    def make(user: str = "alice", roles: list[str] | None = None, **kw: Any) -> C:
        c = kind(gate.px, user, roles or ["admin"], **kw)
        opened.append(c)
        return c

    try:
        yield make
    finally:
        for c in opened:
            c.close()


def same_fields(answer: Response) -> list[tuple[str, str]]:
    """The answer's header fields that must not differ between two answers to one request (all but the
    request id and the date), checking there is exactly one request id."""
    assert [k for k, _ in answer.headers].count("x-kubegate-request-id") == 1, answer.headers
    return sorted((k, v) for k, v in answer.headers if k not in ("x-kubegate-request-id", "date"))


# --- clients ----------------------------------------------------------------------------------------


def get(path: str, extra: str = "") -> bytes:
    """The exact bytes of a GET as a keep-alive client sends it."""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n{extra}\r\n".encode()


@dataclass
class _Parsed:
    """httptools' callbacks for a stream of responses on one connection."""

    done: list[Response] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    parser: Any = None

    def on_message_begin(self) -> None:
        self.headers, self.body = [], []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done.append(Response(self.parser.get_status_code(), self.headers, b"".join(self.body)))


class Client:
    """One HTTP/1.1 keep-alive connection to the proxy over TLS with a client certificate."""

    def __init__(self, px: Any, user: str, roles: list[str], *, ttl: timedelta = timedelta(hours=1),
                 rcvbuf: int | None = None) -> None:
        self.cert, self.key = px.issue_user(user, roles, ttl=ttl)
        ctx = ssl.create_default_context(cafile=str(px.ca_pem_path))
        ctx.load_cert_chain(str(self.cert), str(self.key))
        ctx.set_alpn_protocols(["http/1.1"])
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connecting, so the TCP window stays small
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(30)
        raw.connect(("127.0.0.1", px.port))
        self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        self._parsed = _Parsed()
        self._parsed.parser = httptools.HttpResponseParser(self._parsed)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, pause: float = 0.0, chunk: int = 65536) -> Response:
        """The next whole response; ``pause`` seconds after each ``chunk`` bytes read (a slow reader)."""
        unpaused = 0
        while not self._parsed.done:
            data = self.sock.recv(chunk - unpaused if pause else chunk)
            if not data:
                raise ConnectionError("the proxy closed the connection before a whole response")
            self._parsed.parser.feed_data(data)
            unpaused += len(data)
            if pause and unpaused >= chunk:
                time.sleep(pause)
                unpaused = 0
        return self._parsed.done.pop(0)

    def ask(self, data: bytes) -> Response:
        self.send(data)
        return self.response()

    def begin(self, path: str, fields: list[tuple[str, str]] | None = None) -> None:
        """Send a GET of ``path`` with these header fields besides Host and Accept (``answer`` reads it)."""
        self.send(get(path, "".join(f"{name}: {value}\r\n" for name, value in fields or [])))

    def answer(self, _: None = None) -> Response:
        return self.response()

    def get(self, path: str, fields: list[tuple[str, str]] | None = None) -> Response:
        """A GET of ``path`` with these header fields besides Host and Accept, and its answer."""
        self.begin(path, fields)
        return self.response()

    def close(self) -> None:
        self.sock.close()


@dataclass
class _Stream:
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None  # the error code of the proxy's RST_STREAM
    unacked: int = 0  # bytes received and not yet credited back (a held stream)


class H2Client:
    """One HTTP/2 connection to the proxy over TLS with a client certificate. ``window``: the client's
    SETTINGS_INITIAL_WINDOW_SIZE (the send window of every stream, as the proxy sees it); the connection
    window is opened wide at once, so only stream windows shape the tests. Data is credited back as it
    arrives, except on streams ``hold``-ed (a reader that stopped, or credits by hand)."""

    def __init__(self, px: Any, user: str, roles: list[str], *, window: int | None = None) -> None:
        self.cert, self.key = px.issue_user(user, roles)
        ctx = ssl.create_default_context(cafile=str(px.ca_pem_path))
        ctx.load_cert_chain(str(self.cert), str(self.key))
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", px.port), timeout=30)
        self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        if window is not None:
            self.h2.local_settings = h2.settings.Settings(
                client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(1 << 28)
        self.streams: dict[int, _Stream] = {}
        self.held: set[int] = set()
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def begin(self, path: str, extra: list[tuple[str, str]] | None = None, *, flush: bool = True) -> int:
        """A GET on a new stream (HEADERS with END_STREAM); returns the stream id."""
        sid = self.h2.get_next_available_stream_id()
        fields = [(":method", "GET"), (":scheme", "https"), (":authority", "127.0.0.1"), (":path", path),
                  ("accept", "application/json"), *(extra or [])]  # fmt: skip
        self.h2.send_headers(sid, [(k.encode(), v.encode()) for k, v in fields], end_stream=True)
        self.streams[sid] = _Stream()
        if flush:
            self.flush()
        return sid

    def pump(self) -> None:
        """One read from the socket, its events applied to the streams."""
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("the proxy closed the connection")
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                stream = self.streams[event.stream_id]
                stream.status = int(dict(event.headers)[b":status"])
                stream.headers = [(k.decode(), v.decode()) for k, v in event.headers if not k.startswith(b":")]
            elif isinstance(event, h2.events.DataReceived):
                stream = self.streams[event.stream_id]
                stream.body.extend(event.data)
                if event.stream_id in self.held:
                    stream.unacked += event.flow_controlled_length
                elif not stream.reset:
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.streams[event.stream_id].ended = True
            elif isinstance(event, h2.events.StreamReset):
                self.streams[event.stream_id].reset = event.error_code
            elif isinstance(event, h2.events.ConnectionTerminated):
                raise ConnectionError(f"the proxy ended the connection: {event}")
        self.flush()

    def until(self, done: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "no answer in time"
            self.pump()

    def answer(self, sid: int) -> Response:
        stream = self.streams[sid]
        self.until(lambda: stream.ended or stream.reset is not None)
        assert stream.reset is None, f"stream {sid} was reset ({stream.reset})"
        return Response(stream.status, stream.headers, bytes(stream.body))

    def get(self, path: str, extra: list[tuple[str, str]] | None = None) -> Response:
        return self.answer(self.begin(path, extra))

    def concurrent(self, path: str, n: int) -> list[tuple[int, Response]]:
        """``n`` identical GETs on ``n`` streams sent in one write, with their answers."""
        sids = [self.begin(path, flush=False) for _ in range(n)]
        self.flush()
        return [(sid, self.answer(sid)) for sid in sids]

    def credit(self, sid: int) -> None:
        """Credit back what a held stream received."""
        stream = self.streams[sid]
        if stream.unacked:
            self.h2.acknowledge_received_data(stream.unacked, sid)
            stream.unacked = 0
            self.flush()

    def cancel(self, sid: int) -> None:
        self.h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        self.flush()

    def close(self) -> None:
        self.sock.close()


def comparable(event: dict[str, Any]) -> dict[str, Any]:
    """An audit line without what differs from one request to the next."""
    return {k: v for k, v in event.items() if k not in ("time", "request_id", "latency_ms")}

"""Backpressure: a streamed response to a client that stops reading must pause the producer
(HTTP/1.1: the socket's write buffer; HTTP/2: the stream's flow-control window), not fill memory.
Uses the real SandboxServer with a small in-test Api double that streams without end."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import uvloop

from sandbox.authz import RbacAuthorizer
from sandbox.server import SandboxServer
from sandbox.tls import SandboxPKI
from sandbox.types import ApiRequest, ApiResponse

CHUNK = b"x" * 16384


class EndlessApi:
    """Answers every request with an endless stream of 16 KiB chunks and counts what it produced."""

    def __init__(self) -> None:
        self.produced = 0
        self.closed = threading.Event()

    async def handle(self, req: ApiRequest) -> ApiResponse:
        async def stream() -> AsyncIterator[bytes]:
            try:
                while True:
                    self.produced += len(CHUNK)
                    yield CHUNK
                    await asyncio.sleep(0)
            finally:
                self.closed.set()

        return ApiResponse(200, [("content-type", "application/octet-stream")], stream=stream())

    def resolve_stream(self, req: ApiRequest) -> ApiResponse:
        return ApiResponse(400, [], b"{}")


class EmptyStore:
    def list_objects(self, group: str, resource: str, namespace: str | None = None) -> list:
        return []


class Harness:
    def __init__(self, tmp: Path, idle_timeout: float = 90.0) -> None:
        self.pki = SandboxPKI(tmp)
        self.api = EndlessApi()
        self.loop = uvloop.new_event_loop()
        self.server = SandboxServer(
            api=self.api,
            authorizer=RbacAuthorizer(EmptyStore()),
            ssl_context=self.pki.server_ssl_context(),
            idle_timeout=idle_timeout,
        )
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        self.cert = self.pki.issue_client_cert("root", ["system:masters"], tmp / "c")

    def connect(self, alpn: str) -> ssl.SSLSocket:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert_path))
        ctx.load_cert_chain(str(self.cert[0]), str(self.cert[1]))
        ctx.set_alpn_protocols([alpn])
        sock = ctx.wrap_socket(
            socket.create_connection(("127.0.0.1", self.server.port), timeout=10), server_hostname="127.0.0.1"
        )
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        return sock

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(1.0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.stop()


def settle(api: EndlessApi, timeout: float = 10.0) -> int:
    """Wait until production stops growing (the producer is paused); return the amount produced."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        now = api.produced
        if now == last:
            return now
        last = now
        time.sleep(0.2)
    raise AssertionError(f"the producer never paused: {api.produced} bytes produced")


def test_http1_slow_reader_pauses_the_stream(harness: Harness) -> None:
    sock = harness.connect("http/1.1")
    sock.sendall(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(1024).startswith(b"HTTP/1.1 200 OK")
    produced = settle(harness.api)
    assert produced < 32 * 1024 * 1024  # bounded by socket buffers + the transport's high-water mark
    # Reading resumes production.
    deadline = time.monotonic() + 10
    while harness.api.produced == produced and time.monotonic() < deadline:
        sock.recv(65536)
    assert harness.api.produced > produced
    sock.close()
    assert harness.api.closed.wait(10)  # the client went away: the stream was closed


def test_http2_stream_waits_for_window(harness: Harness) -> None:
    sock = harness.connect("h2")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.local_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535}
    )
    conn.initiate_connection()
    conn.send_headers(
        1,
        [(b":method", b"GET"), (b":path", b"/endless"), (b":authority", b"x"), (b":scheme", b"https")],
        end_stream=True,
    )
    sock.sendall(conn.data_to_send())
    received = 0
    deadline = time.monotonic() + 10
    while received < 65535 and time.monotonic() < deadline:
        for event in conn.receive_data(sock.recv(65536)):
            received += len(getattr(event, "data", b"") or b"")
        sock.sendall(conn.data_to_send())
    assert received == 65535  # exactly the window, never more
    produced = settle(harness.api)
    assert produced < 4 * 1024 * 1024  # the writer waits for WINDOW_UPDATE instead of buffering
    sock.close()
    assert harness.api.closed.wait(10)


class FailingApi(EndlessApi):
    """Fails before answering on /boom, and in the middle of a streamed body otherwise."""

    async def handle(self, req: ApiRequest) -> ApiResponse:
        if req.path == "/boom":
            raise RuntimeError("handler bug")

        async def stream() -> AsyncIterator[bytes]:
            yield b"first\n"
            raise RuntimeError("stream bug")

        return ApiResponse(200, [("content-type", "text/plain")], stream=stream())


@pytest.mark.parametrize("alpn", ["http/1.1", "h2"])
def test_handler_failures_are_500_or_a_reset_never_a_hang(harness: Harness, alpn: str) -> None:
    harness.server.api = FailingApi()
    sock = harness.connect(alpn)
    if alpn == "http/1.1":
        sock.sendall(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 500 ") and b'"reason":"InternalError"' in head
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while True:  # the streamed answer is cut and the connection closed: no terminating chunk
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        assert b"first\n" in data and not data.endswith(b"0\r\n\r\n")
    else:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        conn.initiate_connection()
        for sid, path in ((1, b"/boom"), (3, b"/stream")):
            conn.send_headers(
                sid,
                [(b":method", b"GET"), (b":path", path), (b":authority", b"x"), (b":scheme", b"https")],
                end_stream=True,
            )
        sock.sendall(conn.data_to_send())
        status: dict[int, int] = {}
        reset: set[int] = set()
        deadline = time.monotonic() + 10
        while (1 not in status or 3 not in reset) and time.monotonic() < deadline:
            for event in conn.receive_data(sock.recv(65536)):
                if isinstance(event, h2.events.ResponseReceived):
                    status[event.stream_id] = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.StreamReset):
                    reset.add(event.stream_id)
            sock.sendall(conn.data_to_send())
        assert status == {1: 500, 3: 200} and reset == {3}
    sock.close()


def test_idle_and_trickling_connections_are_closed_but_streams_are_not(tmp_path: Path) -> None:
    h = Harness(tmp_path, idle_timeout=0.5)
    try:
        idle = h.connect("http/1.1")
        trickle = h.connect("http/1.1")
        trickle.sendall(b"GET /endless HTTP/1.1\r\nHost: x\r\n")  # the head never ends (slowloris)
        streaming = h.connect("http/1.1")
        streaming.sendall(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
        assert streaming.recv(1024).startswith(b"HTTP/1.1 200 OK")
        for sock in (idle, trickle):
            sock.settimeout(10)
            assert sock.recv(1024) == b""  # closed by the server
        streaming.settimeout(0.2)
        assert streaming.recv(65536)  # the stream goes on (nothing read meanwhile: data is waiting)
        for sock in (idle, trickle, streaming):
            sock.close()
    finally:
        h.stop()

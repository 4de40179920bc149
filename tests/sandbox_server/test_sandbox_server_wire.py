"""The sandbox server on the wire: raw TLS sockets (HTTP/1.1) and an h2 client against a running sandbox.

Bad input must end in a Kubernetes Status answer or a clean close, and the server must not keep
connections or request tasks for clients that are gone.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from sandbox.testing import RunningSandbox, running_sandbox

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    with running_sandbox(tmp_path_factory.mktemp("wire")) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def admin_cert(sb: RunningSandbox) -> tuple[Path, Path]:
    return sb.issue_client_cert("wire-admin", ["system:masters"])


def connect(sb: RunningSandbox, cert: tuple[Path, Path] | None, alpn: str = "http/1.1") -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(sb.ca_pem_path))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    ctx.set_alpn_protocols([alpn])
    raw = socket.create_connection(("127.0.0.1", sb.port), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    assert sock.selected_alpn_protocol() == alpn
    return sock


class _KeepOpen(io.BufferedReader):
    """A socket reader that http.client.HTTPResponse cannot close (several responses share it)."""

    def close(self) -> None:
        pass


def reader_of(sock: ssl.SSLSocket) -> _KeepOpen:
    return _KeepOpen(socket.SocketIO(sock, "rb"))  # type: ignore[arg-type]


class _FileSock:
    """Lets several http.client.HTTPResponse objects share one buffered reader (pipelining)."""

    def __init__(self, reader) -> None:
        self.reader = reader

    def makefile(self, *_args, **_kw):
        return self.reader


def read_response(reader, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    resp = http.client.HTTPResponse(_FileSock(reader), method=method)  # type: ignore[arg-type]
    resp.begin()
    body = resp.read()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: sandbox\r\nAccept: application/json\r\n{extra}\r\n".encode()


def wait_idle(sb: RunningSandbox, connections: int = 0, timeout: float = 10.0) -> tuple[int, int]:
    """Wait until the server holds at most ``connections`` connections and no request task."""
    deadline = time.monotonic() + timeout
    counts = sb.counts()
    while time.monotonic() < deadline:
        counts = sb.counts()
        if counts[0] <= connections and counts[1] == 0:
            return counts
        time.sleep(0.02)
    return counts


def assert_closed(sock: ssl.SSLSocket) -> None:
    try:
        assert sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):
        pass


def test_keepalive_requests_share_one_connection(sb: RunningSandbox, admin_cert) -> None:
    sock = connect(sb, admin_cert)
    reader = reader_of(sock)
    for _ in range(3):
        sock.sendall(get("/api/v1/namespaces/default/pods/hello"))
        status, headers, body = read_response(reader)
        assert status == 200 and headers["content-type"].startswith("application/json")
        assert json.loads(body)["metadata"]["name"] == "hello"
    sock.close()


def test_pipelined_requests_are_answered_in_order(sb: RunningSandbox, admin_cert) -> None:
    sock = connect(sb, admin_cert)
    reader = reader_of(sock)
    names = ["default", "dev", "prod", "kube-system"]
    sock.sendall(b"".join(get(f"/api/v1/namespaces/{n}") for n in names))
    answered = [json.loads(read_response(reader)[2])["metadata"]["name"] for _ in names]
    assert answered == names
    sock.close()


def test_no_credentials_is_401_status(sb: RunningSandbox) -> None:
    sock = connect(sb, None)
    sock.sendall(get("/api/v1/pods"))
    status, _, body = read_response(reader_of(sock))
    assert status == 401
    assert json.loads(body) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }
    sock.close()


def test_bearer_token_authenticates(sb: RunningSandbox) -> None:
    token = sb.add_token("wire-bob", ["system:masters"])
    sock = connect(sb, None)
    reader = reader_of(sock)
    sock.sendall(get("/api/v1/namespaces/dev/pods", f"Authorization: Bearer {token}\r\n"))
    status, _, body = read_response(reader)
    assert status == 200 and json.loads(body)["kind"] == "PodList"
    sock.sendall(get("/api/v1/namespaces/dev/pods", "Authorization: Bearer not-a-token\r\n"))
    assert read_response(reader)[0] == 401
    sock.close()


def test_certificate_from_another_ca_fails_the_handshake(sb: RunningSandbox, tmp_path: Path) -> None:
    from sandbox.tls import SandboxPKI

    foreign = SandboxPKI(tmp_path / "foreign").issue_client_cert(
        "mallory", ["system:masters"], tmp_path / "m"
    )
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        sock = connect(sb, foreign)
        sock.sendall(get("/api/v1/pods"))
        assert sock.recv(1) == b""  # TLS 1.3: the refusal arrives with the first read
        raise ConnectionResetError("closed without an answer")


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"\x00\x01\x02\x03 this is not HTTP \r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n", 400),
        (  # request smuggling: Content-Length and Transfer-Encoding together
            b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/v1/namespaces/default/pods/hello HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
        ),
        (
            b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1024 * 1024 + 10) + b"\r\n\r\n", 431),
    ],
    ids=["garbage", "bad-header", "smuggling", "bad-chunk", "oversized-headers"],
)
def test_bad_http_gets_a_status_and_a_close(
    sb: RunningSandbox, admin_cert, payload: bytes, status: int
) -> None:
    sock = connect(sb, admin_cert)
    try:
        sock.sendall(payload)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may close before reading everything; the answer was queued first
    reader = reader_of(sock)
    code, headers, body = read_response(reader)
    assert code == status
    doc = json.loads(body)
    assert (doc["kind"], doc["code"]) == ("Status", status)
    assert headers.get("connection") == "close"
    assert reader.read() == b""  # nothing more: the smuggled request was not served
    sock.close()
    assert wait_idle(sb) == (0, 0)


def test_client_vanishing_mid_body_leaves_nothing_behind(sb: RunningSandbox, admin_cert) -> None:
    sock = connect(sb, admin_cert)
    sock.sendall(
        b'POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"kind":'
    )
    sock.close()
    assert wait_idle(sb) == (0, 0)


def test_client_vanishing_mid_watch_ends_the_watch(sb: RunningSandbox, admin_cert) -> None:
    sock = connect(sb, admin_cert)
    sock.sendall(get("/api/v1/namespaces/dev/pods?watch=true"))
    reader = reader_of(sock)
    status_line = reader.readline()
    assert b" 200 " in status_line
    assert sb.counts()[1] >= 1  # the watch is being served
    sock.close()
    assert wait_idle(sb) == (0, 0)


def test_watch_is_chunked_and_flushes_each_event(sb: RunningSandbox, admin_cert) -> None:
    sock = connect(sb, admin_cert)
    sock.sendall(get("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0"))
    reader = reader_of(sock)
    resp = http.client.HTTPResponse(_FileSock(reader), method="GET")  # type: ignore[arg-type]
    resp.begin()
    assert resp.status == 200 and resp.getheader("transfer-encoding") == "chunked"
    sb.store.put_object(
        "", "configmaps", {"metadata": {"name": "wire-watch", "namespace": "default"}, "data": {"a": "1"}}
    )
    deadline = time.monotonic() + 10
    seen = b""
    while b"wire-watch" not in seen and time.monotonic() < deadline:
        seen += resp.readline()
    assert b"wire-watch" in seen
    sock.close()
    assert wait_idle(sb) == (0, 0)


def h2_session(sb: RunningSandbox, cert) -> tuple[ssl.SSLSocket, h2.connection.H2Connection]:
    sock = connect(sb, cert, "h2")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def h2_request(sock, conn, sid: int, path: str, method: str = "GET", body: bytes = b"") -> None:
    headers = [
        (b":method", method.encode()),
        (b":path", path.encode()),
        (b":authority", b"sandbox"),
        (b":scheme", b"https"),
        (b"accept", b"application/json"),
    ]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    conn.send_headers(sid, headers, end_stream=not body)
    if body:
        conn.send_data(sid, body, end_stream=True)
    sock.sendall(conn.data_to_send())


def h2_collect(sock, conn, sids: set[int], until_data: bytes | None = None) -> dict[int, tuple[int, bytes]]:
    results: dict[int, list] = {sid: [0, b""] for sid in sids}
    done: set[int] = set()
    deadline = time.monotonic() + 10
    while done != sids and time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            break
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                results[ev.stream_id][0] = int(dict(ev.headers)[b":status"])
            elif isinstance(ev, h2.events.DataReceived):
                results[ev.stream_id][1] += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                if until_data is not None and until_data in results[ev.stream_id][1]:
                    done.add(ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded | h2.events.StreamReset):
                done.add(ev.stream_id)
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
    return {sid: (r[0], r[1]) for sid, r in results.items()}


def test_h2_concurrent_requests(sb: RunningSandbox, admin_cert) -> None:
    sock, conn = h2_session(sb, admin_cert)
    h2_request(sock, conn, 1, "/api/v1/namespaces/dev/pods")
    h2_request(sock, conn, 3, "/api/v1/namespaces/default/pods/hello")
    h2_request(sock, conn, 5, "/api/v1/namespaces/default/pods/no-such-pod")
    results = h2_collect(sock, conn, {1, 3, 5})
    assert results[1][0] == 200 and json.loads(results[1][1])["kind"] == "PodList"
    assert results[3][0] == 200 and json.loads(results[3][1])["metadata"]["name"] == "hello"
    assert results[5][0] == 404 and json.loads(results[5][1])["reason"] == "NotFound"
    sock.close()
    assert wait_idle(sb) == (0, 0)


def test_h2_without_credentials_is_401(sb: RunningSandbox) -> None:
    sock, conn = h2_session(sb, None)
    h2_request(sock, conn, 1, "/api")
    assert h2_collect(sock, conn, {1})[1][0] == 401
    sock.close()


def test_h2_reset_of_a_watch_frees_its_task(sb: RunningSandbox, admin_cert) -> None:
    sock, conn = h2_session(sb, admin_cert)
    h2_request(sock, conn, 1, "/api/v1/namespaces/default/pods?watch=true&resourceVersion=0")
    first = h2_collect(sock, conn, {1}, until_data=b"\n")
    assert first[1][0] == 200 and b'"type":"ADDED"' in first[1][1]
    conn.reset_stream(1)
    sock.sendall(conn.data_to_send())
    assert wait_idle(sb, connections=1) == (1, 0)  # connection kept, watch task gone
    h2_request(sock, conn, 3, "/version")
    assert h2_collect(sock, conn, {3})[3][0] == 200
    sock.close()
    assert wait_idle(sb) == (0, 0)


def test_h2_garbage_gets_goaway_and_close(sb: RunningSandbox, admin_cert) -> None:
    sock = connect(sb, admin_cert, "h2")
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    assert data[3:4] == b"\x04"  # the server's SETTINGS first ...
    assert b"\x07" in data  # ... and a GOAWAY frame before the close
    sock.close()
    assert wait_idle(sb) == (0, 0)


def test_graceful_stop_ends_watches_and_closes(tmp_path: Path) -> None:
    with running_sandbox(tmp_path / "stop") as sandbox:
        cert = sandbox.issue_client_cert("stopper", ["system:masters"])
        sock = connect(sandbox, cert)
        sock.sendall(get("/api/v1/namespaces/dev/pods?watch=true"))
        reader = reader_of(sock)
        resp = http.client.HTTPResponse(_FileSock(reader), method="GET")  # type: ignore[arg-type]
        resp.begin()
        assert resp.status == 200
        sandbox.call(lambda: sandbox.server.stop(grace=2.0))
        rest = resp.read()  # the chunked body ends properly (terminating chunk), then the close
        assert isinstance(rest, bytes)
        assert reader.read() == b""
        sock.close()


@pytest.mark.parametrize(
    "payload",
    [b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 20],
    ids=["plain-http-on-tls-port", "truncated-client-hello"],
)
def test_non_tls_bytes_are_closed_without_leaks(sb: RunningSandbox, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", sb.port), timeout=10) as raw:
        raw.sendall(payload)
        if payload.startswith(b"GET"):
            data = raw.recv(65536)
            assert not data.startswith(b"HTTP/")  # never served as HTTP: a TLS alert or nothing
    assert wait_idle(sb) == (0, 0)


def test_head_requests_get_headers_only(sb: RunningSandbox, admin_cert) -> None:
    sock = connect(sb, admin_cert)
    reader = reader_of(sock)
    sock.sendall(b"HEAD /api/v1/namespaces/default/pods/hello HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = read_response(reader, "HEAD")
    assert status == 200 and int(headers["content-length"]) > 0 and body == b""
    sock.sendall(get("/api/v1/namespaces/default/pods/hello"))  # the connection is still in step
    assert read_response(reader)[0] == 200
    sock.close()
    h2sock, conn = h2_session(sb, admin_cert)
    h2_request(h2sock, conn, 1, "/api/v1/namespaces/default/pods/hello", method="HEAD")
    assert h2_collect(h2sock, conn, {1})[1] == (200, b"")
    h2sock.close()

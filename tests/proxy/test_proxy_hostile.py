"""Refused clients and bad input over raw sockets: wrong/expired/missing certificates, plain HTTP,
garbage, truncated handshakes, oversized heads, request smuggling, slowloris, clients vanishing
mid-watch and mid-exec. Each ends in a clean refusal or close, and nothing leaks (connections, tasks,
upstream streams, file descriptors)."""

from __future__ import annotations

import os
import select
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from proxy.testing import open_fds, read_all, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def strict(sandbox, tmp_path_factory) -> Iterator:
    """A proxy with short limits (header timeout 0.5 s, 8 KiB heads) in front of the session sandbox."""
    from proxy.forward import ProxySettings
    from proxy.testing import cluster_for_sandbox, running_proxy
    from rbac import RoleWatcher

    base = tmp_path_factory.mktemp("strict")
    roles = base / "roles"
    roles.mkdir()
    (roles / "admin.yaml").write_text(
        "kind: role\nversion: v8\nmetadata: {name: admin}\nspec:\n  allow:\n"
        "    kubernetes_labels: {'*': '*'}\n"
        "    kubernetes_resources: [{kind: '*', api_group: '*', namespace: '*', name: '*', verbs: ['*']}]\n"
        "    kubernetes_groups: ['system:masters']\n"
    )
    settings = ProxySettings(header_timeout=0.5, idle_timeout=5.0, max_header_bytes=8192)
    with running_proxy(base / "proxy", clusters=[cluster_for_sandbox(sandbox)], roles=RoleWatcher(str(roles), time.time),
                       settings=settings) as proxy:
        yield proxy


def client_context(px, cert: Path | None = None, key: Path | None = None, alpn: str = "http/1.1") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(px.ca_pem_path))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    ctx.set_alpn_protocols([alpn])
    return ctx


def tls_connect(px, ctx: ssl.SSLContext, timeout: float = 10) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", px.port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")




def denials(reason: str) -> float:
    return REGISTRY.get_sample_value("kubegate_authorization_denials_total", {"reason": reason}) or 0.0


def handshake_failures(reason: str) -> float:
    return REGISTRY.get_sample_value("kubegate_tls_handshake_failures_total", {"reason": reason}) or 0.0




def refused(px, ctx: ssl.SSLContext) -> bool:
    """The proxy refuses this client: the handshake fails, or no HTTP response ever comes."""
    try:
        sock = tls_connect(px, ctx)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return True
    with sock:
        try:
            sock.sendall(b"GET /k8s/clusters/sandbox/api HTTP/1.1\r\nHost: x\r\n\r\n")
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return True
        return not read_all(sock).startswith(b"HTTP/")


def test_a_valid_certificate_gets_an_answer(px):
    cert, key = px.issue_user("alice", ["admin"])
    with tls_connect(px, client_context(px, cert, key)) as sock:
        sock.sendall(b"GET /k8s/clusters/sandbox/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 200")
    assert b"x-kubegate-request-id: " in reply.lower()


def test_certificate_from_another_ca_is_refused(px, tmp_path):
    from certs.ca import CertificateAuthority

    other = CertificateAuthority.create_in_memory()
    issued = other.issue_user_certificate("mallory", ["admin"], timedelta(hours=1))
    cert, key = tmp_path / "m.crt", tmp_path / "m.key"
    cert.write_bytes(issued.cert_pem)
    key.write_bytes(issued.key_pem)
    before = handshake_failures("client_cert_untrusted")
    assert refused(px, client_context(px, cert, key))
    wait_for(lambda: handshake_failures("client_cert_untrusted") > before)


def endpoint_requests(endpoint: str, code: str) -> float:
    return REGISTRY.get_sample_value("kubegate_endpoint_requests_total", {"endpoint": endpoint, "code": code}) or 0.0


def test_expired_certificate_gets_a_401_status_saying_so(px, tmp_path):
    """An expired certificate passes the handshake (kubectl would show a bare EOF for a TLS alert) and
    every request is answered 401 with a Status naming the expiry and what to do; nothing is forwarded."""
    import json

    from certs.ca import CertificateAuthority

    past = CertificateAuthority(px.ca.certificate, px.ca.private_key, None, clock=lambda: time.time() - 3 * 3600)
    issued = past.issue_user_certificate("alice", ["admin"], timedelta(hours=1))
    cert, key = tmp_path / "e.crt", tmp_path / "e.key"
    cert.write_bytes(issued.cert_pem)
    key.write_bytes(issued.key_pem)
    before = denials("certificate_expired")
    with tls_connect(px, client_context(px, cert, key)) as sock:
        sock.sendall(b"GET /k8s/clusters/sandbox/api/v1/namespaces HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = read_all(sock)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401")
    status = json.loads(body)
    expiry = issued.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert status["kind"] == "Status" and status["reason"] == "Unauthorized"
    assert status["message"] == f"kubegate: your certificate expired at {expiry}; run kubegate login"
    assert denials("certificate_expired") == before + 1


def test_no_client_certificate_gets_a_401_status(px):
    before = endpoint_requests("unauthenticated", "401")
    import json

    with tls_connect(px, client_context(px)) as sock:
        sock.sendall(b"GET /k8s/clusters/sandbox/api HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = read_all(sock)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401")
    assert "no client certificate" in json.loads(body)["message"]
    assert endpoint_requests("unauthenticated", "401") == before + 1


def test_plain_http_is_refused(px):
    with socket.create_connection(("127.0.0.1", px.port), timeout=10) as sock:
        sock.sendall(b"GET /k8s/clusters/sandbox/api HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = read_all(sock)
    assert b"200" not in reply and b"apiVersion" not in reply


def test_garbage_bytes_are_refused(px):
    with socket.create_connection(("127.0.0.1", px.port), timeout=10) as sock:
        sock.sendall(os.urandom(4096))
        assert b"HTTP/1.1 200" not in read_all(sock)


def test_truncated_handshake_is_closed_after_the_header_timeout(strict):
    before = handshake_failures("timeout")
    with socket.create_connection(("127.0.0.1", strict.port), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello
        started = time.monotonic()
        assert read_all(sock) == b""
        assert time.monotonic() - started < 8
    wait_for(lambda: handshake_failures("timeout") > before)


@pytest.fixture
def strict_client(strict) -> Callable[[], ssl.SSLSocket]:
    cert, key = strict.issue_user("alice", ["admin"])
    ctx = client_context(strict, cert, key)
    return lambda: tls_connect(strict, ctx)


def test_oversized_headers_get_431(strict_client):
    with strict_client() as sock:
        sock.sendall(b"GET /k8s/clusters/sandbox/api HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 431")


def test_content_length_with_transfer_encoding_is_refused_400(strict_client):
    with strict_client() as sock:
        sock.sendall(
            b"POST /k8s/clusters/sandbox/api/v1/namespaces/dev/configmaps HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /k8s/clusters/sandbox/api HTTP/1.1\r\n\r\n"
        )
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 400")
    assert reply.count(b"HTTP/1.1") == 1  # the smuggled request was never answered


def test_slowloris_is_closed_after_the_header_timeout(strict_client):
    with strict_client() as sock:
        sock.settimeout(10)
        started = time.monotonic()
        closed = False
        for byte in b"GET /k8s/clusters/sandbox/api HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 200:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                closed = True
                break
            time.sleep(0.05)
            if time.monotonic() - started > 8:
                break
        if not closed:
            assert read_all(sock, limit=5) == b""
        assert time.monotonic() - started < 9


def test_a_request_outside_the_cluster_prefix_is_a_404_status(strict_client):
    with strict_client() as sock:
        sock.sendall(b"GET /api/v1/pods HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 404")
    assert b'"kind":"Status"' in reply






def warm_up(client: Callable[[], ssl.SSLSocket]) -> None:
    """One request, so the upstream connection (pooled, kept) exists before fds are counted."""
    with client() as sock:
        sock.sendall(b"GET /k8s/clusters/sandbox/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 200")


def test_client_vanishing_mid_watch_leaves_nothing_behind(strict, strict_client):
    warm_up(strict_client)
    fds = None
    for attempt in range(4):
        sock = strict_client()
        sock.sendall(b"GET /k8s/clusters/sandbox/api/v1/namespaces/dev/pods?watch=true HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        wait_for(lambda: strict.stats()["streams"] == ["watch"])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # RST: vanished
        wait_for(lambda: strict.settled())
        if attempt == 0:  # the first watch opened the pooled upstream h2 connection; count from here
            fds = open_fds()
    wait_for(lambda: open_fds() <= fds)


def test_client_vanishing_mid_exec_leaves_nothing_behind(strict, strict_client, kubectl_new, tmp_path):
    kubeconfig = strict.kubeconfig("alice", ["admin"], ["sandbox"])
    warm_up(strict_client)
    wait_for(lambda: strict.settled())
    fds = open_fds()
    proc = subprocess.Popen(
        [kubectl_new, "--kubeconfig", str(kubeconfig), "exec", "-i", "-n", "dev", "web-1", "--", "cat"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"ping\n")
        proc.stdin.flush()
        echoed = b""
        deadline = time.monotonic() + 60
        while not echoed.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                echoed += chunk
        assert echoed == b"ping\n"
        assert strict.stats()["streams"] == ["exec"]
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    wait_for(lambda: strict.settled() and open_fds() <= fds)
    events = [e for e in strict.audit_events if e["event"] == "session.end"]
    assert events and events[-1]["kind"] == "exec" and events[-1]["bytes_from_client"] > 0
    assert "stream_protocol" in events[-1]  # the session tap decoded the wire


def test_head_then_get_on_one_keep_alive_connection(strict_client):
    with strict_client() as sock:
        sock.settimeout(10)
        sock.sendall(b"HEAD /k8s/clusters/sandbox/version HTTP/1.1\r\nHost: x\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")  # no body after a HEAD
        sock.sendall(b"GET /k8s/clusters/sandbox/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 200") and b"gitVersion" in reply


def test_an_idle_h2_connection_with_pings_outlives_the_header_timeout(strict):
    import h2.config
    import h2.connection
    import h2.events

    cert, key = strict.issue_user("alice", ["admin"])
    ctx = client_context(strict, cert, key, alpn="h2")
    with tls_connect(strict, ctx) as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()

        def request() -> int:
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, [(":method", "GET"), (":path", "/k8s/clusters/sandbox/version"),
                                    (":scheme", "https"), (":authority", "x")], end_stream=True)
            sock.sendall(conn.data_to_send())
            status = 0
            while True:
                data = sock.recv(65536)
                assert data, "connection closed"
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = int(dict(event.headers)[":status"])
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
                        sock.sendall(conn.data_to_send())
                        return status
                sock.sendall(conn.data_to_send())

        assert request() == 200
        for _ in range(8):  # 1.6 s of keep-alive pings, over three header timeouts
            conn.ping(b"kubegate")
            sock.sendall(conn.data_to_send())
            time.sleep(0.2)
        assert request() == 200

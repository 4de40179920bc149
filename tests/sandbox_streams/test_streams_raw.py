"""sandbox.streams with raw clients over real sockets: negotiation answers, bad input, clients that
vanish, legacy WebSocket port-forward, and the SPDY fallback of kubectl 1.37."""

from __future__ import annotations

import collections
import json
import os
import socket
import subprocess
import time

import pytest

from proxy.protocol import channels as ch
from proxy.protocol import spdy

pytestmark = pytest.mark.e2e

EXEC = "/api/v1/namespaces/default/pods/web/exec"


def _connect(harness) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", harness.port), timeout=10)
    return sock


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def _spdy_request(path: str, versions: str = "v4.channel.k8s.io") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            f"X-Stream-Protocol-Version: {versions}\r\nContent-Length: 0\r\n\r\n").encode()


def _ws_request(path: str, protocols: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Protocol: {protocols}\r\n\r\n").encode()


def _wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def _wait_for(predicate, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_spdy_exec_with_a_hand_made_client(harness):
    sock = _connect(harness)
    sock.sendall(_spdy_request(EXEC + "?command=sh&command=-c&command=cat%3B+exit+4&stdin=1&stdout=1"))
    head, rest = _read_head(sock)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"X-Stream-Protocol-Version: v4.channel.k8s.io" in head
    client = spdy.SpdyConnection(client_side=True)
    for kind in ("error", "stdin", "stdout"):
        client.send_syn_stream([("streamtype", kind)])
    client.send_data(3, b"ping-pong", fin=True)
    sock.sendall(client.data_to_send())
    got: dict[int, bytes] = collections.defaultdict(bytes)
    fins: set[int] = set()
    replies: set[int] = set()
    data = rest
    while True:
        for event in client.receive_data(data):
            if isinstance(event, spdy.SynReply):
                replies.add(event.stream_id)
            elif isinstance(event, spdy.Data):
                assert event.stream_id in replies, "data before SYN_REPLY"
                got[event.stream_id] += event.data
                if event.fin:
                    fins.add(event.stream_id)
        if {1, 5} <= fins:
            break
        data = sock.recv(65536)
        assert data, "server closed before finishing the streams"
    assert got[5] == b"ping-pong"
    status = json.loads(got[1])
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "4"}]
    sock.close()


def test_spdy_unknown_protocol_version_is_refused_with_403(harness):
    sock = _connect(harness)
    sock.sendall(_spdy_request(EXEC + "?command=true&stdout=1", versions="v9.channel.k8s.io"))
    head, body = _read_head(sock)
    body += _read_all(sock)
    assert head.startswith(b"HTTP/1.1 403 ")
    assert b"X-Accepted-Stream-Protocol-Versions: v4.channel.k8s.io" in head
    assert b"unable to negotiate protocol" in body
    sock.close()


def test_websocket_without_a_common_subprotocol_is_refused_so_clients_fall_back(harness):
    sock = _connect(harness)
    sock.sendall(_ws_request(EXEC + "?command=true&stdout=1", "v9.channel.k8s.io"))
    head, body = _read_head(sock)
    body += _read_all(sock)
    assert head.startswith(b"HTTP/1.1 400 ")  # not a 101: client-go's "upgrade failure" -> SPDY
    assert json.loads(body)["kind"] == "Status"
    sock.close()


def test_missing_command_and_plain_requests_get_status_errors(harness):
    sock = _connect(harness)
    sock.sendall(_spdy_request(EXEC + "?stdout=1"))
    head, body = _read_head(sock)
    body += _read_all(sock)
    assert head.startswith(b"HTTP/1.1 400 ")
    assert json.loads(body)["message"] == "you must specify at least one command for the container"
    sock.close()


def test_garbage_after_the_spdy_upgrade_closes_cleanly(harness):
    sock = _connect(harness)
    sock.sendall(_spdy_request(EXEC + "?command=sleep&command=30&stdout=1") + b"\x80\x03\x00\x01garbage!" * 4)
    head, rest = _read_head(sock)
    assert head.startswith(b"HTTP/1.1 101 ")
    rest += _read_all(sock)  # the server ends the connection by itself
    events = spdy.SpdyConnection(client_side=True).receive_data(rest)
    assert any(isinstance(e, spdy.GoAway) and e.status == spdy.GOAWAY_PROTOCOL_ERROR for e in events)
    sock.close()
    assert _wait_for(lambda: harness.running_sessions() == 0)


def test_garbage_after_the_websocket_upgrade_closes_cleanly(harness):
    sock = _connect(harness)
    sock.sendall(_ws_request(EXEC + "?command=sleep&command=30&stdout=1", "v5.channel.k8s.io"))
    head, _ = _read_head(sock)
    assert head.startswith(b"HTTP/1.1 101 ")
    sock.sendall(b"\x8f\x80\x00\x00\x00\x00not a frame")
    _read_all(sock)  # close frame, then EOF: no hang
    sock.close()
    assert _wait_for(lambda: harness.running_sessions() == 0)


@pytest.mark.parametrize("wire", ["spdy", "websocket"])
def test_a_client_vanishing_mid_exec_kills_the_process(harness, wire):
    sock = _connect(harness)
    query = "?command=sh&command=-c&command=echo+%24%24%3B+exec+sleep+60&stdout=1&stderr=1"
    if wire == "spdy":
        sock.sendall(_spdy_request(EXEC + query))
        head, rest = _read_head(sock)
        client = spdy.SpdyConnection(client_side=True)
        for kind in ("error", "stdout", "stderr"):
            client.send_syn_stream([("streamtype", kind)])
        sock.sendall(client.data_to_send())
        out, data = b"", rest
        while b"\n" not in out:
            out += b"".join(e.data for e in client.receive_data(data)
                            if isinstance(e, spdy.Data) and e.stream_id == 3)
            if b"\n" not in out:
                data = sock.recv(65536)
    else:
        sock.sendall(_ws_request(EXEC + query, "v5.channel.k8s.io"))
        head, rest = _read_head(sock)
        ws = ch.WebSocketClient(rest)
        out = b""
        while b"\n" not in out:
            for message in ws.receive_data(sock.recv(65536)):
                if isinstance(message, bytes) and message[:1] == b"\x01":
                    out += message[1:]
    assert head.startswith(b"HTTP/1.1 101 ")
    pid = int(out.split()[0])
    sock.close()  # vanish without a word
    assert _wait_gone(pid), "the exec'd process outlived its client"
    assert _wait_for(lambda: harness.running_sessions() == 0), "a session task is stuck"


def test_legacy_websocket_port_forward(harness):
    sock = _connect(harness)
    sock.sendall(_ws_request("/api/v1/namespaces/default/pods/web/portforward?ports=8080", "portforward.k8s.io"))
    head, rest = _read_head(sock)
    assert head.startswith(b"HTTP/1.1 101 ")
    ws = ch.WebSocketClient(rest)
    messages = ws.receive_data(b"")
    while len(messages) < 2:
        messages += ws.receive_data(sock.recv(65536))
    # The server's first message on each channel is the port (8080, little-endian): data 0, error 1.
    assert sorted(messages[:2]) == [b"\x00\x90\x1f", b"\x01\x90\x1f"]
    sock.sendall(ws.send(b"\x00hello"))
    echoed = b"".join(m[1:] for m in messages[2:] if isinstance(m, bytes) and m[:1] == b"\x00")
    while len(echoed) < 5:
        for message in ws.receive_data(sock.recv(65536)):
            assert isinstance(message, bytes) and message[:1] == b"\x00"
            echoed += message[1:]
    assert echoed == b"hello"
    sock.sendall(ws.close())
    sock.close()
    assert _wait_for(lambda: harness.running_sessions() == 0)


def test_kubectl_137_falls_back_to_spdy_when_websockets_are_off(kubectl_new, harness_kubeconfig):
    env = {**os.environ, "KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}
    result = subprocess.run([kubectl_new, "--kubeconfig", harness_kubeconfig, "exec", "-i", "web", "--",
                             "sh", "-c", "cat; exit 2"], input=b"via-spdy\n", capture_output=True, env=env,
                            timeout=30)
    assert result.stdout == b"via-spdy\n"
    assert result.returncode == 2


def test_kubectl_137_falls_back_to_spdy_on_our_websocket_refusal(kubectl_new, harness_kubeconfig, monkeypatch):
    import sandbox.streams

    # A server without v5: the WebSocket upgrade is refused (400 Status); kubectl must retry over SPDY.
    monkeypatch.setattr(sandbox.streams, "EXEC_WS_PROTOCOLS", ("v4.channel.k8s.io",))
    result = subprocess.run([kubectl_new, "--kubeconfig", harness_kubeconfig, "exec", "-i", "web", "--",
                             "sh", "-c", "cat; exit 5"], input=b"fell back\n", capture_output=True, timeout=30)
    assert result.stdout == b"fell back\n"
    assert result.returncode == 5


def test_stopping_the_server_kills_running_execs(tmp_path):
    from sandbox.stream_harness import StreamHarness, make_pod

    harness = StreamHarness([make_pod("web")], tmp_path / "pods").start()
    try:
        sock = _connect(harness)
        sock.sendall(_ws_request(EXEC + "?command=sh&command=-c&command=echo+%24%24%3B+exec+sleep+60&stdout=1",
                                 "v5.channel.k8s.io"))
        head, rest = _read_head(sock)
        assert head.startswith(b"HTTP/1.1 101 ")
        ws = ch.WebSocketClient(rest)
        out = b"".join(m[1:] for m in ws.receive_data(b"") if isinstance(m, bytes))
        while b"\n" not in out:
            out += b"".join(m[1:] for m in ws.receive_data(sock.recv(65536)) if isinstance(m, bytes))
        pid = int(out.split()[0])
    finally:
        harness.stop()
    assert _wait_gone(pid)
    sock.close()


def test_port_forward_to_a_closed_port_reports_on_the_error_stream(harness):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    sock = _connect(harness)
    sock.sendall(_spdy_request("/api/v1/namespaces/default/pods/shell/portforward", "portforward.k8s.io"))
    head, rest = _read_head(sock)
    assert head.startswith(b"HTTP/1.1 101 ")
    client = spdy.SpdyConnection(client_side=True)
    error_id = client.send_syn_stream([("streamtype", "error"), ("port", str(port)), ("requestid", "0")])
    data_id = client.send_syn_stream([("streamtype", "data"), ("port", str(port)), ("requestid", "0")])
    sock.sendall(client.data_to_send())
    got: dict[int, bytes] = collections.defaultdict(bytes)
    fins: set[int] = set()
    data = rest
    while True:
        for event in client.receive_data(data):
            if isinstance(event, spdy.Data):
                got[event.stream_id] += event.data
                if event.fin:
                    fins.add(event.stream_id)
        if {error_id, data_id} <= fins:
            break
        data = sock.recv(65536)
        assert data
    assert f"error forwarding port {port}".encode() in got[error_id]
    assert got[data_id] == b""
    sock.close()


def test_a_flood_of_spdy_streams_is_refused_beyond_the_limit(harness):
    from sandbox.streams import MAX_OPEN_STREAMS

    sock = _connect(harness)
    sock.sendall(_spdy_request("/api/v1/namespaces/default/pods/shell/portforward", "portforward.k8s.io"))
    head, rest = _read_head(sock)
    assert head.startswith(b"HTTP/1.1 101 ")
    client = spdy.SpdyConnection(client_side=True)
    for i in range(MAX_OPEN_STREAMS + 10):
        client.send_syn_stream([("streamtype", "error"), ("port", "1"), ("requestid", str(i))])
    sock.sendall(client.data_to_send())
    replies, refused = 0, 0
    data = rest
    while replies + refused < MAX_OPEN_STREAMS + 10:
        for event in client.receive_data(data):
            if isinstance(event, spdy.SynReply):
                replies += 1
            elif isinstance(event, spdy.RstStream) and event.status == spdy.REFUSED_STREAM:
                refused += 1
        if replies + refused < MAX_OPEN_STREAMS + 10:
            data = sock.recv(65536)
            assert data
    assert replies == MAX_OPEN_STREAMS
    assert refused == 10
    sock.close()
    assert _wait_for(lambda: harness.running_sessions() == 0)


def test_a_client_leaving_while_the_process_runs_with_stdout_closed_kills_it(harness):
    sock = _connect(harness)
    query = "?command=sh&command=-c&command=echo+%24%24%3B+exec+sleep+60+%3E%26-+2%3E%26-&stdout=1"
    sock.sendall(_ws_request(EXEC + query, "v5.channel.k8s.io"))
    head, rest = _read_head(sock)
    assert head.startswith(b"HTTP/1.1 101 ")
    ws = ch.WebSocketClient(rest)
    out = b"".join(m[1:] for m in ws.receive_data(b"") if isinstance(m, bytes))
    while b"\n" not in out:
        out += b"".join(m[1:] for m in ws.receive_data(sock.recv(65536)) if isinstance(m, bytes))
    pid = int(out.split()[0])
    sock.close()
    assert _wait_gone(pid)
    assert _wait_for(lambda: harness.running_sessions() == 0)


def test_sessions_leak_no_file_descriptors(harness):
    def exec_once(tty: bool) -> None:
        query = "?command=echo&command=hi&stdout=1" + ("&tty=1" if tty else "&stderr=1")
        sock = _connect(harness)
        sock.sendall(_ws_request(EXEC + query, "v5.channel.k8s.io"))
        head, rest = _read_head(sock)
        assert head.startswith(b"HTTP/1.1 101 ")
        if tty:  # the initial terminal size, as kubectl sends it
            sock.sendall(ch.WebSocketClient(rest).send(b'\x04{"Width":80,"Height":24}'))
        _read_all(sock)  # until the server closes
        sock.close()

    exec_once(False)  # warm up (lazy imports, the child watcher)
    exec_once(True)
    assert _wait_for(lambda: harness.running_sessions() == 0)
    before = len(os.listdir("/proc/self/fd"))
    for i in range(10):
        exec_once(tty=i % 2 == 0)
    assert _wait_for(lambda: harness.running_sessions() == 0)
    assert _wait_for(lambda: len(os.listdir("/proc/self/fd")) <= before), (before, os.listdir("/proc/self/fd"))

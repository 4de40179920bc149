"""Every remotecommand protocol version the sandbox negotiates, with a hand-made client each:
what the error stream carries (v4+: Status JSON; below: text), framing (binary / base64), resize."""

from __future__ import annotations

import base64
import collections
import json
import socket

import pytest

from proxy.protocol import channels as ch
from proxy.protocol import spdy

pytestmark = pytest.mark.e2e

QUERY = "?command=sh&command=-c&command=echo+out%3B+exit+2&stdout=1&stderr=1"
EXEC = "/api/v1/namespaces/default/pods/web/exec"


def _open(harness, request: bytes) -> tuple[socket.socket, bytes, bytes]:
    sock = socket.create_connection(("127.0.0.1", harness.port), timeout=10)
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return sock, head, rest


@pytest.mark.parametrize("version", ["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io",
                                     "channel.k8s.io"])
def test_spdy_versions(harness, version):
    request = (f"POST {EXEC}{QUERY} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
               f"X-Stream-Protocol-Version: v9.nope\r\nX-Stream-Protocol-Version: {version}\r\n\r\n").encode()
    sock, head, rest = _open(harness, request)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert f"X-Stream-Protocol-Version: {version}".encode() in head
    client = spdy.SpdyConnection(client_side=True)
    ids = {kind: client.send_syn_stream([("streamtype", kind)]) for kind in ("error", "stdout", "stderr")}
    sock.sendall(client.data_to_send())
    got: dict[int, bytes] = collections.defaultdict(bytes)
    fins: set[int] = set()
    data = rest
    while not {ids["error"], ids["stdout"]} <= fins:
        for event in client.receive_data(data):
            if isinstance(event, spdy.Data):
                got[event.stream_id] += event.data
                if event.fin:
                    fins.add(event.stream_id)
        if not {ids["error"], ids["stdout"]} <= fins:
            data = sock.recv(65536)
            assert data
    sock.close()
    assert got[ids["stdout"]] == b"out\n"
    error = got[ids["error"]]
    if version == "v4.channel.k8s.io":
        assert spdy.exit_code_from_status(error) == 2
    else:
        assert error.startswith(b"command terminated with non-zero exit code") and b"2" in error


def _ws_request(protocol: str, query: str = QUERY) -> bytes:
    return (f"GET {EXEC}{query} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Protocol: {protocol}\r\n\r\n").encode()


def _ws_session(harness, protocol: str, query: str = QUERY, send: list[bytes | str] | None = None):
    sock, head, rest = _open(harness, _ws_request(protocol, query))
    assert head.startswith(b"HTTP/1.1 101 ")
    assert f"sec-websocket-protocol: {protocol}".encode() in head.lower()
    ws = ch.WebSocketClient(rest)
    for message in send or []:
        sock.sendall(ws.send(message))
    messages: list[bytes | str] = []
    pending = ws.receive_data(b"")
    while True:
        done = False
        for message in pending:
            if message is None:
                done = True
            else:
                messages.append(message)
        if done:
            break
        data = sock.recv(65536)
        if not data:
            break
        pending = ws.receive_data(data)
    sock.close()
    return messages


@pytest.mark.parametrize("protocol", ["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io",
                                      "v2.channel.k8s.io", "channel.k8s.io"])
def test_websocket_binary_versions(harness, protocol):
    messages = _ws_session(harness, protocol)
    assert all(isinstance(m, bytes) for m in messages)
    by_channel: dict[int, bytes] = collections.defaultdict(bytes)
    for message in messages:
        by_channel[message[0]] += message[1:]
    assert by_channel[ch.STDOUT] == b"out\n"
    if ch.channel_protocol(protocol).status_errors:
        assert spdy.exit_code_from_status(by_channel[ch.ERROR]) == 2
    else:
        assert by_channel[ch.ERROR].startswith(b"command terminated with non-zero exit code")


@pytest.mark.parametrize("protocol", ["v5.base64.channel.k8s.io", "v4.base64.channel.k8s.io",
                                      "base64.channel.k8s.io"])
def test_websocket_base64_versions(harness, protocol):
    stdin = "0" + base64.b64encode(b"typed\n").decode()
    query = "?command=sh&command=-c&command=read+x%3B+echo+got+%24x%3B+exit+2&stdin=1&stdout=1&stderr=1"
    messages = _ws_session(harness, protocol, query, [stdin])
    assert all(isinstance(m, str) for m in messages)
    by_channel: dict[int, bytes] = collections.defaultdict(bytes)
    for message in messages:
        by_channel[int(message[0])] += base64.b64decode(message[1:])
    assert by_channel[ch.STDOUT] == b"got typed\n"
    if ch.channel_protocol(protocol).status_errors:
        assert spdy.exit_code_from_status(by_channel[ch.ERROR]) == 2


def test_websocket_v5_stdin_close_and_resize(harness):
    query = "?command=sh&command=-c&command=stty+size%3B+cat&stdin=1&stdout=1&tty=1"
    resize = b"\x04" + json.dumps({"Width": 120, "Height": 40}).encode()
    messages = _ws_session(harness, "v5.channel.k8s.io", query, [resize, b"\x00abc\n", b"\xff\x00"])
    stdout = b"".join(m[1:] for m in messages if isinstance(m, bytes) and m[0] == ch.STDOUT)
    assert b"40 120" in stdout
    assert b"abc" in stdout
    status = b"".join(m[1:] for m in messages if isinstance(m, bytes) and m[0] == ch.ERROR)
    assert json.loads(status)["status"] == "Success"

"""An authenticated client that sends megabytes of non-protocol bytes after a ``101`` cannot burn kubegate's
event loop through the session audit tap: the relay moves every byte both ways, the tap gives up (the
session's audit record says so, ``kubegate_session_tap_gave_up_total`` counts it) and the proxy keeps
answering others.

The upstream is ``proxy.testing.EchoUpstream(switch_upgrades=True)``, a stand-in API server that answers the upgrade with a
``101`` and echoes bytes: a real API server closes a connection that breaks SPDY or WebSocket, and what is
under test here is the relay and its tap, which must not care."""

from __future__ import annotations

import os
import select
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

pytestmark = pytest.mark.e2e

ROLE = """
kind: role
version: v8
metadata: {name: ops}
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources: [{kind: '*', api_group: '*', namespace: '*', name: '*', verbs: ['*']}]
    kubernetes_groups: [ops-team]
"""
GARBAGE = 8 << 20


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[tuple[Any, ssl.SSLContext]]:
    from proxy.testing import running_echo_upstream, running_proxy
    from rbac import RoleWatcher

    base = tmp_path_factory.mktemp("tap-hostile")
    roles = base / "roles"
    roles.mkdir()
    (roles / "ops.yaml").write_text(ROLE)
    with running_echo_upstream(base / "echo", h2=False, switch_upgrades=True) as echo:
        with running_proxy(base / "proxy", clusters=[echo.cluster("echo")],
                           roles=RoleWatcher(str(roles), time.time)) as px:
            cert, key = px.issue_user("mallory", ["ops"])
            ctx = ssl.create_default_context(cafile=str(px.ca_pem_path))
            ctx.load_cert_chain(str(cert), str(key))
            ctx.set_alpn_protocols(["http/1.1"])
            yield px, ctx


def _upgrade_head(upgrade: str, marker: str) -> bytes:
    path = f"/k8s/clusters/echo/api/v1/namespaces/dev/pods/web-1/exec?command={marker}&stdin=true&stdout=true"
    if upgrade == "SPDY/3.1":
        return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                "X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n").encode()
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n").encode()


def _gave_up() -> float:
    return REGISTRY.get_sample_value("kubegate_session_tap_gave_up_total", {"kind": "exec"}) or 0.0


@pytest.mark.parametrize("upgrade", ["SPDY/3.1", "websocket"])
def test_garbage_after_a_101_is_relayed_whole_and_the_tap_gives_up(setup, upgrade):
    px, ctx = setup
    before = _gave_up()
    garbage = os.urandom(GARBAGE)
    marker = uuid.uuid4().hex
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", px.port), timeout=30),
                         server_hostname="127.0.0.1") as sock:
        sock.sendall(_upgrade_head(upgrade, marker))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            assert chunk, head
            head += chunk
        head, _, received = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

        # One thread, small writes (many reads on the proxy's side), reading the echo as it comes.
        got = bytearray(received)
        view = memoryview(garbage)
        sent = 0
        while len(got) < GARBAGE:
            readable, writable, _ = select.select([sock], [sock] if sent < GARBAGE else [], [], 30)
            assert readable or writable, f"relay stalled after {len(got)} bytes back"
            if readable or sock.pending():
                chunk = sock.recv(1 << 20)
                assert chunk, f"relay ended after {len(got)} bytes back"
                got += chunk
            if writable and sent < GARBAGE:
                sock.sendall(view[sent : sent + 16384])
                sent += 16384
        assert bytes(got) == garbage

    deadline = time.monotonic() + 30
    ends: list[dict[str, Any]] = []
    while not ends and time.monotonic() < deadline:
        ends = [e for e in list(px.audit_events) if e["event"] == "session.end" and marker in (e.get("query") or "")]
        time.sleep(0.02)
    (end,) = ends
    assert end["tap_failed"].startswith("client:"), end
    assert end["bytes_from_client"] == GARBAGE and end["bytes_to_client"] == GARBAGE
    assert _gave_up() == before + 1

    # The proxy still answers others at once.
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", px.port), timeout=10),
                         server_hostname="127.0.0.1") as other:
        other.sendall(b"GET /k8s/clusters/echo/api HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert other.recv(65536).startswith(b"HTTP/1.1 200")

"""The listener's TLS sessions (``proxy.tls.server_context``): no session tickets. kubectl and client-go
(Go's TLS client without a session cache) and Python's clients never resume a session, so a ticket was
two encrypted messages made per connection for nobody (~2 M instructions of each handshake); a client
that does resume simply makes a full handshake. Real kubegate (the session proxy), real TLS clients."""

from __future__ import annotations

import socket
import ssl

import pytest

from proxy.testing import read_all

pytestmark = pytest.mark.e2e


def _get_version(px, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None) -> tuple[bytes, ssl.SSLSocket]:
    raw = socket.create_connection(("127.0.0.1", px.port), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session)
    sock.sendall(b"GET /k8s/clusters/sandbox/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return read_all(sock), sock  # TLS 1.3 tickets would have come with the answer, before the close


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2], ids=["TLSv1.3", "TLSv1.2"])
def test_the_listener_issues_no_session_ticket(px, version: ssl.TLSVersion):
    cert, key = px.issue_user("alice", ["admin"])
    ctx = ssl.create_default_context(cafile=str(px.ca_pem_path))
    ctx.load_cert_chain(str(cert), str(key))
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.minimum_version = ctx.maximum_version = version
    reply, sock = _get_version(px, ctx)
    with sock:
        assert reply.startswith(b"HTTP/1.1 200")
        assert sock.version() == {ssl.TLSVersion.TLSv1_3: "TLSv1.3", ssl.TLSVersion.TLSv1_2: "TLSv1.2"}[version]
        session = sock.session
    assert session is not None and not session.has_ticket
    if version is ssl.TLSVersion.TLSv1_3:  # nothing to resume with: the next connection is a full handshake
        reply, again = _get_version(px, ctx, session)
        with again:
            assert reply.startswith(b"HTTP/1.1 200") and not again.session_reused

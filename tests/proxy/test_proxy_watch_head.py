"""A watch through kubegate answers its response head at once, before any event, as the apiserver does
(clients such as client-go wait for the head before they report the watch as established)."""

from __future__ import annotations

import socket
import ssl

import h2.config
import h2.connection
import h2.events

WATCH = "/k8s/clusters/sandbox/api/v1/namespaces/dev/configmaps?watch=true&resourceVersion={rv}"


def _tls(px, alpn: str) -> ssl.SSLSocket:
    cert, key = px.issue_user("wendy", ["admin"])
    ctx = ssl.create_default_context(cadata=px.ca.cert_pem.decode())
    ctx.load_cert_chain(str(cert), str(key))
    ctx.set_alpn_protocols([alpn])
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", px.port), timeout=15), server_hostname="127.0.0.1")
    assert sock.selected_alpn_protocol() == alpn
    return sock


def _current_rv(sandbox) -> str:
    # Watch from "now": no event is due, so only the head can arrive.
    return str(max(int(o["metadata"]["resourceVersion"]) for o in sandbox.store.list_objects("", "configmaps")))


def test_an_http1_watch_gets_its_head_before_any_event(px, sandbox):
    with _tls(px, "http/1.1") as sock:
        sock.sendall(f"GET {WATCH.format(rv=_current_rv(sandbox))} HTTP/1.1\r\nHost: kubegate\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)  # the socket timeout (15 s) fails the test if the head never comes
            assert chunk, "proxy closed the watch without answering"
            head += chunk
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"transfer-encoding: chunked" in head.lower()


def test_an_h2_watch_gets_its_head_before_any_event(px, sandbox):
    with _tls(px, "h2") as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "GET"), (":scheme", "https"), (":authority", "kubegate"),
                              (":path", WATCH.format(rv=_current_rv(sandbox)))], end_stream=True)
        sock.sendall(conn.data_to_send())
        status = None
        while status is None:
            data = sock.recv(65536)
            assert data, "proxy closed the connection without answering"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == 1:
                    status = dict(event.headers)[b":status"]
                assert not isinstance(event, h2.events.StreamEnded), "the watch ended instead of waiting"
            sock.sendall(conn.data_to_send())
        assert status == b"200"

"""Which upstream answer heads the HTTP/1.1 fast path relays as the upstream's bytes (``relayable_head``),
and which it leaves to the parsed path (which rewrites the fields): a pure function of the head."""

from __future__ import annotations

import pytest

from proxy.fastpath import relayable_head

NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 07 Dec 2026 03:40:00 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: 1157\r\nLast-Modified: Mon, 07 Dec 2026 03:30:00 GMT\r\n"
    b'Connection: keep-alive\r\nETag: "6574-485"\r\nAccept-Ranges: bytes\r\n\r\n'
)
APISERVER = (
    b"HTTP/1.1 200 OK\r\nAudit-Id: 0b7c3a52-3a6e-4a53-8a43-2b7f5e6f7a11\r\nCache-Control: no-cache, private\r\n"
    b"Content-Type: application/json\r\nX-Kubernetes-Pf-Flowschema-Uid: 5d2c\r\n"
    b"Date: Mon, 07 Dec 2026 03:40:00 GMT\r\nContent-Length: 2\r\n\r\n"
)


def test_an_api_servers_head_is_relayed_as_it_is_with_its_status_and_length():
    assert relayable_head(APISERVER) == (APISERVER, 200, 2)
    assert relayable_head(APISERVER.replace(b"200 OK", b"404 Not Found")) == (
        APISERVER.replace(b"200 OK", b"404 Not Found"), 404, 2)


def test_nginxs_connection_keep_alive_is_dropped_and_nothing_else():
    head, status, length = relayable_head(NGINX)
    assert (status, length) == (200, 1157)
    assert head == NGINX.replace(b"Connection: keep-alive\r\n", b"")
    assert relayable_head(NGINX.replace(b"Connection: keep-alive", b"CONNECTION:  Keep-Alive "))[0] == head


def test_field_names_are_matched_whatever_their_case():
    assert relayable_head(APISERVER.replace(b"Content-Length: 2", b"CONTENT-LENGTH:   2  ")) is not None
    assert relayable_head(APISERVER.replace(b"Cache-Control", b"TRANSFER-ENCODING")) is None


@pytest.mark.parametrize("field", [
    b"Connection: close", b"Connection: keep-alive, Upgrade", b"Connection : keep-alive", b"Keep-Alive: timeout=5",
    b"Transfer-Encoding: chunked", b"TE: trailers", b"Trailer: X-Sum", b"Trailers: X-Sum", b"Upgrade: h2c",
    b"Proxy-Authenticate: Basic", b"Proxy-Connection: keep-alive", b"HTTP2-Settings: AAA",
    b"X-Kubegate-Request-Id: forged",
])  # fmt: skip
def test_hop_by_hop_fields_and_kubegates_own_are_left_to_the_parsed_path(field):
    assert relayable_head(APISERVER.replace(b"Cache-Control: no-cache, private", field)) is None


@pytest.mark.parametrize("head", [
    APISERVER.replace(b"Content-Length: 2\r\n", b""),  # no length: read to the end, or chunked
    APISERVER.replace(b"Content-Length: 2", b"Content-Length: 2\r\nContent-Length: 2"),  # twice
    APISERVER.replace(b"Content-Length: 2", b"Content-Length: +2"),
    APISERVER.replace(b"Content-Length: 2", b"Content-Length: 0x2"),
    APISERVER.replace(b"Content-Length: 2", b"Content-Length: 1234567890123456789"),  # 19 digits
    APISERVER.replace(b"HTTP/1.1", b"HTTP/1.0"),
    APISERVER.replace(b"200 OK", b"204 No Content"), APISERVER.replace(b"200 OK", b"304 Not Modified"),
    APISERVER.replace(b"200 OK", b"101 Switching Protocols"), APISERVER.replace(b"200 OK", b"100 Continue"),
    APISERVER.replace(b"200 OK", b"2x0 OK"), APISERVER.replace(b"200 OK", b"2000 OK"),
])  # fmt: skip
def test_answers_not_framed_by_one_plain_content_length_are_left_to_the_parsed_path(head):
    assert relayable_head(head) is None


def test_names_that_only_begin_like_a_hop_by_hop_one_are_relayed():
    head = APISERVER.replace(b"Cache-Control: no-cache, private", b"Tech-Contact: ops\r\nUpgrade-Insecure: 1")
    assert relayable_head(head) == (head, 200, 2)

"""Which upstream answer heads the HTTP/1.1 fast path relays as the upstream's bytes (``relayable_head``),
and which it leaves to the parsed path (which rewrites the fields): a pure function of the head, run
compiled where the build made it (``proxy/protocol/relayed_head.pxd``) and as Python otherwise (the
codec tests run again on the pure-Python modules: ``tests/protocol_http/test_compiled_codec.py``)."""

from __future__ import annotations

import random
import re

import httptools
import pytest

from proxy.protocol.relayed_head import relayable_head, relayed_fields

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
    assert relayable_head(APISERVER) == (APISERVER, 200, 2, len(APISERVER))
    not_found = APISERVER.replace(b"200 OK", b"404 Not Found")
    assert relayable_head(not_found) == (not_found, 404, 2, len(not_found))


def test_the_body_bytes_that_came_with_the_head_follow_the_relayed_head():
    assert relayable_head(APISERVER + b"{}") == (APISERVER + b"{}", 200, 2, len(APISERVER))
    relayed, _, _, head_size = relayable_head(NGINX + b'{"kind"', b"7f3a-19")
    assert relayed[:head_size].endswith(b"x-kubegate-request-id: 7f3a-19\r\n\r\n")
    assert relayed[head_size:] == b'{"kind"'


@pytest.mark.parametrize("cut", [12, 40, len(APISERVER) - 2, len(APISERVER) - 1])
def test_bytes_that_hold_no_whole_head_are_left_to_the_parsed_path(cut):
    assert relayable_head(APISERVER[:cut]) is None


def test_nginxs_connection_keep_alive_is_dropped_and_nothing_else():
    head, status, length, _ = relayable_head(NGINX)
    assert (status, length) == (200, 1157)
    assert head == NGINX.replace(b"Connection: keep-alive\r\n", b"")
    assert relayable_head(NGINX.replace(b"Connection: keep-alive", b"CONNECTION:  Keep-Alive "))[0] == head


def test_the_request_id_is_added_as_the_heads_last_field():
    with_id = APISERVER[:-2] + b"x-kubegate-request-id: 7f3a-19\r\n\r\n"
    assert relayable_head(APISERVER, b"7f3a-19") == (with_id, 200, 2, len(with_id))
    head, _, _, _ = relayable_head(NGINX, b"7f3a-19")
    assert head == NGINX.replace(b"Connection: keep-alive\r\n", b"")[:-2] + b"x-kubegate-request-id: 7f3a-19\r\n\r\n"


def test_a_head_with_nothing_to_change_is_the_upstreams_own_bytes():
    assert relayable_head(APISERVER)[0] is APISERVER


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
    APISERVER.replace(b"Content-Length: 2", b"Content-Length : 2"),  # not a field name HTTP allows
    APISERVER.replace(b"Content-Length: 2", b"Content-Length: 2\r\nContent-Length : 2"),
])  # fmt: skip
def test_answers_not_framed_by_one_plain_content_length_are_left_to_the_parsed_path(head):
    assert relayable_head(head) is None


def test_names_that_only_begin_like_a_hop_by_hop_one_are_relayed():
    head = APISERVER.replace(b"Cache-Control: no-cache, private", b"Tech-Contact: ops\r\nUpgrade-Insecure: 1")
    assert relayable_head(head) == (head, 200, 2, len(head))


# The same rules as regular expressions over the lower-cased head: the definition the one-pass scan
# must agree with (a "content-length" name with blanks before its colon, which HTTP/1.1 forbids and the
# upstream's parser refuses anyway, is refused by the scan outright; left out of the comparison).
_REFUSED = re.compile(
    rb"\r\n(?:connection(?!:[ \t]*keep-alive[ \t]*\r\n)|keep-alive|transfer-encoding|te|trailers?|upgrade"
    rb"|proxy-[!-9;-~]*|http2-settings|x-kubegate-request-id)[ \t]*:"
)


def _by_patterns(head: bytes) -> tuple[bytes, int, int, int] | None:
    if not head.startswith(b"HTTP/1.1 "):
        return None
    low = head.lower()
    if _REFUSED.search(low) is not None:
        return None
    pieces = low.split(b"\r\ncontent-length:")
    if len(pieces) != 2:
        return None
    value = pieces[1][: pieces[1].find(b"\r\n")].strip(b" \t")
    code = head[9:12]
    if not value.isdigit() or len(value) > 18 or not code.isdigit() or head[12:13] not in (b" ", b"\r"):
        return None
    if int(code) < 200 or int(code) in (204, 304):
        return None
    at = low.find(b"\r\nconnection:")
    if at >= 0:
        head = head[:at] + head[low.find(b"\r\n", at + 2) :]
    return head, int(code), int(value), len(head)


_LINES = [
    b"Server: nginx", b"Date: Mon, 07 Dec 2026 03:40:00 GMT", b"Content-Type: application/json",
    b"Connection: keep-alive", b"connection:keep-alive \t", b"Connection: close", b"Connection: Keep-Alive, TE",
    b"Keep-Alive: timeout=5", b"keep-alive\t: 1", b"Transfer-Encoding: chunked", b"TE: trailers", b"Te : x",
    b"Tech: x", b"Trailer: X", b"TRAILERS: X", b"Trailerx: 1", b"Upgrade: h2c", b"Upgrade-Insecure: 1",
    b"Proxy-Connection: keep-alive", b"Proxy-A b: 1", b"proxy-\xff: 1", b"Proxy-: 1", b"HTTP2-Settings: A",
    b"X-Kubegate-Request-Id: f", b"X-Kubegate-Request-Idx: f", b"X-Kubernetes-Pf-Flowschema-Uid: 5d2c",
    b"Content-Length: 12", b"content-length:7", b"Content-Length: 0x1", b"Content-Length:", b"ETag: \"1\"",
    b"Audit-Id: 0b7c", b" folded: x", b"NoColon", b"Cache-Control: no-cache, private",
]  # fmt: skip


def test_the_one_pass_scan_agrees_with_the_rules_written_as_patterns():
    rng = random.Random(9)
    statuses = [b"200 OK", b"404 Not Found", b"204 No Content", b"304 Not Modified", b"101 Switching", b"500 X"]
    relayed = 0
    for _ in range(4000):
        lines = rng.sample(_LINES, rng.randint(0, 7))
        if rng.random() < 0.5:  # most real answers have one length: half the heads get one more
            lines.insert(rng.randint(0, len(lines)), b"Content-Length: 1157")
        head = b"HTTP/1.1 " + rng.choice(statuses) + b"".join(b"\r\n" + line for line in lines) + b"\r\n\r\n"
        expected = _by_patterns(head)
        assert relayable_head(head) == expected, head
        request_id = b"%x" % rng.getrandbits(32)
        head_with_id = None if expected is None else (
            expected[0][:-2] + b"x-kubegate-request-id: " + request_id + b"\r\n\r\n")
        with_id = None if expected is None else (head_with_id, *expected[1:3], len(head_with_id))
        assert relayable_head(head, request_id) == with_id, head
        body = b'{"kind":"Pod"}'[: rng.randint(0, 14)]  # the body's first bytes in the same read
        with_body = None if with_id is None else (with_id[0] + body, *with_id[1:3], len(with_id[0]))
        assert relayable_head(head + body, request_id) == with_body, head + body
        relayed += expected is not None
    assert relayed > 100  # the corpus reaches both answers


def _parsed_fields(head: bytes) -> list[tuple[bytes, bytes]] | None:
    """The fields of ``head`` as the parsed path has them: httptools' callbacks, names lower-cased (and
    values without trailing blanks, which httptools leaves and HTTP/2 forbids: RFC 9113 §8.2.1); None
    for a head httptools refuses (the upstream connection's parser refuses it on every path)."""

    class Fields:
        def __init__(self) -> None:
            self.fields: list[tuple[bytes, bytes]] = []

        def on_header(self, name: bytes, value: bytes) -> None:
            self.fields.append((name.lower(), value.strip(b" \t")))  # a value's blanks are not part of it

    sink = Fields()
    try:
        httptools.HttpResponseParser(sink).feed_data(head)
    except httptools.HttpParserError:
        return None
    return sink.fields


def test_http2_takes_the_same_answers_as_fields_the_parsed_path_would_have():
    """``relayed_fields`` (an HTTP/2 client's answer, whose head its codec encodes): every head
    ``relayable_head`` takes, as the fields httptools gives the parsed path, less a plain
    ``Connection: keep-alive``, plus the request id; and the body's bytes that came with it. (The parsed
    path keeps a value's trailing blanks, which an HTTP/2 field may not have: these are stripped.)"""
    rng = random.Random(11)
    taken = 0
    for _ in range(2000):
        lines = rng.sample(_LINES[:-3] + _LINES[-1:], rng.randint(0, 7))  # no folded or colon-less line
        lines.insert(rng.randint(0, len(lines)), b"Content-Length: 14")
        head = b"HTTP/1.1 200 OK" + b"".join(b"\r\n" + line for line in lines) + b"\r\n\r\n"
        body = b'{"kind":"Pod"}'[: rng.randint(0, 14)]
        relayable = relayable_head(head)
        got = relayed_fields(head + body, b"r-9")
        if relayable is None:
            assert got is None, head
            continue
        parsed = _parsed_fields(head)
        if parsed is None:  # e.g. "Te : x": no path relays it (the framing parser fails the answer)
            continue
        taken += 1
        dropped = [f for f in parsed if f[0] == b"connection"][:1]  # the first plain keep-alive
        expected = [f for f in parsed if not (dropped and f is dropped[0])] + [(b"x-kubegate-request-id", b"r-9")]
        assert got == (expected, 200, 14, body), head
    assert taken > 200


@pytest.mark.parametrize("line", [b" folded: x", b"NoColon", b":empty-name"])
def test_a_head_with_a_line_that_is_not_a_field_is_left_to_the_parsed_path_on_http2(line):
    assert relayed_fields(APISERVER.replace(b"Cache-Control: no-cache, private", line), b"r-1") is None


"""HTTP/1.1 server codec: bytes in, events out (no sockets)."""

from __future__ import annotations

import json

import pytest

from proxy.protocol.events import (
    ConnectionClosed,
    ProtocolError,
    RequestBody,
    RequestEnd,
    RequestHead,
    ResponseHead,
    ServerLimits,
    StreamReset,
    UpgradeRequested,
)
from proxy.protocol.http1 import Http1ServerConnection


def feed(data: bytes, limits: ServerLimits | None = None) -> tuple[Http1ServerConnection, list]:
    conn = Http1ServerConnection(limits or ServerLimits())
    return conn, conn.receive_data(data)


def kinds(events: list) -> list[str]:
    return [type(e).__name__ for e in events]


def status_of(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_simple_get_is_head_then_end_with_lowercase_headers() -> None:
    _, events = feed(b"GET /api/v1/pods?limit=5 HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n")
    assert kinds(events) == ["RequestHead", "RequestEnd"]
    head = events[0]
    assert isinstance(head, RequestHead)
    assert (head.stream_id, head.method, head.target, head.http_version) == (
        1,
        "GET",
        "/api/v1/pods?limit=5",
        "1.1",
    )
    assert head.path == "/api/v1/pods" and head.query == "limit=5"
    assert head.authority == "example"
    assert head.headers == [(b"host", b"example"), (b"accept", b"*/*")]
    assert head.content_length == 0


def test_pipelined_requests_get_odd_stream_ids_and_answers_leave_in_order() -> None:
    conn, events = feed(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    heads = [e for e in events if isinstance(e, RequestHead)]
    assert [(h.stream_id, h.target) for h in heads] == [(1, "/a"), (3, "/b"), (5, "/c")]
    # Answer the second first: it is held until the first has ended.
    conn.send_response_head(ResponseHead(3, 200, [], content_length=1))
    conn.send_body(3, b"b", end_stream=True)
    assert conn.data_to_send() == b""
    conn.send_response_head(ResponseHead(1, 200, [], content_length=1))
    conn.send_body(1, b"a")
    conn.send_end(1)
    out = conn.data_to_send()
    assert out == (
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\naHTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb"
    )
    assert not conn.must_close


def test_response_without_length_is_chunked_on_http11() -> None:
    conn, _ = feed(b"GET /watch HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.send_response_head(ResponseHead(1, 200, [(b"content-type", b"application/json")]))
    conn.send_body(1, b'{"type":"ADDED"}\n')
    conn.send_body(1, b"")  # an empty chunk must not end the body
    conn.send_end(1)
    assert conn.data_to_send() == (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        b'11\r\n{"type":"ADDED"}\n\r\n0\r\n\r\n'
    )
    assert not conn.must_close


def test_http10_without_keepalive_is_close_delimited() -> None:
    conn, events = feed(b"GET / HTTP/1.0\r\n\r\n")
    assert events[0].http_version == "1.0"
    conn.send_response_head(ResponseHead(1, 200, []))
    conn.send_body(1, b"hello")
    conn.send_end(1)
    assert conn.data_to_send() == b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhello"
    assert conn.must_close


def test_http10_keepalive_with_length_stays_open() -> None:
    conn, _ = feed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    conn.send_response_head(ResponseHead(1, 200, [], content_length=2), end_stream=False)
    conn.send_body(1, b"ok", end_stream=True)
    assert conn.data_to_send() == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok"
    assert not conn.must_close


def test_connection_close_request_closes_after_response() -> None:
    conn, _ = feed(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    conn.send_response_head(ResponseHead(1, 204, []), end_stream=True)
    assert conn.data_to_send() == b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"
    assert conn.must_close


def test_head_request_response_has_no_body_framing() -> None:
    conn, _ = feed(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.send_response_head(ResponseHead(1, 200, [], content_length=10), end_stream=True)
    assert conn.data_to_send() == b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"


def test_chunked_request_body_streams_in_pieces() -> None:
    conn = Http1ServerConnection(ServerLimits())
    events = conn.receive_data(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
    assert kinds(events) == ["RequestHead", "RequestBody"]
    assert events[0].content_length is None
    events += conn.receive_data(b"lo\r\n6\r\n world\r\n0\r\n\r\n")
    body = b"".join(e.data for e in events if isinstance(e, RequestBody))
    assert body == b"hello world"
    assert isinstance(events[-1], RequestEnd)


def test_content_length_body_split_across_reads() -> None:
    conn = Http1ServerConnection(ServerLimits())
    events = conn.receive_data(b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc")
    assert events[0].content_length == 6
    events += conn.receive_data(b"def")
    assert b"".join(e.data for e in events if isinstance(e, RequestBody)) == b"abcdef"
    assert isinstance(events[-1], RequestEnd)


def test_expect_100_continue_is_answered_at_once() -> None:
    conn, events = feed(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    assert kinds(events) == ["RequestHead"]
    assert conn.data_to_send() == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_upgrade_stops_parsing_and_keeps_trailing_bytes() -> None:
    conn, events = feed(
        b"POST /api/v1/namespaces/dev/pods/p/exec?command=ls HTTP/1.1\r\nHost: x\r\n"
        b"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
        b"\x80\x03\x00\x01rest"
    )
    assert kinds(events) == ["UpgradeRequested"]
    up = events[0]
    assert isinstance(up, UpgradeRequested)
    assert up.head.upgrade and up.head.method == "POST" and up.stream_id == 1
    assert up.trailing == b"\x80\x03\x00\x01rest"
    assert conn.receive_data(b"more SPDY bytes") == []
    conn.send_response_head(ResponseHead(1, 101, [(b"upgrade", b"SPDY/3.1")]))
    assert conn.data_to_send() == (
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: SPDY/3.1\r\nconnection: upgrade\r\n\r\n"
    )


def test_refused_upgrade_closes_after_the_answer() -> None:
    conn, events = feed(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    conn.send_response_head(ResponseHead(1, 403, [], content_length=2))
    conn.send_body(1, b"no", end_stream=True)
    assert b"connection: close" in conn.data_to_send()
    assert conn.must_close


@pytest.mark.parametrize(
    ("raw", "status", "fragment"),
    [
        # request smuggling: both framings
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            "Content-Length",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
            400,
            "",
        ),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd", 400, ""),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, ""),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, ""),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", 400, ""),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400, ""),
        (b"GET /\x00 HTTP/1.1\r\n\r\n", 400, ""),
        (b"GET / HTTP/9.9\r\n\r\n", 400, ""),
    ],
)
def test_bad_heads_are_400_status_and_close(raw: bytes, status: int, fragment: str) -> None:
    conn, events = feed(raw)
    errors = [e for e in events if isinstance(e, ProtocolError)]
    assert len(errors) == 1 and errors[0].status == status
    assert not any(isinstance(e, (RequestBody, RequestEnd)) for e in events)
    code, body = status_of(conn.data_to_send())
    assert code == status and body["kind"] == "Status" and body["code"] == status
    assert fragment in body["message"]
    assert conn.must_close
    assert conn.receive_data(b"GET / HTTP/1.1\r\n\r\n") == []


def test_bad_chunk_size_after_head_resets_the_stream_and_answers_400() -> None:
    conn, events = feed(
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
    )
    assert kinds(events) == ["RequestHead", "ProtocolError", "StreamReset"]
    code, _ = status_of(conn.data_to_send())
    assert code == 400 and conn.must_close
    # The app's late answer for the abandoned request is dropped.
    conn.send_response_head(ResponseHead(1, 200, [], content_length=0), end_stream=True)
    assert conn.data_to_send() == b""


def test_oversized_head_in_one_read_is_431() -> None:
    conn, events = feed(
        b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n", ServerLimits(max_header_bytes=1024)
    )
    assert [(type(e).__name__, e.status) for e in events] == [("ProtocolError", 431)]
    code, body = status_of(conn.data_to_send())
    assert code == 431 and body["reason"] == "RequestHeaderFieldsTooLarge"
    assert conn.must_close


def test_oversized_head_trickled_is_431_before_it_completes() -> None:
    conn = Http1ServerConnection(ServerLimits(max_header_bytes=1024))
    assert conn.receive_data(b"GET / HTTP/1.1\r\nX-Big: ") == []
    events = []
    for _ in range(20):
        events += conn.receive_data(b"a" * 100)
    assert [e.status for e in events if isinstance(e, ProtocolError)] == [431]
    assert status_of(conn.data_to_send())[0] == 431


def test_oversized_body_is_413() -> None:
    conn, events = feed(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", ServerLimits(max_body_bytes=10)
    )
    assert [e.status for e in events if isinstance(e, ProtocolError)] == [413]
    assert status_of(conn.data_to_send())[0] == 413


def test_eof_mid_body_resets_the_stream() -> None:
    conn, events = feed(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe")
    assert kinds(events) == ["RequestHead", "RequestBody"]
    assert [type(e) for e in conn.receive_data(b"")] == [StreamReset, ConnectionClosed]


def test_eof_between_requests_is_a_plain_close() -> None:
    conn, _ = feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [type(e) for e in conn.receive_data(b"")] == [ConnectionClosed]


def test_garbage_after_a_good_request_does_not_touch_its_answer() -> None:
    conn, events = feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01\x02garbage")
    assert kinds(events) == ["RequestHead", "RequestEnd", "ProtocolError"]
    assert events[2].stream_id == 3
    assert conn.data_to_send() == b""  # the 400 waits for the first answer
    conn.send_response_head(ResponseHead(1, 200, [], content_length=2))
    conn.send_body(1, b"ok", end_stream=True)
    out = conn.data_to_send()
    first, second = out.split(b"ok", 1)
    assert first.startswith(b"HTTP/1.1 200 OK")
    assert second.startswith(b"HTTP/1.1 400 Bad Request")
    assert conn.must_close


def test_graceful_close_waits_for_the_response_in_progress() -> None:
    conn, _ = feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.close()
    assert not conn.must_close
    conn.send_response_head(ResponseHead(1, 200, [], content_length=0), end_stream=True)
    assert b"connection: close" in conn.data_to_send()
    assert conn.must_close


def test_response_header_with_line_break_is_refused() -> None:
    conn, _ = feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(ValueError):
        conn.send_response_head(ResponseHead(1, 200, [(b"x-evil", b"a\r\nSet-Cookie: b")]))


def test_large_chunks_and_mutable_buffers_are_framed_exactly() -> None:
    conn, _ = feed(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.send_response_head(ResponseHead(1, 200, []))
    buffer = bytearray(b"a" * 10000)
    conn.send_body(1, buffer)  # type: ignore[arg-type]
    buffer[:] = b"b" * 10000  # the caller reuses its buffer before the bytes left
    conn.send_body(1, b"tail")
    conn.send_end(1)
    out = conn.data_to_send()
    body = out.split(b"\r\n\r\n", 1)[1]
    assert body == b"2710\r\n" + b"a" * 10000 + b"\r\n4\r\ntail\r\n0\r\n\r\n"


def test_close_lets_the_body_being_read_finish_and_takes_no_new_request() -> None:
    conn, events = feed(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc")
    assert kinds(events) == ["RequestHead", "RequestBody"]
    conn.close()
    assert not conn.must_close
    events = conn.receive_data(b"defGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    assert kinds(events) == ["RequestBody", "RequestEnd"]  # the upload completes; /next is not taken
    conn.send_response_head(ResponseHead(1, 201, [], content_length=0), end_stream=True)
    assert b"connection: close" in conn.data_to_send()
    assert conn.must_close


def test_close_on_an_idle_connection_closes_at_once() -> None:
    conn, _ = feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.send_response_head(ResponseHead(1, 204, []), end_stream=True)
    conn.data_to_send()
    conn.close()
    assert conn.must_close
    assert conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == []


def test_chunked_trailers_never_join_the_request_head() -> None:
    conn, events = feed(
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        b"0\r\nImpersonate-User: root\r\nX-Remote-User: admin\r\n\r\n"
    )
    assert kinds(events) == ["RequestHead", "RequestBody", "RequestEnd"]
    assert events[0].headers == [(b"host", b"a"), (b"transfer-encoding", b"chunked")]


def test_chunked_trailers_count_against_the_header_limit() -> None:
    trailer = b"X-Pad: " + b"p" * 300 + b"\r\n"
    conn, events = feed(
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n" + trailer * 4 + b"\r\n",
        ServerLimits(max_header_bytes=1024),
    )
    assert any(isinstance(e, ProtocolError) and e.status == 431 for e in events), events


RELAYED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nx-kubegate-request-id: r1\r\n\r\n"


def test_a_relayed_head_is_written_as_given_and_frames_the_body_by_its_length() -> None:
    """``send_relayed_head``: a head made elsewhere (the fast path relays the upstream's bytes) is
    written as it is, the body framed by the length it declares; pipelined answers keep their order."""
    conn, _ = feed(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.takes_relayed_head(1) and conn.takes_relayed_head(3)
    conn.send_relayed_head(3, RELAYED, 2)
    conn.send_body(3, b"{}", end_stream=True)
    assert conn.data_to_send() == b""  # the first answer has not ended
    conn.send_relayed_head(1, RELAYED, 2)
    assert not conn.takes_relayed_head(1)  # its head went out
    conn.send_body(1, b"{}")
    conn.send_end(1)
    assert conn.data_to_send() == RELAYED + b"{}" + RELAYED + b"{}"
    assert not conn.must_close


def test_a_relayed_head_body_longer_than_declared_is_refused() -> None:
    conn, _ = feed(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.send_relayed_head(1, RELAYED, 2)
    with pytest.raises(ValueError):
        conn.send_body(1, b"{}x")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",  # HTTP/1.0: framing differs
        b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n",  # no body follows a HEAD answer
        b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",  # the answer must say close
    ],
)
def test_no_relayed_head_for_requests_whose_answer_the_codec_must_shape(request_bytes: bytes) -> None:
    conn, _ = feed(request_bytes)
    assert not conn.takes_relayed_head(1)


def test_no_relayed_head_once_the_connection_is_closing() -> None:
    conn, _ = feed(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.close()
    assert not conn.takes_relayed_head(1)

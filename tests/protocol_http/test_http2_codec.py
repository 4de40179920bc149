"""HTTP/2 server codec: an h2 client connection on the other side, no sockets."""

from __future__ import annotations

import json

import h2.config
import h2.connection
import h2.events
import h2.settings
from hyperframe.frame import GoAwayFrame

from proxy.protocol.events import (
    ConnectionClosed,
    ProtocolError,
    RequestBody,
    RequestEnd,
    RequestHead,
    ResponseHead,
    ServerLimits,
    StreamReset,
    WindowOpened,
)
from proxy.protocol.http2 import Http2ServerConnection


class Pair:
    """A server codec wired to an h2 client; ``pump`` moves bytes both ways."""

    def __init__(self, limits: ServerLimits | None = None) -> None:
        self.server = Http2ServerConnection(limits or ServerLimits())
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.client.initiate_connection()
        self.client_events: list = []
        self.pump()

    def pump(self) -> list:
        server_events = []
        for _ in range(10):
            c2s = self.client.data_to_send()
            if c2s:
                server_events += self.server.receive_data(c2s)
            s2c = self.server.data_to_send()
            if s2c:
                self.client_events += self.client.receive_data(s2c)
            if not c2s and not s2c:
                break
        return [e for e in server_events if not isinstance(e, WindowOpened) or e.stream_id != 0]

    def request(
        self, sid: int, method: str = "GET", path: str = "/api", body: bytes | None = None, extra=()
    ) -> None:
        headers = [
            (b":method", method.encode()),
            (b":path", path.encode()),
            (b":authority", b"sandbox"),
            (b":scheme", b"https"),
        ]
        headers += list(extra)
        if body is not None:
            headers.append((b"content-length", str(len(body)).encode()))
        self.client.send_headers(sid, headers, end_stream=body is None)
        if body is not None:
            self.client.send_data(sid, body, end_stream=True)

    def received(self, sid: int) -> tuple[int, bytes, bool]:
        status, data, ended = 0, b"", False
        for e in self.client_events:
            if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid:
                status = int(dict(e.headers)[b":status"])
            elif isinstance(e, h2.events.DataReceived) and e.stream_id == sid:
                data += e.data
                self.client.acknowledge_received_data(e.flow_controlled_length, sid)
            elif isinstance(e, h2.events.StreamEnded) and e.stream_id == sid:
                ended = True
        self.client_events = [e for e in self.client_events if getattr(e, "stream_id", None) != sid]
        return status, data, ended


def test_get_request_head_lifts_pseudo_headers() -> None:
    p = Pair()
    p.request(1, path="/api/v1/pods?limit=1", extra=[(b"accept", b"application/json")])
    events = p.pump()
    assert [type(e) for e in events] == [RequestHead, RequestEnd]
    head = events[0]
    assert (head.stream_id, head.method, head.target, head.http_version, head.authority) == (
        1,
        "GET",
        "/api/v1/pods?limit=1",
        "2",
        "sandbox",
    )
    assert head.headers == [(b"accept", b"application/json")]
    assert head.content_length == 0


def test_post_body_and_response_round_trip() -> None:
    p = Pair()
    p.request(1, "POST", "/api/v1/namespaces/dev/configmaps", b'{"a":1}')
    events = p.pump()
    assert [type(e) for e in events] == [RequestHead, RequestBody, RequestEnd]
    assert events[0].content_length == 7 and events[1].data == b'{"a":1}'
    p.server.acknowledge_received(1, 7)
    p.server.send_response_head(
        ResponseHead(
            1, 201, [(b"content-type", b"application/json"), (b"connection", b"keep-alive")], content_length=2
        )
    )
    p.server.send_body(1, b"{}", end_stream=True)
    p.pump()
    assert p.received(1) == (201, b"{}", True)


def test_concurrent_streams_interleave() -> None:
    p = Pair()
    p.request(1)
    p.request(3)
    events = p.pump()
    assert [e.stream_id for e in events if isinstance(e, RequestHead)] == [1, 3]
    p.server.send_response_head(ResponseHead(3, 200, []))
    p.server.send_body(3, b"three", end_stream=True)
    p.server.send_response_head(ResponseHead(1, 200, []))
    p.server.send_body(1, b"one")
    p.server.send_end(1)
    p.pump()
    assert p.received(3) == (200, b"three", True)
    assert p.received(1) == (200, b"one", True)


def test_large_response_is_held_until_the_peer_grants_window() -> None:
    p = Pair()
    p.request(1)
    p.pump()
    p.server.send_response_head(ResponseHead(1, 200, []))
    body = bytes(range(256)) * 1000  # 256000 bytes > the client's 65535 window
    p.server.send_body(1, body)
    p.server.send_end(1)
    assert p.server.send_window(1) == 0
    data = b""
    opened = []
    for _ in range(50):
        events = p.pump()
        opened += [e for e in events if isinstance(e, WindowOpened)]
        status, chunk, ended = p.received(1)
        data += chunk
        if ended:
            break
    assert data == body and ended
    assert any(e.stream_id == 1 for e in opened)


def test_request_body_credit_returns_only_when_acknowledged() -> None:
    p = Pair(ServerLimits(h2_initial_window=65535))
    p.client.send_headers(
        1, [(b":method", b"PUT"), (b":path", b"/x"), (b":authority", b"a"), (b":scheme", b"https")]
    )
    for _ in range(4):
        p.client.send_data(1, b"x" * 15000)
    events = p.pump()
    assert sum(len(e.data) for e in events if isinstance(e, RequestBody)) == 60000
    assert p.client.local_flow_control_window(1) == 65535 - 60000
    p.server.acknowledge_received(1, 60000)
    p.pump()
    assert p.client.local_flow_control_window(1) == 65535


def test_client_reset_is_reported_and_later_writes_are_ignored() -> None:
    p = Pair()
    p.request(1)
    p.pump()
    p.client.reset_stream(1, 8)
    events = p.pump()
    assert [(type(e), e.stream_id) for e in events] == [(StreamReset, 1)]
    p.server.send_response_head(ResponseHead(1, 200, []))
    p.server.send_body(1, b"late", end_stream=True)
    assert p.server.data_to_send() == b""


def test_oversized_headers_get_431_on_their_stream_only() -> None:
    p = Pair(ServerLimits(max_header_bytes=1024))
    p.request(1, extra=[(b"x-big", b"a" * 1500)])
    p.request(3)
    events = p.pump()
    assert [(type(e), e.stream_id) for e in events if not isinstance(e, RequestEnd)] == [
        (ProtocolError, 1),
        (RequestHead, 3),
    ]
    status, data, ended = p.received(1)
    assert status == 431 and json.loads(data)["reason"] == "RequestHeaderFieldsTooLarge" and ended


def test_close_sends_goaway_and_lets_open_streams_finish() -> None:
    p = Pair()
    p.request(1)
    p.pump()
    p.server.close()
    assert not p.server.must_close
    p.pump()
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in p.client_events)
    p.server.send_response_head(ResponseHead(1, 200, []), end_stream=True)
    out = p.server.data_to_send()
    assert out  # the stream still finishes after GOAWAY
    assert p.server.must_close


def test_garbage_preface_is_a_protocol_error_with_goaway() -> None:
    server = Http2ServerConnection(ServerLimits())
    server.data_to_send()
    events = server.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [type(e) for e in events] == [ProtocolError, ConnectionClosed]
    out = server.data_to_send()
    assert server.must_close
    # The last frame is a GOAWAY (type 7) with PROTOCOL_ERROR.
    frame, _ = GoAwayFrame.parse_frame_header(memoryview(out[-17:-8]))
    assert isinstance(frame, GoAwayFrame)


def test_too_many_concurrent_streams_is_refused() -> None:
    p = Pair(ServerLimits(h2_max_concurrent_streams=2))
    for sid in (1, 3):
        p.request(sid)
    p.pump()
    # A compliant client would wait; force a third stream past the advertised limit.
    p.client.remote_settings = h2.settings.Settings(
        client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100}
    )
    p.request(5)
    events = p.pump()
    assert [type(e) for e in events] == [ProtocolError, ConnectionClosed]
    assert p.server.must_close
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in p.client_events)


def test_eof_is_connection_closed() -> None:
    p = Pair()
    assert [type(e) for e in p.server.receive_data(b"")] == [ConnectionClosed]
    assert p.server.must_close


def test_server_reset_stream_still_returns_connection_credit() -> None:
    p = Pair(ServerLimits(h2_initial_window=65535))
    p.client.send_headers(
        1, [(b":method", b"PUT"), (b":path", b"/x"), (b":authority", b"a"), (b":scheme", b"https")]
    )
    for _ in range(3):
        p.client.send_data(1, b"x" * 10000)
    p.pump()
    p.server.reset_stream(1)
    p.pump()
    assert any(isinstance(e, h2.events.StreamReset) and e.stream_id == 1 for e in p.client_events)
    p.server.acknowledge_received(1, 30000)  # what the app had consumed of the dead stream
    p.client.send_headers(
        3, [(b":method", b"PUT"), (b":path", b"/y"), (b":authority", b"a"), (b":scheme", b"https")]
    )
    for _ in range(3):
        p.client.send_data(3, b"y" * 10000)
    events = p.pump()
    assert sum(len(e.data) for e in events if isinstance(e, RequestBody) and e.stream_id == 3) == 30000
    p.server.acknowledge_received(3, 30000)
    p.pump()
    # Every byte handed back, including the dead stream's: the connection window is whole again.
    assert p.client.outbound_flow_control_window == 65535
    p.server.send_body(1, b"late", end_stream=True)  # nothing is left of the dead stream
    assert p.server.data_to_send() == b""


def test_large_body_from_a_mutable_buffer_is_sent_as_it_was() -> None:
    p = Pair()
    p.request(1)
    p.pump()
    buffer = bytearray(b"a" * 50000)
    p.server.send_response_head(ResponseHead(1, 200, [], content_length=50000))
    p.server.send_body(1, buffer, end_stream=True)  # type: ignore[arg-type]
    buffer[:] = b"b" * 50000  # the caller reuses its buffer before the bytes left
    p.pump()
    status, data, ended = p.received(1)
    assert (status, ended) == (200, True) and data == b"a" * 50000


def test_request_trailers_end_the_request_and_are_never_reported() -> None:
    p = Pair()
    p.client.send_headers(1, [(b":method", b"POST"), (b":path", b"/api"), (b":authority", b"s"), (b":scheme", b"https")])
    p.client.send_data(1, b"{}")
    p.client.send_headers(1, [(b"impersonate-user", b"root"), (b"x-remote-user", b"admin")], end_stream=True)
    events = p.pump()
    assert [type(e).__name__ for e in events] == ["RequestHead", "RequestBody", "RequestEnd"]
    assert not [k for k, _ in events[0].headers if k.startswith((b"impersonate-", b"x-remote-"))]

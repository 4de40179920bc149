"""The HTTP/2 codec encodes response heads itself (stateless HPACK): a standard decoder must read them
back exactly, and they must leave the peer's dynamic table untouched."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.errors
import h2.events
from hpack import Decoder

from proxy.protocol.events import RequestHead, ResponseHead, ServerLimits
from proxy.protocol.http2 import Http2ServerConnection, encode_response_block


def test_block_decodes_to_the_same_fields_and_adds_nothing_to_the_dynamic_table() -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"Audit-Id", b"f3b0c6d2-6a1e-4f43-9f57-0d1a3c5b6e7f"),
        (b"x-kubernetes-pf-flowschema-uid", b"a" * 300),  # a length needing several bytes
        (b"date", b""),
        (b"cache-control", b"no-cache, private"),
    ]
    for status in (200, 201, 404, 503, 599):
        decoder = Decoder()
        decoded = decoder.decode(encode_response_block(status, headers), raw=True)
        assert decoded[0] == (b":status", str(status).encode())
        assert decoded[1:] == [(name.lower(), value) for name, value in headers]
        assert len(decoder.header_table.dynamic_entries) == 0


def test_connection_specific_fields_are_left_out_and_one_content_length_is_sent() -> None:
    headers = [(b"Connection", b"keep-alive"), (b"transfer-encoding", b"chunked"), (b"Content-Length", b"5"),
               (b"x-a", b"1")]  # fmt: skip
    decoded = Decoder().decode(encode_response_block(200, headers, 5), raw=True)
    assert decoded == [(b":status", b"200"), (b"content-length", b"5"), (b"x-a", b"1")]
    decoded = Decoder().decode(encode_response_block(404, [(b"x-a", b"1")], 12345), raw=True)
    assert decoded == [(b":status", b"404"), (b"x-a", b"1"), (b"content-length", b"12345")]


def _client_and_server() -> tuple[h2.connection.H2Connection, Http2ServerConnection]:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    server = Http2ServerConnection(ServerLimits())
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    return client, server


def test_a_client_reads_heads_and_bodies_of_many_streams_and_their_ends() -> None:
    client, server = _client_and_server()
    for sid in (1, 3, 5):
        client.send_headers(sid, [(b":method", b"GET"), (b":path", f"/p{sid}".encode()), (b":scheme", b"https"),
                                  (b":authority", b"x")], end_stream=True)
    events = server.receive_data(client.data_to_send())
    assert [e.stream_id for e in events if isinstance(e, RequestHead)] == [1, 3, 5]
    server.send_response_head(ResponseHead(1, 200, [(b"content-type", b"text/plain")], content_length=5))
    server.send_body(1, b"hello", end_stream=True)
    server.send_response_head(ResponseHead(3, 404, [(b"x-custom", b"v")]))
    server.send_body(3, b"gone")
    server.send_end(3)
    server.send_response_head(ResponseHead(5, 204, []), end_stream=True)
    got = client.receive_data(server.data_to_send())
    heads = {e.stream_id: e.headers for e in got if isinstance(e, h2.events.ResponseReceived)}
    bodies: dict[int, bytes] = {}
    for e in got:
        if isinstance(e, h2.events.DataReceived):
            bodies[e.stream_id] = bodies.get(e.stream_id, b"") + e.data
    ended = {e.stream_id for e in got if isinstance(e, h2.events.StreamEnded)}
    assert heads[1] == [(b":status", b"200"), (b"content-type", b"text/plain"), (b"content-length", b"5")]
    assert heads[3] == [(b":status", b"404"), (b"x-custom", b"v")]
    assert heads[5] == [(b":status", b"204")]
    assert bodies == {1: b"hello", 3: b"gone"}
    assert ended == {1, 3, 5}
    assert not client.open_outbound_streams


def _raw_client() -> tuple[h2.connection.H2Connection, Http2ServerConnection]:
    config = h2.config.H2Configuration(client_side=True, header_encoding=None, validate_outbound_headers=False,
                                       normalize_outbound_headers=False, split_outbound_cookies=False)
    client = h2.connection.H2Connection(config)
    client.initiate_connection()
    server = Http2ServerConnection(ServerLimits())
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    return client, server


_BASE = [(b":method", b"GET"), (b":path", b"/api"), (b":scheme", b"https"), (b":authority", b"k")]


def test_malformed_request_heads_reset_their_stream_with_protocol_error_only() -> None:
    malformed = [
        _BASE + [(b"X-Upper", b"v")],
        _BASE + [(b"connection", b"keep-alive")],
        _BASE + [(b"transfer-encoding", b"chunked")],
        _BASE + [(b"te", b"gzip")],
        _BASE + [(b"x-a", b"v\r\nx-injected: 1")],
        _BASE + [(b"x-a", b" padded")],
        [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"k")],  # no :path
        [(b":method", b"GET"), (b":path", b""), (b":scheme", b"https"), (b":authority", b"k")],
        [(b":method", b"GET"), (b"x-a", b"v"), (b":path", b"/"), (b":scheme", b"https"), (b":authority", b"k")],
        _BASE + [(b":path", b"/again")],
        _BASE + [(b":status", b"200")],
        _BASE + [(b"host", b"other")],
    ]
    for headers in malformed:
        client, server = _raw_client()
        client.send_headers(1, headers, end_stream=True)
        events = server.receive_data(client.data_to_send())
        assert not [e for e in events if isinstance(e, RequestHead)], headers
        resets = [e for e in client.receive_data(server.data_to_send()) if isinstance(e, h2.events.StreamReset)]
        assert [(r.stream_id, r.error_code) for r in resets] == [(1, h2.errors.ErrorCodes.PROTOCOL_ERROR)], headers
        # the connection goes on: a good request on another stream is read
        client.send_headers(3, _BASE, end_stream=True)
        assert [e.stream_id for e in server.receive_data(client.data_to_send()) if isinstance(e, RequestHead)] == [3]


def test_cookies_are_joined_and_host_stands_in_for_authority() -> None:
    client, server = _raw_client()
    client.send_headers(1, [(b":method", b"GET"), (b":path", b"/a?b=c"), (b":scheme", b"https"), (b"host", b"h:1"),
                            (b"cookie", b"a=1"), (b"accept", b"*/*"), (b"cookie", b"b=2"), (b"te", b"trailers")],
                        end_stream=True)
    (head,) = [e for e in server.receive_data(client.data_to_send()) if isinstance(e, RequestHead)]
    assert (head.method, head.target, head.authority, head.scheme) == ("GET", "/a?b=c", "h:1", "https")
    assert head.headers == [(b"host", b"h:1"), (b"cookie", b"a=1; b=2"), (b"accept", b"*/*"), (b"te", b"trailers")]
    assert head.content_length == 0

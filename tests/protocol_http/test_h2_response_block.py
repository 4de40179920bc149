"""The HTTP/2 codec encodes response heads itself (stateless HPACK): a standard decoder must read them
back exactly, and they must leave the peer's dynamic table untouched."""

from __future__ import annotations

import h2.config
import h2.connection
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

"""proxy.protocol.channels: remotecommand channel framing, negotiation, WebSocket server, tap."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, Request

from proxy.protocol import channels as ch
from proxy.protocol import spdy
from proxy.protocol.events import RequestHead


@pytest.mark.parametrize(
    ("name", "version", "b64", "close"),
    [
        ("v5.channel.k8s.io", 5, False, True),
        ("v5.base64.channel.k8s.io", 5, True, True),
        ("v4.channel.k8s.io", 4, False, False),
        ("v4.base64.channel.k8s.io", 4, True, False),
        ("v3.channel.k8s.io", 3, False, False),
        ("v2.channel.k8s.io", 2, False, False),
        ("channel.k8s.io", 1, False, False),
        ("base64.channel.k8s.io", 1, True, False),
        ("portforward.k8s.io", 1, False, False),
        ("base64.portforward.k8s.io", 1, True, False),
    ],
)
def test_protocol_table(name, version, b64, close):
    protocol = ch.channel_protocol(name)
    assert (protocol.version, protocol.base64, protocol.close_frames) == (version, b64, close)
    assert protocol.status_errors == (version >= 4)
    assert protocol.resize == (version >= 3)


def test_unknown_protocol_is_refused():
    with pytest.raises(ValueError):
        ch.channel_protocol("v9.channel.k8s.io")


@pytest.mark.parametrize(
    ("name", "channel", "data", "wire"),
    [
        ("v5.channel.k8s.io", ch.STDOUT, b"hi", b"\x01hi"),
        ("v4.channel.k8s.io", ch.ERROR, b"{}", b"\x03{}"),
        ("channel.k8s.io", ch.STDIN, b"", b"\x00"),
        ("base64.channel.k8s.io", ch.STDERR, b"\xff\x00", "2" + base64.b64encode(b"\xff\x00").decode()),
        ("v5.base64.channel.k8s.io", ch.RESIZE, b'{"Width":1}', "4" + base64.b64encode(b'{"Width":1}').decode()),
    ],
)
def test_encode_decode_round_trip(name, channel, data, wire):
    codec = ch.ChannelCodec(ch.channel_protocol(name))
    assert codec.encode(channel, data) == wire
    assert codec.decode(wire) == (channel, data)


def test_v5_close_messages():
    codec = ch.ChannelCodec(ch.channel_protocol("v5.channel.k8s.io"))
    assert codec.encode_close(ch.STDIN) == b"\xff\x00"
    assert codec.decode(b"\xff\x00") == (ch.CLOSE, b"\x00")
    b64 = ch.ChannelCodec(ch.channel_protocol("v5.base64.channel.k8s.io"))
    assert b64.decode(b64.encode_close(ch.STDIN)) == (ch.CLOSE, b"\x00")
    with pytest.raises(ValueError):
        ch.ChannelCodec(ch.channel_protocol("v4.channel.k8s.io")).encode_close(0)


def test_text_frames_on_binary_protocols_are_read_as_utf8():
    # The Python client sends str stdin as a text frame "\x00data"; the apiserver accepts it.
    codec = ch.ChannelCodec(ch.channel_protocol("v4.channel.k8s.io"))
    assert codec.decode("\x00hello") == (ch.STDIN, b"hello")


@pytest.mark.parametrize(
    ("name", "message", "error"),
    [
        ("v5.channel.k8s.io", b"", "empty"),
        ("base64.channel.k8s.io", b"\x01abc", "binary message"),
        ("base64.channel.k8s.io", "x" + "aGk=", "not an ASCII digit"),
        ("base64.channel.k8s.io", "1" + "!!!", "bad base64"),
    ],
)
def test_bad_messages(name, message, error):
    codec = ch.ChannelCodec(ch.channel_protocol(name))
    with pytest.raises(ch.ChannelFrameError, match=error):
        codec.decode(message)


def test_port_prefix_is_little_endian_u16():
    assert ch.port_prefix(8080) == b"\x90\x1f"


def _head(protocols: str | None, extra: list[tuple[bytes, bytes]] | None = None) -> RequestHead:
    headers = [(b"host", b"example"), (b"connection", b"Upgrade"), (b"upgrade", b"websocket"),
               (b"sec-websocket-version", b"13"), (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ==")]
    if protocols is not None:
        headers.append((b"sec-websocket-protocol", protocols.encode()))
    return RequestHead(1, "GET", "/api/v1/namespaces/default/pods/p/exec?command=ls", headers + (extra or []),
                       "1.1", upgrade=True)


def test_negotiation_prefers_the_servers_newest():
    offered = ch.offered_protocols(_head("channel.k8s.io, v4.channel.k8s.io,v5.channel.k8s.io"))
    assert offered == ["channel.k8s.io", "v4.channel.k8s.io", "v5.channel.k8s.io"]
    assert ch.choose_protocol(offered, ch.EXEC_WS_PROTOCOLS) == "v5.channel.k8s.io"
    assert ch.choose_protocol(["v9"], ch.EXEC_WS_PROTOCOLS) is None
    assert ch.choose_protocol(["SPDY/3.1+portforward.k8s.io"], ch.PORTFORWARD_WS_PROTOCOLS) == \
        "SPDY/3.1+portforward.k8s.io"


def _client_pair() -> tuple[WSConnection, bytes]:
    client = WSConnection(ConnectionType.CLIENT)
    raw = client.send(Request(host="example", target="/x", subprotocols=["v5.channel.k8s.io"]))
    return client, raw


def test_websocket_server_accepts_with_the_chosen_subprotocol_and_exchanges_messages():
    server = ch.WebSocketServer(_head("v5.channel.k8s.io"))
    answer = server.accept("v5.channel.k8s.io")
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert b"sec-websocket-protocol: v5.channel.k8s.io" in answer.lower()
    assert b"s3pplmbitxaq9kygzzhzrbk+xoo=" in answer.lower()  # RFC 6455 sample accept token

    peer = ch.WebSocketClient()
    server_out = server.send(b"\x01hello")
    assert peer.receive_data(server_out) == [b"\x01hello"]
    assert server.receive_data(peer.send(b"\x00in")) == [b"\x00in"]
    assert server.receive_data(peer.send("\x00text")) == ["\x00text"]
    assert server.receive_data(peer.close()) == [None]
    assert server.closed
    assert server.data_to_send()  # the close reply


def test_websocket_server_rejects_with_a_status_body():
    server = ch.WebSocketServer(_head("v9.channel.k8s.io"))
    out = server.reject(400, b'{"kind":"Status"}')
    assert out.startswith(b"HTTP/1.1 400 ")
    assert out.endswith(b'{"kind":"Status"}')


def test_non_websocket_request_is_an_error():
    head = RequestHead(1, "GET", "/x", [(b"host", b"h")], "1.1")
    with pytest.raises(ch.WebSocketError):
        ch.WebSocketServer(head)


def test_websocket_garbage_from_the_client_is_an_error_naming_the_client():
    server = ch.WebSocketServer(_head("v5.channel.k8s.io"))
    server.accept("v5.channel.k8s.io")
    assert server.receive_data(b"\x8f\x80garbage-that-is-not-a-frame") == [None]  # unknown opcode 0xf
    assert server.closed
    assert "by the client" in server.error and "opcode" in server.error
    assert server.data_to_send().startswith(b"\x88")  # our close frame (1002)


def test_wsproto_client_handshake_against_our_server():
    client, raw = _client_pair()
    request_line, _, rest = raw.partition(b"\r\n")
    headers = [tuple(line.split(b": ", 1)) for line in rest.split(b"\r\n") if line]
    head = RequestHead(1, "GET", "/x", [(k.lower(), v) for k, v in headers], "1.1", upgrade=True)
    server = ch.WebSocketServer(head)
    client.receive_data(server.accept("v5.channel.k8s.io"))
    events = list(client.events())
    assert isinstance(events[0], AcceptConnection)
    assert events[0].subprotocol == "v5.channel.k8s.io"
    assert not isinstance(events[0], RejectConnection)


def test_channel_tap_counts_bytes_and_reads_the_exit_code():
    tap = ch.ChannelTap("v5.channel.k8s.io")
    server = ch.WebSocketServer(_head("v5.channel.k8s.io"))
    server.accept("v5.channel.k8s.io")
    peer = ch.WebSocketClient()
    tap.feed_client(peer.send(b"\x00abc"))
    tap.feed_client(peer.send(b"\xff\x00"))
    status = {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
              "details": {"causes": [{"reason": "ExitCode", "message": "42"}]}}
    stream = server.send(b"\x01" + b"x" * 70000) + server.send(b"\x03" + json.dumps(status).encode())
    for i in range(0, len(stream), 1000):
        tap.feed_server(stream[i : i + 1000])
    assert not tap.failed, tap.failure
    assert tap.bytes_from_client == {0: 3}
    assert tap.bytes_from_server[1] == 70000
    assert tap.closed_channels == {0}
    assert tap.exit_code() == 42


def test_channel_tap_for_the_spdy_tunnel_feeds_a_spdy_tap():
    tap = ch.ChannelTap(ch.PORTFORWARD_SPDY_TUNNEL)
    peer = ch.WebSocketClient()
    client = spdy.SpdyConnection(client_side=True)
    client.send_syn_stream([("streamtype", "data"), ("port", "80"), ("requestid", "1")])
    client.send_data(1, b"payload")
    tap.feed_client(peer.send(client.data_to_send()))
    assert tap.spdy_tap is not None
    assert tap.spdy_tap.streams[1].stream_type == "data"
    assert tap.spdy_tap.total_bytes() == (7, 0)


def _server_side() -> ch.WebSocketServer:
    server = ch.WebSocketServer(_head("v5.channel.k8s.io"))
    server.accept("v5.channel.k8s.io")
    return server


@pytest.mark.parametrize("chunk", [1, 3, 64, 1 << 20])
def test_channel_tap_handles_masking_fragments_and_any_chunking(chunk):
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import BytesMessage

    client = Connection(ConnectionType.CLIENT)  # masks its frames
    c_bytes = client.send(BytesMessage(data=b"\x00" + b"a" * 70_000, message_finished=False))
    c_bytes += client.send(BytesMessage(data=b"b" * 10, message_finished=True))  # continuation
    c_bytes += client.send(BytesMessage(data=b"\xff\x00"))
    server = _server_side()
    s_bytes = server.send(b"\x02" + b"e" * 300) + server.send(b'\x03{"metadata":{},"status":"Success"}')
    s_bytes += server.close()
    tap = ch.ChannelTap("v5.channel.k8s.io")
    for i in range(0, len(c_bytes), chunk):
        tap.feed_client(c_bytes[i : i + chunk])
    for i in range(0, len(s_bytes), chunk):
        tap.feed_server(s_bytes[i : i + chunk])
    assert not tap.failed, tap.failure
    assert tap.bytes_from_client == {0: 70_010}
    assert tap.bytes_from_server[2] == 300
    assert tap.closed_channels == {0}
    assert tap.exit_code() == 0
    assert tap.close_seen["server"]


def test_channel_tap_base64():
    server = ch.WebSocketServer(_head("base64.channel.k8s.io"))
    server.accept("base64.channel.k8s.io")
    status = {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
              "details": {"causes": [{"reason": "ExitCode", "message": "9"}]}}
    codec = ch.ChannelCodec(ch.channel_protocol("base64.channel.k8s.io"))
    raw = server.send(codec.encode(1, b"x" * 300)) + server.send(codec.encode(3, json.dumps(status).encode()))
    tap = ch.ChannelTap("base64.channel.k8s.io")
    tap.feed_server(raw)
    assert tap.bytes_from_server[1] == 300
    assert tap.exit_code() == 9


def test_channel_tap_stops_on_garbage():
    tap = ch.ChannelTap("v5.channel.k8s.io")
    tap.feed_client(b"\xf3\x80abcd")  # RSV bits set, opcode 3
    assert tap.failed and tap.failure.startswith("client")


@settings(max_examples=50, deadline=None)
@given(
    messages=st.lists(st.tuples(st.sampled_from([0, 4]), st.integers(0, 3000), st.booleans()), max_size=8),
    chunk=st.integers(1, 5000),
)
def test_channel_tap_counts_match_the_messages_sent(messages, chunk):
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import BytesMessage

    client = Connection(ConnectionType.CLIENT)
    raw = b""
    expected: dict[int, int] = {}
    for channel, size, fragmented in messages:
        payload = bytes((channel,)) + b"z" * size
        if fragmented and size > 1:
            raw += client.send(BytesMessage(data=payload[: size // 2], message_finished=False))
            raw += client.send(BytesMessage(data=payload[size // 2 :], message_finished=True))
        else:
            raw += client.send(BytesMessage(data=payload))
        expected[channel] = expected.get(channel, 0) + size
    tap = ch.ChannelTap("v5.channel.k8s.io")
    for i in range(0, len(raw), chunk):
        tap.feed_client(raw[i : i + chunk])
    assert not tap.failed, tap.failure
    assert tap.bytes_from_client == expected


def _tap_state(tap: ch.ChannelTap) -> tuple:
    return (tap.failed, tap.failure, tap.bytes_from_client, tap.bytes_from_server, bytes(tap.error_data),
            tap.closed_channels, tap.close_seen, tap.exit_code(), tap.server_at_boundary())


@settings(max_examples=80, deadline=None)
@given(
    messages=st.lists(st.tuples(st.sampled_from(["client", "server"]), st.sampled_from([0, 1, 2, 3, 4, 255]),
                                st.sampled_from([0, 1, 2, 124, 125, 126, 300, 65535, 65536]),
                                st.booleans(), st.booleans()), max_size=8),
    cuts=st.lists(st.integers(1, 70_000), min_size=1, max_size=4),
    garbage=st.booleans(),
)
def test_channel_tap_whole_frames_skimmed_count_as_when_every_payload_is_read(messages, cuts, garbage):
    """Reads holding whole one-frame messages take a shorter way through the tap (headers parsed in place,
    payloads only counted) unless something reads the payloads (a content observer, as for a recorded
    session). Whatever the messages (every channel, the three length encodings, fragments, pings, masked
    client frames, bytes that are not WebSocket) and wherever reads cut them, a tap ends in the same state
    as one with an observer, which takes every frame the long way."""
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import BytesMessage, Ping

    client = Connection(ConnectionType.CLIENT)
    server = _server_side()
    raw = {"client": b"", "server": b""}
    for side, channel, size, fragmented, ping in messages:
        payload = bytes((channel,)) + bytes(range(256)) * (size // 256) + b"q" * (size % 256)
        if side == "client":
            if fragmented and size > 1:
                raw[side] += client.send(BytesMessage(data=payload[: size // 2], message_finished=False))
                raw[side] += client.send(BytesMessage(data=payload[size // 2 :], message_finished=True))
            else:
                raw[side] += client.send(BytesMessage(data=payload))
            if ping:
                raw[side] += client.send(Ping(b"p"))
        else:
            raw[side] += server.send(payload if channel != 3 else b'\x03{"metadata":{},"status":"Success"}')
    if garbage:
        raw["server"] += b"\xf3\x80abcd"
    skimmed = ch.ChannelTap("v5.channel.k8s.io")
    read = ch.ChannelTap("v5.channel.k8s.io", on_data=lambda side, stream, chunk: None)
    for side in ("client", "server"):
        data, i, k = raw[side], 0, 0
        while i < len(data):
            step = cuts[k % len(cuts)]
            for tap in (skimmed, read):
                (tap.feed_client if side == "client" else tap.feed_server)(data[i : i + step])
            i, k = i + step, k + 1
    assert _tap_state(skimmed) == _tap_state(read)
    assert garbage == skimmed.failed

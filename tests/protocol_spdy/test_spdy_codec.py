"""proxy.protocol.spdy: frames, header compression context, flow control stance, errors, tap."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.protocol import spdy


def pair() -> tuple[spdy.SpdyConnection, spdy.SpdyConnection]:
    return spdy.SpdyConnection(client_side=True), spdy.SpdyConnection(client_side=False)


def test_dictionary_is_the_spdy3_one():
    # 1423 bytes, starting with the length-prefixed "options" and ending with "enq=0.".
    assert len(spdy.SPDY3_DICTIONARY) == 1423
    assert spdy.SPDY3_DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.SPDY3_DICTIONARY.endswith(b",*,enq=0.")


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        (lambda c: c.send_rst_stream(5, spdy.CANCEL), spdy.RstStream(5, spdy.CANCEL)),
        (lambda c: c.send_settings([(0, 7, 1024)]), spdy.Settings([(0, 7, 1024)], False)),
        (lambda c: c.send_goaway(spdy.GOAWAY_OK), spdy.GoAway(0, spdy.GOAWAY_OK)),
        (lambda c: c.send_window_update(3, 65536), spdy.WindowUpdate(3, 65536)),
        (lambda c: c.send_data(7, b"abc", fin=True), spdy.Data(7, b"abc", True)),
        (lambda c: c.send_data(7, b""), spdy.Data(7, b"", False)),
    ],
)
def test_frames_round_trip(send, expected):
    client, server = pair()
    send(client)
    assert server.receive_data(client.data_to_send()) == [expected]


def test_frame_header_layout():
    client, _ = pair()
    client.send_data(0x7FFFFFFF, b"xy", fin=True)
    raw = client.data_to_send()
    assert raw == b"\x7f\xff\xff\xff\x01\x00\x00\x02xy"  # C=0, 31-bit id, flags FIN, length 2
    client.send_rst_stream(1, spdy.PROTOCOL_ERROR)
    assert client.data_to_send() == b"\x80\x03\x00\x03\x00\x00\x00\x08\x00\x00\x00\x01\x00\x00\x00\x01"


def test_syn_stream_and_reply_carry_headers_and_flags():
    client, server = pair()
    sid = client.send_syn_stream([("streamtype", "stdin"), ("Port", "80"), ("port", "81")], priority=3)
    assert sid == 1
    (syn,) = server.receive_data(client.data_to_send())
    assert syn == spdy.SynStream(1, [("streamtype", "stdin"), ("port", "80"), ("port", "81")],
                                 False, False, 0, 3)
    server.send_syn_reply(1, [("x", "y")], fin=True)
    assert client.receive_data(server.data_to_send()) == [spdy.SynReply(1, [("x", "y")], True)]


def test_one_compression_context_per_direction_across_many_syn_frames():
    client, server = pair()
    # Each header block after the first only decodes with the shared context.
    blocks = []
    for i in range(200):
        client.send_syn_stream([("streamtype", "data"), ("port", "8080"), ("requestid", str(i))])
        raw = client.data_to_send()
        blocks.append(raw)
        (event,) = server.receive_data(raw)
        assert event.header("requestid") == str(i)
    # Repeated headers compress to almost nothing once the context has seen them.
    assert len(blocks[-1]) < len(blocks[0])
    # A fresh decoder cannot read a later block on its own: the context is connection-wide.
    fresh = spdy.SpdyConnection(client_side=False)
    with pytest.raises(spdy.SpdyProtocolError):
        fresh.receive_data(blocks[5])


def test_input_split_at_every_byte_gives_the_same_events():
    client, server = pair()
    client.send_syn_stream([("streamtype", "stdout")])
    client.send_data(1, b"hello" * 100)
    client.send_data(1, b"", fin=True)
    client.send_ping()
    raw = client.data_to_send()
    events = []
    for i in range(len(raw)):
        events += server.receive_data(raw[i : i + 1])
    assert [type(e) for e in events] == [spdy.SynStream, spdy.Data, spdy.Data, spdy.Ping]
    assert events[1].data == b"hello" * 100
    assert events[2].fin


def test_large_data_is_split_into_frames_with_fin_on_the_last():
    client, server = pair()
    client.send_data(1, b"z" * 100_000, fin=True)
    events = server.receive_data(client.data_to_send())
    assert [len(e.data) for e in events] == [32768, 32768, 32768, 1696]
    assert [e.fin for e in events] == [False, False, False, True]


def test_peer_pings_are_echoed_and_own_pings_are_not():
    client, server = pair()
    ping_id = client.send_ping()
    assert ping_id % 2 == 1
    (event,) = server.receive_data(client.data_to_send())
    assert event == spdy.Ping(ping_id, from_peer=True)
    echo = server.data_to_send()
    assert client.receive_data(echo) == [spdy.Ping(ping_id, from_peer=False)]
    assert client.data_to_send() == b""


def test_no_flow_control_withholding_like_spdystream():
    # spdystream never sends WINDOW_UPDATE: a sender must not stop at the 64 KiB initial window.
    client, server = pair()
    server.send_data(2, b"a" * (1024 * 1024))
    received = sum(len(e.data) for e in client.receive_data(server.data_to_send()))
    assert received == 1024 * 1024


def test_unknown_control_frames_are_ignored():
    _, server = pair()
    raw = struct.pack("!HHI", 0x8003, 0x00FF, 4) + b"abcd"
    assert server.receive_data(raw) == []


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (struct.pack("!HHI", 0x8002, spdy.PING, 4) + b"abcd", "unsupported SPDY version 2"),
        (struct.pack("!HHI", 0x8003, spdy.PING, 3) + b"abc", "PING frame of 3 bytes"),
        (struct.pack("!HHI", 0x8003, spdy.RST_STREAM, 4) + b"abcd", "RST_STREAM frame of 4 bytes is too short"),
        (struct.pack("!HHI", 0x8003, spdy.SETTINGS, 8) + struct.pack("!II", 2, 0), "SETTINGS announces 2"),
        (struct.pack("!II", 0, 0), "data frame on stream 0"),
        (struct.pack("!HHI", 0x8003, spdy.SYN_STREAM, 12) + struct.pack("!IIH", 1, 0, 0) + b"\xff\xff",
         "bad header block in SYN_STREAM"),
        (struct.pack("!HHI", 0x8003, spdy.WINDOW_UPDATE, 4) + b"abcd", "WINDOW_UPDATE frame of 4 bytes"),
    ],
)
def test_bad_input_names_the_side_that_broke_the_protocol(raw, message):
    server = spdy.SpdyConnection(client_side=False)
    with pytest.raises(spdy.SpdyProtocolError) as info:
        server.receive_data(raw)
    assert info.value.side == "client"
    assert "by the client" in str(info.value)
    assert message in str(info.value)
    with pytest.raises(spdy.SpdyLocalError):
        server.receive_data(b"more")


def test_syn_stream_ids_must_grow_and_have_the_peers_parity():
    client, server = pair()
    client.send_syn_stream([("a", "b")], stream_id=5)
    server.receive_data(client.data_to_send())
    # Build a SYN_STREAM with id 3 from a second client sharing the same context history.
    client2 = spdy.SpdyConnection(client_side=True)
    client2._compressor = client._compressor  # same zlib stream as the server has seen
    client2._next_stream_id = 3
    client2.send_syn_stream([("a", "b")], stream_id=3)
    with pytest.raises(spdy.SpdyProtocolError, match="not above the previous 5"):
        server.receive_data(client2.data_to_send())

    _, server = pair()
    even = spdy.SpdyConnection(client_side=False)  # a server-parity (even) stream sent to a server
    even.send_syn_stream([("a", "b")])
    with pytest.raises(spdy.SpdyProtocolError, match="wrong parity"):
        server.receive_data(even.data_to_send())


def test_data_after_fin_is_a_protocol_error():
    client, server = pair()
    client.send_syn_stream([("streamtype", "stdin")])
    client.send_data(1, b"x", fin=True)
    server.receive_data(client.data_to_send())
    raw = spdy.data_frame_header(1, 0, 1) + b"y"
    with pytest.raises(spdy.SpdyProtocolError, match="after its FIN"):
        server.receive_data(raw)


def test_sending_after_our_fin_is_a_local_error():
    client, server = pair()
    sid = client.send_syn_stream([("streamtype", "stdin")])
    client.send_data(sid, b"", fin=True)
    with pytest.raises(spdy.SpdyLocalError):
        client.send_data(sid, b"late")


def test_oversized_header_block_is_refused():
    client = spdy.SpdyConnection(client_side=True)
    server = spdy.SpdyConnection(client_side=False, max_header_block=1000)
    client.send_syn_stream([("big", "v" * 5000)])
    with pytest.raises(spdy.SpdyProtocolError, match="exceeds 1000 bytes"):
        server.receive_data(client.data_to_send())


def test_header_block_rejects_duplicate_names_and_trailing_bytes():
    block = spdy.encode_header_block([("a", "1")])
    assert spdy.decode_header_block(block) == [("a", "1")]
    with pytest.raises(ValueError, match="trailing"):
        spdy.decode_header_block(block + b"x")
    dup = struct.pack("!I", 2) + (struct.pack("!I", 1) + b"a" + struct.pack("!I", 1) + b"1") * 2
    with pytest.raises(ValueError, match="repeats"):
        spdy.decode_header_block(dup)


def test_zlib_stream_is_a_go_compatible_sync_flushed_stream():
    # A standard zlib decoder with the dictionary reads our blocks: what Go's compress/zlib does.
    compressor = spdy.HeaderCompressor()
    decoder = zlib.decompressobj(zdict=spdy.SPDY3_DICTIONARY)
    for i in range(3):
        block = compressor.compress([("streamtype", f"s{i}")])
        assert block.endswith(b"\x00\x00\xff\xff")  # Z_SYNC_FLUSH marker
        assert spdy.decode_header_block(decoder.decompress(block)) == [("streamtype", f"s{i}")]


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_crashes_the_parser(garbage):
    server = spdy.SpdyConnection(client_side=False)
    try:
        server.receive_data(garbage)
    except spdy.SpdyProtocolError as exc:
        assert exc.side == "client"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["streamtype", "port", "requestid", "x-y"]),
                          st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)),
                min_size=1, max_size=6))
def test_header_blocks_round_trip(headers):
    client, server = pair()
    client.send_syn_stream(headers)
    (event,) = server.receive_data(client.data_to_send())
    expected: dict[str, list[str]] = {}
    for name, value in headers:
        expected.setdefault(name, []).append(value)
    got: dict[str, list[str]] = {}
    for name, value in event.headers:
        got.setdefault(name, []).append(value)
    assert got == expected


# ------------------------------------------------------------------------------------------- tap


def _exec_session() -> tuple[bytes, bytes]:
    """Client and server bytes of an exec session: error/stdin/stdout streams, exit code 3."""
    client, server = pair()
    for kind in ("error", "stdin", "stdout"):
        client.send_syn_stream([("streamtype", kind)])
    client.send_data(3, b"input", fin=True)
    c_bytes = client.data_to_send()
    for sid in (1, 3, 5):
        server.send_syn_reply(sid, [])
    server.send_data(5, b"o" * 100_000, fin=True)
    status = {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
              "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}}
    server.send_data(1, json.dumps(status).encode(), fin=True)
    return c_bytes, server.data_to_send()


@pytest.mark.parametrize("chunk", [1, 7, 1000, 1 << 20])
def test_tap_learns_stream_types_bytes_and_exit_code_in_any_chunking(chunk):
    c_bytes, s_bytes = _exec_session()
    tap = spdy.SpdyTap()
    # The server's frames follow the client's SYN_STREAMs, as on a real connection.
    for i in range(0, len(c_bytes), chunk):
        tap.feed_client(c_bytes[i : i + chunk])
    for i in range(0, len(s_bytes), chunk):
        tap.feed_server(s_bytes[i : i + chunk])
    assert not tap.failed, tap.failure
    assert {s.stream_type for s in tap.streams.values()} == {"error", "stdin", "stdout"}
    by_type = tap.bytes_by_type()
    assert by_type["stdin"]["from_client"] == 5
    assert by_type["stdout"]["from_server"] == 100_000
    assert tap.exit_code() == 3
    assert tap.streams[5].closed_by_server


def test_tap_reads_success_and_port_forward_headers():
    client, server = pair()
    client.send_syn_stream([("streamtype", "error"), ("port", "8080"), ("requestid", "0")])
    client.send_syn_stream([("streamtype", "data"), ("port", "8080"), ("requestid", "0")])
    tap = spdy.SpdyTap()
    tap.feed_client(client.data_to_send())
    assert tap.streams[3].port == "8080" and tap.streams[3].request_id == "0"
    assert tap.exit_code() is None
    assert spdy.exit_code_from_status(b'{"metadata":{},"status":"Success"}') == 0
    assert spdy.exit_code_from_status(b"not json") is None


def test_tap_marks_itself_failed_on_garbage_without_raising():
    tap = spdy.SpdyTap()
    tap.feed_client(struct.pack("!HHI", 0x8003, spdy.SYN_STREAM, 12) + b"\x00" * 10 + b"\xff\xff")
    assert tap.failed and tap.failure.startswith("client")
    tap.feed_client(b"anything")  # ignored from now on

"""The HTTP/2 server codec against raw frames (RFC 9113): what a client writes byte by byte, and the
events and frames that come back. Each hostile shape gets the error the RFC names: a connection error
(GOAWAY with the code, ``ProtocolError`` + ``ConnectionClosed``) or a stream error (RST_STREAM on that
stream only, the connection going on)."""

from __future__ import annotations

import struct

import h2.config
import h2.connection
import h2.events
import hpack
import pytest

from proxy.protocol import h2wire as w
from proxy.protocol.events import (
    ConnectionClosed,
    FramesCounted,
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

GET = [(":method", "GET"), (":scheme", "https"), (":authority", "k"), (":path", "/api")]


def post(length: int | None = None) -> list[tuple[str, str]]:
    fields = [(":method", "POST"), (":scheme", "https"), (":authority", "k"), (":path", "/api")]
    return fields + ([("content-length", str(length))] if length is not None else [])


def frames_of(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of each frame in ``data``."""
    out = []
    pos = 0
    while pos < len(data):
        high, low, kind, flags, sid = w.FRAME_HEADER.unpack_from(data, pos)
        size = (high << 8) | low
        out.append((kind, flags, sid & 0x7FFFFFFF, data[pos + 9 : pos + 9 + size]))
        pos += 9 + size
    return out


class Raw:
    """A client writing raw frames to a server codec; the handshake (preface, SETTINGS both ways and
    their acknowledgements) is done."""

    def __init__(self, limits: ServerLimits | None = None, settings: dict[int, int] | None = None) -> None:
        self.server = Http2ServerConnection(limits or ServerLimits())
        self.encoder = hpack.Encoder()
        greeting = frames_of(self.server.data_to_send())
        assert greeting[0][0] == w.SETTINGS
        events = self.server.receive_data(w.PREFACE + w.settings(settings or {}) + w.frame(w.SETTINGS, w.ACK, 0))
        assert [e for e in events if not isinstance(e, WindowOpened)] == []
        assert frames_of(self.server.data_to_send()) == [(w.SETTINGS, w.ACK, 0, b"")]

    def send(self, *frames: bytes) -> list:
        return self.server.receive_data(b"".join(frames))

    def out(self) -> list[tuple[int, int, int, bytes]]:
        return frames_of(self.server.data_to_send())

    def headers(self, sid: int, fields, flags: int = w.END_HEADERS | w.END_STREAM) -> bytes:
        return w.frame(w.HEADERS, flags, sid, self.encoder.encode(fields))


def goaway_code(frames: list[tuple[int, int, int, bytes]]) -> int | None:
    codes = [struct.unpack(">LL", payload[:8])[1] for kind, _, _, payload in frames if kind == w.GOAWAY]
    return codes[-1] if codes else None


def rsts(frames: list[tuple[int, int, int, bytes]]) -> list[tuple[int, int]]:
    return [(sid, struct.unpack(">L", payload)[0]) for kind, _, sid, payload in frames if kind == w.RST_STREAM]


def assert_connection_error(raw: Raw, events: list, code: int) -> None:
    assert [type(e) for e in events] == [ProtocolError, ConnectionClosed], events
    assert goaway_code(raw.out()) == code
    assert raw.server.must_close
    assert raw.server.receive_data(b"more") == []  # nothing is read after it


# --- the connection preface and SETTINGS -------------------------------------------------------------


def test_the_preface_may_arrive_a_byte_at_a_time() -> None:
    server = Http2ServerConnection(ServerLimits())
    server.data_to_send()
    encoder = hpack.Encoder()
    wire = w.PREFACE + w.settings({}) + w.frame(w.HEADERS, w.END_HEADERS | w.END_STREAM, 1, encoder.encode(GET))
    events = []
    for i in range(len(wire)):
        events += server.receive_data(wire[i : i + 1])
    assert [type(e) for e in events] == [RequestHead, RequestEnd]


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (b"PRI * HTTP/1.1\r\n", w.PROTOCOL_ERROR),  # wrong preface, detected before it is whole
        (w.PREFACE + w.frame(w.PING, 0, 0, b"12345678"), w.PROTOCOL_ERROR),  # first frame not SETTINGS
        (w.PREFACE + w.frame(w.SETTINGS, w.ACK, 0), w.PROTOCOL_ERROR),  # an ACK is not the client's SETTINGS
        (w.PREFACE + w.frame(w.SETTINGS, 0, 1), w.PROTOCOL_ERROR),  # SETTINGS on a stream
        (w.PREFACE + w.frame(w.SETTINGS, 0, 0, b"\x00\x04\x00"), w.FRAME_SIZE_ERROR),  # not a multiple of 6
        (w.PREFACE + w.settings({}) + w.frame(w.SETTINGS, w.ACK, 0, b"\0" * 6), w.FRAME_SIZE_ERROR),
        (w.PREFACE + w.settings({w.INITIAL_WINDOW_SIZE: 2**31}), w.FLOW_CONTROL_ERROR),
        (w.PREFACE + w.settings({w.MAX_FRAME_SIZE: 16383}), w.PROTOCOL_ERROR),
        (w.PREFACE + w.settings({w.MAX_FRAME_SIZE: 2**24}), w.PROTOCOL_ERROR),
        (w.PREFACE + w.settings({w.ENABLE_PUSH: 2}), w.PROTOCOL_ERROR),
        (w.PREFACE + w.settings({w.ENABLE_CONNECT_PROTOCOL: 7}), w.PROTOCOL_ERROR),
    ],
    ids=["bad-preface", "ping-first", "ack-first", "settings-on-stream", "settings-size", "ack-with-payload",
         "window-too-large", "frame-size-too-small", "frame-size-too-large", "enable-push-2", "connect-protocol-7"],
)  # fmt: skip
def test_a_broken_start_is_a_connection_error(wire: bytes, code: int) -> None:
    server = Http2ServerConnection(ServerLimits())
    server.data_to_send()
    events = server.receive_data(wire)
    assert [type(e) for e in events] == [ProtocolError, ConnectionClosed]
    assert goaway_code(frames_of(server.data_to_send())) == code


def test_the_server_announces_its_limits_and_opens_the_connection_window() -> None:
    server = Http2ServerConnection(ServerLimits(h2_initial_window=1 << 20, h2_max_concurrent_streams=7,
                                                max_header_bytes=9000))  # fmt: skip
    (kind, _, _, payload), (update, _, sid, increment) = frames_of(server.data_to_send())
    announced = dict(struct.unpack(">HL", payload[i : i + 6]) for i in range(0, len(payload), 6))
    assert kind == w.SETTINGS and announced == {w.MAX_CONCURRENT_STREAMS: 7, w.INITIAL_WINDOW_SIZE: 1 << 20,
                                                w.MAX_HEADER_LIST_SIZE: 9000}  # fmt: skip
    assert (update, sid, struct.unpack(">L", increment)[0]) == (w.WINDOW_UPDATE, 0, (1 << 20) - 65535)


def test_a_frame_above_the_maximum_size_is_refused_from_its_header_alone() -> None:
    raw = Raw()
    events = raw.send(w.FRAME_HEADER.pack(0x40, 1, w.DATA, 0, 1))  # declares 16385 bytes, sends none
    assert_connection_error(raw, events, w.FRAME_SIZE_ERROR)


# --- PING, GOAWAY, PRIORITY, unknown frames -----------------------------------------------------------


def test_ping_is_answered_with_the_same_payload_and_an_ack_is_not() -> None:
    raw = Raw()
    assert raw.send(w.frame(w.PING, 0, 0, b"abcdefgh"), w.frame(w.PING, w.ACK, 0, b"12345678")) == []
    assert raw.out() == [(w.PING, w.ACK, 0, b"abcdefgh")]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (w.frame(w.PING, 0, 0, b"short"), w.FRAME_SIZE_ERROR),
        (w.frame(w.PING, 0, 1, b"abcdefgh"), w.PROTOCOL_ERROR),
        (w.frame(w.GOAWAY, 0, 1, b"\0" * 8), w.PROTOCOL_ERROR),
        (w.frame(w.GOAWAY, 0, 0, b"\0" * 4), w.FRAME_SIZE_ERROR),
        (w.frame(w.PRIORITY, 0, 0, b"\0" * 5), w.PROTOCOL_ERROR),
        (w.frame(w.PRIORITY, 0, 1, b"\0" * 4), w.FRAME_SIZE_ERROR),
        (w.frame(w.PUSH_PROMISE, w.END_HEADERS, 1, b"\0\0\0\x02"), w.PROTOCOL_ERROR),
        (w.frame(w.CONTINUATION, w.END_HEADERS, 1, b"\x82"), w.PROTOCOL_ERROR),  # no header block open
        (w.frame(w.WINDOW_UPDATE, 0, 0, b"\0\0\0\0"), w.PROTOCOL_ERROR),  # increment 0 on the connection
        (w.frame(w.WINDOW_UPDATE, 0, 0, b"\0\0\0\0\0"), w.FRAME_SIZE_ERROR),
        (w.window_update(0, 2**31 - 65535), w.FLOW_CONTROL_ERROR),  # connection window past 2^31-1
        (w.window_update(9, 1), w.PROTOCOL_ERROR),  # an idle stream
        (w.window_update(2, 1), w.PROTOCOL_ERROR),  # a server-initiated (idle) stream
        (w.rst_stream(0, 0), w.PROTOCOL_ERROR),
        (w.rst_stream(9, 0), w.PROTOCOL_ERROR),  # an idle stream
        (w.frame(w.RST_STREAM, 0, 1, b"\0\0\0"), w.FRAME_SIZE_ERROR),
        (w.frame(w.DATA, 0, 0, b"x"), w.PROTOCOL_ERROR),
        (w.frame(w.DATA, 0, 9, b"x"), w.PROTOCOL_ERROR),  # an idle stream
    ],
    ids=["ping-size", "ping-on-stream", "goaway-on-stream", "goaway-size", "priority-on-0", "priority-size",
         "push-promise", "stray-continuation", "window-update-0", "window-update-size", "window-overflow",
         "window-update-idle", "window-update-even", "rst-on-0", "rst-idle", "rst-size", "data-on-0", "data-idle"],
)  # fmt: skip
def test_control_frames_that_break_the_rules_are_connection_errors(frame: bytes, code: int) -> None:
    raw = Raw()
    assert_connection_error(raw, raw.send(frame), code)


def test_peer_goaway_ends_the_connection() -> None:
    raw = Raw()
    assert [type(e) for e in raw.send(w.goaway(0, w.NO_ERROR))] == [ConnectionClosed]
    assert raw.server.must_close


def test_unknown_frame_types_and_priority_are_ignored() -> None:
    raw = Raw()
    events = raw.send(w.frame(0xFA, 0xFF, 1, b"whatever"), w.frame(w.PRIORITY, 0, 3, b"\0\0\0\x01\x10"),
                      raw.headers(1, GET))  # fmt: skip
    assert [type(e) for e in events] == [RequestHead, RequestEnd]


# --- HEADERS and CONTINUATION -------------------------------------------------------------------------


@pytest.mark.parametrize("sid", [0, 2])
def test_headers_on_stream_0_or_an_even_stream_is_a_connection_error(sid: int) -> None:
    raw = Raw()
    assert_connection_error(raw, raw.send(raw.headers(sid, GET)), w.PROTOCOL_ERROR)


def test_padding_and_priority_fields_are_taken_off_the_header_block() -> None:
    raw = Raw()
    block = raw.encoder.encode(GET)
    payload = b"\x03" + b"\0\0\0\0\x0f" + block + b"\0\0\0"
    events = raw.send(w.frame(w.HEADERS, w.END_HEADERS | w.END_STREAM | w.PADDED | w.PRIORITY_FLAG, 1, payload))
    assert [type(e) for e in events] == [RequestHead, RequestEnd] and events[0].target == "/api"


def test_padding_as_long_as_the_frame_is_a_connection_error() -> None:
    raw = Raw()
    events = raw.send(w.frame(w.HEADERS, w.END_HEADERS | w.PADDED, 1, b"\x05" + b"\x82\x84\x87\x41"))
    assert_connection_error(raw, events, w.PROTOCOL_ERROR)


def test_a_stream_depending_on_itself_is_reset_and_the_connection_goes_on() -> None:
    raw = Raw()
    block = raw.encoder.encode(GET)
    events = raw.send(w.frame(w.HEADERS, w.END_HEADERS | w.END_STREAM | w.PRIORITY_FLAG, 1, b"\0\0\0\x01\x10" + block))
    assert [type(e) for e in events] == [ProtocolError]
    assert rsts(raw.out()) == [(1, w.PROTOCOL_ERROR)]
    assert [type(e) for e in raw.send(raw.headers(3, GET))] == [RequestHead, RequestEnd]


def test_a_header_block_split_over_continuation_frames_is_one_head() -> None:
    raw = Raw()
    block = raw.encoder.encode(GET + [("x-long", "v" * 100)])
    parts = [block[i : i + 10] for i in range(0, len(block), 10)]
    frames = [w.frame(w.HEADERS, w.END_STREAM, 1, parts[0])]
    frames += [w.frame(w.CONTINUATION, 0, 1, part) for part in parts[1:-1]]
    frames.append(w.frame(w.CONTINUATION, w.END_HEADERS, 1, parts[-1]))
    events = raw.send(*frames)
    assert [type(e) for e in events] == [RequestHead, RequestEnd]
    assert events[0].headers == [(b"x-long", b"v" * 100)]


@pytest.mark.parametrize(
    "interruption",
    [w.frame(w.PING, 0, 0, b"abcdefgh"), w.frame(w.CONTINUATION, w.END_HEADERS, 3, b"\x82")],
    ids=["another-frame", "another-stream"],
)
def test_a_header_block_interrupted_is_a_connection_error(interruption: bytes) -> None:
    raw = Raw()
    block = raw.encoder.encode(GET)
    events = raw.send(w.frame(w.HEADERS, w.END_STREAM, 1, block[:3]), interruption)
    assert_connection_error(raw, events, w.PROTOCOL_ERROR)


def test_a_continuation_flood_is_cut_after_64_frames() -> None:
    raw = Raw()
    events = raw.send(w.frame(w.HEADERS, 0, 1, raw.encoder.encode(GET)))
    filler = w.frame(w.CONTINUATION, 0, 1, b"\x00\x01a\x01b")  # never END_HEADERS
    for _ in range(64):
        events += raw.send(filler)
    assert events == []
    assert_connection_error(raw, raw.send(filler), w.ENHANCE_YOUR_CALM)


def test_an_hpack_bomb_stops_at_the_header_list_limit() -> None:
    """One 4000-byte field in the dynamic table, then a block referring to it 5,000 times (5 KB on the
    wire, 20 MB decoded): the decoder stops at its limit and the connection ends."""
    raw = Raw()
    assert [type(e) for e in raw.send(raw.headers(1, GET + [("x-bomb", "b" * 4000)]))] == [RequestHead, RequestEnd]
    block = raw.encoder.encode(GET + [("x-bomb", "b" * 4000)] * 5000)
    assert len(block) < 16384
    events = raw.send(w.frame(w.HEADERS, w.END_HEADERS | w.END_STREAM, 3, block))
    assert_connection_error(raw, events, w.ENHANCE_YOUR_CALM)


@pytest.mark.parametrize(
    "block",
    [b"\x3f\xe1\xff\x03\x82", b"\xff\xff\x7f", b"\x82\x84\x87\x01\x7f\x00"],
    ids=["table-size-above-4096", "index-out-of-range", "truncated-literal"],
)
def test_undecodable_header_blocks_are_compression_errors(block: bytes) -> None:
    raw = Raw()
    assert_connection_error(raw, raw.send(w.frame(w.HEADERS, w.END_HEADERS, 1, block)), w.COMPRESSION_ERROR)


def test_a_stream_id_below_the_highest_is_a_closed_stream_and_its_block_still_counts() -> None:
    """HEADERS for stream 1 after stream 5: stream 1 is closed (RST_STREAM STREAM_CLOSED), and the
    fields its block added to the HPACK table are there for the next stream."""
    raw = Raw()
    assert [type(e) for e in raw.send(raw.headers(5, GET))] == [RequestHead, RequestEnd]
    events = raw.send(raw.headers(1, GET + [("x-added", "to-the-table")]))
    assert events == [] and rsts(raw.out()) == [(1, w.STREAM_CLOSED)]
    (head, _end) = raw.send(raw.headers(7, GET + [("x-added", "to-the-table")]))
    assert head.headers == [(b"x-added", b"to-the-table")]


def test_heads_of_repeated_indexed_blocks_follow_the_dynamic_table() -> None:
    """The same all-indexed bytes mean other fields once the dynamic table has changed: each head is
    what the table says at the time, never an earlier answer."""
    raw = Raw()
    first = raw.send(raw.headers(1, GET + [("x-a", "1")]))[0]
    indexed = raw.encoder.encode(GET + [("x-a", "1")])  # now every field is in a table
    assert w.all_indexed(indexed)
    again = raw.send(w.frame(w.HEADERS, w.END_HEADERS | w.END_STREAM, 3, indexed))[0]
    assert first.headers == again.headers == [(b"x-a", b"1")]
    again.headers.append((b"x-mutated", b"by-the-application"))
    assert raw.send(w.frame(w.HEADERS, w.END_HEADERS | w.END_STREAM, 5, indexed))[0].headers == [(b"x-a", b"1")]
    raw.send(raw.headers(7, GET + [("x-b", "2")]))  # a new dynamic entry: every dynamic index moves by one
    (changed,) = raw.send(w.frame(w.HEADERS, w.END_HEADERS | w.END_STREAM, 9, indexed))
    # the same bytes now say ":path /api", "x-a: 1", "x-b: 2" and no :authority
    assert isinstance(changed, ProtocolError) and ":authority" in changed.message


def test_trailers_without_end_stream_reset_the_stream() -> None:
    raw = Raw()
    events = raw.send(raw.headers(1, post(), w.END_HEADERS), raw.headers(1, [("x-t", "1")], w.END_HEADERS))
    assert [(type(e), e.stream_id) for e in events] == [(RequestHead, 1), (StreamReset, 1)]
    assert rsts(raw.out()) == [(1, w.PROTOCOL_ERROR)]


def test_pseudo_headers_in_trailers_reset_the_stream() -> None:
    raw = Raw()
    events = raw.send(raw.headers(1, post(), w.END_HEADERS), raw.headers(1, [(":path", "/other")]))
    assert [(type(e), e.stream_id) for e in events] == [(RequestHead, 1), (StreamReset, 1)]


# --- DATA, content-length and flow control --------------------------------------------------------------


def test_padded_data_is_reported_without_padding_and_the_padding_credited_at_once() -> None:
    """128 DATA frames of one byte and 255 bytes of padding: the bytes are reported, the padding (and
    its length byte) credited without waiting for the application: WINDOW_UPDATE once half the
    65535-byte windows are owed."""
    raw = Raw(ServerLimits(h2_initial_window=65535))
    raw.send(raw.headers(1, post(), w.END_HEADERS))
    events = raw.send(*[w.frame(w.DATA, w.PADDED, 1, b"\xff" + b"b" + b"\0" * 255)] * 128)
    assert [e.data for e in events] == [b"b"] * 128
    updates = [(sid, struct.unpack(">L", p)[0]) for kind, _, sid, p in raw.out() if kind == w.WINDOW_UPDATE]
    assert updates == [(0, 128 * 256), (1, 128 * 256)]


def test_data_beyond_the_stream_window_is_a_flow_control_error() -> None:
    raw = Raw(ServerLimits(h2_initial_window=65535))
    raw.send(raw.headers(1, post(), w.END_HEADERS))
    chunk = w.frame(w.DATA, 0, 1, b"x" * 16384)
    events = raw.send(chunk, chunk, chunk, chunk)  # 65536 bytes, one more than the window
    assert_connection_error(raw, events, w.FLOW_CONTROL_ERROR)


def test_data_after_the_request_ended_resets_the_stream() -> None:
    raw = Raw()
    raw.send(raw.headers(1, GET))
    events = raw.send(w.frame(w.DATA, 0, 1, b"late"))
    assert [(type(e), e.stream_id, e.error_code) for e in events] == [(StreamReset, 1, w.STREAM_CLOSED)]
    assert rsts(raw.out()) == [(1, w.STREAM_CLOSED)]


def test_data_on_a_stream_the_server_reset_is_ignored_but_credited_to_the_connection() -> None:
    raw = Raw(ServerLimits(h2_initial_window=65535))
    raw.send(raw.headers(1, post(), w.END_HEADERS))
    raw.server.reset_stream(1)
    assert rsts(raw.out()) == [(1, w.CANCEL)]
    events = raw.send(*[w.frame(w.DATA, 0, 1, b"x" * 16000)] * 3)
    assert events == []
    frames = raw.out()
    assert not rsts(frames)
    assert [(sid, struct.unpack(">L", p)[0]) for kind, _, sid, p in frames if kind == w.WINDOW_UPDATE] == [(0, 48000)]


def test_data_on_a_stream_that_ended_normally_is_answered_with_stream_closed() -> None:
    raw = Raw()
    raw.send(raw.headers(1, GET))
    raw.server.send_response_head(ResponseHead(1, 204, []), end_stream=True)
    raw.out()
    assert raw.send(w.frame(w.DATA, 0, 1, b"late")) == []
    assert rsts(raw.out()) == [(1, w.STREAM_CLOSED)]


@pytest.mark.parametrize(
    ("declared", "frames"),
    [
        (3, [w.frame(w.DATA, w.END_STREAM, 1, b"four")]),  # more than declared
        (5, [w.frame(w.DATA, w.END_STREAM, 1, b"four")]),  # ends short
        (5, [w.frame(w.DATA, 0, 1, b"four"), w.frame(w.DATA, 0, 1, b"more")]),  # runs past it
    ],
    ids=["longer", "shorter", "past"],
)
def test_a_body_that_does_not_match_its_content_length_resets_the_stream(declared: int, frames: list[bytes]) -> None:
    raw = Raw()
    events = raw.send(raw.headers(1, post(declared), w.END_HEADERS), *frames)
    assert [type(e) for e in events if not isinstance(e, RequestBody)] == [RequestHead, StreamReset]
    assert rsts(raw.out()) == [(1, w.PROTOCOL_ERROR)]
    assert [type(e) for e in raw.send(raw.headers(3, GET))] == [RequestHead, RequestEnd]


@pytest.mark.parametrize("value", ["+5", "5, 5", "-1", "0x5", "99999999999999999999"])
def test_a_content_length_that_is_not_a_number_is_malformed(value: str) -> None:
    raw = Raw()
    events = raw.send(raw.headers(1, post(None) + [("content-length", value)], w.END_HEADERS))
    assert [type(e) for e in events] == [ProtocolError]
    assert rsts(raw.out()) == [(1, w.PROTOCOL_ERROR)]


def test_a_bodiless_request_declaring_a_length_is_malformed() -> None:
    raw = Raw()
    assert [type(e) for e in raw.send(raw.headers(1, post(5)))] == [ProtocolError]
    assert rsts(raw.out()) == [(1, w.PROTOCOL_ERROR)]


def test_stream_window_update_of_zero_or_past_the_limit_resets_only_that_stream() -> None:
    raw = Raw()
    raw.send(raw.headers(1, GET), raw.headers(3, GET))
    events = raw.send(w.frame(w.WINDOW_UPDATE, 0, 1, b"\0\0\0\0"), w.window_update(3, 2**31 - 65535))
    assert [(type(e), e.stream_id, e.error_code) for e in events] == [
        (StreamReset, 1, w.PROTOCOL_ERROR), (StreamReset, 3, w.FLOW_CONTROL_ERROR)]  # fmt: skip
    assert [type(e) for e in raw.send(raw.headers(5, GET))] == [RequestHead, RequestEnd]


def test_the_peers_initial_window_holds_and_releases_response_data() -> None:
    """SETTINGS_INITIAL_WINDOW_SIZE=0: a response body is held (``send_window`` 0); raising the setting
    sends it and reports ``WindowOpened``; a late WINDOW_UPDATE on the finished stream is harmless."""
    raw = Raw(settings={w.INITIAL_WINDOW_SIZE: 0})
    raw.send(raw.headers(1, GET))
    raw.server.send_response_head(ResponseHead(1, 200, [], content_length=5))
    raw.server.send_body(1, b"hello", end_stream=True)
    assert [kind for kind, *_ in raw.out()] == [w.HEADERS]
    assert raw.server.send_window(1) == 0 and raw.server.held_bytes == 5
    events = raw.send(w.settings({w.INITIAL_WINDOW_SIZE: 3}))
    assert events == [WindowOpened(0)]
    assert [(kind, flags, payload) for kind, flags, _, payload in raw.out()] == [
        (w.SETTINGS, w.ACK, b""), (w.DATA, 0, b"hel")]  # fmt: skip
    assert raw.send(w.window_update(1, 10)) == [WindowOpened(1)]
    assert raw.out() == [(w.DATA, w.END_STREAM, 1, b"lo")]
    assert raw.send(w.window_update(1, 10)) == []  # the stream is closed now


def test_a_response_head_larger_than_a_frame_goes_out_in_continuation_frames() -> None:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    server = Http2ServerConnection(ServerLimits())
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    client.send_headers(1, [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"https"), (b":authority", b"k")],
                        end_stream=True)  # fmt: skip
    server.receive_data(client.data_to_send())
    big = [(b"x-big-%d" % i, b"v" * 1000) for i in range(40)]
    server.send_response_head(ResponseHead(1, 200, big), end_stream=True)
    data = server.data_to_send()
    assert [kind for kind, *_ in frames_of(data)][-3:] == [w.HEADERS, w.CONTINUATION, w.CONTINUATION][-3:]
    (response, ended) = [e for e in client.receive_data(data) if not isinstance(e, h2.events.SettingsAcknowledged)]
    assert response.headers[1:] == big and isinstance(ended, h2.events.StreamEnded)


# --- abuse counters -------------------------------------------------------------------------------------


def test_rapid_resets_are_counted_in_quanta() -> None:
    raw = Raw(ServerLimits(h2_max_resets_per_second=50))
    frames = []
    for n in range(100):
        sid = 2 * n + 1
        frames += [raw.headers(sid, GET), w.rst_stream(sid, w.CANCEL)]
    counted = [e for e in raw.send(*frames) if isinstance(e, FramesCounted)]
    assert counted == [FramesCounted("h2_rapid_reset", 50)] * 2


def test_pings_and_settings_are_counted_in_quanta() -> None:
    raw = Raw(ServerLimits(h2_max_control_frames_per_second=10))
    events = raw.send(*[w.frame(w.PING, 0, 0, b"abcdefgh")] * 20, *[w.settings({})] * 10)
    assert [e for e in events if isinstance(e, FramesCounted)] == [
        FramesCounted("h2_ping_flood", 10), FramesCounted("h2_ping_flood", 10),
        FramesCounted("h2_settings_flood", 10)]  # fmt: skip


def test_streams_refused_after_goaway_keep_the_hpack_table_in_step() -> None:
    raw = Raw()
    raw.send(raw.headers(1, post(), w.END_HEADERS))
    raw.server.close()
    assert goaway_code(raw.out()) == w.NO_ERROR
    events = raw.send(raw.headers(3, GET + [("x-new", "entry")]))
    assert events == [] and rsts(raw.out()) == [(3, w.REFUSED_STREAM)]
    assert not raw.server.must_close  # stream 1 is still being answered
    events = raw.send(raw.headers(1, [("x-trailer", "1")]))  # trailers indexed against the refused block
    assert [type(e) for e in events] == [RequestEnd]
    raw.server.send_response_head(ResponseHead(1, 200, []), end_stream=True)
    assert raw.server.must_close


def test_a_stream_reset_while_holding_data_drops_it() -> None:
    raw = Raw(settings={w.INITIAL_WINDOW_SIZE: 0})
    raw.send(raw.headers(1, GET), raw.headers(3, GET))
    for sid in (1, 3):
        raw.server.send_response_head(ResponseHead(sid, 200, []))
        raw.server.send_body(sid, b"held", end_stream=True)
    raw.out()
    assert raw.server.held_bytes == 8
    assert raw.send(w.rst_stream(1, w.CANCEL)) == [StreamReset(1, w.CANCEL)]
    assert raw.server.held_bytes == 4
    raw.server.reset_stream(3)
    assert raw.server.held_bytes == 0
    raw.send(w.settings({w.INITIAL_WINDOW_SIZE: 100}))
    assert [kind for kind, *_ in raw.out()] == [w.RST_STREAM, w.SETTINGS]  # our reset of 3, the ACK: no DATA


def test_a_settings_frame_repeating_the_initial_window_is_applied_once() -> None:
    """A 16 KiB SETTINGS frame of 2,730 INITIAL_WINDOW_SIZE entries with 100 streams open: the last
    value holds (settings apply in order), at the cost of one pass over the streams."""
    raw = Raw(settings={w.INITIAL_WINDOW_SIZE: 0})
    raw.send(*[raw.headers(2 * n + 1, GET) for n in range(100)])
    payload = b"".join(w.SETTING.pack(w.INITIAL_WINDOW_SIZE, n % 1000) for n in range(2730))
    assert raw.send(w.frame(w.SETTINGS, 0, 0, payload)) == [WindowOpened(0)]
    assert raw.server.send_window(1) == 2729 % 1000

"""The session taps under hostile bytes: cost linear in what is fed (measured as bytes the tap copies into its
own buffers, not wall-clock), memory bounded, and a tap that meets bytes that are not its protocol gives up
(``failed``, ``failure``) instead of buffering them. Also the ``on_data`` content hook the session recorder
builds on: it sees every stream's payload with its stream type, unmasked and decoded, in any chunking."""

from __future__ import annotations

import base64
import os
import random
import struct

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage

from proxy.protocol import channels as ch
from proxy.protocol import spdy

MEGABYTES = 4


def _chunks(data: bytes, size: int):
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _control(frame_type: int, payload: bytes, version: int = 3) -> bytes:
    return struct.pack("!HHI", 0x8000 | version, frame_type, len(payload)) + payload


def _exec_streams() -> tuple[spdy.SpdyConnection, bytes]:
    client = spdy.SpdyConnection(client_side=True)
    for stream_type in ("error", "stdin", "stdout"):
        client.send_syn_stream([("streamtype", stream_type)])
    return client, client.data_to_send()


@pytest.mark.parametrize("read_size", [1, 512, 16384])
def test_spdy_tap_gives_up_on_megabytes_of_garbage_after_a_101_without_buffering_them(read_size):
    garbage = random.Random(read_size).randbytes(MEGABYTES << 20 if read_size > 1 else 256 << 10)
    tap = spdy.SpdyTap()
    for chunk in _chunks(garbage, read_size):
        tap.feed_client(chunk)
        assert tap.buffered_bytes <= 8 + 64 * 1024
    assert tap.failed and tap.failure.startswith("client:")
    assert tap.copied_bytes <= 8 + 64 * 1024  # it looked at a frame or two, then stopped
    assert tap.buffered_bytes == 0


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (_control(spdy.SYN_STREAM, b"\x00" * 10, version=2), "version 2"),
        (struct.pack("!HHI", 0x8003, 99, 0xFFFFFF), "exceeds the tap's limit"),
        (struct.pack("!II", 7, 5) + b"hello", "stream 7, which was never opened"),
        (struct.pack("!II", 0, 0), "stream 0"),
    ],
    ids=["version-2", "huge-control", "unopened-stream", "stream-0"],
)
def test_spdy_tap_gives_up_on_frames_no_spdy3_peer_sends(frame, problem):
    tap = spdy.SpdyTap()
    tap.feed_client(_exec_streams()[1])
    tap.feed_client(frame)
    assert tap.failed and problem in tap.failure, tap.failure
    tap.feed_client(b"\x00" * 100)  # ignored from now on
    assert tap.copied_bytes < 100


def test_spdy_tap_cost_is_linear_when_large_control_frames_arrive_in_tiny_reads():
    """The case that was quadratic: frames cut by every read. Now each byte is copied at most once, and
    only control frames are buffered (one at a time)."""
    frame = _control(99, b"\x00" * 60_000)  # an unknown control type: valid SPDY/3, ignored
    stream = frame * ((MEGABYTES << 20) // len(frame))
    tap = spdy.SpdyTap()
    peak = 0
    for chunk in _chunks(stream, 1000):
        tap.feed_server(chunk)
        peak = max(peak, tap.buffered_bytes)
    assert not tap.failed, tap.failure
    assert tap.copied_bytes <= len(stream)
    assert peak <= len(frame)


def test_spdy_tap_never_copies_data_payloads_whatever_the_reads():
    client, head = _exec_streams()
    client.send_data(3, b"s" * (MEGABYTES << 20))
    stream = head + client.data_to_send()
    tap = spdy.SpdyTap()
    for chunk in _chunks(stream, 777):
        tap.feed_client(chunk)
    assert not tap.failed, tap.failure
    assert tap.bytes_by_type()["stdin"]["from_client"] == MEGABYTES << 20
    # Only SYN_STREAMs and the 8-byte data frame headers that reads cut were copied.
    assert tap.copied_bytes < len(head) + 8 * (len(stream) // spdy.DEFAULT_MAX_DATA_FRAME + 1)


def test_spdy_tap_tracks_a_bounded_number_of_streams_and_keeps_the_totals():
    client = spdy.SpdyConnection(client_side=True)
    tap = spdy.SpdyTap(max_streams=16)
    for _ in range(100):  # a long port-forward: each connection a data stream, reset when it ends
        sid = client.send_syn_stream([("streamtype", "data"), ("port", "80")])
        client.send_data(sid, b"abc")
        client.send_rst_stream(sid)
        tap.feed_client(client.data_to_send())
    assert not tap.failed, tap.failure
    assert len(tap.streams) <= 16
    assert tap.bytes_by_type()["data"] == {"from_client": 300, "from_server": 0}
    assert tap.total_bytes() == (300, 0)
    # Late data on a forgotten stream is not an error (the peer may not have seen the reset yet).
    tap.feed_server(struct.pack("!II", 1, 2) + b"hi")
    assert not tap.failed, tap.failure

    crowded = spdy.SpdyTap(max_streams=16)
    client = spdy.SpdyConnection(client_side=True)
    for _ in range(17):
        client.send_syn_stream([("streamtype", "data"), ("port", "80")])  # never closed
    crowded.feed_client(client.data_to_send())
    assert crowded.failed and "more than 16 streams" in crowded.failure


@pytest.mark.parametrize("read_size", [1, 5, 4096])
def test_spdy_tap_shows_each_streams_content_to_on_data(read_size):
    seen: list[tuple[str, str, bytes]] = []
    tap = spdy.SpdyTap(on_data=lambda side, kind, chunk: seen.append((side, kind, bytes(chunk))))
    client, head = _exec_streams()
    client.send_data(3, b"ls -l\n")
    server = spdy.SpdyConnection(client_side=False)
    server.receive_data(head)
    server.send_data(5, b"total 0\n", fin=True)
    for chunk in _chunks(head + client.data_to_send(), read_size):
        tap.feed_client(chunk)
    for chunk in _chunks(server.data_to_send(), read_size):
        tap.feed_server(chunk)
    joined: dict[tuple[str, str], bytes] = {}
    for side, kind, data in seen:
        joined[side, kind] = joined.get((side, kind), b"") + data
    assert joined == {("client", "stdin"): b"ls -l\n", ("server", "stdout"): b"total 0\n"}


# ------------------------------------------------------------------------------------------ WebSocket


@pytest.mark.parametrize("read_size", [1, 512, 16384])
def test_channel_tap_gives_up_on_megabytes_of_garbage(read_size):
    garbage = random.Random(read_size).randbytes(MEGABYTES << 20 if read_size > 1 else 256 << 10)
    for side in ("client", "server"):
        tap = ch.ChannelTap("v5.channel.k8s.io")
        for chunk in _chunks(garbage, read_size):
            getattr(tap, f"feed_{side}")(chunk)
        assert tap.failed and tap.failure.startswith(side), tap.failure
        assert tap.copied_bytes <= 14 * 64  # a few frame headers at most


@pytest.mark.parametrize(
    ("side", "raw", "problem"),
    [
        ("client", Connection(ConnectionType.SERVER).send(BytesMessage(data=b"\x00a")), "unmasked client frame"),
        ("server", Connection(ConnectionType.CLIENT).send(BytesMessage(data=b"\x01a")), "masked server frame"),
        ("server", b"\x09\x7e\x00\x80" + b"p" * 128, "longer than 125"),
        ("server", b"\x00\x01x", "continuation frame without a message"),
        ("server", b"\x02\x02\x01a\x02\x02\x01b", "before the previous one's last fragment"),
        ("server", b"\x82\x7f" + b"\xff" * 8, "most significant bit"),
    ],
    ids=["unmasked-client", "masked-server", "long-ping", "orphan-continuation", "interleaved", "length-msb"],
)
def test_channel_tap_gives_up_on_frames_rfc6455_forbids(side, raw, problem):
    tap = ch.ChannelTap("v5.channel.k8s.io")
    getattr(tap, f"feed_{side}")(raw)
    assert tap.failed and problem in tap.failure, tap.failure


def test_channel_tap_copies_only_frame_headers_in_tiny_reads():
    server = ch.WebSocketServer(_v5_head())
    server.accept("v5.channel.k8s.io")
    stream = b"".join(server.send(b"\x01" + os.urandom(1) * 65_000) for _ in range(MEGABYTES * 16))
    tap = ch.ChannelTap("v5.channel.k8s.io")
    for chunk in _chunks(stream, 1000):
        tap.feed_server(chunk)
    assert not tap.failed, tap.failure
    assert tap.bytes_from_server[1] == MEGABYTES * 16 * 65_000
    # at most a 4-byte header per frame, nothing else (a header whole in a read is read in place)
    assert tap.copied_bytes <= 4 * MEGABYTES * 16


@pytest.mark.parametrize("read_size", [1, 3, 1 << 20])
def test_channel_tap_shows_unmasked_content_to_on_data(read_size):
    seen: list[tuple[str, str, bytes]] = []
    tap = ch.ChannelTap("v5.channel.k8s.io", on_data=lambda side, kind, chunk: seen.append((side, kind, bytes(chunk))))
    client = Connection(ConnectionType.CLIENT)  # masks its frames
    raw = client.send(BytesMessage(data=b"\x00echo ", message_finished=False))
    raw += client.send(BytesMessage(data=b"hi\n", message_finished=True))
    raw += client.send(BytesMessage(data=b'\x04{"Width":80,"Height":24}'))
    for chunk in _chunks(raw, read_size):
        tap.feed_client(chunk)
    server = ch.WebSocketServer(_v5_head())
    server.accept("v5.channel.k8s.io")
    for chunk in _chunks(server.send(b"\x01hi\n"), read_size):
        tap.feed_server(chunk)
    joined: dict[tuple[str, str], bytes] = {}
    for side, kind, data in seen:
        joined[side, kind] = joined.get((side, kind), b"") + data
    assert joined == {("client", "stdin"): b"echo hi\n", ("client", "resize"): b'{"Width":80,"Height":24}',
                      ("server", "stdout"): b"hi\n"}


@pytest.mark.parametrize("read_size", [1, 2, 7, 100])
def test_channel_tap_decodes_base64_content_for_on_data_across_any_cut(read_size):
    seen: list[bytes] = []
    tap = ch.ChannelTap("v4.base64.channel.k8s.io", on_data=lambda side, kind, chunk: seen.append(bytes(chunk)))
    client = Connection(ConnectionType.CLIENT)
    text = "0" + base64.b64encode(b"some stdin bytes!").decode()
    raw = client.send(TextMessage(data=text[:6], message_finished=False))
    raw += client.send(TextMessage(data=text[6:], message_finished=True))
    for chunk in _chunks(raw, read_size):
        tap.feed_client(chunk)
    assert not tap.failed, tap.failure
    assert b"".join(seen) == b"some stdin bytes!"


def _v5_head():
    from proxy.protocol.events import RequestHead

    headers = [(b"host", b"x"), (b"upgrade", b"websocket"), (b"connection", b"Upgrade"),
               (b"sec-websocket-key", base64.b64encode(b"0123456789abcdef")), (b"sec-websocket-version", b"13"),
               (b"sec-websocket-protocol", b"v5.channel.k8s.io")]
    return RequestHead(1, "GET", "/exec", headers, "1.1", upgrade=True)

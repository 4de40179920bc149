"""The upstream HTTP/2 client protocol without sockets: direct DATA frames of unsized bodies (watches,
``logs -f``), their flow control and its batched credit (issue 9).

The server side is the ``h2`` library's own server state machine: it stands in for the API server
because the sans-IO client is tested here without a socket; it also checks every frame kubegate sends
(a WINDOW_UPDATE beyond the window, or on a wrong stream, would be its protocol error). Frames a correct
server never sends (a DATA frame beyond the window) are written by hand.
"""

from __future__ import annotations

import asyncio

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest

from proxy.upstream import UpstreamError
from proxy.upstream.http2 import _CONNECTION_CREDIT_BATCH, _STREAM_CREDIT_BATCH, _STREAM_WINDOW, H2Upstream
from tests.proxy.test_proxy_upstream_units import FakeTransport

WATCH_HEAD = [(b":status", b"200"), (b"content-type", b"application/json")]


class Peer:
    """kubegate's upstream connection and the server at the other end of a fake transport."""

    def __init__(self) -> None:
        self.up = H2Upstream("c1", "api:6443", high_water=1 << 20)
        self.transport = FakeTransport()
        self.up.connection_made(self.transport)
        self.server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.server.initiate_connection()
        self.events: list[h2.events.Event] = []
        self.to_server()
        self.to_client()
        self.to_server()
        self.events.clear()  # the preface's (the connection window opened to 16 MiB) are not under test

    def to_server(self) -> list[h2.events.Event]:
        """What kubegate wrote since the last call, received by the server: its events."""
        data, self.transport.written = self.transport.written, b""
        events = self.server.receive_data(data) if data else []
        self.events += events
        return events

    def to_client(self, chunk_size: int | None = None) -> None:
        """What the server queued, received by kubegate (in pieces of ``chunk_size`` bytes if given)."""
        data = self.server.data_to_send()
        step = chunk_size or max(1, len(data))
        for i in range(0, len(data), step):
            self.up.data_received(data[i:i + step])

    def window_updates(self, stream_id: int) -> list[int]:
        return [e.delta for e in self.events if isinstance(e, h2.events.WindowUpdated) and e.stream_id == stream_id]

    def watch(self, head: list[tuple[bytes, bytes]] = WATCH_HEAD):
        ex = self.up.start("GET", "/api/v1/configmaps?watch=true", [], end_stream=True)
        self.to_server()
        self.server.send_headers(ex.stream_id, head)
        self.to_client()
        return ex


def run(coro):
    return asyncio.run(coro)


async def read_exactly(ex, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await ex.read()
        assert chunk, "the body ended early"
        data += chunk
    return data


def test_watch_events_reach_the_reader_in_order_whole_split_or_batched_and_the_end_arrives():
    async def scenario():
        p = Peer()
        ex = p.watch()
        assert (await ex.response_head())[0] == 200
        events = [b'{"type":"ADDED","object":{"n":%d}}\n' % i for i in range(40)]
        for i, event in enumerate(events[:20]):
            p.server.send_data(ex.stream_id, event)
            p.to_client(chunk_size=[None, 1, 7, 100][i % 4])  # whole, byte by byte, odd pieces
        for event in events[20:]:
            p.server.send_data(ex.stream_id, event)
        p.server.send_data(ex.stream_id, b"last\n", end_stream=True)
        p.to_client(chunk_size=1000)  # many frames per read
        body = await read_exactly(ex, sum(map(len, events)) + 5)
        assert body == b"".join(events) + b"last\n"
        assert await ex.read() == b""

    run(scenario())


def test_credit_for_consumed_watch_events_goes_back_in_batches_not_one_window_update_per_event():
    async def scenario():
        p = Peer()
        ex = p.watch()
        await ex.response_head()
        event = b"e" * 999 + b"\n"
        per_batch = _STREAM_CREDIT_BATCH // len(event)
        for _ in range(per_batch):
            p.server.send_data(ex.stream_id, event)
            p.to_client()
            ex.consumed(len(await ex.read()))
            p.to_server()
        assert p.window_updates(ex.stream_id) == []  # a quarter of the window not yet consumed
        p.server.send_data(ex.stream_id, event)
        p.to_client()
        ex.consumed(len(await ex.read()))
        p.to_server()
        assert p.window_updates(ex.stream_id) == [(per_batch + 1) * len(event)]  # one update for the batch
        assert p.server.local_flow_control_window(ex.stream_id) == min(_STREAM_WINDOW, p.server.outbound_flow_control_window)

    run(scenario())


def test_the_connection_window_is_credited_in_batches_across_streams():
    async def scenario():
        p = Peer()
        watches = [p.watch() for _ in range(8)]
        chunk = b"x" * 16384
        sent = 0
        while sent < _CONNECTION_CREDIT_BATCH:
            for ex in watches:
                p.server.send_data(ex.stream_id, chunk)
                p.to_client()
                ex.consumed(len(await ex.read()))
                sent += len(chunk)
                p.to_server()
        assert p.window_updates(0) == [_CONNECTION_CREDIT_BATCH]

    run(scenario())


def test_a_reader_that_does_not_consume_stops_the_server_at_the_stream_window_and_consuming_reopens_it():
    async def scenario():
        p = Peer()
        ex = p.watch()
        await ex.response_head()
        sent = 0
        while p.server.local_flow_control_window(ex.stream_id) > 0:
            n = min(16384, p.server.local_flow_control_window(ex.stream_id))
            p.server.send_data(ex.stream_id, b"y" * n)
            sent += n
            p.to_client()
            p.to_server()
        assert sent == _STREAM_WINDOW  # the server cannot send more: the reader holds the whole window
        received = len(await read_exactly(ex, sent))
        assert received == sent and p.window_updates(ex.stream_id) == []
        ex.consumed(received)
        p.to_server()
        assert p.server.local_flow_control_window(ex.stream_id) == _STREAM_WINDOW

    run(scenario())


def test_a_server_sending_beyond_the_stream_window_breaks_the_connection_with_flow_control_error():
    async def scenario():
        p = Peer()
        ex = p.watch()
        await ex.response_head()
        frame_head = (16384).to_bytes(3, "big") + b"\x00\x00" + ex.stream_id.to_bytes(4, "big")
        for _ in range(_STREAM_WINDOW // 16384 + 1):  # one frame more than the window holds, never consumed
            p.up.data_received(frame_head + b"z" * 16384)
        with pytest.raises(UpstreamError) as err:
            while await ex.read():
                pass
        assert err.value.status == 502 and "flow-control window" in err.value.message
        goaway = [e for e in p.to_server() if isinstance(e, h2.events.ConnectionTerminated)]
        assert goaway and goaway[0].error_code == h2.errors.ErrorCodes.FLOW_CONTROL_ERROR
        assert p.up.closed and p.transport.closed

    run(scenario())


def test_a_data_frame_larger_than_the_frame_size_kubegate_allows_is_refused_even_alone_in_its_read():
    """A read holding exactly one DATA frame of a watch takes a shorter path to the exchange; a frame
    above SETTINGS_MAX_FRAME_SIZE (16 KiB: kubegate never raises it) is still a FRAME_SIZE_ERROR there,
    and none of its bytes reach the reader."""

    async def scenario():
        p = Peer()
        ex = p.watch()
        await ex.response_head()
        p.up.data_received((16385).to_bytes(3, "big") + b"\x00\x00" + ex.stream_id.to_bytes(4, "big") + b"z" * 16385)
        with pytest.raises(UpstreamError) as err:
            await ex.read()
        assert err.value.status == 502
        goaway = [e for e in p.to_server() if isinstance(e, h2.events.ConnectionTerminated)]
        assert goaway and goaway[0].error_code == h2.errors.ErrorCodes.FRAME_SIZE_ERROR
        assert p.up.closed

    run(scenario())


def test_a_sized_response_is_checked_by_h2_so_a_short_body_is_an_error():
    async def scenario():
        p = Peer()
        ex = p.watch([(b":status", b"200"), (b"content-length", b"10")])
        await ex.response_head()
        assert not ex.direct
        p.server.send_data(ex.stream_id, b"12345", end_stream=True)
        p.to_client()
        with pytest.raises(UpstreamError):
            while chunk := await ex.read():
                ex.consumed(len(chunk))

    run(scenario())


def test_a_watch_abandoned_with_events_unconsumed_gives_the_connection_window_back():
    async def scenario():
        p = Peer()
        ex = p.watch()
        await ex.response_head()
        for _ in range(_CONNECTION_CREDIT_BATCH // 16384):
            p.server.send_data(ex.stream_id, b"w" * 16384)
            p.to_client()
            p.to_server()
            if p.server.local_flow_control_window(ex.stream_id) < 16384:
                ex.consumed(len(await ex.read()))  # keep the stream window open; the rest stays unread
        before = p.server.outbound_flow_control_window
        ex.abort()
        p.to_server()
        assert p.server.outbound_flow_control_window > before  # the unread bytes were credited back
        assert any(isinstance(e, h2.events.StreamReset) for e in p.events)

    run(scenario())


class Recorder:
    """A body sink (``BodyBuffer.sink``) that records what it is handed."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.ended = False

    def body_chunk(self, data: bytes) -> None:
        self.chunks.append(data)

    def body_ended(self) -> None:
        self.ended = True


def test_events_that_arrive_together_go_to_the_sink_as_one_chunk_per_stream_in_order():
    async def scenario():
        p = Peer()
        a, b = p.watch(), p.watch()
        sink_a, sink_b = Recorder(), Recorder()
        a.body.sink, b.body.sink = sink_a, sink_b
        for sid, event in ((a.stream_id, b"a1\n"), (a.stream_id, b"a2\n"), (b.stream_id, b"b1\n"), (a.stream_id, b"a3\n")):
            p.server.send_data(sid, event)
        p.to_client()  # four frames in one read
        assert sink_a.chunks == [b"a1\na2\n", b"a3\n"] and sink_b.chunks == [b"b1\n"]
        p.server.send_data(a.stream_id, b"a4\n", end_stream=True)  # the last frame goes through h2
        p.to_client()
        assert sink_a.chunks[-1] == b"a4\n" and sink_a.ended and not sink_b.ended

    run(scenario())


def test_events_in_the_same_read_as_the_head_arrive_and_credit_is_never_given_twice():
    async def scenario():
        p = Peer()
        ex = p.up.start("GET", "/api/v1/configmaps?watch=true", [], end_stream=True)
        p.to_server()
        p.server.send_headers(ex.stream_id, WATCH_HEAD)
        first = [b"first-%d\n" % i for i in range(3)]
        for event in first:
            p.server.send_data(ex.stream_id, event)
        p.to_client()  # the head and three events in one read: h2 sees those events
        assert (await ex.response_head())[0] == 200 and ex.direct
        assert await read_exactly(ex, sum(map(len, first))) == b"".join(first)
        ex.consumed(sum(map(len, first)))
        sent = 0
        while sent < 2 * _STREAM_CREDIT_BATCH:  # then direct frames, each consumed as read
            p.server.send_data(ex.stream_id, b"d" * 8191 + b"\n")
            p.to_client()
            ex.consumed(len(await ex.read()))
            p.to_server()
            sent += 8192
        window = p.server.local_flow_control_window(ex.stream_id)
        assert _STREAM_WINDOW - _STREAM_CREDIT_BATCH < window <= _STREAM_WINDOW  # credited in batches, never beyond

    run(scenario())

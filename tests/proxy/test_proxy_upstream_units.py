"""The upstream HTTP/1.1 client protocol and pool bookkeeping, without sockets (a fake transport)."""

from __future__ import annotations

import asyncio

import pytest

from discovery.model import Cluster
from proxy.upstream import ClusterPools, PoolSettings, UpstreamError
from proxy.upstream.http1 import Http1Upstream


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.paused = False
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += bytes(data)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def connected(high_water: int = 1 << 20) -> tuple[Http1Upstream, FakeTransport, list[Http1Upstream]]:
    idle: list[Http1Upstream] = []
    conn = Http1Upstream("c1", high_water, idle.append)
    transport = FakeTransport()
    conn.connection_made(transport)
    return conn, transport, idle


def run(coro):
    return asyncio.run(coro)


def test_request_is_encoded_once_and_a_sized_response_completes_and_the_connection_is_reused():
    async def scenario():
        conn, transport, idle = connected()
        ex = conn.start("GET", "/api/v1/pods?limit=1", [(b"host", b"api"), (b"accept", b"application/json")], chunked=False)
        ex.end_request()
        assert transport.written == b"GET /api/v1/pods?limit=1 HTTP/1.1\r\nhost: api\r\naccept: application/json\r\n\r\n"
        conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        status, headers = await ex.response_head()
        assert status == 200 and (b"content-type", b"application/json") in headers
        assert await ex.read() == b"{}"
        assert await ex.read() == b""
        ex.release()
        assert idle == [conn] and conn.reusable

    run(scenario())


def test_chunked_body_is_read_as_it_arrives():
    async def scenario():
        conn, _, _ = connected()
        ex = conn.start("GET", "/watch", [], chunked=False)
        ex.end_request()
        conn.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nevent1\r\n")
        await ex.response_head()
        assert await ex.read() == b"event1"
        conn.data_received(b"6\r\nevent2\r\n0\r\n\r\n")
        assert await ex.read() == b"event2"
        assert await ex.read() == b""

    run(scenario())


def test_interim_100_continue_is_skipped():
    async def scenario():
        conn, _, _ = connected()
        ex = conn.start("POST", "/x", [], chunked=True)
        conn.data_received(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        assert (await ex.response_head())[0] == 201

    run(scenario())


def test_connection_lost_mid_body_is_an_upstream_error_naming_the_cluster():
    async def scenario():
        conn, _, _ = connected()
        ex = conn.start("GET", "/x", [], chunked=False)
        conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
        await ex.response_head()
        assert await ex.read() == b"12345"
        conn.connection_lost(ConnectionResetError())
        with pytest.raises(UpstreamError) as info:
            await ex.read()
        assert info.value.status == 502 and "c1" in info.value.message and info.value.kind == "reset"

    run(scenario())


def test_a_slow_reader_pauses_the_upstream_and_resumes_it_after_reading():
    async def scenario():
        conn, transport, _ = connected(high_water=8)
        ex = conn.start("GET", "/x", [], chunked=False)
        conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n0123456789")
        await ex.response_head()
        assert transport.paused
        assert await ex.read() == b"0123456789"
        assert not transport.paused

    run(scenario())


def test_connection_close_response_is_not_reused():
    async def scenario():
        conn, transport, idle = connected()
        ex = conn.start("GET", "/x", [], chunked=False)
        ex.end_request()
        conn.data_received(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx")
        await ex.response_head()
        assert await ex.read() == b"x"
        assert await ex.read() == b""
        ex.release()
        assert idle == [] and transport.closed

    run(scenario())


def test_invalid_response_is_a_502():
    async def scenario():
        conn, transport, _ = connected()
        ex = conn.start("GET", "/x", [], chunked=False)
        conn.data_received(b"NOT HTTP AT ALL\r\n\r\n")
        with pytest.raises(UpstreamError) as info:
            await ex.response_head()
        assert info.value.status == 502 and transport.closed

    run(scenario())


def test_upgrade_101_hands_over_the_bytes_after_the_head():
    async def scenario():
        conn, transport, _ = connected()
        task = asyncio.ensure_future(conn.start_upgrade("POST", "/exec", [(b"connection", b"Upgrade"), (b"upgrade", b"SPDY/3.1")]))
        await asyncio.sleep(0)
        conn.data_received(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n\x80\x03\x00\x04")
        status, headers, trailing = await task
        assert status == 101 and trailing == b"\x80\x03\x00\x04"
        assert (b"upgrade", b"SPDY/3.1") in headers

    run(scenario())


def test_pools_survive_label_changes_but_not_address_changes():
    pools = ClusterPools(PoolSettings())
    first = Cluster(name="c", labels={"env": "dev"}, server="https://a:6443")
    pool = pools.get(first)
    assert pools.get(Cluster(name="c", labels={"env": "prod"}, server="https://a:6443", credentials=first.credentials)) is pool
    moved = pools.get(Cluster(name="c", labels={}, server="https://b:6443"))
    assert moved is not pool and pool.closed


class CountingSink:
    """A fast-path sink (``start_raw``) that takes every head ``relayable_head`` allows as bytes."""

    def __init__(self) -> None:
        self.head = b""
        self.body = b""
        self.done = False
        self.error: UpstreamError | None = None
        self.status = 0
        self.complete = False
        self.parsed: tuple[int, list] | None = None
        self._ended = True  # the request went whole with its head
        self._done = False  # the answer ended: the connection may serve another request
        self.calls: list[str] = []  # on_data (with its size) and on_done, in order

    def raw_head(self, data: bytes) -> int | None:
        from proxy.protocol.relayed_head import relayable_head

        relayable = relayable_head(data)
        if relayable is None:
            return None
        relayed, self.status, length, head_size = relayable
        self.head, self.body = relayed[:head_size], relayed[head_size:]
        return length - len(self.body)

    def on_head(self, status: int, headers: list) -> None:
        self.status, self.parsed = status, (status, headers)

    def on_data(self, data: bytes) -> bool:
        self.calls.append(f"on_data({len(data)})")
        self.body += data
        return False

    def on_done(self) -> None:
        self.calls.append("on_done")
        self.done = self.complete = self._done = True

    def on_error(self, error: UpstreamError) -> None:
        self.error = error


def started_raw() -> tuple[Http1Upstream, FakeTransport, list[Http1Upstream], CountingSink]:
    """A connection with a fast-path request sent on it (``start_raw``) whose answer goes to a sink."""
    conn, transport, idle = connected()
    sink = CountingSink()
    conn.start_raw(b"GET /x HTTP/1.1\r\nhost: api\r\n\r\n", sink)
    return conn, transport, idle, sink


def test_a_relayed_answer_is_framed_by_counting_its_body_across_reads_and_the_connection_is_reused():
    async def scenario() -> None:
        conn, transport, idle, sink = started_raw()
        conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"a\"")
        assert sink.head.startswith(b"HTTP/1.1 200 OK") and sink.parsed is None and sink.body == b'{"a"'
        # what the sink took with the head is to be written now, not with the next read: on_data(b"")
        assert not sink.done and sink.calls == ["on_data(0)"]
        conn.data_received(b':"bc"')
        assert not sink.done
        conn.data_received(b"}")
        assert sink.body == b'{"a":"bc"}' and sink.done and sink.error is None
        assert sink.calls == ["on_data(0)", "on_data(5)", "on_data(1)", "on_done"]
        conn.exchange_released(sink)
        assert idle == [conn] and conn.reusable and not transport.closed
        # the next answer, to a request through the full pipeline, is parsed as usual on the same connection
        ex = conn.start("GET", "/y", [], chunked=False)
        ex.end_request()
        conn.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")

        await ex.response_head()
        assert await ex.read() == b"ok"

    run(scenario())


def test_a_relayed_answer_with_bytes_past_its_content_length_is_a_502_and_the_connection_closes():
    async def scenario() -> None:
        conn, transport, idle, sink = started_raw()
        conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        assert sink.error is not None and sink.error.status == 502 and sink.error.kind == "protocol"
        assert "more than its Content-Length" in sink.error.message
        assert transport.closed and idle == [] and not sink.done

    run(scenario())


def test_a_relayed_head_the_parser_finds_invalid_is_a_502():
    async def scenario() -> None:
        conn, transport, _, sink = started_raw()
        conn.data_received(b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 2\r\n\r\n{}")
        assert sink.error is not None and sink.error.status == 502 and "invalid HTTP response" in sink.error.message
        assert transport.closed and not sink.done

    run(scenario())


def test_an_answer_whole_in_its_first_read_is_written_once_with_its_end():
    async def scenario() -> None:
        conn, _, idle, sink = started_raw()
        conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        assert (sink.head, sink.body, sink.calls) == (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", b"ok", ["on_done"])
        assert idle == [conn]  # given back to the pool as the answer ended

    run(scenario())


def test_an_answer_the_sink_does_not_relay_as_bytes_is_parsed_field_by_field():
    async def scenario() -> None:
        conn, _, idle, sink = started_raw()
        conn.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
        assert sink.parsed == (200, [(b"transfer-encoding", b"chunked")]) and sink.head == b""
        assert sink.body == b"ok" and sink.done
        conn.exchange_released(sink)
        assert idle == [conn]

    run(scenario())

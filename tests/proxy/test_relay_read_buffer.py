"""The stream relay's read buffer (``proxy.upgrade._Side``): every relay side of a thread reads into one
buffer, written to the peer's transport before the next read, so no session holds a read buffer of its
own and none is allocated per read. A peer transport that keeps the view it was written (uvloop's plain
TCP transport, when its socket is backed up) keeps the buffer: the next read gets a new one, and what the
transport still holds is never overwritten.

Real uvloop TCP transports on loopback: a source writes faster than the far end reads, through two
relays that share the thread's buffer."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
import uvloop

from proxy import upgrade


class _Session:
    """What a ``_Side`` asks of its session: nothing observed, the end noted."""

    def __init__(self) -> None:
        self.ended: list[str] = []

    def observe(self, direction: str, data: memoryview) -> None:
        pass

    def side_ended(self, side: upgrade._Side) -> None:
        self.ended.append(side.name)


class _Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.received = bytearray()
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received += data

    def eof_received(self) -> bool:
        if not self.done.done():
            self.done.set_result(None)
        return False


def _pattern(total: int, seed: bytes) -> bytes:
    """``total`` bytes that differ everywhere: a buffer reused too early shows as a wrong digest."""
    out = bytearray()
    counter = 0
    while len(out) < total:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:total])


async def _relay_pair() -> tuple[asyncio.Transport, _Sink, upgrade._Side, upgrade._Side]:
    """source transport → [relay in side | relay out side] → sink; the relay's sides are ``_Side``s."""
    loop = asyncio.get_running_loop()
    session = _Session()
    inbound, outbound = upgrade._Side(session, "client"), upgrade._Side(session, "upstream")  # type: ignore[arg-type]
    inbound.peer, outbound.peer = outbound, inbound
    accepted: asyncio.Future[asyncio.Transport] = loop.create_future()

    class _Source(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.set_result(transport)  # type: ignore[arg-type]

    source_server = await loop.create_server(_Source, "127.0.0.1", 0)
    in_transport, _ = await loop.create_connection(lambda: inbound, "127.0.0.1", source_server.sockets[0].getsockname()[1])
    source = await accepted
    source_server.close()
    sink = _Sink()
    sink_server = await loop.create_server(lambda: sink, "127.0.0.1", 0)
    out_transport, _ = await loop.create_connection(lambda: outbound, "127.0.0.1", sink_server.sockets[0].getsockname()[1])
    sink_server.close()
    inbound.transport, outbound.transport = in_transport, out_transport  # type: ignore[assignment]
    inbound.peer_transport_set()
    outbound.peer_transport_set()
    out_transport.set_write_buffer_limits(high=64 << 20)  # never pause: the relay's transport keeps what it is written
    return source, sink, inbound, outbound


def test_two_relays_through_a_backed_up_plain_transport_deliver_every_byte_unchanged() -> None:
    async def main() -> None:
        first, second = await _relay_pair(), await _relay_pair()
        assert first[2].peer_may_keep_views  # a plain TCP transport may keep what it is written
        payloads = [_pattern(6 << 20, b"first"), _pattern(6 << 20, b"second")]
        for (source, sink, _, _), payload in zip((first, second), payloads, strict=True):
            assert sink.transport is not None
            sink.transport.pause_reading()  # the far end reads nothing yet: the relay's out transport backs up
            for i in range(0, len(payload), 50_000):
                source.write(payload[i : i + 50_000])
        await asyncio.sleep(0.5)  # every byte has reached the relays, which wrote it out (kept by their transports)
        assert first[3].transport is not None and first[3].transport.get_write_buffer_size() > 0
        for source, sink, inbound, _ in (first, second):
            assert inbound._buffer is None  # no side holds a buffer between reads
            source.write_eof()
            assert sink.transport is not None
            sink.transport.resume_reading()
        for (source, sink, inbound, outbound), payload in zip((first, second), payloads, strict=True):
            while len(sink.received) < len(payload):
                await asyncio.sleep(0.05)
            assert hashlib.sha256(sink.received).hexdigest() == hashlib.sha256(payload).hexdigest()
            assert inbound.bytes == len(payload)
            for transport in (source, inbound.transport, outbound.transport, sink.transport):
                assert transport is not None
                transport.close()

    uvloop.run(asyncio.wait_for(main(), 60))


def test_sides_of_different_sessions_read_into_the_one_buffer_when_the_peer_keeps_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    original = upgrade._Side.get_buffer

    def get_buffer(self: upgrade._Side, sizehint: int) -> memoryview:
        buffer = original(self, sizehint)
        seen.append(id(buffer.obj))
        return buffer

    monkeypatch.setattr(upgrade._Side, "get_buffer", get_buffer)  # (before the transports take the method)

    async def main() -> None:
        pairs = [await _relay_pair(), await _relay_pair()]
        for source, _, inbound, _ in pairs:
            inbound.peer_may_keep_views = False  # as with kubegate's TLS layer as the peer's transport
            source.write(b"x" * 100_000)
        for _, sink, _, _ in pairs:
            while len(sink.received) < 100_000:
                await asyncio.sleep(0.02)
        assert len(seen) >= 2 and len(set(seen)) == 1  # every read of both sessions: one buffer
        for source, sink, inbound, outbound in pairs:
            for transport in (source, inbound.transport, outbound.transport, sink.transport):
                assert transport is not None
                transport.close()

    uvloop.run(asyncio.wait_for(main(), 30))

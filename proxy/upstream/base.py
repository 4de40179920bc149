"""What every upstream exchange offers the forwarding pipeline, whatever the wire.

An ``UpstreamStream`` is one request/response with the API server:

    stream.send_body(chunk); await stream.drain(); stream.end_request()
    status, headers = await stream.response_head()
    while chunk := await stream.read():      # b"" at the end of the body
        ...hand the chunk on...
        stream.consumed(len(chunk))          # credit back to the server only once the data left

or, for a long-lived body, without a task wakeup per chunk: ``stream.body.sink = sink`` while nothing is
buffered; the upstream protocol then hands each chunk to ``sink.body_chunk`` as it arrives and calls
``sink.body_ended`` at the end (``read`` then returns b"" or raises the error). A sink that cannot pass
more on (a slow client) sets ``body.sink = None``: later chunks are buffered for ``read`` again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from proxy.protocol.events import Headers


class UpstreamError(Exception):
    """The upstream could not answer. ``status`` is what the client gets (502, 503, 504)."""

    def __init__(self, status: int, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind  # metric label: connect, tls, timeout, reset, protocol


class BodySink(Protocol):
    """Takes a response body chunk by chunk as the upstream protocol receives it (see the module docstring)."""

    def body_chunk(self, data: bytes) -> None: ...

    def body_ended(self) -> None: ...


class BodyBuffer:
    """Response body chunks between the upstream protocol (push) and the forwarding task (read).

    ``push`` reports whether the buffer went above its high-water mark so the producer can pause reading
    (HTTP/1.1) or simply withhold flow-control credit (HTTP/2, where credit is returned on ``consumed``).
    With a ``sink`` set, chunks go to it instead (nothing is buffered).
    """

    __slots__ = ("_chunks", "size", "eof", "error", "_waiter", "high_water", "sink")

    def __init__(self, high_water: int) -> None:
        self._chunks: deque[bytes] = deque()
        self.size = 0
        self.eof = False
        self.error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.high_water = high_water
        self.sink: BodySink | None = None

    def push(self, data: bytes) -> bool:
        sink = self.sink
        if sink is not None:
            sink.body_chunk(data)
            return False
        self._chunks.append(data)
        self.size += len(data)
        self._wake()
        return self.size > self.high_water

    def finish(self, error: UpstreamError | None = None) -> None:
        if self.eof:
            return
        self.eof = True
        self.error = error
        if self.sink is not None:
            self.sink.body_ended()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> bytes:
        while not self._chunks:
            if self.eof:
                if self.error is not None:
                    raise self.error
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if len(self._chunks) == 1:
            data = self._chunks.popleft()
        else:
            data = b"".join(self._chunks)
            self._chunks.clear()
        self.size -= len(data)
        return data


class UpstreamStream:
    """Base class of one upstream exchange (see the module docstring)."""

    status: int = 0
    headers: Headers

    def send_body(self, data: bytes) -> None:
        raise NotImplementedError

    def end_request(self) -> None:
        raise NotImplementedError

    async def drain(self) -> None:
        raise NotImplementedError

    @property
    def writable(self) -> bool:
        """False while request body bytes wait (write buffer above high water, or no h2 window)."""
        return True

    async def response_head(self) -> tuple[int, Headers]:
        raise NotImplementedError

    async def read(self) -> bytes:
        raise NotImplementedError

    def consumed(self, nbytes: int) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """The client went away: drop the exchange (reset on h2, close the connection on HTTP/1.1)."""
        raise NotImplementedError

    def release(self) -> None:
        """The exchange is over on the proxy's side; the connection may serve others."""

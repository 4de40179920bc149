"""The body of a long-lived response (watch, ``logs -f``) relayed by callbacks, chunk by chunk, from the
upstream protocol to the client connection (issue 9: the cost per relayed watch event).

A ``LiveRelay`` is the ``BodySink`` of one exchange's upstream body (``proxy.upstream.base``) while the
client keeps up: each chunk goes through the response filter, to the client codec, out in one transport
write, and is credited upstream (in batches of ``CREDIT_BATCH``): no future, task wakeup or coroutine step per event, and no
attribute of the exchange or of the connection looked up by name (the relay keeps what it needs,
typed by ``live.pxd`` where compiled). When the client falls behind (the transport paused writing, or
the h2 stream's send window shut) the relay detaches itself from the body (later chunks are buffered
there, their credit withheld) and wakes the exchange's task, which waits for the client and relays
the backlog through ``pass_on`` before attaching the relay again (``Exchange._relay_live``).

What the exchange reports and tells a stopped client comes from here: ``bytes_out`` (the bytes passed
on) and ``at_line_end`` (whether those bytes end a line, so that an ERROR event may follow them); a
protobuf watch's frame boundaries are followed by the exchange's ``FrameBoundary``, fed here.
"""

from __future__ import annotations

from typing import Any

from proxy.protocol.http1 import Http1ServerConnection

# Credit for the bytes passed on is handed upstream (``consumed``) once this much is owed, not per chunk
# (a Python call per watch event saved): far below an h2 stream's window (1 MiB, announced by quarters).
CREDIT_BATCH = 16 * 1024


class LiveRelay:
    """Passes one long-lived body on to one client stream (see the module docstring)."""

    def __init__(self, exchange: Any, stream: Any, filt: Any, frames: Any, note_lines: bool) -> None:
        conn = exchange.conn
        self.exchange = exchange
        self.conn = conn
        self.codec = conn.codec
        # the HTTP/1.1 codec is called directly (a C call where both are compiled); h2 through its methods
        self.h1 = self.codec if isinstance(self.codec, Http1ServerConnection) else None
        self.transport = conn.transport
        self.sid = exchange.sid
        self.filter = filt
        self.frames = frames  # a protobuf watch's FrameBoundary, or None
        self.note_lines = note_lines  # follow whether the bytes passed on end a line (JSON watch, logs)
        self.body = stream.body
        self.credit = stream.consumed
        self.at_line_end = True
        self.bytes_out = 0
        self.held = 0  # bytes passed on but not credited upstream: the client fell behind
        self.owed = 0  # bytes passed on while the client kept up, not credited yet (``CREDIT_BATCH``)

    def pass_on(self, data: bytes) -> bool:
        """One chunk to the client codec, through the response filter if any; False if it kept it all back."""
        filt = self.filter
        if filt is not None:
            data = filt.feed(data)
            if not data:
                return False
        self.bytes_out += len(data)
        if not self.conn.closed:
            h1 = self.h1
            if h1 is not None:
                h1.send_body(self.sid, data, False)
            else:
                self.codec.send_body(self.sid, data)
        frames = self.frames
        if frames is not None:
            frames.feed(data)
        elif self.note_lines:
            self.at_line_end = data[len(data) - 1] == 10  # b"\n" (data is not empty)
        return True

    def body_chunk(self, data: bytes) -> None:
        """A chunk straight from the upstream protocol: out to the client in one write, credited upstream
        unless the client fell behind (then the relay detaches and the exchange's task takes over)."""
        n = len(data)
        try:
            if self.pass_on(data):
                conn = self.conn
                if conn.closed:
                    self._detach(n)
                    return
                h1 = self.h1
                out = h1.data_to_send() if h1 is not None else self.codec.data_to_send()
                if out:
                    self.transport.write(out)
                if conn.write_paused:
                    conn.check_write_buffer()  # a client that reads nothing is cut past client_write_buffer_max
                    self._detach(n)
                    return
                if h1 is None and self.codec.send_window(self.sid) <= 0:
                    self._detach(n)
                    return
            owed = self.owed + n
            if owed >= CREDIT_BATCH:
                owed = 0
                self.credit(self.owed + n)
            self.owed = owed
        except Exception as exc:  # the exchange fails (as its task would), not the upstream connection
            self.body.sink = None
            self.exchange.relay_failed(exc)

    def body_ended(self) -> None:
        self.exchange.wake_relay()

    def settle(self) -> None:
        """Credit upstream what was passed on and is still owed (the exchange's task takes over, or the
        relay ends)."""
        owed = self.owed
        if owed:
            self.owed = 0
            self.credit(owed)

    def _detach(self, held: int) -> None:
        """The client is behind: later chunks wait in the body buffer; the exchange's task waits for the
        client, credits the ``held`` bytes and relays the backlog."""
        self.body.sink = None
        self.settle()  # what went out before this chunk was taken by the client's transport
        self.held = held
        self.exchange.wake_relay()

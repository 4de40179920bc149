"""ClientConnection's idle timer (one per connection, not one per request) on a hand-driven clock: an idle
connection closes after ``idle_timeout`` of no request in flight, counted from when it last went idle,
however many requests came and went before."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.connection import ClientConnection


class FakeLoop:
    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Any, *args: Any) -> FakeTimer:
        timer = FakeTimer(self.now + delay, callback, args)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            due = sorted((t for t in self.timers if not t.cancelled and t.when <= end), key=lambda t: t.when)
            if not due:
                break
            timer = due[0]
            self.timers.remove(timer)
            self.now = timer.when
            timer.callback(*timer.args)
        self.now = end

    def armed(self) -> int:
        return sum(1 for t in self.timers if not t.cancelled)


@dataclass
class FakeTimer:
    when: float
    callback: Any
    args: tuple
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Settings:
    idle_timeout: float = 10.0
    header_timeout: float = 2.0
    http1_max_pipelined: int = 64


@dataclass
class Fwd:
    loop: FakeLoop = field(default_factory=FakeLoop)
    settings: Settings = field(default_factory=Settings)
    shutting_down: bool = False
    closed: list = field(default_factory=list)

    def connection_closed(self, conn: Any) -> None:
        self.closed.append(conn)


class Codec:
    http_version = "1.1"
    must_close = False

    def close(self) -> None:
        pass

    def data_to_send(self) -> bytes:
        return b""


class Transport:
    def __init__(self) -> None:
        self.closing = False

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing


def connection() -> tuple[ClientConnection, Fwd, Transport]:
    fwd = Fwd()
    conn = ClientConnection(fwd, "192.0.2.1")  # type: ignore[arg-type]
    conn.transport = Transport()  # type: ignore[assignment]
    conn.codec = Codec()
    conn._arm_idle()
    return conn, fwd, conn.transport  # type: ignore[return-value]


def request(conn: ClientConnection, fwd: Fwd, sid: int, seconds: float) -> None:
    conn.exchanges[sid] = object()  # type: ignore[assignment]
    fwd.loop.advance(seconds)
    conn.exchange_done(sid)


def test_an_unused_connection_closes_after_the_idle_timeout() -> None:
    conn, fwd, transport = connection()
    fwd.loop.advance(9.9)
    assert not transport.closing
    fwd.loop.advance(0.2)
    assert transport.closing


def test_requests_keep_it_open_and_the_timeout_counts_from_the_last_one() -> None:
    conn, fwd, transport = connection()
    for sid in range(1, 40, 2):  # 20 requests, 1 s apart, for longer than the idle timeout
        fwd.loop.advance(0.5)
        request(conn, fwd, sid, 0.5)
        assert fwd.loop.armed() == 1  # one timer for the connection, not one per request
    assert not transport.closing
    fwd.loop.advance(9.9)
    assert not transport.closing
    fwd.loop.advance(0.2)
    assert transport.closing


def test_a_request_in_flight_at_the_deadline_is_not_cut() -> None:
    conn, fwd, transport = connection()
    fwd.loop.advance(5)
    request(conn, fwd, 1, 30)  # a long request spanning the timer's deadline
    assert not transport.closing
    fwd.loop.advance(9.9)
    assert not transport.closing
    fwd.loop.advance(0.2)
    assert transport.closing

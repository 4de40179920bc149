"""Units of the hostile-client bookkeeping: the throttled log and the memory trimmer (own clocks and
stand-in trim functions: both are pure bookkeeping around a clock and a libc call)."""

from __future__ import annotations

import logging

from proxy.memory import Trimmer
from proxy.throttled_log import ThrottledLog


def test_one_line_a_second_per_reason_and_the_next_says_how_many_were_held(caplog):
    now = [100.0]
    throttled = ThrottledLog(logging.getLogger("test.throttled"), interval=1.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.throttled"):
        assert throttled.info("flood", "cut", {"peer": "a"})
        assert not throttled.info("flood", "cut", {"peer": "b"})
        assert not throttled.info("flood", "cut", {"peer": "c"})
        assert throttled.info("other", "cut", {"peer": "d"})  # another reason has its own budget
        now[0] += 1.0
        assert throttled.info("flood", "cut", {"peer": "e"})
    records = [r for r in caplog.records if r.name == "test.throttled"]
    assert [r.peer for r in records] == ["a", "d", "e"]  # type: ignore[attr-defined]
    assert records[2].suppressed == 2  # type: ignore[attr-defined]


def test_memory_is_trimmed_once_the_connection_count_falls_by_the_drop_and_once_more_later():
    calls: list[int] = []
    trimmer = Trimmer(drop=1000, again=3.0, trim=lambda pad: calls.append(pad) or 1)
    for count in (10, 5000, 10_000, 9_500):
        assert not trimmer.check(count, 0.0)
    assert trimmer.check(8_000, 1.0)  # 2,000 below the peak
    assert not trimmer.check(7_500, 2.0)  # the peak is now 8,000; the follow-up is not due yet
    assert trimmer.check(7_500, 4.0)  # the follow-up (connections free their TLS state late)
    assert not trimmer.check(7_500, 9.0)
    assert trimmer.check(0, 10.0)
    assert calls == [0, 0, 0]

"""Log lines about hostile clients, at most one per reason per interval: a flood of bad connections
must not become a flood of log lines. Lines held back are counted and the next line says how many.

    throttled = ThrottledLog(log, interval=1.0)
    throttled.info("h2_ping_flood", "client connection cut for abuse", {"peer": ip, "reason": reason})
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class ThrottledLog:
    __slots__ = ("_log", "_interval", "_clock", "_last", "_held")

    def __init__(self, log: logging.Logger, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def info(self, key: str, message: str, extra: dict[str, object]) -> bool:
        """Log ``message`` unless a line with this ``key`` was logged within the interval; True if logged."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            extra = {**extra, "suppressed": held}
        self._log.info(message, extra=extra)
        return True

"""Audit events: one JSON line per request and per session (exec/attach/portforward start and end).

``AuditLog(path)`` appends lines to a file (opened once, line-buffered writes through a small in-memory
buffer flushed at least every ``flush_interval`` seconds and at close); any callable taking a dict is an
audit sink too (tests collect events in a list).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

AuditSink = Callable[[dict[str, Any]], None]


class AuditLog:
    def __init__(self, path: str, flush_interval: float = 1.0) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._buf: list[bytes] = []
        self._size = 0
        self._last = time.monotonic()
        self._flush_interval = flush_interval
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, separators=(",", ":"), default=str).encode() + b"\n"
        with self._lock:
            self._buf.append(line)
            self._size += len(line)
            now = time.monotonic()
            if self._size > 64 * 1024 or now - self._last >= self._flush_interval or event.get("event") != "request":
                self._flush_locked(now)

    def flush(self) -> None:
        with self._lock:
            self._flush_locked(time.monotonic())

    def _flush_locked(self, now: float) -> None:
        if self._buf:
            os.write(self._fd, b"".join(self._buf))
            self._buf.clear()
            self._size = 0
        self._last = now

    def close(self) -> None:
        self.flush()
        os.close(self._fd)

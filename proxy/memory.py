"""Give memory back to the system after a crowd of connections has gone.

Each client connection holds tens of KiB in C allocations (OpenSSL, the TLS transport's buffers); when
thousands close at once (a flood of idle connections ends), glibc keeps the freed memory in its arenas
and the process's RSS stays at its peak. ``Trimmer.check(open_connections)``, called by the proxy's
periodic sweep, calls ``malloc_trim(0)`` once the count has fallen by ``drop`` since its peak, and
once more ``again`` seconds later (closing connections free their TLS state a little after they leave
the count: the abort grace of ``ClientConnection._end``). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger("kubegate.proxy.memory")


def _libc_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


class Trimmer:
    __slots__ = ("drop", "again", "_peak", "_due", "_trim")

    def __init__(self, drop: int = 1000, again: float = 3.0, trim: Callable[[int], int] | None = None) -> None:
        self.drop = drop
        self.again = again
        self._peak = 0
        self._due: float | None = None  # when to trim once more after a trim
        self._trim = trim if trim is not None else _libc_malloc_trim()

    def check(self, open_connections: int, now: float) -> bool:
        """True when memory was handed back (the count fell by ``drop`` since its peak, or the follow-up
        of such a trim is due)."""
        if open_connections > self._peak:
            self._peak = open_connections
        if self._trim is None:
            return False
        if self._peak - open_connections >= self.drop:
            self._peak = open_connections
            self._due = now + self.again
        elif self._due is not None and now >= self._due:
            self._due = None
        else:
            return False
        self._trim(0)
        log.info("returned freed memory to the system", extra={"connections": open_connections})
        return True

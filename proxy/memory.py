"""How the process uses the C allocator: TLS reads that cost no system call, and memory given back to
the system after a crowd of connections has gone.

``tune_allocator()`` (called once by each serving process before its loop starts): every TLS read of
uvloop asks ``SSLObject.read`` for up to 256 KiB, and CPython allocates a bytes object of that size,
reads into it and shrinks it to what was read. 256 KiB is above glibc's default mmap threshold
(128 KiB), and the shrunk chunk freed later never raises the adaptive threshold: so each read of a
client's request or an upstream's answer was an ``mmap``, an ``mremap``, a ``munmap`` and page faults
on fresh zeroed pages (6 system calls per proxied GET; ~15 µs of system time per read measured alone).
With the mmap threshold at ``MMAP_THRESHOLD`` and the heap's top trimmed only above
``TRIM_THRESHOLD``, those buffers come from the heap and go back to it: no system call.

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


M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
# Above the 256 KiB (and a bytes object's header) of a TLS read; larger allocations are still mmap-ed.
MMAP_THRESHOLD = 1 << 20
# The heap's free top kept (a read's buffer comes from there and goes back there) before it is trimmed.
TRIM_THRESHOLD = 2 << 20


def _libc_function(name: str) -> Callable[..., int] | None:
    """``name`` from the C library, or None (not glibc: musl has no ``malloc_trim`` nor ``mallopt``)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return getattr(libc, name)  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def _libc_malloc_trim() -> Callable[[int], int] | None:
    return _libc_function("malloc_trim")


def tune_allocator() -> bool:
    """Serve TLS reads from the heap (see the module docstring); False where the C library has no
    ``mallopt`` (nothing changed)."""
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    # Each call returns 1 on success; the order matters not (setting either stops glibc's adapting them).
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


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

"""RFC 3339 timestamps for audit events, as Kubernetes audit writes them (``RFC3339Micro``:
``2026-12-06T22:51:07.123456Z``, UTC, microseconds).

The date-and-seconds part is formatted once per second and reused (one cached string); each call
only adds the microseconds, so stamping every request costs well under a microsecond.
"""

from __future__ import annotations

import time

_second = -1
_prefix = ""


def rfc3339_micro(t: float) -> str:
    """``t`` (Unix seconds, e.g. ``time.time()``) as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    global _second, _prefix
    second = int(t)
    if second != _second:
        _prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = second
    micros = int((t - second) * 1_000_000)
    return f"{_prefix}.{micros:06d}Z"

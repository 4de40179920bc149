"""The audit log's line for a request answered on the fast path (sans-IO: values in, the line's bytes out).

``request_line(parts, request_id, status, latency_ms, now, bytes_out)``: ``parts`` are
``proxy.audit.request_line_parts``, the three pieces of the line that do not change between repeats of
one request on one connection (encoded once, by orjson); the rest goes in between. The line is the one
``proxy.audit.request_audit_event`` would make (same fields, same order, same values): ``time`` is
``now`` (Unix seconds) as ``rfc3339_micro`` writes it, and ``latency_ms`` is ``round(latency_ms, 3)`` as
orjson writes it (its shortest form: ``12.3``, ``0.0``): the same correctly rounded digits as ``%.3f``,
less their trailing zeros.

Compiled by Cython (``audit_line.pxd``: the numbers written in C and the pieces copied into one new
``bytes``, in the ``.pxd``'s ``_formatted``), the line costs well under a thousand instructions; as
Python (where nothing was built, or ``KUBEGATE_PURE_PYTHON=1``), two ``bytes`` ``%`` formats, ~5,000
more. The caller reads the clocks.
"""

from __future__ import annotations

from proxy.timestamps import date_and_second

try:
    import cython
except ImportError:  # run as Python where Cython is not installed (as in relayed_head.py)
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)  # type: ignore[assignment]

_second = -1  # the Unix second whose date and time ``_date`` is (``proxy.timestamps.date_and_second``)
_date = b""


def request_line(
    parts: tuple[bytes, bytes, bytes], request_id: bytes, status: int, latency_ms: float, now: float, bytes_out: int
) -> bytes:
    """See the module docstring."""
    global _second, _date
    second = int(now)
    micro = int((now - second) * 1_000_000)
    if second != _second:
        _date = date_and_second(second)
        _second = second
    if cython.compiled:
        line = _formatted(  # noqa: F821 - defined in audit_line.pxd (C)
            parts[0], parts[1], parts[2], _date, micro, request_id, status, latency_ms, bytes_out)
        if line is not None:
            return line
    latency = (b"%.3f" % latency_ms).rstrip(b"0")
    if latency[-1] == 46:  # b".": a whole number of milliseconds is written "12.0"
        latency += b"0"
    return b'{"event":"request","time":"%s.%06dZ","request_id":"%s"%s%d%s%s,"bytes_out":%d%s' % (
        _date, micro, request_id, parts[0], status, parts[1], latency, bytes_out, parts[2],
    )

# C declarations for audit_line.py, compiled by Cython in pure-Python mode (setup.py), and the C formatting
# its compiled build uses (``_formatted``); the .py's own formatting runs where nothing was built.
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.math cimport floor
from libc.stdio cimport snprintf
from libc.string cimport memcpy

cdef long _second
cdef bytes _date


cdef inline int _decimal(char* out, unsigned long long value):
    """``value`` in decimal digits at ``out`` (at most 20); their number."""
    cdef char reversed_digits[20]
    cdef int n = 0
    cdef int i
    while True:
        reversed_digits[n] = <char>(48 + value % 10)
        n += 1
        value //= 10
        if value == 0:
            break
    for i in range(n):
        out[i] = reversed_digits[n - 1 - i]
    return n


cdef inline int _milliseconds(char* out, double ms):
    """``ms`` as ``round(ms, 3)`` as orjson writes it (the digits of ``%.3f`` less trailing zeros, at least
    one after the point) at ``out`` (at most 63 bytes); its length. Rounded in integers when ``ms * 1000``
    is clear of a half (the product's error, < 1e-6 below 1e9, cannot move it across one); else, and for
    latencies past 11 days, by ``snprintf`` (C's correctly rounded ``%.3f``, as Python's)."""
    cdef double scaled = ms * 1000.0
    cdef double whole
    cdef unsigned long long thousandths
    cdef int n
    if 0.0 <= scaled < 1e9:
        whole = floor(scaled)
        if not (0.4999 < scaled - whole < 0.5001):
            thousandths = <unsigned long long>whole
            if scaled - whole > 0.5:
                thousandths += 1
            n = _decimal(out, thousandths // 1000)
            out[n] = b'.'
            out[n + 1] = <char>(48 + thousandths // 100 % 10)
            out[n + 2] = <char>(48 + thousandths // 10 % 10)
            out[n + 3] = <char>(48 + thousandths % 10)
            n += 4
            return _without_trailing_zeros(out, n)
    n = snprintf(out, 64, "%.3f", ms)
    if n <= 0 or n >= 64:
        return -1
    return _without_trailing_zeros(out, n)


cdef inline int _without_trailing_zeros(char* out, int n):
    while out[n - 1] == b'0':
        n -= 1
    if out[n - 1] == b'.':
        n += 1  # "12." -> "12.0" (the digit after the point is the '0' just stripped)
    return n


cdef inline char* _put(char* at, const char* piece, Py_ssize_t size):
    memcpy(at, piece, size)
    return at + size


cdef inline object _formatted(bytes part0, bytes part1, bytes part2, bytes date, long micro, bytes request_id,
                              long status, double latency_ms, long long bytes_out):
    """The line, its numbers written by ``_decimal`` and ``_milliseconds`` and its pieces copied into the
    one new ``bytes``; None for what the .py formats (a negative number, a latency C cannot write)."""
    cdef char latency[64]
    cdef char status_digits[20]
    cdef char out_digits[20]
    cdef char micro_digits[6]
    cdef int latency_size, status_size, out_size, i
    if micro < 0 or micro > 999999 or status < 0 or bytes_out < 0:
        return None
    latency_size = _milliseconds(latency, latency_ms)
    if latency_size < 0:
        return None
    status_size = _decimal(status_digits, <unsigned long long>status)
    out_size = _decimal(out_digits, <unsigned long long>bytes_out)
    for i in range(6):
        micro_digits[5 - i] = <char>(48 + micro % 10)
        micro //= 10
    cdef Py_ssize_t size = (
        27 + PyBytes_GET_SIZE(date) + 1 + 6 + 17 + PyBytes_GET_SIZE(request_id) + 1 + PyBytes_GET_SIZE(part0)
        + status_size + PyBytes_GET_SIZE(part1) + latency_size + 13 + out_size + PyBytes_GET_SIZE(part2)
    )
    line = PyBytes_FromStringAndSize(NULL, size)
    cdef char* at = PyBytes_AS_STRING(line)
    at = _put(at, '{"event":"request","time":"', 27)
    at = _put(at, PyBytes_AS_STRING(date), PyBytes_GET_SIZE(date))
    at = _put(at, ".", 1)
    at = _put(at, micro_digits, 6)
    at = _put(at, 'Z","request_id":"', 17)
    at = _put(at, PyBytes_AS_STRING(request_id), PyBytes_GET_SIZE(request_id))
    at = _put(at, '"', 1)
    at = _put(at, PyBytes_AS_STRING(part0), PyBytes_GET_SIZE(part0))
    at = _put(at, status_digits, status_size)
    at = _put(at, PyBytes_AS_STRING(part1), PyBytes_GET_SIZE(part1))
    at = _put(at, latency, latency_size)
    at = _put(at, ',"bytes_out":', 13)
    at = _put(at, out_digits, out_size)
    _put(at, PyBytes_AS_STRING(part2), PyBytes_GET_SIZE(part2))
    return line


@cython.locals(second=long, micro=long, line=object)
cpdef bytes request_line(tuple parts, bytes request_id, long status, double latency_ms, double now, long long bytes_out)

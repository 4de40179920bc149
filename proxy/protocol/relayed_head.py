"""Which upstream answer heads the HTTP/1.1 fast path relays as the upstream's bytes (sans-IO: bytes in,
a decision out).

``relayable_head(head)``: ``head`` is an answer's head as the upstream sent it, ending with the blank
line. It may be relayed as it is when it says HTTP/1.1, has a final status with a body (not 1xx, 204 or
304), frames its body by exactly one ``Content-Length`` (digits only, at most 18), and holds no
hop-by-hop field (``Connection`` other than a plain ``keep-alive``, ``Keep-Alive``,
``Transfer-Encoding``, ``TE``, ``Trailer(s)``, ``Upgrade``, ``Proxy-*``, ``HTTP2-Settings``) nor the
request id kubegate sets. The answer: (the head with its first ``Connection: keep-alive`` line
dropped, the status, the body's length), or None (the parsed path takes the answer). The upstream's
own parser checks the head's syntax; this only reads it.

One pass over the head's lines, each looked at by its name (up to its first colon): compiled by
Cython (``relayed_head.pxd``) the positions are C integers and the bytes are read in place; run as
Python, the scans are ``bytes.find`` calls. Specified by ``tests/proxy/test_proxy_relayable_heads.py``,
which also checks it against the same rules written as regular expressions.
"""

from __future__ import annotations

from proxy.headers import HOP_BY_HOP, REQUEST_ID_HEADER

try:
    import cython
except ImportError:  # run as Python where Cython is not installed: the same as Cython's own shadow module says
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)  # type: ignore[assignment]

# What the parsed path drops from an answer (``proxy.headers``): the hop-by-hop names and kubegate's
# request id. A Connection field is looked at on its own (a plain keep-alive passes), and "proxy-*" by
# its prefix below.
_REFUSED_NAMES = (HOP_BY_HOP - {b"connection"}) | {REQUEST_ID_HEADER}
_PROXY_NAME_BYTES = frozenset(range(0x21, 0x7F)) - {0x3A}  # what may follow "proxy-" in a refused name
_SPACE, _TAB, _COLON, _CR = 0x20, 0x09, 0x3A, 0x0D
_FIRST_LETTERS = frozenset(b"cktuphxCKTUPHX")  # the first letters of every name looked at


def _line_end(head: bytes, start: int, n: int) -> int:
    """Where the line starting at ``start`` ends (its "\\r\\n"), or -1: a C loop compiled, one
    ``bytes.find`` as Python (a method call costs compiled code as much as the loop)."""
    if cython.compiled:
        while start + 1 < n:
            if head[start] == _CR and head[start + 1] == 0x0A:
                return start
            start += 1
        return -1
    return head.find(b"\r\n", start)


def _colon(head: bytes, start: int, end: int) -> int:
    """The first colon in ``head[start:end]``, or -1 (as ``_line_end``)."""
    if cython.compiled:
        while start < end:
            if head[start] == _COLON:
                return start
            start += 1
        return -1
    return head.find(b":", start, end)


def relayable_head(head: bytes) -> tuple[bytes, int, int] | None:
    """See the module docstring."""
    n = len(head)
    if n < 13 or not head.startswith(b"HTTP/1.1 "):
        return None
    code = head[9:12]
    if not code.isdigit() or head[12] not in (_SPACE, _CR):
        return None
    status = int(code)
    if status < 200 or status == 204 or status == 304:
        return None
    length = -1
    keep_alive_at = -1  # where the first "Connection: keep-alive" line starts (its "\r\n")
    at = _line_end(head, 0, n)
    while at >= 0:
        start = at + 2
        end = _line_end(head, start, n)
        if end <= start:  # the blank line: the end of the head
            break
        if head[start] in _FIRST_LETTERS:
            colon = _colon(head, start, end)
            if colon > start:
                stop = colon
                while stop > start and head[stop - 1] in (_SPACE, _TAB):
                    stop -= 1
                name = head[start:stop].lower()
                if name == b"content-length":
                    if stop != colon or length != -1:  # "content-length :" or a second one
                        return None
                    value = head[colon + 1 : end].strip(b" \t")
                    if not value.isdigit() or len(value) > 18:
                        return None
                    length = int(value)
                elif name == b"connection":
                    if stop != colon or head[colon + 1 : end].strip(b" \t").lower() != b"keep-alive":
                        return None
                    if keep_alive_at < 0:
                        keep_alive_at = at
                elif name in _REFUSED_NAMES:
                    return None
                elif name.startswith(b"proxy-"):
                    for byte in name[6:]:
                        if byte not in _PROXY_NAME_BYTES:
                            break
                    else:  # "proxy-" and a token: a proxy's hop-by-hop field
                        return None
        at = end
    if length < 0:
        return None
    if keep_alive_at >= 0:
        head = head[:keep_alive_at] + head[_line_end(head, keep_alive_at + 2, n) :]
    return head, status, length

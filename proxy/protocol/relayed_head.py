# cython: boundscheck=False, wraparound=False
"""Which upstream answer heads the HTTP/1.1 fast path relays as the upstream's bytes (sans-IO: bytes in,
a decision out).

``relayable_head(data, request_id)``: ``data`` is an answer's head as the upstream sent it, up to and
with its blank line, and whatever followed it in the same read (the body's first bytes). It may be relayed as it is when it says HTTP/1.1, has a final status with a body (not 1xx, 204 or
304), frames its body by exactly one ``Content-Length`` (digits only, at most 18), and holds no
hop-by-hop field (``Connection`` other than a plain ``keep-alive``, ``Keep-Alive``,
``Transfer-Encoding``, ``TE``, ``Trailer(s)``, ``Upgrade``, ``Proxy-*``, ``HTTP2-Settings``) nor the
request id kubegate sets. The answer: (the head with its first ``Connection: keep-alive`` line
dropped and, when ``request_id`` is given, the field ``x-kubegate-request-id: <request_id>`` added last;
then the body's bytes that followed it in ``data``, as they are; the status; the body's length; the
size of the relayed head), or None (the parsed path takes the answer; so for bytes that hold no whole
head). The upstream's
own parser checks the head's syntax; this only reads it.

One pass over the head's lines, each looked at by its name (up to its first colon): compiled by
Cython (``relayed_head.pxd``) the positions are C integers and the bytes are read in place; run as
Python, the scans are ``bytes.find`` calls, and the relayed head is written once, in place. Specified by ``tests/proxy/test_proxy_relayable_heads.py``,
which also checks it against the same rules written as regular expressions.
"""

from __future__ import annotations

from proxy.headers import HOP_BY_HOP, REQUEST_ID_HEADER
from proxy.protocol.h2wire import (
    CONTENT_LENGTH_PREFIX,
    NAME_PREFIX,
    STATUS_FIELD,
    encode_response_block,
    field_name_prefix,
)

try:
    import cython
except ImportError:  # run as Python where Cython is not installed: the same as Cython's own shadow module says
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)  # type: ignore[assignment]

# What the parsed path drops from an answer (``proxy.headers``): the hop-by-hop names and kubegate's
# request id. A Connection field is looked at on its own (a plain keep-alive passes), and "proxy-*" by
# its prefix below.
_REFUSED_NAMES = (HOP_BY_HOP - {b"connection"}) | {REQUEST_ID_HEADER}
_REFUSED_LIST = tuple(sorted(_REFUSED_NAMES))  # the same, walked by the compiled name check
_PROXY_NAME_BYTES = frozenset(range(0x21, 0x7F)) - {0x3A}  # what may follow "proxy-" in a refused name
_PROXY_NAME_TABLE = bytes(sorted(_PROXY_NAME_BYTES))  # the same, for bytes.translate
_SPACE, _TAB, _COLON, _CR = 0x20, 0x09, 0x3A, 0x0D
_ID_FIELD = REQUEST_ID_HEADER + b": "  # the field ``request_id`` is given in
_ID_PREFIX = field_name_prefix(REQUEST_ID_HEADER)  # its name's prefix in an HTTP/2 block (``relayed_block``)
# Whether a line's first byte may begin a name looked at (the names above, "content-length", "connection",
# "proxy-"), by byte: one index, compiled or not.
_FIRST_LETTERS = frozenset(bytes([name[0] for name in (*_REFUSED_NAMES, b"content-length", b"connection", b"proxy-")]))
_LOOKED_AT = bytes([byte | 0x20 in _FIRST_LETTERS if 0x41 <= byte <= 0x5A else byte in _FIRST_LETTERS for byte in range(256)])
# What ``_field_kind`` says of a field's name
_OTHER, _CONTENT_LENGTH, _CONNECTION, _REFUSED = 0, 1, 2, 3


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


def _lower_is(head: bytes, start: int, stop: int, word: bytes) -> bool:
    """Whether ``head[start:stop]``, lower-cased, is ``word`` (lower case): compared in place compiled."""
    if cython.compiled:
        n = len(word)
        if stop - start != n:
            return False
        for i in range(n):
            byte = head[start + i]
            if 0x41 <= byte <= 0x5A:
                byte += 0x20
            if byte != word[i]:
                return False
        return True
    return head[start:stop].lower() == word


def _field_kind(head: bytes, start: int, stop: int) -> int:
    """What the field named ``head[start:stop]`` (no blanks at its end) is to ``relayable_head``:
    ``_CONTENT_LENGTH``, ``_CONNECTION``, ``_REFUSED`` (a hop-by-hop name, "proxy-" and a token, or
    kubegate's request id) or ``_OTHER``. Compiled, the name is compared in place; as Python, it is
    lower-cased once and looked up."""
    if cython.compiled:
        if _lower_is(head, start, stop, b"content-length"):
            return _CONTENT_LENGTH
        if _lower_is(head, start, stop, b"connection"):
            return _CONNECTION
        for word in _REFUSED_LIST:
            if _lower_is(head, start, stop, word):
                return _REFUSED
        if stop - start >= 6 and _lower_is(head, start, start + 6, b"proxy-"):
            for i in range(start + 6, stop):
                byte = head[i]
                if byte < 0x21 or byte > 0x7E or byte == _COLON:
                    return _OTHER
            return _REFUSED  # "proxy-" and a token: a proxy's hop-by-hop field
        return _OTHER
    name = head[start:stop].lower()
    if name == b"content-length":
        return _CONTENT_LENGTH
    if name == b"connection":
        return _CONNECTION
    if name in _REFUSED_NAMES:
        return _REFUSED
    if name.startswith(b"proxy-") and not name[6:].translate(None, _PROXY_NAME_TABLE):
        return _REFUSED  # "proxy-" and a token (nothing left once its bytes are deleted)
    return _OTHER


def _value_start(head: bytes, start: int, end: int) -> int:
    """Where a field's value in ``head[start:end]`` begins: past its leading blanks."""
    while start < end and (head[start] == _SPACE or head[start] == _TAB):
        start += 1
    return start


def _value_end(head: bytes, start: int, end: int) -> int:
    """Where a field's value in ``head[start:end]`` ends: before its trailing blanks."""
    while end > start and (head[end - 1] == _SPACE or head[end - 1] == _TAB):
        end -= 1
    return end


def _length_value(head: bytes, start: int, end: int) -> int:
    """The number a Content-Length value in ``head[start:end]`` (blanks stripped) is: digits only, at most
    18 of them; -1 for anything else."""
    if end <= start or end - start > 18:
        return -1
    if cython.compiled:
        length = 0
        for i in range(start, end):
            byte = head[i]
            if byte < 0x30 or byte > 0x39:
                return -1
            length = length * 10 + (byte - 0x30)
        return length
    value = head[start:end]
    return int(value) if value.isdigit() else -1


def relayable_head(head: bytes, request_id: bytes = b"") -> tuple[bytes, int, int, int] | None:
    """See the module docstring."""
    n = len(head)
    if n < 13 or not head.startswith(b"HTTP/1.1 "):
        return None
    status = _length_value(head, 9, 12)  # three digits
    if status < 200 or status == 204 or status == 304 or (head[12] != _SPACE and head[12] != _CR):
        return None
    length = -1
    keep_alive_at = -1  # where the first "Connection: keep-alive" line starts (its "\r\n")
    at = _line_end(head, 0, n)
    while at >= 0:
        start = at + 2
        end = _line_end(head, start, n)
        if end < 0:  # no blank line in these bytes: not a whole head
            return None
        if end == start:  # the blank line: the end of the head
            break
        if _LOOKED_AT[head[start]]:
            colon = _colon(head, start, end)
            if colon > start:
                stop = colon
                while stop > start and (head[stop - 1] == _SPACE or head[stop - 1] == _TAB):
                    stop -= 1
                kind = _field_kind(head, start, stop)
                if kind == _CONTENT_LENGTH:
                    if stop != colon or length != -1:  # "content-length :" or a second one
                        return None
                    value_start = _value_start(head, colon + 1, end)
                    length = _length_value(head, value_start, _value_end(head, value_start, end))
                    if length < 0:
                        return None
                elif kind == _CONNECTION:
                    value_start = _value_start(head, colon + 1, end)
                    if stop != colon or not _lower_is(
                        head, value_start, _value_end(head, value_start, end), b"keep-alive"
                    ):
                        return None
                    if keep_alive_at < 0:
                        keep_alive_at = at
                elif kind == _REFUSED:
                    return None
        at = end
    if length < 0 or at < 0:
        return None
    body_at = at + 4  # past the blank line
    if keep_alive_at >= 0:
        cut_from, cut_to = keep_alive_at, _line_end(head, keep_alive_at + 2, n)
    elif request_id:
        cut_from = cut_to = body_at - 2
    else:
        return head, status, length, body_at
    relayed = _spliced(head, body_at, cut_from, cut_to, request_id)
    return relayed, status, length, len(relayed) - (n - body_at)


def _spliced(head: bytes, body_at: int, cut_from: int, cut_to: int, request_id: bytes) -> bytes:
    """The head (``head[:body_at]``) without ``head[cut_from:cut_to]``, with the field
    ``x-kubegate-request-id: request_id`` added last when ``request_id`` is given, then the body's bytes
    that followed it (``head[body_at:]``): compiled, written once, in place."""
    n = len(head)
    if cython.compiled:
        extra = len(_ID_FIELD) + len(request_id) + 2 if request_id else 0
        size = n - (cut_to - cut_from) + extra
        spliced = PyBytes_FromStringAndSize(cython.NULL, size)  # noqa: F821 - cimported by the .pxd
        out = PyBytes_AS_STRING(spliced)  # noqa: F821 - written before anything else sees it
        src = PyBytes_AS_STRING(head)  # noqa: F821
        memcpy(out, src, cut_from)  # noqa: F821
        tail = body_at - cut_to - 2  # the rest of the head but its blank line's "\r\n"
        memcpy(out + cut_from, src + cut_to, tail)  # noqa: F821
        at = cut_from + tail
        if request_id:
            memcpy(out + at, PyBytes_AS_STRING(_ID_FIELD), len(_ID_FIELD))  # noqa: F821
            at += len(_ID_FIELD)
            memcpy(out + at, PyBytes_AS_STRING(request_id), len(request_id))  # noqa: F821
            at += len(request_id)
            memcpy(out + at, b"\r\n", 2)  # noqa: F821
            at += 2
        memcpy(out + at, b"\r\n", 2)  # noqa: F821
        memcpy(out + at + 2, src + body_at, n - body_at)  # noqa: F821
        return spliced
    added = _ID_FIELD + request_id + b"\r\n" if request_id else b""
    return head[:cut_from] + head[cut_to : body_at - 2] + added + b"\r\n" + head[body_at:]


def relayed_fields(data: bytes, request_id: bytes) -> tuple[list[tuple[bytes, bytes]], int, int, bytes] | None:
    """The answer ``relayable_head`` allows in ``data`` (its first read) as fields, for a codec that writes
    its own head (HTTP/2): (the head's fields, names lower-cased and values without their surrounding blanks
    as the parsed path has them,
    a plain ``Connection: keep-alive`` left out and ``x-kubegate-request-id: request_id`` added last; the
    status; the body's length; the body's bytes that came in ``data``), or None (``relayable_head`` says
    no, or a line is not ``name: value``, e.g. a folded one: the parsed path takes the answer)."""
    relayable = relayable_head(data)
    if relayable is None:
        return None
    head, status, length, head_size = relayable
    fields = _fields(head, head_size)
    if fields is None:
        return None
    fields.append((REQUEST_ID_HEADER, request_id))
    return fields, status, length, head[head_size:] if head_size < len(head) else b""


def relayed_block(data: bytes, request_id: bytes) -> tuple[bytes, int, int, bytes] | None:
    """What ``relayed_fields`` gives, with the fields already encoded as the HTTP/2 codec encodes a response
    head (``h2wire.encode_response_block``: the same bytes): (the HPACK block, the status, the body's
    length, the body's bytes that came in ``data``), or None. Compiled, the block is written in one pass
    over the head's lines, each name's prefix looked up and each value copied from the head in place: no
    field list, no ``bytes`` per value (``tests/proxy/test_proxy_relayed_block.py`` checks it against the
    two steps it replaces); run as Python, it is those two steps."""
    if not cython.compiled:
        taken = relayed_fields(data, request_id)
        if taken is None:
            return None
        fields, status, length, body = taken
        return encode_response_block(status, fields, length), status, length, body
    relayable = relayable_head(data)
    if relayable is None:
        return None
    head, status, length, head_size = relayable
    block = _encoded_block(head, head_size, status, length, request_id)
    if block is None:
        return None
    return block, status, length, head[head_size:] if head_size < len(head) else b""


def _encoded_block(head: bytes, head_size: int, status: int, length: int, request_id: bytes) -> bytes | None:
    """The block ``relayed_block`` gives, written in place (compiled only; see there)."""
    status_field = STATUS_FIELD[status]
    id_prefix = _ID_PREFIX
    # Each field's encoding is at most 5 bytes longer than its line (at least 3: ":" and "\r\n"), so
    # three times the head is room enough; then the status, the request id and a content-length.
    bound = 3 * head_size + len(status_field) + len(id_prefix) + len(request_id) + 8 + 1 + 1 + 20
    block = PyBytes_FromStringAndSize(cython.NULL, bound)  # noqa: F821 - cimported by the .pxd
    out = PyBytes_AS_STRING(block)  # noqa: F821 - written before anything else sees it
    src = PyBytes_AS_STRING(head)  # noqa: F821
    pos = _put(out, 0, status_field)
    names = NAME_PREFIX
    counted = False
    # The same walk over the lines as ``_fields`` (which the pure-Python path and ``relayed_fields`` use):
    # kept as its own loop so that nothing per field is made here but the name looked up.
    at = _line_end(head, 0, head_size)
    end_of_fields = head_size - 4
    while at < end_of_fields:
        start = at + 2
        end = _line_end(head, start, head_size)
        colon = _colon(head, start, end)
        if colon <= start or head[start] == _SPACE or head[start] == _TAB:
            return None
        stop = colon
        while head[stop - 1] == _SPACE or head[stop - 1] == _TAB:
            stop -= 1
        value_start = _value_start(head, colon + 1, end)
        value_end = _value_end(head, value_start, end)
        name = _lowered(head, start, stop)
        prefix = names.get(name)
        if prefix is None:
            prefix = field_name_prefix(name)
        at = end
        if len(prefix) == 0:  # connection-specific: never sent
            continue
        if prefix is CONTENT_LENGTH_PREFIX:
            counted = True
        pos = _put(out, pos, prefix)
        pos = _put_length(out, pos, value_end - value_start)
        memcpy(out + pos, src + value_start, value_end - value_start)  # noqa: F821
        pos += value_end - value_start
    pos = _put(out, pos, id_prefix)
    pos = _put_length(out, pos, len(request_id))
    pos = _put(out, pos, request_id)
    if not counted:
        length_text = b"%d" % length
        pos = _put(out, pos, CONTENT_LENGTH_PREFIX)
        pos = _put_length(out, pos, len(length_text))
        pos = _put(out, pos, length_text)
    return block[:pos]


def _put(out: object, pos: int, data: bytes) -> int:
    """``data`` written at ``out + pos`` (compiled only); the position after it."""
    memcpy(out + pos, PyBytes_AS_STRING(data), len(data))  # noqa: F821
    return pos + len(data)


def _put_length(out: object, pos: int, size: int) -> int:
    """An HPACK string length (RFC 7541 §5.1, 7-bit prefix, no Huffman) at ``out + pos`` (compiled only)."""
    if size < 127:
        out[pos] = size
        return pos + 1
    out[pos] = 127
    pos += 1
    size -= 127
    while size >= 128:
        out[pos] = (size & 0x7F) | 0x80
        pos += 1
        size >>= 7
    out[pos] = size
    return pos + 1


def _fields(head: bytes, head_size: int) -> list[tuple[bytes, bytes]] | None:
    """The ``name: value`` lines of ``head[:head_size]`` past its status line (see ``relayed_fields``)."""
    fields = []
    at = _line_end(head, 0, head_size)
    end_of_fields = head_size - 4  # the last field line's "\r\n" (the blank line's follows it)
    while at < end_of_fields:
        start = at + 2
        end = _line_end(head, start, head_size)
        colon = _colon(head, start, end)
        if colon <= start or head[start] == _SPACE or head[start] == _TAB:
            return None
        stop = colon
        while head[stop - 1] == _SPACE or head[stop - 1] == _TAB:
            stop -= 1
        value_start = _value_start(head, colon + 1, end)
        fields.append((_lowered(head, start, stop), head[value_start : _value_end(head, value_start, end)]))
        at = end
    return fields


def _lowered(head: bytes, start: int, stop: int) -> bytes:
    """``head[start:stop].lower()``: compiled, made in place."""
    if cython.compiled:
        lowered = PyBytes_FromStringAndSize(cython.NULL, stop - start)  # noqa: F821 - cimported by the .pxd
        out = PyBytes_AS_STRING(lowered)  # noqa: F821 - written before anything else sees it
        for i in range(stop - start):
            byte = head[start + i]
            out[i] = byte + 0x20 if 0x41 <= byte <= 0x5A else byte
        return lowered
    return head[start:stop].lower()


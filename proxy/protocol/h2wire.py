"""HTTP/2 wire vocabulary for the server codec (``proxy.protocol.http2``): frame and setting numbers,
the 9-byte frame header, response header blocks (HPACK encoding without a dynamic table), and the
checks RFC 9113 §8 makes of a request's decoded header fields.

Pure functions and constants: no state, no I/O.
"""

from __future__ import annotations

import re
import struct

from hpack.table import HeaderTable

from proxy.protocol.events import Headers

# Frame types (RFC 9113 §6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
# Flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# Error codes (RFC 9113 §7).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB
ERROR_NAMES = {
    0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR", 0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED", 0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM", 0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR", 0xA: "CONNECT_ERROR", 0xB: "ENHANCE_YOUR_CALM", 0xC: "INADEQUATE_SECURITY",
    0xD: "HTTP_1_1_REQUIRED",
}  # fmt: skip
# Settings (RFC 9113 §6.5.2, RFC 8441).
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6
ENABLE_CONNECT_PROTOCOL = 0x8

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_WINDOW = 65535
DEFAULT_MAX_FRAME = 16384
MAX_WINDOW = 2**31 - 1
MAX_FRAME_CEILING = 2**24 - 1

FRAME_HEADER = struct.Struct(">HBBBL")  # 24-bit length (as 16 + 8), type, flags, stream id
U32 = struct.Struct(">L")
SETTING = struct.Struct(">HL")
GOAWAY_BODY = struct.Struct(">LL")


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    size = len(payload)
    return FRAME_HEADER.pack(size >> 8, size & 0xFF, kind, flags, stream_id) + payload


def rst_stream(stream_id: int, code: int) -> bytes:
    return FRAME_HEADER.pack(0, 4, RST_STREAM, 0, stream_id) + U32.pack(code)


def window_update(stream_id: int, increment: int) -> bytes:
    return FRAME_HEADER.pack(0, 4, WINDOW_UPDATE, 0, stream_id) + U32.pack(increment)


def goaway(last_stream_id: int, code: int) -> bytes:
    return FRAME_HEADER.pack(0, 8, GOAWAY, 0, 0) + GOAWAY_BODY.pack(last_stream_id, code)


def settings(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(SETTING.pack(ident, value) for ident, value in values.items()))


def all_indexed(block: bytes) -> bool:
    """True when every field of an HPACK block is an indexed field representation (RFC 7541 §6.1): such a
    block neither reads nor changes anything but the tables, so it decodes to the same fields for as
    long as the dynamic table is unchanged. (Only the representation types are read, nothing decoded.)"""
    i = 0
    n = len(block)
    while i < n:
        first = block[i]
        if not first & 0x80:
            return False
        i += 1
        if first == 0xFF:  # the index continues in 7-bit groups
            while i < n and block[i] & 0x80:
                i += 1
            i += 1
    return True


# --- response header blocks ------------------------------------------------------------------------
# Response heads are encoded statelessly: ":status" indexed or literal, every other field a "literal
# without indexing" (the static table's name index when there is one, else the literal name), no
# Huffman. Such blocks never touch the peer's dynamic table, so the codec needs no HPACK encoder state.


def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    """RFC 7541 §5.1 integer with an N-bit prefix; ``first`` holds the representation's high bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_STATIC_NAME_INDEX: dict[bytes, int] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, 1):
    _STATIC_NAME_INDEX.setdefault(_name, _index)
_STATUS_FIELD: dict[int, bytes] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, 1):
    if _name == b":status":
        _STATUS_FIELD[int(_value)] = bytes((0x80 | _index,))  # fully indexed
for _code in range(100, 600):
    # literal without indexing, name = static ":status" (index 8), 3-byte value
    _STATUS_FIELD.setdefault(_code, b"\x08\x03" + str(_code).encode())
_NAME_PREFIX: dict[bytes, bytes] = {}  # header name as given -> encoded representation + name part
_NAME_CACHE_MAX = 2048
_SMALL_LENGTH = [bytes((n,)) for n in range(127)]


_HOP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"))
_SKIP = b""  # the prefix remembered for connection-specific names (RFC 9113 §8.2.2): never sent
_CONTENT_LENGTH = _hpack_int(_STATIC_NAME_INDEX[b"content-length"], 4, 0x00)


def _name_prefix(name: bytes) -> bytes:
    lower = name.lower()
    index = _STATIC_NAME_INDEX.get(lower)
    if lower in _HOP:
        prefix = _SKIP
    elif lower == b"content-length":
        prefix = _CONTENT_LENGTH  # this very object: encode_response_block tells it by identity
    elif index is not None:
        prefix = _hpack_int(index, 4, 0x00)
    else:
        prefix = b"\x00" + _hpack_int(len(lower), 7, 0x00) + lower
    if len(_NAME_PREFIX) < _NAME_CACHE_MAX:
        _NAME_PREFIX[name] = prefix
    return prefix


# What ``relayed_head.relayed_block`` writes a block from (the same encoding, made in one pass from an
# HTTP/1.1 answer's head): the status fields, the name prefixes remembered so far (lower-case name →
# prefix; ``_SKIP``, empty, for a connection-specific name), the content-length prefix (told by identity).
STATUS_FIELD = _STATUS_FIELD
NAME_PREFIX = _NAME_PREFIX
CONTENT_LENGTH_PREFIX = _CONTENT_LENGTH


def field_name_prefix(name: bytes) -> bytes:
    """The prefix a field named ``name`` starts with in a response block (remembered: ``NAME_PREFIX``)."""
    prefix = _NAME_PREFIX.get(name)
    return prefix if prefix is not None else _name_prefix(name)


def encode_response_block(status: int, headers: Headers, content_length: int | None = None) -> bytes:
    """An HPACK header block for a response head (see above); names are lower-cased, connection-specific
    fields left out, and ``content_length`` added unless the headers carry a content-length."""
    parts = [_STATUS_FIELD[status]]  # a field's parts are joined once with the rest: no bytes per field
    names = _NAME_PREFIX
    for name, value in headers:
        prefix = names.get(name)
        if prefix is None:
            prefix = _name_prefix(name)
        if not prefix:  # _SKIP
            continue
        if prefix is _CONTENT_LENGTH:
            content_length = None
        size = len(value)
        parts.append(prefix)
        parts.append(_SMALL_LENGTH[size] if size < 127 else _hpack_int(size, 7, 0x00))
        parts.append(value)
    if content_length is not None:
        value = b"%d" % content_length
        parts.append(_CONTENT_LENGTH)
        parts.append(_SMALL_LENGTH[len(value)])
        parts.append(value)
    return b"".join(parts)


# --- request header fields (RFC 9113 §8.1-8.3) -----------------------------------------------------

_WS = (0x20, 0x09)
_BAD_NAME = re.compile(rb"[\x00-\x20A-Z\x7f-\xff]")  # RFC 9113 §8.2.1 (":" only leads pseudo-headers)
_CONNECTION_SPECIFIC = frozenset((b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"))
_GOOD_NAMES: set[bytes] = set()  # regular request header names already found valid (process-wide, bounded)


class Refusal:
    """Why a request head is refused: 400 (malformed: RST_STREAM PROTOCOL_ERROR) or 431 (too large:
    answered with a ``Status`` on its stream)."""

    __slots__ = ("status", "message")

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


def _malformed(message: str) -> Refusal:
    return Refusal(400, f"malformed request: {message}")


# method, target, authority, scheme, regular headers, content-length (None when absent)
RequestFields = tuple[str, str, str, str, Headers, "int | None"]


def request_fields(fields: list[tuple[bytes, bytes]], max_head: int) -> RequestFields | Refusal:
    """Check a request's decoded header fields (RFC 9113 §8.1.1, §8.2, §8.3) in one pass, lifting the
    pseudo-headers and joining cookies (§8.2.3); a ``Refusal`` when the head is malformed or larger
    than ``max_head`` (field sizes counted as for SETTINGS_MAX_HEADER_LIST_SIZE)."""
    method = target = authority = scheme = None
    headers: Headers = []
    size = 0
    content_length: int | None = None
    host: bytes | None = None
    cookies: list[bytes] | None = None
    regular = False
    good_names = _GOOD_NAMES
    for key, value in fields:
        size += len(key) + len(value) + 32
        if value and (value[0] in _WS or value[-1] in _WS or b"\r" in value or b"\n" in value or b"\0" in value):
            return _malformed(f"header {key!r} has an invalid value")
        if key[:1] == b":":
            if regular:
                return _malformed(f"pseudo-header {key!r} after a regular header")
            if key == b":method":
                if method is not None:
                    return _malformed("duplicate :method")
                method = value.decode("ascii", "replace")
            elif key == b":path":
                if target is not None:
                    return _malformed("duplicate :path")
                target = value.decode("ascii", "replace")
            elif key == b":authority":
                if authority is not None:
                    return _malformed("duplicate :authority")
                authority = value.decode("ascii", "replace")
            elif key == b":scheme":
                if scheme is not None:
                    return _malformed("duplicate :scheme")
                scheme = value.decode("ascii", "replace")
            else:
                return _malformed(f"pseudo-header {key!r} not allowed in a request")
            continue
        regular = True
        if key not in good_names:
            if not key or _BAD_NAME.search(key) is not None:
                return _malformed(f"invalid header name {key!r}")
            if key in _CONNECTION_SPECIFIC:
                return _malformed(f"connection-specific header {key.decode('latin-1')!r}")
            if len(good_names) < 4096:
                good_names.add(key)
        if key == b"content-length":
            if not value.isdigit() or len(value) > 18:
                return _malformed("invalid content-length")
            length = int(value)
            if content_length is not None and content_length != length:
                return _malformed("differing content-length values")
            content_length = length
        elif key == b"te":
            if value != b"trailers":
                return _malformed("TE other than trailers")
        elif key == b"host":
            host = value
        elif key == b"cookie":
            if cookies is None:
                cookies = [value]
                headers.append((key, value))
            else:
                cookies.append(value)
            continue
        headers.append((key, value))
    if method is None:
        return _malformed("request without :method")
    if method == "CONNECT":
        if authority is None or target is not None or scheme is not None:
            return _malformed("CONNECT needs :authority and no :path or :scheme")
    elif target is None or scheme is None:
        return _malformed("request without :path or :scheme")
    elif not target:
        return _malformed("empty :path")
    if host is not None:
        host_text = host.decode("ascii", "replace")
        if authority is None:
            authority = host_text
        elif authority != host_text:
            return _malformed("Host and :authority differ")
    elif authority is None:
        return _malformed("request without :authority or Host")
    if cookies is not None and len(cookies) > 1:  # RFC 9113 §8.2.3: one field for HTTP/1.1
        headers = [(b"cookie", b"; ".join(cookies)) if k == b"cookie" else (k, v) for k, v in headers]
    if size > max_head:
        return Refusal(431, f"request header fields larger than {max_head} bytes")
    return method, target or "", authority, scheme or "https", headers, content_length


def trailer_problem(fields: list[tuple[bytes, bytes]]) -> str | None:
    """Why a trailer section is malformed (RFC 9113 §8.1: no pseudo-headers), or None."""
    for key, _value in fields:
        if key[:1] == b":":
            return f"pseudo-header {key!r} in trailers"
    return None

"""Incremental filters for list, Table and watch responses: feed bytes, get filtered bytes.

``ListFilter`` streams a JSON ``*List`` (its top-level ``items`` array) or a ``Table`` (its top-level
``rows`` array) element by element: a small byte scanner (string / escape / depth state) finds the
array; inside it, the C JSON decoder (``raw_decode``) reads one element at a time, which gives both its
``metadata`` (``object.metadata`` for Table rows, which the apiserver includes with the default
``includeObject=Metadata``) and where it ends. Only the current element is buffered; kept elements are
passed on byte for byte. What precedes the array is held until the array is found (a top-level object
with no ``items`` / ``rows`` key at all — a single object or a watch event where a list was decided —
yields nothing, unless it is a ``Status``); what follows it passes through untouched.

``WatchFilter`` handles a JSON watch stream (one event per line): ``BOOKMARK`` and ``ERROR`` events pass,
other events pass when their object is allowed; a ``Table`` event object (``kubectl get -w``) has its
rows filtered.

Fail closed: an element or event that cannot be parsed, or lacks a string ``metadata.name``, is dropped.
Protobuf cannot be filtered here: when filtering, the proxy asks upstream for JSON
(``json_accept_header``) and keeps row objects in Tables (``filtering_query``).
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode

__all__ = ["ListFilter", "ResponseFilter", "WatchFilter", "filtering_query", "json_accept_header"]

Allows = Callable[[str, str], bool]  # (namespace, name) -> visible?

_OUT_OF_STRING_S = re.compile(r'["{}\[\]]')
_IN_STRING_S = re.compile(r'["\\]')
_SCALAR_END_S = re.compile(r"[,\]\s]")
_WS_COMMA = re.compile(r"[\s,]*")
_DECODER = json.JSONDecoder()
_WS = b" \t\r\n"
_MAX_PREFIX = 16 * 1024 * 1024  # bytes held before the items / rows array (a Table's columns: a few KB)


class ResponseFilter(Protocol):
    dropped: int
    passed: int

    def feed(self, data: bytes) -> bytes: ...

    def close(self) -> bytes: ...


def _metadata_visible(obj: Any, allows: Allows) -> bool:
    if not isinstance(obj, dict):
        return False
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        inner = obj.get("object")  # a Table row
        meta = inner.get("metadata") if isinstance(inner, dict) else None
        if not isinstance(meta, dict):
            return False
    name = meta.get("name")
    namespace = meta.get("namespace", "")
    if not isinstance(name, str) or not isinstance(namespace, str):
        return False
    return allows(namespace, name)


def _is_status(body: bytes | bytearray) -> bool:
    """Whether a JSON body is a ``Status`` object (passes a list filter whole: it lists nothing)."""
    try:
        obj = json.loads(body)
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("kind") == "Status"


def _utf8_cut(data: bytes) -> int:
    """Where a trailing incomplete UTF-8 sequence starts (``len(data)`` when there is none)."""
    n = len(data)
    for i in range(1, min(3, n) + 1):
        b = data[n - i]
        if b & 0xC0 == 0x80:  # continuation byte: look further back
            continue
        if b >= 0xC0:
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return n - i if i < need else n
        return n
    return n


def _element_end(text: str, pos: int) -> int | None:
    """End of the JSON value starting at ``pos`` by bracket/string scanning (for malformed elements
    that ``raw_decode`` rejects); None if it does not end within ``text``."""
    c = text[pos]
    if c not in '{["':
        m = _SCALAR_END_S.search(text, pos)
        return m.start() if m else None
    depth = 0
    i = pos
    in_str = False
    while True:
        if in_str:
            m = _IN_STRING_S.search(text, i)
            if m is None:
                return None
            j = m.start()
            if text[j] == "\\":
                i = j + 2
                continue
            in_str = False
            i = j + 1
            if depth == 0:
                return i
            continue
        m = _OUT_OF_STRING_S.search(text, i)
        if m is None:
            return None
        j = m.start()
        c = text[j]
        i = j + 1
        if c == '"':
            in_str = True
        elif c in "{[":
            depth += 1
        else:
            depth -= 1
            if depth <= 0:
                return i


class ListFilter:
    """Filters the ``items`` (List) or ``rows`` (Table) array of one JSON response body, incrementally.

    Inside the array each element is decoded with the C JSON decoder (``raw_decode``), which also tells
    where the element ends; an element cut by a chunk boundary is retried when the buffered part has
    doubled (linear total work), so only the current element is ever buffered. An element the decoder
    rejects is skipped by bracket scanning and dropped.

    A gzip body (``Content-Encoding: gzip``, which apiservers use for large lists when the client
    accepts it) is recognised by its magic bytes, decompressed, filtered and compressed again, so the
    response stays consistent with its headers. A body that is neither gzip nor a JSON object (e.g.
    protobuf, when the proxy failed to force JSON) yields nothing at all: fail closed.
    """

    _PREFIX, _ITEMS, _SUFFIX, _DROP = range(4)

    def __init__(self, allows: Allows) -> None:
        self._allows = allows
        self._state = self._PREFIX
        self._started = False  # the first non-blank byte was seen
        self._sniff = b""  # the first bytes, until gzip or not is known
        self._gzip: tuple[Any, Any] | None | bool = (
            None  # (decompressor, compressor) | False | None (unknown)
        )
        # prefix scanner (bytes)
        self._buf = bytearray()
        self._pos = 0
        self._depth = 0
        self._in_str = False
        self._esc = False
        self._expect_key = False
        self._in_key = False
        self._key = bytearray()
        self._last_key = b""
        self._after_colon_key: bytes | None = None
        self._held = bytearray()  # the prefix scanned so far: passed on once the array is found
        self._list_key = False  # a top-level "items" / "rows" key was seen (its value may be null)
        # items (text)
        self._text = ""
        self._tpos = 0
        self._tail = b""  # an incomplete UTF-8 sequence at the end of the input so far
        self._retry_at = 0  # buffered element length below which decoding is not retried
        self._skipping = False
        self._emitted_any = False
        self.dropped = 0
        self.passed = 0

    def feed(self, data: bytes) -> bytes:
        if not data:
            return b""
        if self._gzip is None:
            self._sniff += data
            if len(self._sniff) < 2:
                return b""
            data, self._sniff = self._sniff, b""
            if data[:2] == b"\x1f\x8b":
                self._gzip = (zlib.decompressobj(wbits=31), zlib.compressobj(wbits=31))
            else:
                self._gzip = False
        if self._gzip:
            decompressor, compressor = self._gzip
            try:
                plain = decompressor.decompress(data)
            except zlib.error:
                self._state = self._DROP
                return b""
            out = self._feed_plain(plain)
            return compressor.compress(out) + compressor.flush(zlib.Z_SYNC_FLUSH) if out else b""
        return self._feed_plain(data)

    def close(self) -> bytes:
        """End of body: whatever is left (nothing more if the array was cut short: fail closed)."""
        if self._gzip is None:
            data, self._sniff = self._sniff, b""
            self._gzip = False
            return self._feed_plain(data) + self._close_plain()
        if self._gzip:
            decompressor, compressor = self._gzip
            try:
                out = self._feed_plain(decompressor.flush()) + self._close_plain()
            except zlib.error:
                out = b""
            if not decompressor.eof:
                self._state = self._DROP  # truncated gzip stream
            return compressor.compress(out) + compressor.flush(zlib.Z_FINISH)
        return self._close_plain()

    @property
    def buffered(self) -> int:
        """How much input is held back right now (at most about one element of the array)."""
        return (
            len(self._text) - self._tpos + len(self._tail) + len(self._buf) - self._pos + len(self._sniff) + len(self._held)
        )

    def _feed_plain(self, data: bytes) -> bytes:
        if not data or self._state == self._DROP:
            return b""
        if self._state == self._SUFFIX:
            return data
        out: list[bytes] = []
        if self._state == self._PREFIX:
            self._buf += data
            self._scan_prefix(out)
            if self._state in (self._PREFIX, self._DROP):
                self._buf.clear()
                self._pos = 0
                return b"".join(out)
            data = bytes(self._buf[self._pos :])
            if self._state == self._SUFFIX:  # the top-level object ended (a List with "items": null)
                self._buf.clear()
                self._pos = 0
                return b"".join(out) + data
            self._buf.clear()
            self._pos = 0
        self._add_text(data)
        self._scan_items(out, final=False)
        return b"".join(out)

    def _close_plain(self) -> bytes:
        if self._state == self._DROP:
            return b""
        if self._state == self._ITEMS:
            out: list[bytes] = []
            self._scan_items(out, final=True)
            if self._state == self._ITEMS:  # the array never closed
                self._text = ""
                self._tail = b""
                return b"".join(out)
            return b"".join(out)
        # the body ended inside the prefix (truncated or not a List): nothing of it passes
        self._buf.clear()
        self._held.clear()
        self._pos = 0
        return b""

    def _add_text(self, data: bytes) -> None:
        raw = self._tail + data if self._tail else data
        cut = _utf8_cut(raw)
        self._tail = raw[cut:]
        if self._tpos:
            self._text = self._text[self._tpos :]
            self._tpos = 0
        self._text += raw[:cut].decode("utf-8", "surrogateescape")

    # --- prefix: find the top-level "items" / "rows" array --------------------------------------

    def _scan_prefix(self, out: list[bytes]) -> None:
        buf = self._buf
        i = self._pos
        n = len(buf)
        start = i
        while i < n:
            c = buf[i]
            if not self._started:
                if c in _WS:
                    i += 1
                    continue
                if c != 0x7B:  # not a JSON object: nothing of it passes
                    self._state = self._DROP
                    self.dropped += 1
                    return
                self._started = True
            if self._in_str:
                if self._esc:
                    self._esc = False
                elif c == 0x5C:  # backslash
                    self._esc = True
                elif c == 0x22:  # quote
                    self._in_str = False
                    if self._in_key:
                        self._last_key = bytes(self._key)
                        self._in_key = False
                        i += 1
                        continue
                if self._in_key:
                    self._key.append(c)
                i += 1
                continue
            if self._after_colon_key is not None:
                if c in _WS:
                    i += 1
                    continue
                key = self._after_colon_key
                self._after_colon_key = None
                if key in (b"items", b"rows"):
                    self._list_key = True
                    if c == 0x5B:  # '['
                        i += 1
                        self._held += buf[start:i]
                        out.append(bytes(self._held))
                        self._held.clear()
                        self._pos = i
                        self._state = self._ITEMS
                        return
            if c == 0x22:
                self._in_str = True
                if self._depth == 1 and self._expect_key:
                    self._in_key = True
                    self._key.clear()
                    self._expect_key = False
            elif c in (0x7B, 0x5B):  # { [
                self._depth += 1
                if self._depth == 1 and c == 0x7B:
                    self._expect_key = True
            elif c in (0x7D, 0x5D):
                self._depth -= 1
                if self._depth == 0:  # the top-level object ended before any items / rows array
                    i += 1
                    self._pos = i
                    self._held += buf[start:i]
                    if not self._list_key and not _is_status(self._held):
                        self._state = self._DROP
                        self._held.clear()
                        self.dropped += 1
                        return
                    out.append(bytes(self._held))
                    self._held.clear()
                    self._state = self._SUFFIX
                    return
            elif c == 0x2C and self._depth == 1:  # ,
                self._expect_key = True
            elif c == 0x3A and self._depth == 1:  # :
                self._after_colon_key = self._last_key
            i += 1
        self._held += buf[start:i]
        self._pos = i
        if len(self._held) > _MAX_PREFIX:  # no list has this much before its items: not a list
            self._state = self._DROP
            self._held.clear()
            self.dropped += 1

    # --- the array -----------------------------------------------------------------------------

    def _scan_items(self, out: list[bytes], final: bool) -> None:
        text = self._text
        n = len(text)
        pos = self._tpos
        decode = _DECODER.raw_decode
        while True:
            pos = _WS_COMMA.match(text, pos).end()
            if pos >= n:
                break
            if text[pos] == "]":
                out.append(text[pos:].encode("utf-8", "surrogateescape") + self._tail)
                self._text, self._tpos, self._tail = "", 0, b""
                self._state = self._SUFFIX
                return
            if not final and n - pos < self._retry_at:
                break
            if self._skipping:
                end = _element_end(text, pos)
                if end is None:
                    if final:
                        pos = n
                        break
                    self._retry_at = 2 * (n - pos)
                    break
                self._skipping = False
                self._retry_at = 0
                self.dropped += 1
                pos = end
                continue
            try:
                obj, end = decode(text, pos)
            except json.JSONDecodeError as exc:
                if not final and (exc.pos >= n - 5 or exc.msg.startswith("Unterminated string")):
                    self._retry_at = 2 * (n - pos)  # cut by the chunk boundary: wait for more
                    break
                self._skipping = True
                continue
            self._retry_at = 0
            if _metadata_visible(obj, self._allows):
                element = text[pos:end].encode("utf-8", "surrogateescape")
                out.append(b"," + element if self._emitted_any else element)
                self._emitted_any = True
                self.passed += 1
            else:
                self.dropped += 1
            pos = end
        self._tpos = pos


class WatchFilter:
    """Filters a JSON watch stream (newline-delimited events), one event at a time."""

    def __init__(self, allows: Allows, max_line: int = 64 * 1024 * 1024) -> None:
        self._allows = allows
        self._buf = bytearray()
        self._max_line = max_line
        self.dropped = 0
        self.passed = 0

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        out: list[bytes] = []
        start = 0
        while True:
            nl = self._buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(self._buf[start : nl + 1])
            start = nl + 1
            kept = self._event(line)
            if kept:
                out.append(kept)
        if start:
            del self._buf[:start]
        if len(self._buf) > self._max_line:  # one event larger than any sane object: drop it
            self._buf.clear()
            self.dropped += 1
        return b"".join(out)

    def close(self) -> bytes:
        rest = bytes(self._buf)
        self._buf.clear()
        return self._event(rest) if rest.strip() else b""

    def _event(self, line: bytes) -> bytes:
        if not line.strip():
            return line
        try:
            event = json.loads(line)
        except ValueError:
            self.dropped += 1
            return b""
        if not isinstance(event, dict):
            self.dropped += 1
            return b""
        etype = event.get("type")
        if etype in ("BOOKMARK", "ERROR"):
            self.passed += 1
            return line
        obj = event.get("object")
        if isinstance(obj, dict) and obj.get("kind") == "Table" and isinstance(obj.get("rows"), list):
            rows = obj["rows"]
            kept = [r for r in rows if _metadata_visible(r, self._allows)]
            if len(kept) == len(rows):
                self.passed += 1
                return line
            if not kept and not obj.get("columnDefinitions"):
                self.dropped += 1
                return b""
            obj["rows"] = kept
            self.passed += 1
            return json.dumps(event, separators=(",", ":")).encode() + b"\n"
        if _metadata_visible(obj, self._allows):
            self.passed += 1
            return line
        self.dropped += 1
        return b""


def json_accept_header(accept: str | None) -> str:
    """The Accept header to send upstream when the response will be filtered: JSON media types only.

    Keeps ``application/json`` entries (including ``application/json;as=Table;v=v1;g=meta.k8s.io``);
    drops protobuf and others; falls back to ``application/json``.
    """
    if not accept:
        return "application/json"
    kept = [
        p.strip() for p in accept.split(",") if p.strip().split(";")[0].strip().lower() == "application/json"
    ]
    return ", ".join(kept) if kept else "application/json"


def filtering_query(query: str) -> str:
    """The query string to send upstream when filtering: ``includeObject=None`` is removed (rows need
    their object metadata to be filtered; the default is ``Metadata``)."""
    pairs = parse_qsl(query.lstrip("?"), keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if not (k == "includeObject" and v == "None")]
    return urlencode(kept) if len(kept) != len(pairs) else query.lstrip("?")

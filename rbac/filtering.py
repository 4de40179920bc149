"""Incremental filters for list, Table and watch responses: feed bytes, get filtered bytes.

``ListFilter`` streams a JSON ``*List`` (its top-level ``items`` array) or a ``Table`` (its top-level
``rows`` array) element by element: a small scanner tracks string / escape / depth state to find where
each element ends, only the current element is buffered, and each element is ``json.loads``-ed to read
``metadata`` (``object.metadata`` for Table rows, which the apiserver includes with the default
``includeObject=Metadata``). Everything outside the array passes through untouched.

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
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode

__all__ = ["ListFilter", "ResponseFilter", "WatchFilter", "filtering_query", "json_accept_header"]

Allows = Callable[[str, str], bool]  # (namespace, name) -> visible?

_OUT_OF_STRING = re.compile(rb'["{}\[\]]')
_IN_STRING = re.compile(rb'["\\]')
_SCALAR_END = re.compile(rb"[,\]\s]")
_WS = b" \t\r\n"


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


class ListFilter:
    """Filters the ``items`` (List) or ``rows`` (Table) array of one JSON response body, incrementally."""

    _PREFIX, _BETWEEN, _ELEMENT, _SUFFIX = range(4)

    def __init__(self, allows: Allows) -> None:
        self._allows = allows
        self._buf = bytearray()
        self._pos = 0  # scan position in _buf
        self._state = self._PREFIX
        # prefix scanner
        self._depth = 0
        self._in_str = False
        self._esc = False
        self._expect_key = False
        self._in_key = False
        self._key = bytearray()
        self._last_key = b""
        self._after_colon_key: bytes | None = None
        # element scanner
        self._el_start = 0
        self._el_depth = 0
        self._el_in_str = False
        self._el_scalar = False
        self._emitted_any = False
        self.dropped = 0
        self.passed = 0

    def feed(self, data: bytes) -> bytes:
        if not data:
            return b""
        self._buf += data
        out: list[bytes] = []
        if self._state == self._SUFFIX:
            out.append(bytes(self._buf))
            self._buf.clear()
            self._pos = 0
            return b"".join(out)
        if self._state == self._PREFIX:
            self._scan_prefix(out)
        if self._state in (self._BETWEEN, self._ELEMENT):
            self._scan_items(out)
        if self._state == self._SUFFIX and self._pos < len(self._buf):
            out.append(bytes(self._buf[self._pos :]))
            self._buf.clear()
            self._pos = 0
        # compact
        if self._state != self._ELEMENT and self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        elif self._state == self._ELEMENT and self._el_start > 65536:
            del self._buf[: self._el_start]
            self._pos -= self._el_start
            self._el_start = 0
        return b"".join(out)

    def close(self) -> bytes:
        """End of body: whatever is left (nothing if the array was cut short: fail closed)."""
        if self._state in (self._BETWEEN, self._ELEMENT):
            self._buf.clear()
            return b""
        rest = bytes(self._buf[self._pos :])
        self._buf.clear()
        self._pos = 0
        return rest

    # --- prefix: find the top-level "items" / "rows" array --------------------------------------

    def _scan_prefix(self, out: list[bytes]) -> None:
        buf = self._buf
        i = self._pos
        n = len(buf)
        start = i
        while i < n:
            c = buf[i]
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
                if c == 0x5B and key in (b"items", b"rows"):  # '['
                    i += 1
                    out.append(bytes(buf[start:i]))
                    self._pos = i
                    self._state = self._BETWEEN
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
            elif c == 0x2C and self._depth == 1:  # ,
                self._expect_key = True
            elif c == 0x3A and self._depth == 1:  # :
                self._after_colon_key = self._last_key
            i += 1
        out.append(bytes(buf[start:i]))
        self._pos = i

    # --- the array -----------------------------------------------------------------------------

    def _scan_items(self, out: list[bytes]) -> None:
        buf = self._buf
        n = len(buf)
        i = self._pos
        while True:
            if self._state == self._BETWEEN:
                while i < n and (buf[i] in _WS or buf[i] == 0x2C):
                    i += 1
                if i >= n:
                    self._pos = i
                    return
                c = buf[i]
                if c == 0x5D:  # ']' closes the array
                    out.append(b"]")
                    self._pos = i + 1
                    self._state = self._SUFFIX
                    return
                self._state = self._ELEMENT
                self._el_start = i
                self._el_depth = 0
                self._el_in_str = False
                self._el_scalar = c not in (0x7B, 0x5B, 0x22)
            # inside an element
            end = -1
            if self._el_scalar:
                m = _SCALAR_END.search(buf, i)
                if m is None:
                    self._pos = n
                    return
                end = m.start()
            else:
                while True:
                    if self._el_in_str:
                        m = _IN_STRING.search(buf, i)
                        if m is None:
                            self._pos = n
                            return
                        j = m.start()
                        if buf[j] == 0x5C:
                            if j + 1 >= n:
                                self._pos = j  # re-scan the escape when more data arrives
                                return
                            i = j + 2
                            continue
                        self._el_in_str = False
                        i = j + 1
                        if self._el_depth == 0:  # a bare string element
                            end = i
                            break
                        continue
                    m = _OUT_OF_STRING.search(buf, i)
                    if m is None:
                        self._pos = n
                        return
                    j = m.start()
                    c = buf[j]
                    i = j + 1
                    if c == 0x22:
                        self._el_in_str = True
                    elif c in (0x7B, 0x5B):
                        self._el_depth += 1
                    else:
                        self._el_depth -= 1
                        if self._el_depth <= 0:
                            end = i
                            break
            element = bytes(buf[self._el_start : end])
            if self._visible(element):
                out.append(b"," + element if self._emitted_any else element)
                self._emitted_any = True
                self.passed += 1
            else:
                self.dropped += 1
            i = end
            self._state = self._BETWEEN
            self._pos = i

    def _visible(self, element: bytes) -> bool:
        try:
            obj = json.loads(element)
        except ValueError:
            return False
        return _metadata_visible(obj, self._allows)


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

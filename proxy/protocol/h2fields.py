"""HPACK header block decoding (RFC 7541 §6) for the HTTP/2 server codec, on the ``hpack`` library's
parts: its ``HeaderTable`` (static table, dynamic table, eviction) and its Huffman decoder. Only the
walk over a block's representations is written here, in one loop without per-field calls:
``hpack.Decoder.decode`` spent ~20,000 instructions per field in calls and objects, most of a
request's decoding (measured: 230,000 of the 370,000 instructions the codec spent on a GET whose
:path was new). ``tests/protocol_http/test_h2_fields.py`` checks it against ``hpack.Decoder`` field
for field and error for error.

Errors are ``hpack``'s exception classes: ``OversizedHeaderListError`` past ``max_header_list_size``
(sizes counted as RFC 9113 §6.5.2 says), ``InvalidTableSizeError`` for a table size update above
``max_allowed_table_size`` (or a table left above it), ``InvalidTableIndex``, and
``HPACKDecodingError`` for anything else malformed.
"""

from __future__ import annotations

from hpack.exceptions import (
    HPACKDecodingError,
    InvalidTableIndex,
    InvalidTableSizeError,
    OversizedHeaderListError,
)
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

_STATIC = HeaderTable.STATIC_TABLE
_STATIC_SIZE = len(_STATIC)
_INTEGER_MAX_BYTES = 5  # continuation bytes of one integer: 2^35, far above any length or index here


def _integer(data: bytes, i: int, value: int) -> tuple[int, int]:
    """The rest of an RFC 7541 §5.1 integer whose prefix was full (``value``); (value, next index)."""
    shift = 0
    end = min(len(data), i + _INTEGER_MAX_BYTES)
    while i < end:
        byte = data[i]
        i += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7
    if i >= len(data):
        raise HPACKDecodingError("truncated integer")
    raise HPACKDecodingError("integer representation too long")


def _string(data: bytes, i: int) -> tuple[bytes, int]:
    """A string literal (RFC 7541 §5.2) at ``data[i]``: (the string, next index)."""
    if i >= len(data):
        raise HPACKDecodingError("truncated header block")
    first = data[i]
    length = first & 0x7F
    i += 1
    if length == 0x7F:
        length, i = _integer(data, i, length)
    end = i + length
    if end > len(data):
        raise HPACKDecodingError("truncated string literal")
    value = data[i:end]
    if first & 0x80:
        value = decode_huffman(value)
    return value, end


class FieldDecoder:
    """The receiving side of one connection's HPACK context."""

    __slots__ = ("table", "max_header_list_size", "max_allowed_table_size")

    def __init__(self, max_header_list_size: int, max_allowed_table_size: int = HeaderTable.DEFAULT_SIZE) -> None:
        self.table = HeaderTable()
        self.max_header_list_size = max_header_list_size
        self.max_allowed_table_size = max_allowed_table_size

    def _entry(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= _STATIC_SIZE:
            return _STATIC[index - 1]
        dynamic = self.table.dynamic_entries
        offset = index - _STATIC_SIZE - 1
        if index <= 0 or offset >= len(dynamic):
            raise InvalidTableIndex(f"invalid table index {index}")
        return dynamic[offset]

    def _literal(self, data: bytes, i: int, index: int, full: int) -> tuple[bytes, bytes, int]:
        """A literal field's name (indexed when ``index``, a prefix integer that continues when it is
        ``full``) and value: (name, value, next index)."""
        if index == full:
            index, i = _integer(data, i, index)
        if index:
            name = self._entry(index)[0]
        else:
            name, i = _string(data, i)
        value, i = _string(data, i)
        return name, value, i

    def decode(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """The fields of one complete header block, in order; the dynamic table updated."""
        fields: list[tuple[bytes, bytes]] = []
        append = fields.append
        size = 0
        limit = self.max_header_list_size
        table = self.table
        n = len(data)
        i = 0
        while i < n:
            first = data[i]
            i += 1
            if first & 0x80:  # indexed field (§6.1)
                index = first & 0x7F
                if index == 0x7F:
                    index, i = _integer(data, i, index)
                name, value = self._entry(index)
            elif first & 0x40:  # literal with incremental indexing (§6.2.1)
                name, value, i = self._literal(data, i, first & 0x3F, 0x3F)
                table.add(name, value)
            elif first & 0x20:  # dynamic table size update (§6.3)
                if fields:
                    raise HPACKDecodingError("table size update after a header field")
                new_size = first & 0x1F
                if new_size == 0x1F:
                    new_size, i = _integer(data, i, new_size)
                if new_size > self.max_allowed_table_size:
                    raise InvalidTableSizeError("table size update above the allowed maximum")
                table.maxsize = new_size
                continue
            else:  # literal without indexing / never indexed (§6.2.2, §6.2.3)
                name, value, i = self._literal(data, i, first & 0x0F, 0x0F)
            size += len(name) + len(value) + 32
            if size > limit:
                raise OversizedHeaderListError(f"a header list larger than {limit} has been received")
            append((name, value))
        if table.maxsize > self.max_allowed_table_size:
            raise InvalidTableSizeError("the encoder did not shrink the table to within the maximum")
        return fields

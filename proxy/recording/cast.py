"""asciicast v2 (https://docs.asciinema.org/manual/asciicast/v2/): a session as newline-delimited JSON.

Pure: bytes and timestamps in, cast lines out (no clock reads, no I/O). The first line is the header
(``version``, ``width``, ``height``, ``timestamp``, ``command``, ``title``, ``env`` and kubegate's own
``kubegate`` object naming the session, user, roles, cluster, pod, container); every further line is
``[seconds since start, code, data]`` with code ``"o"`` (terminal output: stdout and stderr), ``"i"``
(what the user typed) or ``"r"`` (resize, ``"WxH"``).

Output is decoded as UTF-8 incrementally per stream (a character split across two chunks stays whole;
invalid bytes become U+FFFD), so the cast replays what the terminal showed. Consecutive pieces of the
same stream closer together than ``coalesce`` seconds become one event (a terminal renders them the
same; fewer, larger events are cheaper to write and to play).

:func:`read_cast` parses a cast back, ignoring a final line cut short (a proxy killed mid-write leaves a
readable prefix).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

CAST_VERSION = 2
DEFAULT_WIDTH = 80
DEFAULT_HEIGHT = 24
_CODES = {"stdout": "o", "stderr": "o", "stdin": "i"}
# Pieces are merged into one event up to about this size: small enough that encoding works in cache-warm,
# reused memory rather than fresh pages for every big buffer.
MAX_EVENT_BYTES = 64 * 1024

Event = tuple[float, str, str]  # (seconds since start, "o" | "i" | "r", data)


def cast_header(meta: Mapping[str, Any], width: int, height: int, timestamp: float) -> bytes:
    """The header line. ``meta`` keys used: command (list), title, term, and the rest go under ``kubegate``."""
    header: dict[str, Any] = {
        "version": CAST_VERSION,
        "width": width,
        "height": height,
        "timestamp": int(timestamp),
        "env": {"TERM": meta.get("term") or "xterm", "SHELL": ""},
    }
    command = meta.get("command")
    if command:
        header["command"] = " ".join(command) if isinstance(command, list | tuple) else str(command)
    if meta.get("title"):
        header["title"] = meta["title"]
    header["kubegate"] = {k: v for k, v in meta.items() if k not in ("term", "title")}
    return json.dumps(header, ensure_ascii=False, separators=(", ", ": ")).encode() + b"\n"


def parse_resize(buf: bytearray) -> list[tuple[int, int]]:
    """Complete ``{"Width": W, "Height": H}`` objects at the start of ``buf`` (removed from it); a partial
    object stays for the next piece. Both wires carry resizes as JSON objects, SPDY as a byte stream."""
    out: list[tuple[int, int]] = []
    decoder = json.JSONDecoder()
    text = buf.decode("utf-8", "replace")
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos >= len(text):
            break
        try:
            obj, end = decoder.raw_decode(text, pos)
        except ValueError:
            if len(text) - pos > 4096:  # not a resize object at all: drop it
                pos = len(text)
            break
        pos = end
        if isinstance(obj, dict):
            try:
                width, height = int(obj.get("Width", 0)), int(obj.get("Height", 0))
            except (TypeError, ValueError):
                continue
            if 0 < width < 65536 and 0 < height < 65536:
                out.append((width, height))
    del buf[: len(text[:pos].encode("utf-8", "replace"))]
    return out


@dataclass
class CastEncoder:
    """Turns (time, stream, bytes) pieces into asciicast lines, the header first.

    ``started`` is the session's start (epoch seconds); times given to :meth:`encode` are epoch seconds.
    The header is produced with the first batch, so that a resize that arrives before any output (kubectl
    sends the terminal size first) sets its width and height.
    """

    meta: Mapping[str, Any]
    started: float
    coalesce: float = 0.01
    record_input: bool = False
    width: int = DEFAULT_WIDTH
    height: int = DEFAULT_HEIGHT
    header_written: bool = False
    _decoders: dict[str, Any] = field(default_factory=dict)
    _resize: bytearray = field(default_factory=bytearray)

    def encode(self, pieces: Iterable[tuple[float, str, bytes]]) -> bytes:
        return b"".join(self.encode_lines(pieces))

    def encode_lines(self, pieces: Iterable[tuple[float, str, bytes]]) -> list[bytes]:
        """Like :meth:`encode`, as a list of lines (written with one ``writev``, never joined)."""
        lines: list[bytes] = []
        events = self._events(pieces)
        if not self.header_written:
            for _, code, data in events:
                if code == "r":
                    self.width, self.height = (int(x) for x in data.split("x"))
                    break
                if code == "o":
                    break
            lines.append(cast_header(self.meta, self.width, self.height, self.started))
            self.header_written = True
        lines += [_line(t, code, data) for t, code, data in events]
        return lines

    def finish(self, when: float) -> bytes:
        """The header if no event ever came, and what is left in the decoders (an incomplete character at
        the very end, as U+FFFD)."""
        out = b"" if self.header_written else self.encode([])
        for name, decoder in self._decoders.items():
            text = decoder.decode(b"", final=True)
            if text:
                out += _line(when - self.started, _CODES[name], text)
        return out

    def _events(self, pieces: Iterable[tuple[float, str, bytes]]) -> list[Event]:
        events: list[Event] = []
        last_stream = ""
        last_time = -1.0
        merged: list[bytes] = []
        size = 0
        for when, stream, data in pieces:
            if stream == "resize":
                if merged:
                    self._text(events, last_time, last_stream, merged)
                    merged = []
                    last_stream = ""
                self._resize += data
                for width, height in parse_resize(self._resize):
                    events.append((when - self.started, "r", f"{width}x{height}"))
                continue
            if stream == "stdin" and not self.record_input:
                continue
            if stream == last_stream and when - last_time <= self.coalesce and size < MAX_EVENT_BYTES:
                merged.append(data)
                size += len(data)
                continue
            if merged:
                self._text(events, last_time, last_stream, merged)
            merged = [data]
            size = len(data)
            last_stream = stream
            last_time = when
        if merged:
            self._text(events, last_time, last_stream, merged)
        return events

    def _text(self, events: list[Event], when: float, stream: str, parts: list[bytes]) -> None:
        decoder = self._decoders.get(stream)
        if decoder is None:
            decoder = self._decoders[stream] = codecs.getincrementaldecoder("utf-8")("replace")
        text = decoder.decode(b"".join(parts))
        if text:
            events.append((when - self.started, _CODES[stream], text))


def _line(t: float, code: str, data: str) -> bytes:
    # orjson: the JSON escaping of terminal output is the recording's main cost per byte (about 3x less
    # CPU than json.dumps on typical output).
    return orjson.dumps([round(max(t, 0.0), 6), code, data], option=orjson.OPT_APPEND_NEWLINE)


def read_cast(data: bytes) -> tuple[dict[str, Any], list[Event]]:
    """(header, events) of a cast; a last line cut short (no newline, or not JSON) is left out."""
    lines = data.split(b"\n")
    if not data.endswith(b"\n"):
        lines = lines[:-1]  # a line cut short by a crash
    header: dict[str, Any] | None = None
    events: list[Event] = []
    for raw in lines:
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except ValueError:
            continue
        if header is None:
            if not isinstance(item, dict) or item.get("version") != CAST_VERSION:
                raise ValueError("not an asciicast v2 recording (the first line is not a version 2 header)")
            header = item
            continue
        if isinstance(item, list) and len(item) == 3 and isinstance(item[0], int | float):
            events.append((float(item[0]), str(item[1]), str(item[2])))
    if header is None:
        raise ValueError("empty recording (no asciicast header)")
    return header, events


def output_text(events: Iterable[Event]) -> str:
    """Everything the terminal was sent, in order (the ``o`` events joined)."""
    return "".join(data for _, code, data in events if code == "o")

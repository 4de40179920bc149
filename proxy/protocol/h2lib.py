"""Speed-ups for the ``h2``/``hpack``/``hyperframe`` libraries, which kubegate's upstream HTTP/2 client
(``proxy.upstream.http2``) still uses. Process-wide, applied once, with output identical to the
originals."""

from __future__ import annotations

import binascii
import logging

import hpack.hpack
import hyperframe.frame


def _short_hex_repr(data: bytes | None) -> str:
    """``hyperframe.frame._raw_data_repr`` with the same output, hexlifying only the 10 bytes it shows.
    h2 builds ``repr(frame)`` for its trace log on EVERY received frame, and the original hexlifies the
    whole payload (~20 us per 16 KiB DATA frame) only to keep 20 characters of it."""
    if not data:
        return "None"
    shown = binascii.hexlify(data[:11]).decode("ascii")
    if len(shown) > 20:
        shown = shown[:20] + "..."
    return "<hex:" + shown + ">"


def _frame_repr(frame: hyperframe.frame.Frame) -> str:
    """``repr`` of a frame without its body: h2 formats ``repr(frame)`` eagerly for its trace log on
    every received frame (then discards it), and the full form cost ~2 us per HEADERS frame."""
    return f"{type(frame).__name__}(stream_id={frame.stream_id}, flags={sorted(frame.flags._flags)!r})"


class _NoDebug:
    """hpack's module logger minus ``debug``: hpack calls it several times per header field (~0.3 us
    each even when disabled); kubegate keeps the hpack logger at WARNING or above anyway."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log

    def debug(self, *args: object, **kwargs: object) -> None:
        return None

    def __getattr__(self, name: str) -> object:
        return getattr(self._log, name)


def speed_up_h2() -> None:
    """Everything above, for the h2 client (idempotent)."""
    if not isinstance(hpack.hpack.log, _NoDebug):
        hpack.hpack.log = _NoDebug(hpack.hpack.log)  # type: ignore[assignment]
    hyperframe.frame._raw_data_repr = _short_hex_repr
    hyperframe.frame.Frame.__repr__ = _frame_repr  # type: ignore[method-assign,assignment]

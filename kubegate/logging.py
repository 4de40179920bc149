"""Structured logs: one JSON object per line on stderr (or ``key=value`` text), never secrets.

    from kubegate import logging as kglog
    kglog.configure(level="info", fmt="json")
    logging.getLogger("kubegate.proxy").info("request failed", extra={"request_id": rid, "code": 502})

Every module logs through the standard library (``logging.getLogger("kubegate.<area>")``); ``extra``
fields become top-level JSON keys. A field whose name looks secret (``token``, ``password``, ``key``,
``authorization``, ``secret``, ``cookie``...) is written as ``"<redacted>"`` whatever its value, and
bearer tokens and PEM private keys inside messages are masked, so a careless ``extra`` cannot leak.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import IO, Any

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}

_SECRET_KEY_RE = re.compile(
    r"(pass(word)?|secret|token|authorization|cookie|private|(^|_)key($|_)|credential|bearer)", re.I
)
_BEARER_RE = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_PEM_KEY_RE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)
REDACTED = "<redacted>"

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def scrub_text(text: str) -> str:
    """Mask bearer tokens and PEM private keys in free text."""
    if "earer" in text or "EARER" in text:
        text = _BEARER_RE.sub(r"\1" + REDACTED, text)
    if "PRIVATE KEY" in text:
        text = _PEM_KEY_RE.sub(REDACTED, text)
    return text


def scrub_value(key: str, value: Any) -> Any:
    """The value to log for field ``key``: redacted when the key names a secret."""
    if _SECRET_KEY_RE.search(key):
        # Counters and flags about secrets ("token_refreshes": 3, "has_key": true) are not secrets.
        if isinstance(value, bool | int | float) or value is None:
            return value
        return REDACTED
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {str(k): scrub_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_value(key, v) for v in value]
    if isinstance(value, bytes):
        return scrub_text(value.decode("utf-8", "replace"))
    if isinstance(value, int | float | bool):
        return value
    return scrub_text(str(value))


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured content of one record: ts, level, logger, msg, pid, extra fields, exception."""
    out: dict[str, Any] = {
        "ts": _iso(record.created),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": scrub_text(record.getMessage()),
        "pid": record.process or os.getpid(),
    }
    for key, value in record.__dict__.items():
        if key in _STANDARD_ATTRS or key.startswith("_"):
            continue
        out[key] = scrub_value(key, value)
    if record.exc_info and record.exc_info[0] is not None:
        out["error"] = f"{record.exc_info[0].__name__}: {scrub_text(str(record.exc_info[1]))}"
        out["traceback"] = scrub_text(logging.Formatter().formatException(record.exc_info))
    return out


def _iso(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(record_fields(record), separators=(",", ":"), default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable: ``ts level logger: msg key=value ...`` (still one line per event)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = record_fields(record)
        head = f"{fields.pop('ts')} {fields.pop('level'):7} {fields.pop('logger')}: {fields.pop('msg')}"
        fields.pop("pid", None)
        tb = fields.pop("traceback", None)
        rest = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in fields.items())
        line = f"{head} {rest}".rstrip()
        if tb:
            line += " traceback=" + json.dumps(tb)
        return line


def configure(level: str = "info", fmt: str = "json", stream: IO[str] | None = None) -> None:
    """Route all ``logging`` output (root logger) to one handler with the chosen format. Idempotent."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_kubegate", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler._kubegate = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level, logging.INFO))
    # Libraries that are chatty at INFO/DEBUG about every frame.
    for noisy in ("hpack", "h2", "asyncio", "botocore", "urllib3", "azure"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))

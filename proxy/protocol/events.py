"""The one HTTP vocabulary of kubegate, whatever the wire (HTTP/1.1 or HTTP/2).

Every message carries a ``stream_id``: HTTP/2 uses its own stream ids; HTTP/1.1 numbers the requests
of a connection 1, 3, 5, ... in order, so the pipeline above never branches on protocol version.

Header names are lower-case ``bytes``; values are ``bytes``. Pseudo-headers (``:method`` ...) never
appear in ``headers``: they are lifted into fields.

Sans-IO codecs (``proxy.protocol.http1``, ``proxy.protocol.http2``) turn bytes into these events and
these events into bytes. They share one shape, the ``ServerConnection`` protocol below:

    conn = Http1ServerConnection(limits)       # or Http2ServerConnection(limits)
    events = conn.receive_data(data)           # bytes from the socket -> list of events
    conn.send_response_head(ResponseHead(...)) # queue bytes
    conn.send_body(stream_id, chunk)           # queue bytes (chunked on HTTP/1.1 if no length)
    conn.send_end(stream_id)
    out = conn.data_to_send()                  # bytes for the socket

``receive_data(b"")`` means the peer closed its side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class RequestHead:
    stream_id: int
    method: str
    target: str  # raw request target: path plus "?query" as sent (percent-encoding untouched)
    headers: Headers
    http_version: str  # "1.0", "1.1" or "2"
    authority: str = ""  # Host header or :authority
    scheme: str = "https"
    # True when this HTTP/1.1 request asks to switch protocols (Connection: Upgrade + Upgrade: ...).
    # The codec stops parsing after the head: see UpgradeRequested.
    upgrade: bool = False
    # Declared request body length, or None when chunked / unknown (h2 without content-length).
    content_length: int | None = None

    def header(self, name: bytes) -> bytes | None:
        """First value of a header (name in lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_values(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key == name]

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        parts = self.target.split("?", 1)
        return parts[1] if len(parts) == 2 else ""


@dataclass(slots=True)
class RequestBody:
    stream_id: int
    data: bytes


@dataclass(slots=True)
class RequestEnd:
    stream_id: int


@dataclass(slots=True)
class UpgradeRequested:
    """HTTP/1.1 only: the request head had an Upgrade; the codec has stopped parsing HTTP.

    ``trailing`` holds bytes that arrived after the head (already the new protocol's). From now on the
    connection is a raw byte pipe owned by whoever answers the upgrade; it writes the ``101`` (or a
    refusal) itself, e.g. with ``Http1ServerConnection.send_response_head`` before taking over, or raw.
    """

    stream_id: int
    head: RequestHead
    trailing: bytes = b""


@dataclass(slots=True)
class ResponseHead:
    stream_id: int
    status: int
    headers: Headers
    reason: bytes = b""
    # Body length if known; None -> chunked on HTTP/1.1, no content-length on HTTP/2.
    content_length: int | None = None


@dataclass(slots=True)
class ResponseBody:
    stream_id: int
    data: bytes


@dataclass(slots=True)
class ResponseEnd:
    stream_id: int


@dataclass(slots=True)
class StreamReset:
    """The peer (or the codec) abandoned one stream; other streams go on (HTTP/2)."""

    stream_id: int
    error_code: int = 0


@dataclass(slots=True)
class WindowOpened:
    """HTTP/2: the peer granted more send credit; a paused writer of this stream (0: all) may resume."""

    stream_id: int


@dataclass(slots=True)
class ConnectionClosed:
    """The peer closed the connection (EOF or GOAWAY) or the codec gave up on it."""

    reason: str = ""


@dataclass(slots=True)
class ProtocolError:
    """The peer broke the protocol. ``status`` is the HTTP status to answer with when a response can
    still be sent (400 bad request, 413 body too large, 431 headers too large, 501 unsupported
    transfer-encoding); the codec has already queued that answer and will close after it.
    ``message`` says what was wrong, for the log."""

    message: str
    status: int = 400
    stream_id: int = 0


@dataclass(slots=True)
class FramesCounted:
    """HTTP/2: the peer sent another ``count`` frames of one costly kind (``kind``: ``h2_rapid_reset``
    for streams reset by the peer or refused as malformed, ``h2_ping_flood`` for PING frames,
    ``h2_settings_flood`` for SETTINGS frames). The codec reports each full quantum and reads no clock;
    whoever owns the clock decides whether that rate is abuse (``ClientConnection``: a quantum within a
    second of the previous one) and then calls ``enhance_your_calm()``."""

    kind: str
    count: int


Event = (
    RequestHead
    | RequestBody
    | RequestEnd
    | UpgradeRequested
    | ResponseHead
    | ResponseBody
    | ResponseEnd
    | StreamReset
    | WindowOpened
    | ConnectionClosed
    | ProtocolError
    | FramesCounted
)


@dataclass(slots=True)
class ServerLimits:
    """Limits a server-side codec enforces while parsing (all sizes in bytes)."""

    max_header_bytes: int = 64 * 1024
    max_body_bytes: int | None = None  # None: unlimited (the proxy streams bodies)
    h2_initial_window: int = 1024 * 1024
    h2_max_concurrent_streams: int = 1000
    # HTTP/2 frames of each costly kind per ``FramesCounted`` quantum (the proxy allows this many per second)
    h2_max_resets_per_second: int = 200
    h2_max_control_frames_per_second: int = 200
    extra: dict[str, int] = field(default_factory=dict)


class ServerConnection(Protocol):
    """What both server-side codecs offer (HTTP/1.1 and HTTP/2)."""

    http_version: str

    # True once the connection must be closed after the bytes of data_to_send() are written (HTTP/1.1
    # Connection: close / HTTP/1.0 / an answered protocol error; HTTP/2 after GOAWAY with no open stream).
    @property
    def must_close(self) -> bool: ...

    def receive_data(self, data: bytes) -> list[Event]: ...

    def send_response_head(self, head: ResponseHead, *, end_stream: bool = False) -> None: ...

    def send_body(self, stream_id: int, data: bytes, *, end_stream: bool = False) -> None: ...

    def send_end(self, stream_id: int) -> None: ...

    def reset_stream(self, stream_id: int, error_code: int = 0) -> None: ...

    def acknowledge_received(self, stream_id: int, nbytes: int) -> None:
        """Return flow-control credit (HTTP/2) once ``nbytes`` of this stream's request body have been
        handed on; a no-op on HTTP/1.1."""
        ...

    def send_window(self, stream_id: int) -> int:
        """How many body bytes may be sent on this stream now (HTTP/2 flow control; HTTP/1.1: a large
        number). A writer that finds 0 waits for a WindowOpened event."""
        ...

    def close(self) -> None:
        """Queue a graceful close (GOAWAY on HTTP/2); data_to_send() flushes it."""
        ...

    def data_to_send(self) -> bytes: ...

"""Sans-IO HTTP/1.1 server codec on httptools (llhttp): bytes in, ``proxy.protocol.events`` out.

    conn = Http1ServerConnection(ServerLimits())
    for event in conn.receive_data(data): ...
    conn.send_response_head(ResponseHead(stream_id, 200, headers, content_length=n))
    conn.send_body(stream_id, chunk); conn.send_end(stream_id)
    sock.write(conn.data_to_send()); if conn.must_close: close after writing

Facts the code relies on:
- Requests of one connection are numbered 1, 3, 5, ... . Pipelined requests are all parsed and
  reported, but responses leave in request order: output for a later request is held back until every
  earlier response has ended (servers usually answer one request at a time anyway).
- Keep-alive follows HTTP/1.1 / HTTP/1.0 rules (``Connection: close`` / ``keep-alive``). A response
  without a known length is chunked for HTTP/1.1 and close-delimited for HTTP/1.0.
- Chunked request trailers are parsed, counted against ``max_header_bytes`` and dropped.
- ``Expect: 100-continue`` is answered with ``100 Continue`` as soon as the head is accepted.
- Request smuggling shapes (Content-Length with Transfer-Encoding, several differing Content-Length,
  a Transfer-Encoding other than ``chunked``) and malformed heads or chunks are ``ProtocolError``:
  the codec queues a 400 (431 for heads over ``max_header_bytes``, 413 for bodies over
  ``max_body_bytes``, 501 for an unknown transfer-coding) Kubernetes ``Status`` answer, stops
  parsing, and sets ``must_close``.
- A request with ``Connection: Upgrade`` + ``Upgrade: ...`` (or CONNECT) yields ``UpgradeRequested``
  carrying the bytes that followed the head; parsing stops for good. The answer (``101`` or a refusal)
  may be written with ``send_response_head`` (a ``101`` head is written as is, no body framing).
- ``receive_data(b"")`` (EOF) yields ``StreamReset`` for a request whose body was still arriving, then
  ``ConnectionClosed``. ``ConnectionClosed`` means every stream of the connection is gone.
"""

from __future__ import annotations

import json

import httptools

try:
    import cython
except ImportError:  # run as Python where Cython is not installed: the same as Cython's own shadow module says
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)  # type: ignore[assignment]

from proxy.protocol.events import (
    ConnectionClosed,
    Event,
    Headers,
    ProtocolError,
    RequestBody,
    RequestEnd,
    RequestHead,
    ResponseHead,
    ServerLimits,
    StreamReset,
    UpgradeRequested,
)

REASONS: dict[int, bytes] = {
    100: b"Continue",
    101: b"Switching Protocols",
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    204: b"No Content",
    206: b"Partial Content",
    301: b"Moved Permanently",
    302: b"Found",
    304: b"Not Modified",
    307: b"Temporary Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    406: b"Not Acceptable",
    408: b"Request Timeout",
    409: b"Conflict",
    410: b"Gone",
    411: b"Length Required",
    413: b"Request Entity Too Large",
    415: b"Unsupported Media Type",
    422: b"Unprocessable Entity",
    426: b"Upgrade Required",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}

_STATUS_REASONS = {
    400: "BadRequest",
    413: "RequestEntityTooLarge",
    431: "RequestHeaderFieldsTooLarge",
    501: "NotImplemented",
}

_BIG_WINDOW = 1 << 62
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Response headers the codec owns (framing / connection management).
_OWNED = frozenset((b"connection", b"transfer-encoding", b"keep-alive"))
# Chunk heads (b"1f4\r\n") by chunk size, made once per size: a watch sends chunks of similar sizes, one
# per event, and a dictionary lookup costs a tenth of formatting the head. Sizes above the bound are
# formatted each time (the memory stays bounded: at most _CHUNK_HEAD_SIZES small bytes objects).
_CHUNK_HEADS: dict[int, bytes] = {}
_CHUNK_HEAD_SIZES = 8192


def _chunk(head: bytes, data: bytes) -> bytes:
    """One chunk of a chunked body as one ``bytes``: its head, the data and the CRLF (compiled: one
    allocation and three copies; a watch event goes out as this one piece, with no join later)."""
    if cython.compiled:
        hn = len(head)
        dn = len(data)
        out = PyBytes_FromStringAndSize(cython.NULL, hn + dn + 2)  # noqa: F821 - cimported by the .pxd
        buf = PyBytes_AS_STRING(out)  # noqa: F821
        memcpy(buf, PyBytes_AS_STRING(head), hn)  # noqa: F821
        memcpy(buf + hn, PyBytes_AS_STRING(data), dn)  # noqa: F821
        buf[hn + dn] = 13
        buf[hn + dn + 1] = 10
        return out
    return b"".join((head, data, b"\r\n"))


def _field_block(status: int, reason: bytes | None, headers: Headers) -> tuple[bytes, int | None]:
    """The status line and header lines of a response head (each ending in CRLF, without the blank line
    that ends the head) and the ``content-length`` the headers declare (None: none). Fields the codec owns
    (framing, connection management) are left out; a line break inside a field is refused."""
    length: int | None = None
    fields = [b"HTTP/1.1 %d %s" % (status, reason or REASONS.get(status, b"Unknown"))]
    for key, value in headers:
        if key in _OWNED:
            continue
        if key == b"content-length":
            length = int(value)
        fields.append(key + b": " + value)
    fields.append(b"")
    block = b"\r\n".join(fields)
    lines = len(fields) - 1
    if block.count(b"\n") != lines or block.count(b"\r") != lines:  # one scan, not two per field
        for key, value in headers:
            if b"\n" in value or b"\r" in value or b"\n" in key or b"\r" in key:
                raise ValueError(f"response header {key!r} holds a line break")
    return block, length


def response_head_bytes(status: int, headers: Headers) -> tuple[bytes, bool]:
    """A whole keep-alive HTTP/1.1 response head (a final status, 200–599) for a body framed by the
    ``content-length`` in ``headers`` when there is one, and otherwise chunked; and whether the body is
    to be chunked. 204 and 304 answers carry no body and get no framing."""
    block, length = _field_block(status, None, headers)
    if length is not None or status == 204 or status == 304:
        return block + b"\r\n", False
    return block + b"transfer-encoding: chunked\r\n\r\n", True


def status_json(code: int, message: str) -> bytes:
    """A Kubernetes ``Status`` body (kept local so the codec depends on nothing above it)."""
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": _STATUS_REASONS.get(code, "BadRequest"),
            "code": code,
        },
        separators=(",", ":"),
    ).encode()


class _NoMore(Exception):
    """Raised at the start of a request that arrives after close(): parsing stops without an error."""


class _Abort(Exception):
    """Raised inside a parser callback to stop parsing with an HTTP error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Stream:
    """Per-request bookkeeping (one small object per request)."""

    __slots__ = (
        "keep_alive",
        "head_request",
        "http10",
        "head_sent",
        "mode",
        "remaining",
        "ended",
        "upgrade",
        "dropped",
    )

    def __init__(self, keep_alive: bool, head_request: bool, http10: bool, upgrade: bool) -> None:
        self.keep_alive = keep_alive
        self.head_request = head_request
        self.http10 = http10
        self.upgrade = upgrade
        self.head_sent = False
        self.mode = 0  # 0 none, 1 content-length, 2 chunked, 3 until close, 4 raw (after 101)
        self.remaining = 0
        self.ended = False
        self.dropped = False  # the codec answered this request itself; the app's writes are ignored


class Http1ServerConnection:
    """HTTP/1.1 server side of one connection. Implements ``events.ServerConnection``."""

    http_version = "1.1"

    def __init__(self, limits: ServerLimits | None = None) -> None:
        self._limits = limits or ServerLimits()
        self._max_head = self._limits.max_header_bytes
        self._max_body = self._limits.max_body_bytes
        self._parser = httptools.HttpRequestParser(self)
        self._events: list[Event] = []
        self._out: list[bytes] = []  # output pieces, joined once by data_to_send()
        self._next_sid = 1
        self._sid = 0  # stream being parsed
        self._url = b""
        self._headers: Headers = []
        self._head_bytes = 0
        self._head_fed = 0
        self._in_msg = False
        self._in_head = False
        self._in_body = False
        self._body_bytes = 0
        self._pending_upgrade: RequestHead | None = None
        self._streams: dict[int, _Stream] = {}
        self._resp_sid = 1  # the stream whose response may be written now
        self._held: dict[int, list[bytes]] = {}
        self._stopped = False  # parsing has stopped (error, upgrade, EOF)
        self._closing = False  # close() was called: finish the request being read, take no new one
        self._must_close = False
        self._eof = False

    # ------------------------------------------------------------------ public state

    @property
    def must_close(self) -> bool:
        """True once the connection is to be closed after ``data_to_send()`` has been written."""
        return self._must_close

    @property
    def held_bytes(self) -> int:
        """Response bytes of pipelined requests held until the earlier responses have ended."""
        return sum(len(piece) for pieces in self._held.values() for piece in pieces)

    @property
    def upgraded(self) -> bool:
        return self._pending_upgrade is not None

    @property
    def idle(self) -> bool:
        """No request is being read or answered, and the next bytes may start a new one."""
        return not (self._in_msg or self._streams or self._stopped or self._closing)

    # ------------------------------------------------------------------ receiving

    def receive_data(self, data: bytes) -> list[Event]:
        if self._stopped:
            if not data and not self._eof:
                self._eof = True
                return [ConnectionClosed("peer closed the connection")]
            return []
        if not data:
            return self._on_eof()
        events = self._events
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            head = self._pending_upgrade
            if head is None:  # pragma: no cover - llhttp always reports the head first
                self._fail(400, "upgrade without a request head")
            else:
                self._stopped = True
                events.append(UpgradeRequested(head.stream_id, head, bytes(data[offset:])))
        except _Abort as exc:
            self._fail(exc.status, exc.message)
        except _NoMore:
            self._stopped = True
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _NoMore):
                self._stopped = True
            elif isinstance(cause, _Abort):
                self._fail(cause.status, cause.message)
            else:
                self._fail(400, f"bad request: {exc}")
        except httptools.HttpParserError as exc:
            message = str(exc.args[0]) if exc.args else str(exc)
            status = 501 if "Transfer-Encoding" in message and "Content-Length" not in message else 400
            self._fail(status, f"bad request: {message}")
        else:
            if self._in_head:
                # A head still incomplete at the end of this chunk: chunks after the one it began in are
                # all head bytes (on_header only sees complete lines). The chunk it began in also holds
                # the requests before it (pipelining, a body): not counted, it is bounded by the read size.
                if self._head_fed < 0:
                    self._head_fed = 0
                else:
                    self._head_fed += len(data)
                    if self._head_fed > self._max_head:
                        self._fail(431, f"request header fields larger than {self._max_head} bytes")
        if not events:
            return []
        self._events = []
        return events

    def _on_eof(self) -> list[Event]:
        self._stopped = True
        self._eof = True
        events = self._events
        self._events = []
        if self._in_body:
            events.append(StreamReset(self._sid))
            self._in_body = False
            stream = self._streams.get(self._sid)
            if stream is not None:
                stream.dropped = True
        events.append(ConnectionClosed("peer closed the connection"))
        return events

    def _fail(self, status: int, message: str) -> None:
        """Stop parsing; answer ``status`` in this request's turn unless the app already answers it."""
        self._stopped = True
        sid = self._sid if self._in_msg else self._next_sid
        stream = self._streams.get(sid) if self._in_msg else None
        self._events.append(ProtocolError(message, status, sid))
        if stream is None:
            stream = _Stream(False, False, False, False)
            self._streams[sid] = stream
            if self._next_sid <= sid:
                self._next_sid = sid + 2
        elif self._in_body:
            self._events.append(StreamReset(sid))
        self._in_body = False
        self._in_head = False
        stream.keep_alive = False
        if stream.head_sent:
            # The app's response already started: cut the connection after what was queued.
            stream.dropped = True
            self._must_close = True
            return
        stream.dropped = True
        body = status_json(status, message)
        self._write(
            sid,
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, REASONS.get(status, b"Error"), len(body), body),
        )
        stream.ended = True
        self._finish(sid, stream)

    # httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._closing:
            raise _NoMore
        self._sid = self._next_sid
        self._next_sid += 2
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self._head_fed = -1  # began in the chunk being fed
        self._in_msg = True
        self._in_head = True
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._max_head:
            raise _Abort(431, f"request line longer than {self._max_head} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes + len(self._url) > self._max_head:
            raise _Abort(431, f"request header fields larger than {self._max_head} bytes")
        if self._in_head:
            self._headers.append((name.lower(), value))
        # else: a chunked trailer field (llhttp reports them here too): counted, never added to the head
        # already handed on (Kubernetes uses no request trailers; an Impersonate-* there must not count).

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        headers = self._headers
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise _Abort(400, f"unsupported HTTP version {version}")  # HTTP/0.9 (no version): not served
        content_length: int | None = None
        chunked = False
        expect_continue = False
        host = ""
        for key, value in headers:
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise _Abort(400, "invalid Content-Length") from None
                if content_length is not None and content_length != length:
                    raise _Abort(400, "several differing Content-Length headers")
                content_length = length
            elif key == b"transfer-encoding":
                if value.strip().lower() != b"chunked" or chunked:
                    raise _Abort(501, f"unsupported transfer encoding: {value.decode('latin-1')!r}")
                chunked = True
            elif key == b"host":
                host = value.decode("latin-1")
            elif key == b"expect" and value.lower() == b"100-continue":
                expect_continue = True
        if chunked and content_length is not None:
            raise _Abort(400, "Content-Length and Transfer-Encoding together")
        if chunked and version == "1.0":
            raise _Abort(400, "Transfer-Encoding on an HTTP/1.0 request")
        if self._max_body is not None and content_length is not None and content_length > self._max_body:
            raise _Abort(413, f"request body larger than {self._max_body} bytes")
        method = parser.get_method().decode("ascii")
        try:
            target = self._url.decode("ascii")
        except UnicodeDecodeError:
            raise _Abort(400, "request target is not ASCII") from None
        upgrade = parser.should_upgrade()
        keep_alive = parser.should_keep_alive() and not self._closing
        sid = self._sid
        head = RequestHead(
            sid,
            method,
            target,
            headers,
            version,
            host,
            "https",
            upgrade,
            0 if content_length is None and not chunked else content_length,
        )
        self._streams[sid] = _Stream(keep_alive, method == "HEAD", version == "1.0", upgrade)
        if upgrade:
            self._pending_upgrade = head
            return
        self._in_body = True
        self._events.append(head)
        if expect_continue and version == "1.1" and (chunked or content_length):
            self._write(sid, _CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self._max_body is not None:
            self._body_bytes += len(body)
            if self._body_bytes > self._max_body:
                raise _Abort(413, f"request body larger than {self._max_body} bytes")
        self._events.append(RequestBody(self._sid, body))

    def on_message_complete(self) -> None:
        if self._pending_upgrade is not None:
            return
        self._in_body = False
        self._in_msg = False
        self._url = b""
        self._events.append(RequestEnd(self._sid))

    # ------------------------------------------------------------------ sending

    def _write(self, sid: int, data: bytes) -> None:
        if type(data) is not bytes:
            data = bytes(data)  # pieces are kept until data_to_send(): never a caller's mutable buffer
        if sid == self._resp_sid:
            self._out.append(data)
        else:
            held = self._held.get(sid)
            if held is None:
                self._held[sid] = [data]
            else:
                held.append(data)

    def send_response_head(self, head: ResponseHead, end_stream: bool = False) -> None:
        sid = head.stream_id
        stream = self._streams.get(sid)
        if stream is None or stream.dropped or (self._must_close and sid != self._resp_sid):
            return
        if stream.head_sent:
            raise RuntimeError(f"response head already sent on stream {sid}")
        status = head.status
        block, declared = _field_block(status, head.reason, head.headers)
        has_length = declared is not None
        length = declared if has_length else head.content_length
        parts = [block]
        append = parts.append
        stream.head_sent = True
        if status == 101:
            stream.mode = 4
            append(b"connection: upgrade\r\n\r\n")
            self._write(sid, b"".join(parts))
            return
        if status < 200:
            stream.head_sent = False  # informational: the final head follows
            append(b"\r\n")
            self._write(sid, b"".join(parts))
            return
        if stream.head_request or status == 204 or status == 304:
            stream.mode = 0
            if length is not None and not has_length and status != 204:
                append(b"content-length: %d\r\n" % length)
        elif length is not None:
            stream.mode = 1
            stream.remaining = length
            if not has_length:
                append(b"content-length: %d\r\n" % length)
        elif end_stream:
            stream.mode = 1
            append(b"content-length: 0\r\n")
        elif stream.http10:
            stream.mode = 3
            stream.keep_alive = False
        else:
            stream.mode = 2
            append(b"transfer-encoding: chunked\r\n")
        if stream.upgrade:
            stream.keep_alive = False  # a refused upgrade: the rest of the bytes are not HTTP
        if not stream.keep_alive:
            append(b"connection: close\r\n\r\n")
        elif stream.http10:
            append(b"connection: keep-alive\r\n\r\n")
        else:
            append(b"\r\n")
        self._write(sid, b"".join(parts))
        if end_stream:
            self.send_end(sid)

    def takes_relayed_head(self, stream_id: int) -> bool:
        """Whether ``send_relayed_head`` may answer this request: a keep-alive HTTP/1.1 request, not HEAD or
        an upgrade, whose answer has not begun, on a connection that is not closing."""
        stream = self._streams.get(stream_id)
        return (
            stream is not None
            and stream.keep_alive
            and not (stream.head_sent or stream.dropped or stream.http10 or stream.head_request or stream.upgrade)
            and not self._must_close
        )

    def send_relayed_head(self, stream_id: int, head: bytes, content_length: int) -> None:
        """Write a whole response head made elsewhere: the status line and fields of a keep-alive answer
        whose body is framed by the ``content-length`` it holds (``content_length``), with no field the
        codec owns, ending with the blank line. Only after ``takes_relayed_head`` said yes; the body
        follows with ``send_body``/``send_end`` as for any head."""
        stream = self._streams[stream_id]
        if stream.head_sent:
            raise RuntimeError(f"response head already sent on stream {stream_id}")
        stream.head_sent = True
        stream.mode = 1
        stream.remaining = content_length
        self._write(stream_id, head)

    def send_body(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.dropped or stream.ended:
            return
        size = len(data)
        if size:
            mode = stream.mode
            if mode == 2:  # the chunk as one piece
                head = _CHUNK_HEADS.get(size)
                if head is None:
                    head = b"%x\r\n" % size
                    if size < _CHUNK_HEAD_SIZES:
                        _CHUNK_HEADS[size] = head
                self._write(stream_id, _chunk(head, data if type(data) is bytes else bytes(data)))
            elif mode == 1:
                if size > stream.remaining:
                    raise ValueError(f"response body longer than its content-length on stream {stream_id}")
                stream.remaining -= size
                self._write(stream_id, data)
            elif mode in (3, 4):
                self._write(stream_id, data)
            elif not stream.head_sent:
                raise RuntimeError(f"body before response head on stream {stream_id}")
        if end_stream:
            self.send_end(stream_id)

    def send_end(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.ended:
            return
        if stream.dropped:
            return
        if not stream.head_sent:
            raise RuntimeError(f"end before response head on stream {stream_id}")
        stream.ended = True
        if stream.mode == 2:
            self._write(stream_id, b"0\r\n\r\n")
        elif stream.mode == 1 and stream.remaining:
            stream.keep_alive = False  # short body: the client can only tell by the close
        elif stream.mode in (3, 4):
            stream.keep_alive = False
        self._finish(stream_id, stream)

    def _finish(self, sid: int, stream: _Stream) -> None:
        if not stream.keep_alive:
            if sid == self._resp_sid:
                self._must_close = True
                self._stopped = True
            else:
                # Close once the earlier responses are out.
                self._held.setdefault(sid, [])
        if sid != self._resp_sid:
            return
        del self._streams[sid]
        if self._must_close:
            self._held.clear()
            return
        nxt = sid + 2
        self._resp_sid = nxt
        while nxt in self._held:
            self._out.extend(self._held.pop(nxt))
            following = self._streams.get(nxt)
            if following is None or not following.ended:
                break
            if not following.keep_alive:
                self._must_close = True
                self._stopped = True
                self._held.clear()
                del self._streams[nxt]
                return
            del self._streams[nxt]
            nxt += 2
            self._resp_sid = nxt

    def reset_stream(self, stream_id: int, error_code: int = 0) -> None:
        """HTTP/1.1 cannot reset one request: abandon it and close the connection."""
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.dropped = True
        self._stopped = True
        self._must_close = True

    def acknowledge_received(self, stream_id: int, nbytes: int) -> None:
        return None

    def send_window(self, stream_id: int) -> int:
        return _BIG_WINDOW

    def close(self) -> None:
        """Take no new request; the one being read (a body still arriving) is read to its end; close
        once every response in progress has ended (the last one says ``Connection: close``)."""
        self._closing = True
        if not self._in_msg:
            self._stopped = True
            if not self._streams:
                self._must_close = True
                return
        for stream in self._streams.values():
            stream.keep_alive = False

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)

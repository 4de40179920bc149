"""exec / attach / portforward: HTTP/1.1 upgrades (SPDY/3.1 by POST, WebSocket by GET) relayed as bytes.

The request is routed and authorized like any other, then sent on a fresh upstream HTTP/1.1
connection. The upstream's answer goes back to the client as is (headers rewritten): a ``101`` starts
the relay, anything else (e.g. a 400/403 refusal of WebSocket, on which kubectl falls back to SPDY) is
passed through and the client connection closes. The relay moves bytes both ways without re-framing;
each side's reading pauses while the other side's write buffer is above its high-water mark; when one
side ends, the other is closed once its queued bytes are written.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from proxy import metrics
from proxy.headers import rewrite_request_headers, rewrite_response_headers
from proxy.policy import Verdict
from proxy.protocol.events import ResponseHead
from proxy.recording.hook import new_session_id, open_recording, session_meta
from proxy.timestamps import rfc3339_micro
from proxy.upstream.base import UpstreamError
from rbac.status import REASONS, status_body

PORTFORWARD_TELL_SECONDS = 1.0  # between telling kubectl port-forward why it ends and closing (see stop)

if TYPE_CHECKING:
    from proxy.forward import Exchange
    from proxy.recording.recorder import SessionRecorder
    from proxy.upstream.http1 import Http1Upstream

log = logging.getLogger("kubegate.proxy.upgrade")


def encode_101(headers: list[tuple[bytes, bytes]]) -> bytes:
    parts = [b"HTTP/1.1 101 Switching Protocols\r\n"]
    for key, value in headers:
        parts += (key, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


READ_BUFFER = 256 * 1024 + 256  # uvloop's TLS reads ask for what is pending (at most 256 KiB) + 256

try:  # kubegate's TLS layer: a write is encrypted at once, and the transport keeps no view of it
    from proxy.tls_direct import TLSTransport as _ConsumingTransport
except ImportError:  # not built here: every transport may keep what it is written
    _ConsumingTransport = ()  # type: ignore[assignment,misc]


class _ReadBuffer(threading.local):
    """The buffer every relay side of this thread reads into (one event loop per thread): a read is written
    to the peer's transport before the next read starts, so one buffer serves every session."""

    view: memoryview | None = None


_read_buffer = _ReadBuffer()


class _RelaySide:
    """What a relay side does (``_Side`` is the protocol); compiled, an extension type (``upgrade.pxd``)
    whose fields the per-read steps reach as C struct members."""

    def __init__(self, session: UpgradeSession, name: str) -> None:
        self.session = session
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.peer: _RelaySide | None = None
        self.bytes = 0
        self.eof = False
        self.lost = False
        self.peer_may_keep_views = True  # set when the relay starts (``peer_transport_set``)
        self._buffer: memoryview | None = None  # the buffer handed to the transport, until it says what it read

    def peer_transport_set(self) -> None:
        peer = self.peer
        self.peer_may_keep_views = peer is None or not isinstance(peer.transport, _ConsumingTransport)

    def get_buffer(self, sizehint: int) -> memoryview:
        buffer = _read_buffer.view
        if buffer is None:
            buffer = _read_buffer.view = memoryview(bytearray(READ_BUFFER))
        self._buffer = buffer
        return buffer

    def buffer_updated(self, nbytes: int) -> None:
        buffer = self._buffer
        assert buffer is not None
        self._buffer = None
        self.data_received(buffer[:nbytes])
        if self.peer_may_keep_views:
            peer = self.peer
            if peer is not None and peer.transport is not None and peer.transport.get_write_buffer_size():
                if _read_buffer.view is buffer:
                    _read_buffer.view = None  # the peer's transport may still hold the view

    def data_received(self, data: bytes | memoryview) -> None:
        self.bytes += len(data)
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.lost:
            peer.transport.write(data)
            self.session.observe(self.name, data)

    def eof_received(self) -> bool | None:
        self.eof = True
        self.session.side_ended(self)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.session.side_ended(self)

    def pause_writing(self) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.lost:
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.lost:
            peer.transport.resume_reading()


class _Side(_RelaySide, asyncio.BufferedProtocol):
    """One end of the relay: bytes read here are written to ``peer``'s transport.

    A buffered protocol: the transport reads (a TLS transport: decrypts) straight into the buffer, and the
    peer's transport is written a view of it; no bytes object per read or per TLS record, no join of a
    read's records. The buffer is the thread's (``_ReadBuffer``), shared by every side of every session:
    no session holds one of its own, busy or idle, and none is allocated per read. A peer transport that
    may keep the view it was written (any but kubegate's TLS layer, which encrypts a write at once) and
    did keep something (``get_write_buffer_size()``) leaves the buffer to it: the next read gets a new one.
    (``asyncio.BufferedProtocol`` is what transports check for; the steps are ``_RelaySide``'s.)"""


class UpgradeSession:
    def __init__(self, exchange: Exchange, trailing: bytes) -> None:
        self.ex = exchange
        self.trailing = trailing
        self.client = _Side(self, "client")
        self.upstream = _Side(self, "upstream")
        self.client.peer = self.upstream
        self.upstream.peer = self.client
        self._done: asyncio.Future[None] | None = None
        self._up: Http1Upstream | None = None
        self.relaying = False
        self.started = time.time()
        self.tap: Any = None  # a proxy.protocol.channels.SessionTap (None: not tapped)
        self.tapping = True  # False once the tap gave up: the rest is relayed unobserved
        self.session_id = ""
        self.meta: dict[str, Any] = {}
        self.recorder: SessionRecorder | None = None
        self._notices: list[bytes] = []  # frames for the client's stdout, written at a frame boundary
        self.told = False  # the client was told why kubegate ends the session (see stop)

    def observe(self, direction: str, data: bytes | memoryview) -> None:
        tap = self.tap
        if tap is not None and self.tapping:
            try:
                tap(direction, data)
            except Exception:  # an audit tap must never break the session
                log.exception("session tap failed")
                self.tap = None
                return
            if tap.failed:  # not the protocol the tap expects: stop looking, keep relaying
                self.tapping = False
                metrics.TAP_GAVE_UP.labels(self.ex.kind or "upgrade").inc()
                log.warning("session tap gave up", extra={"request_id": self.ex.request_id,
                                                          "problem": tap.failure})
                if self.recorder is not None:
                    self.recorder.fail(f"the session's stream could not be followed: {tap.failure}")
                return
            if self._notices and direction == "upstream":
                self._write_notices()

    def notify_owner(self, text: bytes) -> None:
        """Show ``text`` on the session owner's terminal (stdout), between two of the server's frames."""
        tap = self.tap
        frame = tap.stdout_frame(text) if tap is not None and self.tapping else None
        if frame is None:
            return
        self._notices.append(frame)
        if self.recorder is not None:
            self.recorder.content("stdout", text)
        self._write_notices()

    def _write_notices(self) -> None:
        transport = self.client.transport
        if self.tap is None or transport is None or transport.is_closing() or not self.tap.server_at_boundary():
            return
        frames, self._notices = self._notices, []
        transport.write(b"".join(frames))

    async def run(self) -> None:
        ex = self.ex
        conn = ex.conn
        try:
            try:
                decided = await ex._decide()
                if decided[0] is None:
                    _, code, body = decided
                    ex._respond_error(code, body, "denied")  # type: ignore[arg-type]
                    return
                cluster, verdict, target = decided
                assert isinstance(verdict, Verdict)
                ex.kind = upgrade_kind(ex.head.path)
                refusal = await self._start_session(verdict)
                if refusal is not None:
                    ex._respond_error(503, refusal, "recording")
                    return
                pool = ex.fwd.pools.get(cluster)
                await pool.ensure_credentials()
                headers = rewrite_request_headers(
                    ex.head.headers,
                    user=verdict.user or ex.identity.user,
                    groups=verdict.groups,
                    client_ip=conn.peer_ip,
                    upstream_authority=pool.authority,
                    bearer_token=pool.bearer_token,
                    upgrade=True,
                )
                up, status, up_headers, up_trailing = await pool.open_upgrade(ex.head.method, target, headers)
                self._up = up
                ex.status = status
                if status != 101:
                    if self.recorder is not None:
                        self.recorder.abort()
                        self.recorder = None
                    await self._refusal(up, status, up_headers)
                    return
                await self._relay(up, up_headers, up_trailing, verdict)
            except UpstreamError as exc:
                metrics.upstream_error(ex.cluster.name if ex.cluster else "", exc.kind)
                log.warning("upstream error on upgrade", extra={"request_id": ex.request_id, "code": exc.status, "problem": exc.message})
                ex._respond_error(exc.status, status_body(exc.status, REASONS.get(exc.status, "InternalError"), exc.message), exc.kind)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("internal error in upgrade", extra={"request_id": ex.request_id})
            ex._respond_error(500, status_body(500, "InternalError", f"kubegate internal error (request id {ex.request_id})"), "internal")
        finally:
            if self.recorder is not None and not self.recorder.closed:
                self.recorder.abort()  # never relayed (upstream error before the 101)
            ex._finish()  # first: the connection closes only once it has no exchange left
            if not self.relaying:
                conn.close()  # parsing stopped at the upgrade head: this connection serves nothing more
                if self._up is not None:
                    self._up.close()
            else:
                conn._close_all()

    async def _refusal(self, up: Http1Upstream, status: int, up_headers: list[tuple[bytes, bytes]]) -> None:
        ex = self.ex
        conn = ex.conn
        exchange = up.exchange
        chunks = []
        if exchange is not None:
            while chunk := await exchange.read():
                chunks.append(chunk)
        body = b"".join(chunks)
        headers = rewrite_response_headers(up_headers, request_id=ex.request_id, body_rewritten=True)
        headers = [(k, v) for k, v in headers if k not in (b"content-length",)]
        headers.append((b"content-length", str(len(body)).encode()))
        conn.send_head(ResponseHead(ex.sid, status, headers, content_length=len(body)))
        conn.send_body(ex.sid, body, end_stream=True)
        ex._response_started = True
        conn.flush()

    async def _relay(self, up: Http1Upstream, up_headers: list[tuple[bytes, bytes]], up_trailing: bytes, verdict: Verdict) -> None:
        ex = self.ex
        conn = ex.conn
        loop = ex.fwd.loop
        self._done = loop.create_future()
        conn.flush()
        client_transport = conn.detach()
        headers = rewrite_response_headers(up_headers, request_id=ex.request_id, upgrade=True)
        client_transport.write(encode_101(headers))
        ex._response_started = True
        self.relaying = True
        ex._observe_head()
        assert up.transport is not None
        self.client.transport = client_transport
        self.upstream.transport = up.transport
        self.client.peer_transport_set()
        self.upstream.peer_transport_set()
        client_transport.set_protocol(self.client)
        up.take_over(self.upstream)
        up.transport.set_protocol(self.upstream)  # reads go straight to the relay (a buffered protocol)
        if up.reading_paused:
            up.resume()
        # The tap must exist before the first relayed bytes: a SPDY tap that misses a header block loses
        # its zlib context, and a WebSocket exec's first stdout frames can ride in up_trailing.
        # (also without an audit sink: the tap is what lets a stop tell the client why, see stop())
        if ex.fwd.settings.tap_sessions or self.recorder is not None:
            self.tap = _session_tap(up_headers, self.recorder.on_data if self.recorder is not None else None)
        if self.recorder is not None:
            if self.tap is not None:
                self.recorder.notify_owner = self.notify_owner
            else:
                self.recorder.abort()
                self.recorder = None
        if self.trailing:
            self.client.data_received(self.trailing)
        if up_trailing:
            self.upstream.data_received(up_trailing)
        kind = ex.kind or "upgrade"
        metrics.OPEN_STREAMS.labels(kind).inc()
        self._audit_session("session.start", verdict)
        try:
            if client_transport.is_closing():
                self.side_ended(self.client)
            await self._done
        finally:
            metrics.OPEN_STREAMS.labels(kind).dec()
            metrics.BYTES_RELAYED.labels("to_client").inc(self.upstream.bytes)
            metrics.BYTES_RELAYED.labels("to_upstream").inc(self.client.bytes)
            ex.bytes_out = self.upstream.bytes
            ex.bytes_in = self.client.bytes
            for side in (self.client, self.upstream):
                if side.transport is not None and not side.transport.is_closing():
                    side.transport.close()
            self._audit_session("session.end", verdict)

    def side_ended(self, side: _Side) -> None:
        """One side ended (EOF or lost): close the other once its queued bytes are written."""
        peer = side.peer
        if peer is not None and peer.transport is not None and not peer.transport.is_closing():
            if side.eof and not side.lost and peer.transport.can_write_eof():
                peer.transport.write_eof()  # a real half-close where the transport has one (plain TCP)
                if not peer.eof:
                    return
            else:
                peer.transport.close()
        if side.transport is not None and not side.transport.is_closing() and (side.lost or (peer is not None and (peer.eof or peer.lost))):
            side.transport.close()
        if self._done is not None and not self._done.done() and (side.lost or side.eof):
            self._done.set_result(None)

    def client_gone(self) -> None:
        if self.relaying:
            self.side_ended(self.client)
        elif self.ex.task is not None and not self.ex.task.done():
            self.ex.task.cancel()

    def stop(self, reason: str, code: int = 503) -> None:
        """kubegate ends the session: the client is told why where its protocol allows (the error
        channel's Status and a close frame on WebSocket, the error stream on SPDY; see
        ``SessionTap.ending``), then both sides close once their queued bytes are written."""
        if not self.relaying:
            self.client_gone()
            return
        if self.told:
            return  # told already (a port-forward closing a moment later): a second ending would break the stream
        transport = self.client.transport
        if self.tap is not None and self.tapping and transport is not None and not transport.is_closing():
            told = self.tap.ending(reason, status_body(code, REASONS.get(code, "InternalError"), reason).rstrip(b"\n"))
            if told:  # (only at a frame boundary, where pending notices may go first)
                transport.write(b"".join(self._notices) + told)
                self._notices = []
                self.told = True
                if self.ex.kind == "portforward":
                    # kubectl prints a forwarded connection's error stream from another goroutine than the
                    # one that sees the connection close and exits: it gets a moment to print it, while
                    # nothing more is relayed either way.
                    for side in (self.client, self.upstream):
                        if side.transport is not None:
                            side.transport.pause_reading()
                    asyncio.get_running_loop().call_later(PORTFORWARD_TELL_SECONDS, self._close)
                    return
        self._close()

    def _close(self) -> None:
        """Both sides close once their queued bytes are written; the session ends."""
        for side in (self.client, self.upstream):
            if side.transport is not None:
                side.transport.close()
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    async def _start_session(self, verdict: Verdict) -> bytes | None:
        """Name the session and open its recording when roles ask for one; a Status body when the session
        must be refused (strict recording that cannot be written)."""
        ex = self.ex
        self.session_id = new_session_id()
        self.meta = session_meta(
            ex.kind or "upgrade", self.session_id, ex.head.query, user=ex.identity.user, roles=list(ex.identity.roles),
            cluster=ex.cluster.name if ex.cluster else "", namespace=verdict.namespace, pod=verdict.name,
        )
        recordings = ex.fwd.recordings
        if recordings is None or ex.kind not in ("exec", "attach"):
            return None
        self.recorder, refusal = await open_recording(recordings, ex.fwd.policy, ex.identity, self.meta,
                                                      self._recording_failed)
        if refusal is not None:
            metrics.DENIALS.labels("recording_unavailable").inc()
        return refusal

    def _recording_failed(self, reason: str) -> None:
        """A strict recording can no longer be written: tell the owner, end the session."""
        self.notify_owner(f"\r\n[kubegate] {reason}; the session is ended (recording mode strict)\r\n".encode())
        self.ex.stop(reason)

    def _audit_session(self, event: str, verdict: Verdict) -> None:
        ex = self.ex
        audit = ex.fwd.audit
        recordings = ex.fwd.recordings
        if audit is None and recordings is None:
            return
        meta = self.meta
        recording = self.recorder.location if self.recorder is not None else None
        record: dict[str, Any] = {
            "event": event,
            "session_id": self.session_id,
            "time": rfc3339_micro(time.time()),
            "request_id": ex.request_id,
            "user": ex.identity.user,
            "roles": list(ex.identity.roles),
            "client_ip": ex.conn.peer_ip,
            "impersonated_user": verdict.user,
            "impersonated_groups": list(verdict.groups),
            "cluster": ex.cluster.name if ex.cluster else None,
            "kind": ex.kind,
            "namespace": verdict.namespace,
            "pod": verdict.name,
            "path": ex.head.path,
            "query": ex.head.query,
            "protocol": (ex.head.header(b"upgrade") or b"").decode("latin-1"),
            "tty": meta.get("tty"),
            "container": meta.get("container"),
            "command": meta.get("command"),
            "recording": recording,
        }
        if event == "session.end":
            record.update(
                bytes_to_client=self.upstream.bytes,
                bytes_from_client=self.client.bytes,
                duration_s=round(time.time() - self.started, 3),
                stopped=ex._stop_reason,
            )
            if self.tap is not None and hasattr(self.tap, "summary"):
                record.update(self.tap.summary())
        if audit is not None:
            audit(record)
            if event == "session.end" and ex.kind == "exec" and not meta.get("tty"):
                audit({"event": "exec", "time": record["time"], "session_id": self.session_id,
                       "request_id": ex.request_id, "user": record["user"], "cluster": record["cluster"],
                       "namespace": record["namespace"], "pod": record["pod"], "container": meta.get("container"),
                       "command": meta.get("command"), "exit_code": record.get("exit_code"),
                       "recording": recording})
        if recordings is not None:
            entry = {**meta, **{k: record[k] for k in ("impersonated_user", "impersonated_groups", "protocol")},
                     "recording": recording, "state": "live" if event == "session.start" else "ended"}
            if recordings.origin:
                entry["proxy_addr"] = recordings.origin  # which replica holds it (a join elsewhere asks it)
            if event == "session.end":
                entry.update({k: record.get(k) for k in ("duration_s", "bytes_to_client", "bytes_from_client",
                                                         "exit_code", "stopped")}, end_time=time.time())
            if self.recorder is not None and event == "session.end":
                self.recorder.close(entry)  # the index is updated once the recording is complete
            else:
                recordings.put_index(entry)


def _session_tap(headers: list[tuple[bytes, bytes]], on_data: Any = None) -> Any:
    """The streams part's audit tap (exit code, bytes per stream) for this wire, or None; ``on_data`` sees
    the streams' content (session recording)."""
    from proxy.protocol.channels import SessionTap

    return SessionTap.from_response_headers(headers, on_data=on_data)


def upgrade_kind(path: str) -> str:
    """The session kind of an upgrade request by its path: exec, attach, portforward, else "upgrade"."""
    for kind in ("exec", "attach", "portforward"):
        if path.endswith("/" + kind):
            return kind
    return "upgrade"

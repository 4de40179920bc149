"""``GET /kubegate/sessions/<id>/stream`` on the proxy listener: a live session, read-only, as asciicast.

The caller is identified by its client certificate like any request. It may observe the session when it
is the session's owner or when one of its roles has a ``join_sessions`` rule covering a role of the
owner (kind ``k8s``); otherwise 403. The answer is ``200`` with ``Content-Type: application/x-asciicast``:
the cast header and the session's recent lines, then each new batch of lines as the session goes, and the
end of the body when the session ends. The owner's terminal shows a line naming who joined.

A session recorded by this process is followed from its recorder (lines as they are made); one recorded
by another worker process (``proxy.workers`` > 1) into the file store is followed from its file
(:mod:`proxy.recording.tail`; the owner's process learns of the join from ``<cast>.joins``). A session
recorded to object storage by another worker process of the same replica cannot be joined (404 says
so). A session held by another replica (``backend.type: etcd``; the index record's ``proxy_addr``) is
asked of that replica, as the joiner (:mod:`proxy.recording.peer`), and relayed. A joiner that does not read fast enough (more than ``MAX_UNREAD`` bytes queued) is
disconnected; the session is never slowed down by a watcher.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
from typing import TYPE_CHECKING, Any

from proxy import metrics
from proxy.headers import REQUEST_ID_HEADER
from proxy.protocol.events import ResponseHead
from proxy.recording import tail
from proxy.recording.index import held_elsewhere, valid_session_id
from proxy.recording.peer import PEER_HOP_HEADER
from proxy.recording.tail import joined_notice
from rbac.status import status_body

if TYPE_CHECKING:
    from proxy.forward import Exchange
    from proxy.recording.recorder import SessionRecorder

log = logging.getLogger("kubegate.proxy.recording")

SESSIONS_PREFIX = "/kubegate/sessions/"
MAX_UNREAD = 4 * 1024 * 1024
FOLLOW_INTERVAL = 0.1  # seconds between looks at another process's recording file


async def serve_join(ex: Exchange) -> None:
    try:
        await _serve(ex)
    except asyncio.CancelledError:
        pass
    except Exception:
        log.exception("internal error serving a session join", extra={"request_id": ex.request_id})
        ex._respond_error(500, status_body(500, "InternalError", f"kubegate internal error (request id {ex.request_id})"), "internal")
    finally:
        ex._finish()


async def _serve(ex: Exchange) -> None:
    head = ex.head
    rest = head.path[len(SESSIONS_PREFIX):]
    session_id, _, tail = rest.partition("/")
    if tail != "stream" or not valid_session_id(session_id):
        ex._respond_error(404, status_body(404, "NotFound", f"the path {head.path!r} is not served here: live sessions are at {SESSIONS_PREFIX}<session id>/stream"), "denied")
        return
    if head.method != "GET":
        ex._respond_error(405, status_body(405, "MethodNotAllowed", "only GET is served for a session stream"), "denied")
        return
    recordings = ex.fwd.recordings
    recorder = recordings.live.get(session_id) if recordings is not None else None
    meta: dict[str, Any] | None = recorder.encoder.meta if recorder is not None else None  # type: ignore[assignment]
    elsewhere = ""  # the address of the replica that holds the session, when another one does
    if meta is None and recordings is not None:
        record = await ex.fwd.loop.run_in_executor(None, recordings.index.get, session_id)
        if record and record.get("state") == "live":
            held_by = held_elsewhere(record, recordings.origin)
            relayed = head.header(PEER_HOP_HEADER) is not None  # asked by a replica: never asked on again
            if held_by and recordings.peer is not None and not relayed:
                meta, elsewhere = record, held_by  # another replica: ask it for the stream, as the joiner
            elif not held_by and _local_file(record.get("recording")):
                meta = record  # another worker process of this replica: follow its recording file
    if meta is None:
        ex._respond_error(404, status_body(404, "NotFound", f"session {session_id} is not live (ended, not recorded, or recorded by another kubegate process to object storage)", {"name": session_id, "kind": "sessions"}), "denied")
        return
    owner = str(meta.get("user") or "")
    if not ex.fwd.policy.may_join(ex.identity, owner, list(meta.get("roles") or [])):
        ex._respond_error(403, status_body(403, "Forbidden", f"user {ex.identity.user!r} may not join session {session_id}: no join_sessions rule of their roles covers the owner's roles", {"name": session_id, "kind": "sessions"}), "denied")
        return
    if elsewhere:
        pid = meta.get("proxy_pid")
        if isinstance(pid, int) and not await _holder_present(ex, elsewhere, pid):
            ex._respond_error(404, status_body(404, "NotFound", f"session {session_id} is not live: the kubegate replica at {elsewhere} that held it is gone (the session was interrupted)", {"name": session_id, "kind": "sessions"}), "denied")
            return
        await _follow_peer(ex, session_id, owner, elsewhere)
        return
    _joined(ex, session_id, owner, "this_process" if recorder is not None else "recording_file")
    conn = ex.conn
    if recorder is not None:
        await _follow_live(ex, recorder, session_id)
    else:
        await _follow_file(ex, meta, session_id)
    conn.send_end(ex.sid)
    conn.flush()


async def _holder_present(ex: Exchange, address: str, pid: int) -> bool:
    """Whether the process holding a session on another replica is there (``backend.presence``); True when
    that cannot be told (no shared backend, or it does not answer): the holder is then asked anyway."""
    recordings = ex.fwd.recordings
    if recordings is None or recordings.present is None:
        return True
    try:
        return bool(await ex.fwd.loop.run_in_executor(None, recordings.present, address, pid))
    except Exception as exc:  # noqa: BLE001 - the backend's trouble: ask the holder itself
        log.info("cannot tell whether a session's replica is there", extra={"replica": address, "error": str(exc)})
        return True


def _joined(ex: Exchange, session_id: str, owner: str, source: str, held_by: str = "") -> None:
    """The join is on: the 200 head, the log line, the audit event, the metric."""
    conn = ex.conn
    ex.status = 200
    ex.kind = "session-join"
    conn.send_head(ResponseHead(ex.sid, 200, [(b"content-type", b"application/x-asciicast"), (b"cache-control", b"no-store"), (REQUEST_ID_HEADER, ex.request_id.encode())]))
    ex._response_started = True
    where = {"held_by": held_by} if held_by else {}
    log.info("session joined", extra={"session_id": session_id, "user": ex.identity.user, "owner": owner, **where})
    if ex.fwd.audit is not None:
        ex.fwd.audit({"event": "session.join", "session_id": session_id, "user": ex.identity.user,
                      "roles": list(ex.identity.roles), "owner": owner, "mode": "observer",
                      "client_ip": conn.peer_ip, "request_id": ex.request_id, **where})
    metrics.SESSION_JOINS.labels(source).inc()


async def _follow_peer(ex: Exchange, session_id: str, owner: str, address: str) -> None:
    """A session another replica holds (:mod:`proxy.recording.peer`): its stream, asked for as the joiner,
    relayed as it comes; its refusal (403, 404) relayed as it is; 502 when it cannot be reached."""
    recordings = ex.fwd.recordings
    assert recordings is not None and recordings.peer is not None
    loop = ex.fwd.loop
    transport = ex.conn.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    try:
        if not der:
            raise ValueError("the joiner's certificate is not at hand")
        stream = await loop.run_in_executor(None, recordings.peer.open, address, session_id, der)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        log.warning("the replica holding a session did not answer a join", extra={
            "request_id": ex.request_id, "session_id": session_id, "replica": address, "error": str(exc)})
        ex._respond_error(502, status_body(502, "ServiceUnavailable", f"session {session_id} is held by the kubegate replica at {address}, which did not answer: {exc}", {"name": session_id, "kind": "sessions"}), "peer_unreachable")
        return
    try:
        if stream.status != 200:
            body = await loop.run_in_executor(None, stream.body)
            ex._respond_error(stream.status, body, "denied")
            return
        _joined(ex, session_id, owner, "another_replica", held_by=address)
        conn = ex.conn
        while True:
            data = await loop.run_in_executor(None, stream.read)
            if not data or not _send(ex, data):
                break
        conn.send_end(ex.sid)
        conn.flush()
    except (OSError, http.client.HTTPException) as exc:  # the owner went away mid-stream: the join ends
        log.info("a session followed from another replica ended early", extra={
            "request_id": ex.request_id, "session_id": session_id, "replica": address, "error": str(exc)})
    finally:
        stream.close()


def _local_file(location: object) -> bool:
    return isinstance(location, str) and location.startswith("/")


def _send(ex: Exchange, lines: bytes) -> bool:
    """Write ``lines`` to the joiner; False when it does not keep up (it is then dropped)."""
    conn = ex.conn
    transport = conn.transport
    if transport is not None and transport.get_write_buffer_size() > MAX_UNREAD:
        log.warning("session watcher too slow: disconnected", extra={"request_id": ex.request_id, "user": ex.identity.user})
        return False
    conn.send_body(ex.sid, lines)
    conn.flush()
    return True


async def _follow_live(ex: Exchange, recorder: SessionRecorder, session_id: str) -> None:
    """A session recorded by this process: its recorder's lines as they are made."""
    done: asyncio.Future[None] = ex.fwd.loop.create_future()

    def watcher(lines: bytes) -> None:
        if not done.done() and (not lines or not _send(ex, lines)):
            done.set_result(None)

    first = recorder.watch(watcher)
    try:
        if first:
            _send(ex, first)
        if recorder.notify_owner is not None:
            recorder.notify_owner(joined_notice(ex.identity.user))
        await done
    finally:
        recorder.unwatch(watcher)


async def _follow_file(ex: Exchange, record: dict[str, Any], session_id: str) -> None:
    """A session recorded by another process into a local file: follow the file until the session ends."""
    loop = ex.fwd.loop
    path = str(record["recording"])
    recordings = ex.fwd.recordings
    assert recordings is not None
    pid = int(record.get("proxy_pid") or 0)
    first, offset = await loop.run_in_executor(None, tail.recent_lines, path)
    if first and not _send(ex, first):
        return
    await loop.run_in_executor(None, tail.announce_join, path, ex.identity.user)
    while True:
        lines, offset = await loop.run_in_executor(None, tail.read_from, path, offset)
        if lines and not _send(ex, lines):
            return
        if not lines:
            current = await loop.run_in_executor(None, recordings.index.get, session_id)
            if not current or current.get("state") != "live" or (pid and not tail.process_alive(pid)):
                lines, offset = await loop.run_in_executor(None, tail.read_from, path, offset)
                if lines:
                    _send(ex, lines)
                return
            await asyncio.sleep(FOLLOW_INTERVAL)

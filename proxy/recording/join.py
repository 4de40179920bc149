"""``GET /kubegate/sessions/<id>/stream`` on the proxy listener: a live session, read-only, as asciicast.

The caller is identified by its client certificate like any request. It may observe the session when it
is the session's owner or when one of its roles has a ``join_sessions`` rule covering a role of the
owner (kind ``k8s``); otherwise 403. The answer is ``200`` with ``Content-Type: application/x-asciicast``:
the cast header and the session's recent lines, then each new batch of lines as the session goes, and the
end of the body when the session ends. The owner's terminal shows a line naming who joined.

Live sessions are those recorded by THIS process (with ``proxy.workers`` > 1 another worker may hold
it: 404 says so). A joiner that does not read fast enough (more than ``MAX_UNREAD`` bytes queued) is
disconnected; the session is never slowed down by a watcher.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from proxy.headers import REQUEST_ID_HEADER
from proxy.protocol.events import ResponseHead
from proxy.recording.hook import joined_notice
from proxy.recording.index import valid_session_id
from rbac.status import status_body

if TYPE_CHECKING:
    from proxy.forward import Exchange

log = logging.getLogger("kubegate.proxy.recording")

SESSIONS_PREFIX = "/kubegate/sessions/"
MAX_UNREAD = 4 * 1024 * 1024


def is_sessions_path(path: str) -> bool:
    return path.startswith(SESSIONS_PREFIX)


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
    if recorder is None:
        ex._respond_error(404, status_body(404, "NotFound", f"session {session_id} is not live on this kubegate process (ended, not recorded, or held by another worker)", {"name": session_id, "kind": "sessions"}), "denied")
        return
    meta = recorder.encoder.meta
    owner = str(meta.get("user") or "")
    if not ex.fwd.policy.may_join(ex.identity, owner, list(meta.get("roles") or [])):
        ex._respond_error(403, status_body(403, "Forbidden", f"user {ex.identity.user!r} may not join session {session_id}: no join_sessions rule of their roles covers the owner's roles", {"name": session_id, "kind": "sessions"}), "denied")
        return
    conn = ex.conn
    ex.status = 200
    ex.kind = "session-join"
    conn.send_head(ResponseHead(ex.sid, 200, [(b"content-type", b"application/x-asciicast"), (b"cache-control", b"no-store"), (REQUEST_ID_HEADER, ex.request_id.encode())]))
    ex._response_started = True
    done: asyncio.Future[None] = ex.fwd.loop.create_future()

    def watcher(lines: bytes) -> None:
        if done.done():
            return
        if not lines:
            done.set_result(None)
            return
        transport = conn.transport
        if transport is not None and transport.get_write_buffer_size() > MAX_UNREAD:
            log.warning("session watcher too slow: disconnected", extra={"session_id": session_id, "user": ex.identity.user})
            done.set_result(None)
            return
        conn.send_body(ex.sid, lines)
        conn.flush()

    first = recorder.watch(watcher)
    try:
        if first:
            conn.send_body(ex.sid, first)
        conn.flush()
        log.info("session joined", extra={"session_id": session_id, "user": ex.identity.user, "owner": owner})
        if ex.fwd.audit is not None:
            ex.fwd.audit({"event": "session.join", "session_id": session_id, "user": ex.identity.user,
                          "roles": list(ex.identity.roles), "owner": owner, "mode": "observer",
                          "client_ip": conn.peer_ip, "request_id": ex.request_id})
        if recorder.notify_owner is not None:
            recorder.notify_owner(joined_notice(ex.identity.user))
        await done
        conn.send_end(ex.sid)
        conn.flush()
    finally:
        recorder.unwatch(watcher)

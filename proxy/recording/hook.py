"""What the upgrade relay needs from recording, kept out of the relay: the exec/attach request's options,
the recording decision and opening, the audit/index fields of a session, and the owner's notices.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from proxy.recording.recorder import Recordings, SessionRecorder
from proxy.recording.stores import RecordingStoreError
from rbac.status import status_body

if TYPE_CHECKING:
    from proxy.policy import Policy
    from rbac.identity import Identity

log = logging.getLogger("kubegate.proxy.recording")


def new_session_id() -> str:
    return uuid.uuid4().hex


def exec_options(query: str) -> tuple[bool, list[str], str]:
    """(tty, command, container) of an exec/attach request's query."""
    params = parse_qs(query, keep_blank_values=True)
    tty = (params.get("tty") or ["false"])[-1].lower() in ("true", "1")
    return tty, params.get("command") or [], (params.get("container") or [""])[-1]


async def open_recording(
    recordings: Recordings, policy: Policy, identity: Identity, meta: dict[str, Any], on_failure: Any,
) -> tuple[SessionRecorder | None, bytes | None]:
    """(recorder or None, refusal Status body or None) for an exec/attach session. A strict recording
    that cannot be opened refuses the session; a best-effort one goes on unrecorded (logged)."""
    decision = policy.recording(identity, bool(meta.get("tty")), recordings.strict)
    if not decision.record:
        return None, None
    session_id = meta["session_id"]
    try:
        recorder = await recordings.open(session_id, meta, record_input=decision.input, strict=decision.strict,
                                         on_failure=on_failure)
    except RecordingStoreError as exc:
        log.warning("cannot record session", extra={"session_id": session_id, "problem": str(exc),
                                                     "strict": decision.strict})
        if decision.strict:
            return None, status_body(
                503, "ServiceUnavailable",
                f"kubegate refuses this session: it must be recorded (recording mode strict) and the "
                f"recording cannot be written: {exc}",
            )
        return None, None
    return recorder, None


def session_meta(kind: str, session_id: str, query: str, *, user: str, roles: list[str], cluster: str,
                 namespace: str, pod: str) -> dict[str, Any]:
    """The session's identifying fields (the cast header's ``kubegate`` object, the index record)."""
    tty, command, container = exec_options(query) if kind in ("exec", "attach") else (False, [], "")
    return {
        "session_id": session_id,
        "kind": kind,
        "user": user,
        "roles": roles,
        "cluster": cluster,
        "namespace": namespace,
        "pod": pod,
        "container": container,
        "command": command,
        "tty": tty,
        "start_time": time.time(),
        "proxy_pid": os.getpid(),  # another worker following the session knows when its recorder is gone
        "title": f"{user} {kind} {namespace}/{pod}" + (f" -- {' '.join(command)}" if command else ""),
    }

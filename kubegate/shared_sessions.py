"""The session index (``proxy.recording.index.SessionIndex``) in the shared backend: ``sessions/<id>``
→ the session's record, so ``kubegate sessions ls / play`` on any host sees the sessions of every
replica (the recordings themselves go to the recording store: S3 for several hosts)."""

from __future__ import annotations

import json
from typing import Any

from backend.base import Backend
from proxy.recording.index import select_sessions, valid_session_id

PREFIX = "sessions/"


class SharedSessionIndex:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def put(self, record: dict[str, Any]) -> None:
        session_id = record["session_id"]
        if not valid_session_id(session_id):
            raise ValueError(f"bad session id {session_id!r}")
        self.backend.put(PREFIX + session_id, json.dumps(record, separators=(",", ":"), default=str).encode())

    def get(self, session_id: str) -> dict[str, Any] | None:
        if not valid_session_id(session_id):
            return None
        item = self.backend.get(PREFIX + session_id)
        if item is None:
            return None
        return _record(item.value)

    def list(self, *, user: str | None = None, cluster: str | None = None,
             since: float | None = None) -> list[dict[str, Any]]:
        items, _ = self.backend.get_range(PREFIX)
        return select_sessions((_record(item.value) for item in items), user=user, cluster=cluster, since=since)


def _record(value: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(value)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None

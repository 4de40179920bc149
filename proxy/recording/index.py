"""The session index: one record per exec/attach/port-forward session (who, where, when, how it ended,
where its recording is), behind a small interface so that another backend can hold it.

:class:`FileSessionIndex` keeps ``<dir>/<session id>.json``, replaced atomically at the session's start
and end (several worker processes share the directory without coordination: each writes only its own
sessions). Blocking I/O: the proxy calls ``put`` on its recording writer thread.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable
from typing import Any, Protocol

_SESSION_ID = re.compile(r"[0-9a-f]{32}")


def valid_session_id(text: str) -> bool:
    return bool(_SESSION_ID.fullmatch(text))


def held_elsewhere(record: dict[str, Any], origin: str) -> str:
    """The address of the replica holding ``record``'s session when it is not ``origin`` (this replica's
    ``proxy.peer_addr``), else "": a record without ``proxy_addr`` is taken as this replica's."""
    held_by = str(record.get("proxy_addr") or "")
    return held_by if held_by and held_by != origin else ""


class SessionIndex(Protocol):
    def put(self, record: dict[str, Any]) -> None:
        """Create or replace the record of ``record["session_id"]``."""
        ...

    def get(self, session_id: str) -> dict[str, Any] | None: ...

    def list(self, *, user: str | None = None, cluster: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
        """Records, oldest first, filtered by user, cluster and start time (epoch seconds)."""
        ...


class FileSessionIndex:
    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(directory)

    def put(self, record: dict[str, Any]) -> None:
        session_id = record["session_id"]
        if not valid_session_id(session_id):
            raise ValueError(f"bad session id {session_id!r}")
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{session_id}.", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f, separators=(",", ":"), default=str)
            os.replace(tmp, os.path.join(self.directory, f"{session_id}.json"))
        except BaseException:
            with_suppressed_unlink(tmp)
            raise

    def get(self, session_id: str) -> dict[str, Any] | None:
        if not valid_session_id(session_id):
            return None
        try:
            with open(os.path.join(self.directory, f"{session_id}.json"), encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def list(self, *, user: str | None = None, cluster: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        records = (self.get(name[:-5]) for name in names
                   if name.endswith(".json") and valid_session_id(name[:-5]))
        return select_sessions(records, user=user, cluster=cluster, since=since)


def select_sessions(records: Iterable[dict[str, Any] | None], *, user: str | None = None,
                    cluster: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
    """The records of ``user`` on ``cluster`` started at or after ``since`` (None: any), oldest first;
    every index implementation lists through this one filter."""
    out = []
    for record in records:
        if record is None:
            continue
        if user is not None and record.get("user") != user:
            continue
        if cluster is not None and record.get("cluster") != cluster:
            continue
        if since is not None and float(record.get("start_time") or 0) < since:
            continue
        out.append(record)
    out.sort(key=lambda r: float(r.get("start_time") or 0))
    return out


def with_suppressed_unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

"""The ``local`` backend: the backend interface over a directory, for one host (the default).

Layout under ``root`` (``<state_dir>/backend``)::

    revision          the store's revision (decimal), bumped by every write
    kv/<quoted key>   {"value": base64, "revision": n, "lease": id}  or a tombstone {"deleted": true, …}
    leases/<id>       {"ttl": seconds, "deadline": unix time}
    compacted         the newest revision whose tombstones were swept
    .lock             flock'd by every writer (processes on this host: the CLI, the workers)

Crash safety: every file is written to a temporary file, fsync'd and renamed (``certs.files.write_atomic``);
a writer first raises ``revision``, then writes the key, so a crash between the two leaves at worst a
gap in the revisions, never two writes with one revision. A ``kill -9`` leaves the old or the new value.

Watch: a thread per watch re-reads ``revision`` every ``poll_interval`` and, when it moved, reports
every key file (value or tombstone) newer than what it reported last: deletes are seen through their
tombstones, kept ``TOMBSTONE_KEEP`` seconds; a watch that falls further behind gets ``Compacted``.
Leases expire when a writer or a watch poll notices their deadline passed (their keys get tombstones).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from backend.base import Backend, BackendError, Compacted, Event, Item, Watch
from certs.files import write_atomic

TOMBSTONE_KEEP = 600.0


class LocalBackend(Backend):
    name = "local"

    def __init__(self, root: str | os.PathLike[str], *, poll_interval: float = 0.2,
                 clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root)
        self.kv_dir = self.root / "kv"
        self.lease_dir = self.root / "leases"
        self.poll_interval = poll_interval
        self.clock = clock
        self._thread_lock = threading.Lock()  # flock is per open file description: serialise our threads too

    def close(self) -> None:
        """Nothing held open between calls."""

    # ---- files --------------------------------------------------------------------------------------

    def _ensure(self) -> None:
        for directory in (self.root, self.kv_dir, self.lease_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        self._ensure()
        with self._thread_lock:
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or "\0" in key:
            raise BackendError(f"invalid key {key!r}")
        return self.kv_dir / quote(key, safe="")

    def current_revision(self) -> int:
        try:
            return int((self.root / "revision").read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _compacted(self) -> int:
        try:
            return int((self.root / "compacted").read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _next_revision(self) -> int:
        revision = self.current_revision() + 1
        write_atomic(self.root / "revision", str(revision))
        return revision

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        try:
            names = os.listdir(self.kv_dir)
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith("."):
                continue  # a writer's temporary file
            record = self._read(self.kv_dir / name)
            if record is not None:
                yield unquote(name), record

    def _live_leases(self) -> set[int]:
        now = self.clock()
        live = set()
        try:
            names = os.listdir(self.lease_dir)
        except FileNotFoundError:
            return live
        for name in names:
            if name.isdigit():
                lease = self._read(self.lease_dir / name)
                if lease is not None and float(lease.get("deadline", 0)) > now:
                    live.add(int(name))
        return live

    def _item(self, key: str, record: dict[str, Any], live: set[int] | None) -> Item | None:
        if record.get("deleted"):
            return None
        lease = int(record.get("lease", 0))
        if lease and live is not None and lease not in live:
            return None
        return Item(key, base64.b64decode(record.get("value", "")), int(record["revision"]), lease)

    def _write(self, key: str, value: bytes | None, lease: int) -> int:
        """Under the exclusive lock: a new revision, then the value (None: a tombstone)."""
        revision = self._next_revision()
        record: dict[str, Any] = {"revision": revision}
        if value is None:
            record["deleted"], record["at"] = True, self.clock()
        else:
            record["value"], record["lease"] = base64.b64encode(value).decode(), lease
        write_atomic(self._path(key), json.dumps(record))
        return revision

    def _current(self, key: str) -> Item | None:
        record = self._read(self._path(key))
        return None if record is None else self._item(key, record, self._live_leases())

    def _expire_and_sweep(self) -> None:
        """Under the exclusive lock: tombstones for the keys of expired leases, then drop old tombstones."""
        now = self.clock()
        live = self._live_leases()
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.lease_dir):
                if name.isdigit() and int(name) not in live:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.lease_dir / name)
        newest_swept = 0
        for key, record in list(self._records()):
            lease = int(record.get("lease", 0))
            if not record.get("deleted") and lease and lease not in live:
                self._write(key, None, 0)
            elif record.get("deleted") and now - float(record.get("at", 0)) > TOMBSTONE_KEEP:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path(key))
                newest_swept = max(newest_swept, int(record["revision"]))
        if newest_swept > self._compacted():
            write_atomic(self.root / "compacted", str(newest_swept))

    # ---- key-value ----------------------------------------------------------------------------------

    def get(self, key: str) -> Item | None:
        return self._current(key)

    def get_range(self, prefix: str) -> tuple[list[Item], int]:
        revision = self.current_revision()
        live = self._live_leases()
        items = [item for key, record in self._records() if key.startswith(prefix)
                 if (item := self._item(key, record, live)) is not None]
        items.sort(key=lambda item: item.key)
        return items, max([revision, *(item.revision for item in items)])

    def put(self, key: str, value: bytes, *, lease: int = 0) -> Item:
        with self._exclusive():
            self._expire_and_sweep()
            return Item(key, value, self._write(key, value, lease), lease)

    def compare_and_swap(self, key: str, expected_revision: int, value: bytes, *, lease: int = 0) -> Item | None:
        with self._exclusive():
            self._expire_and_sweep()
            current = self._current(key)
            if (current.revision if current is not None else 0) != expected_revision:
                return None
            return Item(key, value, self._write(key, value, lease), lease)

    def delete(self, key: str, expected_revision: int | None = None) -> bool:
        with self._exclusive():
            self._expire_and_sweep()
            current = self._current(key)
            if current is None or (expected_revision is not None and current.revision != expected_revision):
                return False
            self._write(key, None, 0)
            return True

    # ---- leases -------------------------------------------------------------------------------------

    def grant(self, ttl: float) -> int:
        lease = secrets.randbits(62) + 1
        with self._exclusive():
            write_atomic(self.lease_dir / str(lease), json.dumps({"ttl": ttl, "deadline": self.clock() + ttl}))
        return lease

    def keep_alive(self, lease: int) -> bool:
        with self._exclusive():
            record = self._read(self.lease_dir / str(lease))
            if record is None or float(record.get("deadline", 0)) <= self.clock():
                self._expire_and_sweep()
                return False
            record["deadline"] = self.clock() + float(record["ttl"])
            write_atomic(self.lease_dir / str(lease), json.dumps(record))
            return True

    def revoke(self, lease: int) -> None:
        with self._exclusive():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.lease_dir / str(lease))
            self._expire_and_sweep()

    # ---- watch --------------------------------------------------------------------------------------

    def watch(
        self,
        prefix: str,
        start_revision: int,
        on_events: Callable[[Sequence[Event]], None],
        on_error: Callable[[BaseException], None],
    ) -> Watch:
        watch = _LocalWatch(self, prefix, start_revision, on_events, on_error)
        watch.thread.start()
        return watch

    def changes_since(self, prefix: str, revision: int) -> list[Event]:
        """Every write under ``prefix`` newer than ``revision`` still on disk, in revision order (a key
        written twice shows once, with its newest value: watchers want the state, not every step)."""
        if revision < self._compacted():
            raise Compacted(f"local backend: revision {revision} is older than the swept tombstones",
                            self._compacted())
        live = self._live_leases()
        events = []
        for key, record in self._records():
            if not key.startswith(prefix) or int(record.get("revision", 0)) <= revision:
                continue
            item = self._item(key, record, live)
            kind = "put" if item is not None else "delete"
            events.append(Event(kind, key, int(record["revision"]), item))
        events.sort(key=lambda event: event.revision)
        return events

    def has_leases(self) -> bool:
        try:
            return any(name.isdigit() for name in os.listdir(self.lease_dir))
        except FileNotFoundError:
            return False

    def expire_leases(self) -> None:
        with self._exclusive():
            self._expire_and_sweep()


class _LocalWatch(Watch):
    def __init__(self, backend: LocalBackend, prefix: str, start_revision: int,
                 on_events: Callable[[Sequence[Event]], None], on_error: Callable[[BaseException], None]) -> None:
        self.backend, self.prefix, self.revision = backend, prefix, start_revision
        self.on_events, self.on_error = on_events, on_error
        self._cancelled = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"local-watch:{prefix}", daemon=True)

    def cancel(self) -> None:
        self._cancelled.set()

    def _run(self) -> None:
        seen_store_revision = -1
        last_expiry = 0.0
        backend = self.backend
        try:
            while not self._cancelled.is_set():
                now = time.monotonic()
                if now - last_expiry >= 1.0:
                    last_expiry = now
                    if backend.has_leases():
                        backend.expire_leases()
                if backend.current_revision() != seen_store_revision:
                    # A writer bumps the revision before it writes the record: read both under its lock,
                    # or a revision whose record was not written yet would be taken as seen (and its
                    # event missed until the next write).
                    with backend._exclusive():
                        seen_store_revision = backend.current_revision()
                        events = backend.changes_since(self.prefix, self.revision)
                    if events and not self._cancelled.is_set():
                        self.revision = events[-1].revision
                        self.on_events(events)
                self._cancelled.wait(backend.poll_interval)
        except BaseException as exc:  # noqa: BLE001 - reported once, the caller re-lists
            if not self._cancelled.is_set():
                self.on_error(exc)

"""The lock list: users and certificate serials the proxy refuses, at once (DESIGN §3).

Stored as JSON in ``<state_dir>/locks`` (``Config.locks_file``)::

    {"version": 1,
     "locks": [{"user": "alice", "until": "2026-12-01T00:00:00Z", "reason": "left the team",
                "created": "2026-11-22T05:00:00Z"},
               {"serial": "8f3a…", "until": null, "reason": "laptop stolen", "created": "…"}]}

- Writers (``kubegate users lock`` / ``unlock``) take an ``flock`` on ``<file>.flock`` for the
  read-modify-write and replace the file atomically (mode 0600), dropping locks that have expired.
- Readers call ``is_locked(identity)``. Without a watch that is one ``os.stat`` per call; the file is
  re-read only when its inode, size or mtime changed. The proxy watches it (``watch(loop)``: inotify on
  the file's directory, read by the proxy's event loop, ``certs.file_watch``): an event naming the file
  makes the next call do that ``stat`` (and re-read on a changed signature); while nothing changed
  ``is_locked`` makes no system call at all, and ``generation`` (a new object per change) lets the
  proxy's fast path skip the call for a request it already let through under the same generation.
- A lock written by ``kubegate users lock`` refuses the next request. Without a watch: the ``stat``
  happens after the rename. With one: the kernel queues the inotify event inside ``rename(2)``, before
  the command returns, so before the client can send anything more; the bytes of its next request make
  the client's socket ready later than the inotify descriptor. epoll (level-triggered, as both uvloop's
  libuv and asyncio's ``EpollSelector`` use it) reports ready descriptors in the order they became ready,
  and both loops run the callbacks of one ``epoll_wait`` in that order: libuv calls each watcher as it
  walks the returned array; asyncio queues the handles in that order behind what was queued before. So
  the event's callback marks the list changed before the request's bytes are read. One case is looser:
  epoll puts a level-triggered descriptor it has just reported back at the tail of its ready list, so a
  connection read in the loop iteration during which the lock was written is reported again ahead of
  the inotify descriptor, and bytes read from it in that iteration or the next can precede the event
  (checked with a bare epoll: socket read, lock written, request sent → [socket, inotify]). So the
  next request is refused when nothing was read from its connection in the loop iteration during which
  the lock was written — a client that waited for its previous answer (answers from a cluster come in a
  later iteration than the request), kubectl's next command; a client sending requests while the lock
  is written (HTTP/2 streams in flight, pipelining) can get requests in for at most the rest of that
  iteration and the next one (microseconds idle, milliseconds under load), as it gets through those
  already read. ``stat`` per call has no such window; its price is a system call and a ``stat_result``
  per request.
- A lock with ``until`` in the past is inactive. ``until`` null: until unlocked.
- A file that cannot be parsed keeps the last good list in force (``error`` says what is wrong); if
  no good list was ever read, every identity is refused (fail closed) until the file is fixed.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from certs.file_watch import FileWatch, WatchUnavailable
from certs.files import write_atomic
from rbac.identity import Identity

__all__ = ["Lock", "LockList", "LockError", "StateUnavailable", "normalize_serial", "format_time", "parse_time"]

LOCKS_VERSION = 1

log = logging.getLogger(__name__)


class LockError(ValueError):
    """Bad lock input (empty user, malformed serial, bad time) or an unreadable lock file."""


class StateUnavailable(str):
    """A refusal reason meaning "the lock list itself is out of reach" (shared backend down longer than
    ``backend.stale_grace``): the proxy answers 503, not 403 — nobody was locked, kubegate cannot tell."""


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """RFC 3339 (``2026-12-01T00:00:00Z``, offsets allowed); a time without an offset is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise LockError(f"{text!r} is not an RFC 3339 time (e.g. 2026-12-01T00:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def normalize_serial(serial: str) -> str:
    """``AB:CD:01`` / ``0xabcd01`` / ``00abcd01`` → ``abcd01`` (lower-case hex, no leading zeros)."""
    text = serial.strip().lower().replace(":", "").replace(" ", "")
    if text.startswith("0x"):
        text = text[2:]
    if not text or any(ch not in "0123456789abcdef" for ch in text):
        raise LockError(f"{serial!r} is not a hexadecimal certificate serial number")
    return text.lstrip("0") or "0"


@dataclass(frozen=True, slots=True)
class Lock:
    kind: str  # "user" | "serial"
    target: str  # the user name, or the normalized serial
    until: datetime | None = None
    reason: str = ""
    created: datetime | None = None

    def active(self, now: datetime) -> bool:
        return self.until is None or now < self.until

    def describe(self) -> str:
        who = f'user "{self.target}"' if self.kind == "user" else f"certificate serial {self.target}"
        text = f"{who} is locked"
        if self.until is not None:
            text += f" until {format_time(self.until)}"
        if self.reason:
            text += f": {self.reason}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            self.kind: self.target,
            "until": format_time(self.until) if self.until else None,
            "reason": self.reason,
            "created": format_time(self.created) if self.created else None,
        }

    @classmethod
    def from_json(cls, entry: object) -> Lock:
        if not isinstance(entry, dict):
            raise LockError(f"lock entry must be an object, got {entry!r}")
        kinds = [k for k in ("user", "serial") if k in entry]
        if len(kinds) != 1 or not isinstance(entry[kinds[0]], str) or not entry[kinds[0]]:
            raise LockError(f"lock entry must name exactly one non-empty 'user' or 'serial': {entry!r}")
        kind = kinds[0]
        target = entry[kind] if kind == "user" else normalize_serial(entry[kind])
        until, created, reason = entry.get("until"), entry.get("created"), entry.get("reason", "")
        if until is not None and not isinstance(until, str):
            raise LockError(f"lock 'until' must be a time string or null: {entry!r}")
        if created is not None and not isinstance(created, str):
            raise LockError(f"lock 'created' must be a time string or null: {entry!r}")
        if not isinstance(reason, str):
            raise LockError(f"lock 'reason' must be a string: {entry!r}")
        return cls(
            kind=kind,
            target=target,
            until=parse_time(until) if until else None,
            reason=reason,
            created=parse_time(created) if created else None,
        )


def _parse_document(data: bytes, source: str) -> tuple[Lock, ...]:
    if not data.strip():
        return ()
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LockError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("locks", []), list):
        raise LockError(f"{source}: expected an object with a 'locks' list")
    if document.get("version", LOCKS_VERSION) != LOCKS_VERSION:
        raise LockError(f"{source}: unsupported version {document.get('version')!r}")
    try:
        return tuple(Lock.from_json(entry) for entry in document.get("locks", []))
    except LockError as exc:
        raise LockError(f"{source}: {exc}") from None


class LockList:
    """Locks persisted in ``path``; ``clock()`` gives unix seconds (injected for tests)."""

    # A new object each time the list may have changed, while a watch reports every change; None when
    # nothing does (no watch, or the shared list's watch is broken): then every caller must ask.
    generation: object | None = None

    def __init__(self, path: str | os.PathLike[str], clock: Any = time.time) -> None:
        self.path = Path(path)
        self._spath = os.fspath(self.path)  # os.stat on a str skips Path.__fspath__ on every request
        self.clock = clock
        self._signature: tuple[int, int, int] | None = None
        self._locks: tuple[Lock, ...] = ()
        self._ever_loaded = False
        self.error: str | None = None
        self._watch: FileWatch | None = None
        self._watch_refused = False
        self._look = True  # look at the file on the next read: always without a watch

    # ------------------------------------------------------------------------------------ reading
    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    def _refresh(self) -> None:
        try:
            st = os.stat(self._spath)
        except FileNotFoundError:
            self._signature, self._locks, self._ever_loaded, self.error = None, (), True, None
            return
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        if signature == self._signature:
            return
        try:
            data = self.path.read_bytes()
            locks = _parse_document(data, str(self.path))
        except OSError as exc:
            self.error = f"{self.path}: cannot read: {exc.strerror or exc}"
            self._look = True  # retried on the next call (the signature is not remembered)
            return
        except LockError as exc:
            self.error = str(exc)
            self._signature = signature  # broken content: keep the last good list until it changes
            return
        self._signature, self._locks, self._ever_loaded, self.error = signature, locks, True, None

    def _current(self) -> None:
        """Bring the list up to date: a look at the file (``_refresh``) when it may have changed — on every
        call without a watch, once after each change event with one."""
        if self._look:
            if self._watch is not None:
                self._look = False  # set again by the next event (or by a read that failed)
                if os.path.islink(self._spath):  # now a link: re-pointing it would name no event for it
                    self.unwatch()
                    log.warning("the lock list became a symbolic link: the file is checked on every request",
                                extra={"path": self._spath})
            self._refresh()

    # ------------------------------------------------------------------------------------ watching
    def watch(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Follow the file by inotify from ``loop`` (the proxy's event loop, from its own thread): from then
        on ``is_locked`` looks at the file only after a change event. False when that cannot be done (it is
        logged): every call ``stat``s the file, as without a watch. A list watched from one loop and then
        asked to watch from another is ``stat``-ed per call from then on (a loop that does not read the
        events could answer before the other loop has seen them)."""
        if self._watch is not None or self._watch_refused:
            if self._watch is not None and self._watch.loop is loop:
                return True
            self.unwatch()
            self._watch_refused = True
            log.warning("the lock list is used from several event loops: the file is checked on every request",
                        extra={"path": self._spath})
            return False
        try:
            self._watch = FileWatch.open(self._spath, loop, self._changed, self._watch_lost)
        except WatchUnavailable as exc:
            log.warning("the lock list cannot be watched: the file is checked on every request",
                        extra={"path": self._spath, "problem": str(exc)})
            return False
        self._changed()  # one look at the file now: a change before the watch began has no event
        return True

    def unwatch(self) -> None:
        """Stop following the file (on the watching loop's thread); every call ``stat``s it again."""
        watch, self._watch = self._watch, None
        self.generation, self._look = None, True
        if watch is not None:
            watch.close()

    def _changed(self) -> None:
        """The file may have changed (an inotify event, on the loop): look at it on the next read."""
        self._look = True
        self.generation = object()

    def _watch_lost(self, reason: str) -> None:
        log.warning("the lock list's watch ended: the file is checked on every request",
                    extra={"path": self._spath, "problem": reason})
        self._watch = None
        self.generation, self._look = None, True

    def locks(self, include_expired: bool = False) -> list[Lock]:
        """The current locks (active ones only unless ``include_expired``)."""
        self._current()
        now = self._now()
        return [lock for lock in self._locks if include_expired or lock.active(now)]

    def is_locked(self, identity: Identity) -> str | None:
        """Why ``identity`` is refused (a sentence naming the lock), or None when it is not locked."""
        self._current()
        if not self._ever_loaded:
            return f"the lock list cannot be read, refusing everyone: {self.error}"
        if not self._locks:
            return None
        now = self._now()
        serial = (identity.serial.lower().lstrip("0") or "0") if identity.serial else None
        for lock in self._locks:
            if not lock.active(now):
                continue
            if lock.kind == "user" and lock.target == identity.user:
                return lock.describe()
            if lock.kind == "serial" and serial is not None and lock.target == serial:
                return lock.describe()
        return None

    # ------------------------------------------------------------------------------------ writing
    @contextmanager
    def _exclusive(self) -> Iterator[list[Lock]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flock_path = self.path.with_name(self.path.name + ".flock")
        fd = os.open(flock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                data = b""
            current = list(_parse_document(data, str(self.path)))  # a broken file is not overwritten
            yield current
            now = self._now()
            kept = [lock for lock in current if lock.active(now)]
            document = {"version": LOCKS_VERSION, "locks": [lock.to_json() for lock in kept]}
            write_atomic(self.path, json.dumps(document, indent=2) + "\n", 0o600)
        finally:
            os.close(fd)  # releases the flock
        self._refresh()

    def _add(self, kind: str, target: str, until: datetime | None, reason: str) -> Lock:
        now = self._now()
        if until is not None:
            until = until.astimezone(UTC) if until.tzinfo else until.replace(tzinfo=UTC)
            if until <= now:
                raise LockError(f"lock end {format_time(until)} is not in the future")
        lock = Lock(kind=kind, target=target, until=until, reason=reason, created=now.replace(microsecond=0))
        with self._exclusive() as current:
            current[:] = [
                existing for existing in current if (existing.kind, existing.target) != (kind, target)
            ]
            current.append(lock)
        return lock

    def lock_user(self, user: str, until: datetime | None = None, reason: str = "") -> Lock:
        """Lock ``user`` (every certificate naming it) until ``until`` or until unlocked; replaces an
        existing lock on the same user."""
        if not user or user != user.strip():
            raise LockError(f"user name must be non-empty without surrounding spaces, got {user!r}")
        return self._add("user", user, until, reason)

    def lock_serial(self, serial: str, until: datetime | None = None, reason: str = "") -> Lock:
        """Lock one certificate by serial number (hex, as ``Identity.serial`` or ``openssl x509 -serial``)."""
        return self._add("serial", normalize_serial(serial), until, reason)

    def _remove(self, kind: str, target: str) -> int:
        removed = 0
        with self._exclusive() as current:
            before = len(current)
            current[:] = [lock for lock in current if (lock.kind, lock.target) != (kind, target)]
            removed = before - len(current)
        return removed

    def unlock_user(self, user: str) -> int:
        """Remove the lock on ``user``; returns how many locks were removed (0 or 1)."""
        return self._remove("user", user)

    def unlock_serial(self, serial: str) -> int:
        return self._remove("serial", normalize_serial(serial))

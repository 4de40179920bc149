"""The lock list: users and certificate serials the proxy refuses, at once (DESIGN §3).

Stored as JSON in ``<state_dir>/locks`` (``Config.locks_file``)::

    {"version": 1,
     "locks": [{"user": "alice", "until": "2026-12-01T00:00:00Z", "reason": "left the team",
                "created": "2026-11-22T05:00:00Z"},
               {"serial": "8f3a…", "until": null, "reason": "laptop stolen", "created": "…"}]}

- Writers (``kubegate users lock`` / ``unlock``) take an ``flock`` on ``<file>.flock`` for the
  read-modify-write and replace the file atomically (mode 0600), dropping locks that have expired.
- Readers (the proxy, on every request) call ``is_locked(identity)``: one ``os.stat``; the file is
  re-read only when its inode, size or mtime changed, so a new lock takes effect on the next request.
- A lock with ``until`` in the past is inactive. ``until`` null: until unlocked.
- A file that cannot be parsed keeps the last good list in force (``error`` says what is wrong); if
  no good list was ever read, every identity is refused (fail closed) until the file is fixed.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from certs.files import write_atomic
from rbac.identity import Identity

__all__ = ["Lock", "LockList", "LockError", "StateUnavailable", "normalize_serial", "format_time", "parse_time"]

LOCKS_VERSION = 1


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

    def __init__(self, path: str | os.PathLike[str], clock: Any = time.time) -> None:
        self.path = Path(path)
        self._spath = os.fspath(self.path)  # os.stat on a str skips Path.__fspath__ on every request
        self.clock = clock
        self._signature: tuple[int, int, int] | None = None
        self._locks: tuple[Lock, ...] = ()
        self._ever_loaded = False
        self.error: str | None = None

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
            return  # retried on the next call (the signature is not remembered)
        except LockError as exc:
            self.error = str(exc)
            self._signature = signature  # broken content: keep the last good list until it changes
            return
        self._signature, self._locks, self._ever_loaded, self.error = signature, locks, True, None

    def locks(self, include_expired: bool = False) -> list[Lock]:
        """The current locks (active ones only unless ``include_expired``)."""
        self._refresh()
        now = self._now()
        return [lock for lock in self._locks if include_expired or lock.active(now)]

    def is_locked(self, identity: Identity) -> str | None:
        """Why ``identity`` is refused (a sentence naming the lock), or None when it is not locked."""
        self._refresh()
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

"""The lock list: users and serials, expiry, persistence, and a reader that sees new locks at once."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from certs.locks import LockError, LockList, normalize_serial
from rbac.identity import Identity

ALICE = Identity(user="alice", roles=("viewer",), serial="8f00aa")
BOB = Identity(user="bob", roles=("viewer",), serial="12ab")


def at(clock, seconds: float = 0) -> datetime:
    return datetime.fromtimestamp(clock.now + seconds, tz=UTC)


def test_unlocked_by_default_and_without_a_file(tmp_path: Path, clock) -> None:
    locks = LockList(tmp_path / "locks", clock)
    assert locks.is_locked(ALICE) is None
    assert locks.locks() == []


def test_user_lock_applies_to_every_certificate_of_that_user(tmp_path: Path, clock) -> None:
    locks = LockList(tmp_path / "locks", clock)
    locks.lock_user("alice", reason="left the team")
    assert locks.is_locked(ALICE) == 'user "alice" is locked: left the team'
    assert locks.is_locked(Identity(user="alice", roles=(), serial="ffff")) is not None
    assert locks.is_locked(BOB) is None
    assert stat.S_IMODE((tmp_path / "locks").stat().st_mode) == 0o600
    assert locks.unlock_user("alice") == 1
    assert locks.is_locked(ALICE) is None
    assert locks.unlock_user("alice") == 0


def test_serial_lock_hits_only_that_certificate(tmp_path: Path, clock) -> None:
    locks = LockList(tmp_path / "locks", clock)
    locks.lock_serial("8F:00:AA", reason="laptop stolen")
    assert locks.is_locked(ALICE) == "certificate serial 8f00aa is locked: laptop stolen"
    assert locks.is_locked(Identity(user="alice", roles=(), serial="8f00ab")) is None
    assert locks.unlock_serial("0x008f00aa") == 1
    assert locks.is_locked(ALICE) is None


def test_lock_until_expires_with_the_clock(tmp_path: Path, clock) -> None:
    locks = LockList(tmp_path / "locks", clock)
    locks.lock_user("alice", until=at(clock, 3600))
    assert "until" in (locks.is_locked(ALICE) or "")
    clock.advance(3599)
    assert locks.is_locked(ALICE) is not None
    clock.advance(1)
    assert locks.is_locked(ALICE) is None
    assert locks.locks() == [] and len(locks.locks(include_expired=True)) == 1
    locks.lock_user("bob")  # a write drops expired locks from the file
    assert [lock.target for lock in locks.locks(include_expired=True)] == ["bob"]


def test_lock_in_the_past_is_refused(tmp_path: Path, clock) -> None:
    with pytest.raises(LockError, match="not in the future"):
        LockList(tmp_path / "locks", clock).lock_user("alice", until=at(clock, -1))


def test_relocking_replaces_the_previous_lock(tmp_path: Path, clock) -> None:
    locks = LockList(tmp_path / "locks", clock)
    locks.lock_user("alice", reason="first")
    locks.lock_user("alice", reason="second")
    assert [lock.reason for lock in locks.locks()] == ["second"]


def test_a_running_reader_sees_another_writers_lock_at_once(tmp_path: Path, clock) -> None:
    reader = LockList(tmp_path / "locks", clock)  # the proxy
    writer = LockList(tmp_path / "locks", clock)  # `kubegate users lock` in another process
    assert reader.is_locked(ALICE) is None
    writer.lock_user("alice")
    assert reader.is_locked(ALICE) is not None
    writer.unlock_user("alice")
    assert reader.is_locked(ALICE) is None


def test_persisted_format_survives_a_restart(tmp_path: Path, clock) -> None:
    LockList(tmp_path / "locks", clock).lock_serial("12ab", until=at(clock, 60), reason="r")
    document = json.loads((tmp_path / "locks").read_text())
    assert document["version"] == 1
    assert document["locks"][0]["serial"] == "12ab"
    assert document["locks"][0]["until"].endswith("Z")
    assert LockList(tmp_path / "locks", clock).is_locked(BOB) is not None


def test_broken_file_keeps_last_good_list(tmp_path: Path, clock) -> None:
    path = tmp_path / "locks"
    reader = LockList(path, clock)
    LockList(path, clock).lock_user("alice")
    assert reader.is_locked(ALICE) is not None
    path.write_text("{not json")
    assert reader.is_locked(ALICE) is not None  # last good list still in force
    assert reader.error is not None and "not valid JSON" in reader.error
    with pytest.raises(LockError):
        LockList(path, clock).lock_user("bob")  # writers do not clobber a broken file


def test_unreadable_file_at_start_refuses_everyone(tmp_path: Path, clock) -> None:
    path = tmp_path / "locks"
    path.write_text('{"locks": [{"nobody": 1}]}')
    reason = LockList(path, clock).is_locked(BOB)
    assert reason is not None and "cannot be read" in reason


@pytest.mark.parametrize(("raw", "normal"), [("AB:CD", "abcd"), ("0x00ff", "ff"), ("0", "0"), (" 1a ", "1a")])
def test_serial_normalization(raw: str, normal: str) -> None:
    assert normalize_serial(raw) == normal


def test_bad_serial_is_refused() -> None:
    with pytest.raises(LockError, match="hexadecimal"):
        normalize_serial("xyz")

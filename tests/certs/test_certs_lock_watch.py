"""The lock list followed by inotify (``LockList.watch``, ``certs.file_watch``): on a real event loop
(uvloop, as the proxy runs, and asyncio's own) with real files and real inotify, a watched list makes no
system call per read while nothing changes, sees every change of its file after the loop has read the
event, keeps the last good list over a broken file, and falls back to one ``stat`` per read whenever
inotify cannot follow the file."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from certs.locks import LockList
from rbac.identity import Identity
from tests.certs.stat_calls import stat_calls

ALICE = Identity(user="alice", roles=("viewer",), serial="8f00aa")
BOB = Identity(user="bob", roles=("viewer",), serial="12ab")


@pytest.fixture(params=["uvloop", "asyncio"])
def loop(request: pytest.FixtureRequest) -> Iterator[asyncio.AbstractEventLoop]:
    loop = uvloop.new_event_loop() if request.param == "uvloop" else asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture
def stats_of(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], list[str]]:
    """``stats_of(path)``: the ``os.stat`` calls on ``path`` made from then on."""
    return lambda path: stat_calls(monkeypatch, path)


def run_once(loop: asyncio.AbstractEventLoop) -> None:
    """Let the loop read what is ready now (a few iterations)."""
    loop.run_until_complete(asyncio.sleep(0.05))


def inotify_fds() -> int:
    return sum(1 for fd in os.listdir("/proc/self/fd")
               if _link(f"/proc/self/fd/{fd}") == "anon_inode:inotify")


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def test_a_watched_list_reads_without_system_calls_until_its_file_changes(tmp_path: Path, loop, stats_of) -> None:
    path = tmp_path / "locks"
    reader = LockList(path)  # the proxy's
    writer = LockList(path)  # `kubegate users lock`, another process
    writer.lock_user("bob", reason="left")
    assert reader.watch(loop) is True
    calls = stats_of(path)
    assert reader.is_locked(BOB) and reader.is_locked(ALICE) is None
    assert len(calls) == 1  # one look at the file when the watch began
    first = reader.generation
    for _ in range(100):
        assert reader.is_locked(ALICE) is None
    run_once(loop)  # nothing happened: no event, still no look at the file
    assert reader.is_locked(ALICE) is None and len(calls) == 1 and reader.generation is first

    writer.lock_user("alice", reason="laptop stolen")
    calls.clear()  # (the writer looks at the file it wrote too)
    run_once(loop)  # the loop reads the event
    assert reader.generation is not first
    assert reader.is_locked(ALICE) == 'user "alice" is locked: laptop stolen'
    assert len(calls) == 1  # one look after the change, then none
    assert reader.is_locked(ALICE) and len(calls) == 1

    writer.unlock_user("alice")
    run_once(loop)
    assert reader.is_locked(ALICE) is None and reader.is_locked(BOB)
    reader.unwatch()


def test_files_of_the_same_directory_are_no_change_of_the_list(tmp_path: Path, loop, stats_of) -> None:
    """The state directory holds other files (the audit log, the writers' ``locks.flock``): their
    events are read and dropped, the list is not looked at again."""
    reader = LockList(tmp_path / "locks")
    assert reader.watch(loop)
    calls = stats_of(tmp_path / "locks")
    assert reader.is_locked(ALICE) is None and len(calls) == 1
    generation = reader.generation
    with open(tmp_path / "audit.log", "a") as audit:
        audit.write("{}\n")
    (tmp_path / "locks.flock").touch()
    run_once(loop)
    assert reader.is_locked(ALICE) is None and len(calls) == 1 and reader.generation is generation
    reader.unwatch()


def test_every_way_the_file_can_change_is_seen(tmp_path: Path, loop) -> None:
    """Written in place (an editor, ``cat >``), replaced by rename (the writers), deleted, created."""
    path = tmp_path / "locks"
    reader = LockList(path)
    assert reader.watch(loop)
    assert reader.is_locked(ALICE) is None
    path.write_text('{"version": 1, "locks": [{"user": "alice", "reason": "in place"}]}')
    run_once(loop)
    assert "in place" in (reader.is_locked(ALICE) or "")
    path.unlink()
    run_once(loop)
    assert reader.is_locked(ALICE) is None
    other = tmp_path / "prepared"
    other.write_text('{"version": 1, "locks": [{"user": "alice", "reason": "renamed in"}]}')
    os.rename(other, path)
    run_once(loop)
    assert "renamed in" in (reader.is_locked(ALICE) or "")
    os.rename(path, tmp_path / "away")
    run_once(loop)
    assert reader.is_locked(ALICE) is None
    reader.unwatch()


def test_a_broken_file_keeps_the_last_good_list_while_watched(tmp_path: Path, loop) -> None:
    path = tmp_path / "locks"
    reader = LockList(path)
    LockList(path).lock_user("alice", reason="left")
    assert reader.watch(loop)
    assert reader.is_locked(ALICE)
    path.write_text("{not json")
    run_once(loop)
    assert reader.is_locked(ALICE) and reader.is_locked(BOB) is None  # last good list still in force
    assert reader.error and "not valid JSON" in reader.error
    path.write_text('{"version": 1, "locks": [{"user": "bob"}]}')
    run_once(loop)
    assert reader.is_locked(ALICE) is None and reader.is_locked(BOB) and reader.error is None
    reader.unwatch()


def test_an_unreadable_file_is_read_again_on_the_next_call_without_a_new_event(
    tmp_path: Path, loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that fails (EACCES, EIO: made to fail here by wrapping ``Path.read_bytes``, since the
    tests may run as root, who reads any file) is retried by the next call, not only after an event."""
    path = tmp_path / "locks"
    reader = LockList(path)
    assert reader.watch(loop)
    assert reader.is_locked(ALICE) is None
    real = Path.read_bytes
    failing = [True]

    def read_bytes(self: Path) -> bytes:
        if self == path and failing[0]:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    path.write_text('{"version": 1, "locks": [{"user": "alice"}]}')
    run_once(loop)
    assert reader.is_locked(ALICE) is None and "cannot read" in (reader.error or "")
    failing[0] = False
    assert reader.is_locked(ALICE)  # no event since: the failed read is retried
    reader.unwatch()


def test_without_inotify_every_read_stats_the_file(tmp_path: Path, loop, stats_of, monkeypatch, caplog) -> None:
    """inotify cannot be set up (simulated: ``inotify_simple.INotify`` fails as ``inotify_init1`` does at
    the per-user instance limit, EMFILE): a log line says so, and every read looks at the file."""
    import inotify_simple

    def no_inotify(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(inotify_simple, "INotify", no_inotify)
    path = tmp_path / "locks"
    reader = LockList(path)
    with caplog.at_level(logging.WARNING, logger="certs.locks"):
        assert reader.watch(loop) is False
    assert "checked on every request" in caplog.text and "Too many open files" in caplog.records[-1].problem
    assert reader.generation is None
    calls = stats_of(path)
    for _ in range(5):
        assert reader.is_locked(ALICE) is None
    assert len(calls) == 5
    LockList(path).lock_user("alice")
    assert reader.is_locked(ALICE)  # at once, without the loop running
    reader.unwatch()


def test_a_missing_directory_or_a_symbolic_link_is_checked_on_every_read(tmp_path: Path, loop, stats_of) -> None:
    missing = LockList(tmp_path / "not-yet" / "locks")
    assert missing.watch(loop) is False and missing.generation is None
    (tmp_path / "real").write_text('{"version": 1, "locks": [{"user": "alice"}]}')
    (tmp_path / "locks").symlink_to(tmp_path / "real")
    linked = LockList(tmp_path / "locks")
    assert linked.watch(loop) is False and linked.generation is None
    calls = stats_of(tmp_path / "locks")
    assert linked.is_locked(ALICE) and linked.is_locked(ALICE) and len(calls) == 2


def test_a_removed_directory_ends_the_watch_and_reads_stat_again(tmp_path: Path, loop, stats_of, caplog) -> None:
    state = tmp_path / "state"
    state.mkdir()
    reader = LockList(state / "locks")
    assert reader.watch(loop)
    before = inotify_fds()
    with caplog.at_level(logging.WARNING, logger="certs.locks"):
        shutil.rmtree(state)
        run_once(loop)
    assert "watch ended" in caplog.text
    assert reader.generation is None and inotify_fds() == before - 1  # its descriptor is closed
    calls = stats_of(state / "locks")
    assert reader.is_locked(ALICE) is None and reader.is_locked(ALICE) is None and len(calls) == 2
    state.mkdir()
    LockList(state / "locks").lock_user("alice")
    assert reader.is_locked(ALICE)


def test_unwatch_closes_the_inotify_descriptor(tmp_path: Path, loop) -> None:
    before = inotify_fds()
    reader = LockList(tmp_path / "locks")
    assert reader.watch(loop) and inotify_fds() == before + 1
    assert reader.watch(loop) is True and inotify_fds() == before + 1  # the same loop again: nothing new
    reader.unwatch()
    assert inotify_fds() == before and reader.generation is None
    reader.unwatch()  # twice is harmless


def test_a_list_used_from_two_loops_stats_on_every_read(tmp_path: Path, loop) -> None:
    """Only the loop that reads the events may skip looking at the file; a second loop could answer
    before the first has read an event, so the list gives up its watch."""
    reader = LockList(tmp_path / "locks")
    assert reader.watch(loop)
    other = asyncio.new_event_loop()
    try:
        assert reader.watch(other) is False
        assert reader.generation is None
        assert reader.watch(loop) is False  # for good
    finally:
        other.close()

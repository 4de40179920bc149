"""The backend interface behaves the same on both implementations: ``local`` (a directory) and ``etcd``
(a real 3-member etcd cluster on loopback)."""

from __future__ import annotations

import threading
import time

import pytest

from backend.base import Backend, BackendUnavailable, Event
from backend.etcd import EtcdBackend
from backend.local import LocalBackend


@pytest.fixture(params=["local", "etcd"])
def backend(request, tmp_path) -> Backend:
    if request.param == "local":
        b: Backend = LocalBackend(tmp_path / "backend", poll_interval=0.05)
    else:
        cluster = request.getfixturevalue("etcd_cluster")
        b = EtcdBackend(cluster.endpoints, prefix=request.getfixturevalue("etcd_prefix"))
    yield b
    b.close()


class Collector:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.errors: list[BaseException] = []
        self.cond = threading.Condition()

    def on_events(self, events) -> None:
        with self.cond:
            self.events.extend(events)
            self.cond.notify_all()

    def on_error(self, exc) -> None:
        with self.cond:
            self.errors.append(exc)
            self.cond.notify_all()

    def wait_for(self, predicate, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                assert left > 0, f"timed out; events={self.events} errors={self.errors}"
                self.cond.wait(left)


def test_put_get_and_revisions_grow(backend):
    first = backend.put("clusters/a", b"one")
    second = backend.put("clusters/a", b"two")
    assert second.revision > first.revision
    got = backend.get("clusters/a")
    assert (got.value, got.revision) == (b"two", second.revision)
    assert backend.get("clusters/missing") is None


def test_get_range_returns_only_the_prefix_sorted_with_a_revision(backend):
    for key in ("clusters/b", "clusters/a", "clustersX", "locks"):
        last = backend.put(key, key.encode())
    items, revision = backend.get_range("clusters/")
    assert [i.key for i in items] == ["clusters/a", "clusters/b"]
    assert revision >= last.revision


def test_create_only_when_absent(backend):
    assert backend.create("roles/dev", b"v1") is not None
    assert backend.create("roles/dev", b"v2") is None
    assert backend.get("roles/dev").value == b"v1"


def test_compare_and_swap_refuses_a_stale_revision(backend):
    seen = backend.put("locks", b"[]")
    mine = backend.compare_and_swap("locks", seen.revision, b"[alice]")
    assert mine is not None and mine.revision > seen.revision
    assert backend.compare_and_swap("locks", seen.revision, b"[bob]") is None, "the other writer's base is stale"
    assert backend.get("locks").value == b"[alice]"
    assert backend.compare_and_swap("new-key", 0, b"x") is not None, "0 means: must not exist yet"


def test_delete_with_and_without_expected_revision(backend):
    item = backend.put("clusters/gone", b"x")
    newer = backend.put("clusters/gone", b"y")
    assert backend.delete("clusters/gone", expected_revision=item.revision) is False
    assert backend.get("clusters/gone").value == b"y"
    assert backend.delete("clusters/gone", expected_revision=newer.revision) is True
    assert backend.get("clusters/gone") is None
    assert backend.delete("clusters/gone") is False


def test_watch_from_a_revision_sees_puts_and_deletes_in_order(backend):
    backend.put("clusters/before", b"0")
    _, revision = backend.get_range("clusters/")
    seen = Collector()
    watch = backend.watch("clusters/", revision, seen.on_events, seen.on_error)
    try:
        backend.put("clusters/a", b"1")
        backend.put("other/ignored", b"x")
        backend.delete("clusters/before")
        seen.wait_for(lambda: len(seen.events) >= 2)
        assert [(e.type, e.key) for e in seen.events] == [("put", "clusters/a"), ("delete", "clusters/before")]
        assert seen.events[0].item.value == b"1"
        assert seen.events[0].revision < seen.events[1].revision
        assert not seen.errors
    finally:
        watch.cancel()


def test_lease_keys_vanish_without_keep_alive_and_stay_with_it(backend):
    kept = backend.grant(1)
    dropped = backend.grant(1)
    backend.put("leader/kept", b"a", lease=kept)
    backend.put("leader/dropped", b"b", lease=dropped)
    deadline = time.monotonic() + 10
    while backend.get("leader/dropped") is not None:
        assert backend.keep_alive(kept)
        assert time.monotonic() < deadline, "a lease of 1 s outlived 10 s without keep-alive"
        time.sleep(0.2)
    assert backend.get("leader/kept") is not None
    assert backend.keep_alive(dropped) is False
    backend.revoke(kept)
    assert backend.get("leader/kept") is None


def test_an_unreachable_etcd_raises_backend_unavailable_quickly():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = EtcdBackend([f"http://127.0.0.1:{port}"], timeout=0.5)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port}"):
        backend.get("anything")
    assert time.monotonic() - started < 5


def test_local_backend_survives_a_writer_killed_mid_write(tmp_path):
    """A crashed writer leaves a temporary file at most: readers ignore it, the value is the old one."""
    backend = LocalBackend(tmp_path / "b")
    backend.put("locks", b"old")
    (backend.kv_dir / ".locks.12345.tmp").write_bytes(b'{"revision": 99, "val')  # half-written temp file
    assert backend.get("locks").value == b"old"
    assert [i.key for i in backend.get_range("")[0]] == ["locks"]
    assert backend.put("locks", b"new").revision == 2


def test_a_local_watch_polling_between_a_writers_revision_and_its_record_still_sees_the_event(tmp_path, monkeypatch):
    """A writer bumps the store's revision, then writes the record. A watch that polled in between used
    to take the new revision as seen with no record for it yet, and missed the event until some later
    write (seen as a flaky contract test under load). The writer here pauses 0.3 s between the two
    steps, so the watch (polling every 20 ms) polls in that window many times."""
    backend = LocalBackend(tmp_path / "b", poll_interval=0.02)
    backend.put("clusters/before", b"0")
    _, revision = backend.get_range("clusters/")
    real_next_revision = backend._next_revision

    def slow_next_revision() -> int:
        bumped = real_next_revision()
        time.sleep(0.3)  # the record is written after this
        return bumped

    seen = Collector()
    watch = backend.watch("clusters/", revision, seen.on_events, seen.on_error)
    try:
        monkeypatch.setattr(backend, "_next_revision", slow_next_revision)
        backend.put("clusters/a", b"1")
        monkeypatch.setattr(backend, "_next_revision", real_next_revision)
        seen.wait_for(lambda: any(e.key == "clusters/a" for e in seen.events), timeout=5.0)
    finally:
        watch.cancel()
    assert [e.key for e in seen.events] == ["clusters/a"] and not seen.errors

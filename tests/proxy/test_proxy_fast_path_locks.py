"""Locks on the proxy's fast paths, end to end: a real kubegate proxy in front of its own sandbox, whose
lock list (the file ``<base>/locks``) the proxy follows by inotify from its event loop.

- A lock written by ``kubegate users lock`` (the real command, its own process, which replaces the file
  by rename and exits) refuses the client's next request, served before from a plan (HTTP/1.1 and
  HTTP/2 clients) or by the direct path; ``kubegate users unlock`` lets it in again.
- While the list does not change, a planned request neither ``stat``s the file nor asks the lock list.
- A proxy whose lock list cannot be watched (inotify set-up failing, simulated) ``stat``s the file per
  request and refuses the next request all the same.
- The shared lock list (a real etcd) going stale refuses requests that have a plan (503): its
  ``StateUnavailable`` comes with time, not with a change event.
"""

from __future__ import annotations

import errno
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.fastpath import CodecFastExchange, FastExchange
from proxy.testing import wait_for
from tests.certs.stat_calls import stat_calls
from tests.proxy.fast_gate import POD, Client, Gate, H2Client, opened_clients, record_starts, running_gate

pytestmark = pytest.mark.e2e


def kubegate_users(gate: Gate, *args: str) -> None:
    """``kubegate users <args>`` on the gate's state directory (where its ``locks`` file is), as an admin
    runs it: a process of its own, done when this returns."""
    base = Path(gate.locks.path).parent
    config = base / "kubegate-cli.yaml"
    if not config.exists():
        config.write_text(f"version: v1\nstate_dir: {base}\nauth: {{roles_dir: {gate.roles_dir}}}\n")
    done = subprocess.run([sys.executable, "-m", "kubegate", "users", *args, "-c", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    with running_gate(tmp_path_factory.mktemp("locks")) as gate:
        yield gate


@pytest.fixture
def wire_client(gate: Gate, wire: str) -> Iterator[Callable[..., Client | H2Client]]:
    with opened_clients(gate, H2Client if wire == "h2" else Client) as make:
        yield make


@pytest.fixture
def client(gate: Gate) -> Iterator[Callable[..., Client]]:
    with opened_clients(gate, Client) as make:
        yield make


@pytest.fixture
def planned(monkeypatch: pytest.MonkeyPatch, gate: Gate) -> list[Any]:
    """Every exchange started from a connection's plan on ``gate`` while the test runs."""
    return record_starts(monkeypatch, gate, FastExchange, CodecFastExchange)


def get_plan(gate: Gate, c: Client) -> Any:
    """The plan the proxy's connection for ``c`` holds for ``GET POD``."""
    return next(iter(gate.plans(c).values()), None)


def count_calls(monkeypatch: pytest.MonkeyPatch, locks: Any) -> list[Any]:
    """The identities ``locks.is_locked`` is asked about from now on (the instance's method wrapped)."""
    asked: list[Any] = []
    real = locks.is_locked

    def is_locked(identity: Any) -> Any:
        asked.append(identity)
        return real(identity)

    monkeypatch.setattr(locks, "is_locked", is_locked)
    return asked


def test_the_proxy_follows_its_lock_file(gate: Gate) -> None:
    assert gate.locks.generation is not None  # watched: a generation per change


def test_a_lock_written_by_the_cli_refuses_the_next_planned_request(gate, wire_client, planned) -> None:
    c = wire_client("mallory")
    assert c.get(POD).status == 200
    assert c.get(POD).status == 200 and len(planned) == 1
    kubegate_users(gate, "lock", "mallory", "--reason", "left the team")
    try:
        refused = c.get(POD)
        assert refused.status == 403, refused
        assert refused.json["kind"] == "Status" and "left the team" in refused.json["message"]
        assert len(planned) == 1
    finally:
        kubegate_users(gate, "unlock", "mallory")
    assert c.get(POD).status == 200  # unlocked: served again, from the plan
    assert len(planned) == 2


def test_a_lock_written_by_the_cli_refuses_the_next_request_on_the_direct_path(gate, client, monkeypatch) -> None:
    """Requests that differ in one field each time never ride a plan: the direct path serves them (their
    decision memoised after the first), and the lock refuses the next of them."""
    direct = record_starts(monkeypatch, gate, CodecFastExchange, planned=False)
    c = client("oscar")
    assert c.get(POD, [("x-attempt", "0")]).status == 200
    assert c.get(POD, [("x-attempt", "1")]).status == 200
    assert len(direct) >= 1, "the direct path was not taken"
    kubegate_users(gate, "lock", "oscar", "--reason", "on leave")
    try:
        refused = c.get(POD, [("x-attempt", "2")])
        assert refused.status == 403 and "on leave" in refused.json["message"], refused
    finally:
        kubegate_users(gate, "unlock", "oscar")
    served = len(direct)
    assert c.get(POD, [("x-attempt", "3")]).status == 200 and len(direct) == served + 1


def test_planned_requests_neither_stat_the_lock_file_nor_ask_the_lock_list(gate, client, planned, monkeypatch) -> None:
    c = client("paula")
    for _ in range(2):  # the plan, then one use of it (which takes the list's generation of now)
        assert c.get(POD).status == 200
    stats = stat_calls(monkeypatch, Path(gate.locks.path))
    asked = count_calls(monkeypatch, gate.locks)
    used = len(planned)
    for _ in range(20):
        assert c.get(POD).status == 200
    assert len(planned) == used + 20
    assert stats == [] and asked == []
    gate.locks.lock_user("someone-else")  # a change: the next planned request asks once, then not again
    try:
        wait_for(lambda: c.get(POD).status == 200 and len(asked) == 1, timeout=10)
        assert c.get(POD).status == 200 and len(asked) == 1
    finally:
        gate.locks.unlock_user("someone-else")


# --- inotify unavailable ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unwatched_gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    """A gate whose proxy could not watch its lock list: ``inotify_init1`` failing is simulated by
    replacing ``inotify_simple.INotify`` with a function raising EMFILE (the per-user instance limit)
    while the proxy starts."""
    import inotify_simple

    def no_inotify(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EMFILE, "Too many open files")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inotify_simple, "INotify", no_inotify)
        started = running_gate(tmp_path_factory.mktemp("unwatched"))
        gate = started.__enter__()
    try:
        yield gate
    finally:
        started.__exit__(None, None, None)


def test_without_inotify_each_planned_request_stats_the_file_and_a_lock_still_holds_at_once(
    unwatched_gate, monkeypatch
) -> None:
    gate = unwatched_gate
    planned = record_starts(monkeypatch, gate, FastExchange, CodecFastExchange)
    assert gate.locks.generation is None
    with opened_clients(gate, Client) as make:
        c = make("quentin")
        assert c.get(POD).status == 200
        stats = stat_calls(monkeypatch, Path(gate.locks.path))
        for _ in range(5):
            assert c.get(POD).status == 200
        assert len(planned) == 5 and len(stats) == 5  # one stat per request
        kubegate_users(gate, "lock", "quentin", "--reason", "no inotify needed")
        refused = c.get(POD)
        assert refused.status == 403 and "no inotify needed" in refused.json["message"]


# --- the shared lock list -----------------------------------------------------------------------------

STALE_GRACE = 1.0


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real etcd member on loopback (Debian's etcd from .tools/bin)."""
    from backend.testing import EtcdCluster

    with EtcdCluster(tmp_path_factory.mktemp("etcd"), members=1) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def shared_gate(tmp_path_factory: pytest.TempPathFactory, etcd: Any) -> Iterator[Gate]:
    from backend.etcd import EtcdBackend
    from certs.shared_locks import SharedLockList

    backend = EtcdBackend(etcd.endpoints, prefix="/kubegate-locks-test/", timeout=0.5)
    locks = SharedLockList(backend, watch=True, stale_grace=STALE_GRACE)
    try:
        with running_gate(tmp_path_factory.mktemp("shared"), locks=locks) as gate:
            yield gate
    finally:
        locks.stop()


def test_the_shared_list_going_stale_refuses_requests_that_have_a_plan(shared_gate, etcd, monkeypatch) -> None:
    from backend.etcd import EtcdBackend
    from certs.shared_locks import SharedLockList

    gate = shared_gate
    planned = record_starts(monkeypatch, gate, FastExchange, CodecFastExchange)
    with opened_clients(gate, Client) as make:
        c = make("rita")
        assert c.get(POD).status == 200
        assert c.get(POD).status == 200 and len(planned) == 1
        asked = count_calls(monkeypatch, gate.locks)
        assert c.get(POD).status == 200 and asked == []  # healthy and unchanged: not asked

        # a lock written on another host (its own list on the same etcd) reaches this proxy by the watch
        writer = SharedLockList(EtcdBackend(etcd.endpoints, prefix="/kubegate-locks-test/"))
        writer.lock_user("rita", reason="written elsewhere")
        wait_for(lambda: c.get(POD).status == 403, timeout=10)
        writer.unlock_user("rita")
        wait_for(lambda: c.get(POD).status == 200, timeout=10)
        assert get_plan(gate, c)

        etcd.stop_all()
        try:
            # within stale_grace the last known list is served; after it, a plan does not bypass the 503
            wait_for(lambda: c.get(POD).status == 503, timeout=30)
            refused = c.get(POD)
            assert refused.status == 503 and "unreachable" in refused.json["message"], refused
        finally:
            etcd.start_all()
        wait_for(lambda: c.get(POD).status == 200, timeout=60)  # etcd back: served again

"""Bots, join tokens, pending logins, issued serials (``SharedAuthStore``) and the session index
(``SharedSessionIndex``) in the backend: what one replica writes, another reads; single-use things are
taken exactly once whichever replica takes them."""

from __future__ import annotations

import threading

import pytest

from backend.etcd import EtcdBackend
from backend.local import LocalBackend
from certs.shared_auth_store import SharedAuthStore
from certs.store import BotRecord, IssuedRecord, StoreError
from kubegate.shared_sessions import SharedSessionIndex


@pytest.fixture(params=["local", "etcd"])
def two_replicas(request, tmp_path):
    """Two backend clients on the same state, as two replicas would hold them."""
    if request.param == "local":
        return LocalBackend(tmp_path / "b"), LocalBackend(tmp_path / "b")
    cluster = request.getfixturevalue("etcd_cluster")
    prefix = request.getfixturevalue("etcd_prefix")
    return EtcdBackend(cluster.endpoints, prefix=prefix), EtcdBackend(list(reversed(cluster.endpoints)), prefix=prefix)


def test_bots_and_issued_serials_are_seen_by_every_replica(two_replicas):
    a, b = SharedAuthStore(two_replicas[0]), SharedAuthStore(two_replicas[1])
    a.put_bot(BotRecord("ci", ("viewer",), {"logins": ("x",)}, 1.0))
    assert b.get_bot("ci") == BotRecord("ci", ("viewer",), {"logins": ("x",)}, 1.0)
    assert [bot.name for bot in b.list_bots()] == ["ci"]
    a.record_issued(IssuedRecord("0a1b", "alice", "user", ("viewer",), 200.0, 100.0, "operator"))
    b.record_issued(IssuedRecord("0c2d", "ci", "bot", ("viewer",), 300.0, 150.0, "join"))
    assert [r.serial for r in a.issued()] == ["0a1b", "0c2d"]
    assert b.remove_bot("ci") and a.get_bot("ci") is None


def test_a_join_token_is_taken_once_across_replicas_even_concurrently(two_replicas):
    a, b = SharedAuthStore(two_replicas[0]), SharedAuthStore(two_replicas[1])
    a.put_bot(BotRecord("ci", ("viewer",)))
    secret, _ = a.add_join_token("ci", ttl=60, now=1000.0)
    outcomes: list[str] = []

    def take(store: SharedAuthStore) -> None:
        try:
            outcomes.append(store.take_join_token(secret, now=1001.0).bot)
        except StoreError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=take, args=(store,)) for store in (a, b, a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes).count("ci") == 1, outcomes
    assert all("already used" in o for o in outcomes if o != "ci")
    with pytest.raises(StoreError, match="unknown join token"):
        b.take_join_token("not-a-token", now=1001.0)
    expired, _ = a.add_join_token("ci", ttl=1, now=1000.0)
    with pytest.raises(StoreError, match="expired"):
        b.take_join_token(expired, now=2000.0)


def test_a_pending_login_is_taken_once(two_replicas):
    a, b = SharedAuthStore(two_replicas[0]), SharedAuthStore(two_replicas[1])
    a.put_pending("state-123", {"nonce": "n", "verifier": "v"})
    assert b.take_pending("state-123") == {"nonce": "n", "verifier": "v"}
    assert a.take_pending("state-123") is None, "a replayed callback gets nothing"


def test_the_session_index_lists_every_replicas_sessions(two_replicas):
    a, b = SharedSessionIndex(two_replicas[0]), SharedSessionIndex(two_replicas[1])
    a.put({"session_id": "a" * 32, "user": "alice", "cluster": "east", "start_time": 20.0})
    b.put({"session_id": "b" * 32, "user": "bob", "cluster": "west", "start_time": 10.0})
    assert [r["user"] for r in a.list()] == ["bob", "alice"]
    assert [r["user"] for r in b.list(cluster="east")] == ["alice"]
    assert [r["user"] for r in b.list(since=15.0)] == ["alice"]
    assert b.get("a" * 32)["cluster"] == "east"
    assert a.get("not-an-id") is None
    with pytest.raises(ValueError):
        a.put({"session_id": "../x"})

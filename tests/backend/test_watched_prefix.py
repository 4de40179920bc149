"""``WatchedPrefix`` over a real 3-member etcd: it follows every change by watch, survives the loss of the
member its watch is on, keeps its last state while etcd is down and catches up by itself afterwards."""

from __future__ import annotations

import time

from backend.cache import WatchedPrefix
from backend.etcd import EtcdBackend


def wait_until(predicate, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(0.02)


def values(cache: WatchedPrefix) -> dict[str, bytes]:
    return {key: item.value for key, item in cache.items.items()}


def test_the_cache_lists_then_follows_changes(etcd_cluster, etcd_prefix):
    backend = EtcdBackend(etcd_cluster.endpoints, prefix=etcd_prefix)
    backend.put("clusters/a", b"1")
    changes = []
    cache = WatchedPrefix(backend, "clusters/", on_change=changes.append)
    cache.start()
    try:
        assert values(cache) == {"clusters/a": b"1"}
        assert cache.healthy
        backend.put("clusters/b", b"2")
        backend.delete("clusters/a")
        wait_until(lambda: values(cache) == {"clusters/b": b"2"}, what="the watch to deliver put + delete")
        assert changes[-1].keys() == {"clusters/b"}
    finally:
        cache.stop()


def test_killing_the_watched_member_loses_nothing_and_writes_go_on(etcd_cluster, etcd_prefix):
    backend = EtcdBackend(etcd_cluster.endpoints, prefix=etcd_prefix, timeout=1.0)
    cache = WatchedPrefix(backend, "clusters/")
    cache.start()
    try:
        backend.put("clusters/before", b"x")
        wait_until(lambda: "clusters/before" in cache.items)
        etcd_cluster.kill(backend._preferred)  # the member both the client and the watch use
        for i in range(5):
            backend.put(f"clusters/after-{i}", b"y")  # fails over to a live member
        wait_until(lambda: len(cache.items) == 6, what="the cache to resume on another member")
        assert backend.get("clusters/before").value == b"x"
    finally:
        cache.stop()
        for i in range(3):
            etcd_cluster.start(i)
        etcd_cluster.wait_healthy()


def test_with_etcd_down_the_cache_keeps_its_state_then_recovers(etcd_cluster, etcd_prefix):
    backend = EtcdBackend(etcd_cluster.endpoints, prefix=etcd_prefix, timeout=0.5)
    backend.put("locks", b"alice")
    cache = WatchedPrefix(backend, "locks", max_retry=0.5)
    cache.start()
    try:
        etcd_cluster.stop_all()
        wait_until(lambda: not cache.healthy, what="the cache to notice etcd is gone")
        assert values(cache) == {"locks": b"alice"}, "the last known state stays"
        assert cache.unreachable_since is not None
        etcd_cluster.start_all()
        wait_until(lambda: cache.healthy, timeout=30, what="the cache to recover by itself")
        backend.put("locks", b"bob")
        wait_until(lambda: values(cache) == {"locks": b"bob"})
    finally:
        cache.stop()

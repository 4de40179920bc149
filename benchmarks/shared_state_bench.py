"""Shared state (issue 13): how fast a change on one replica reaches another, and what the shared
backend costs per request.

    python -m benchmarks.shared_state_bench [--samples 200]

Starts a real 3-member etcd cluster on loopback (.tools/bin/etcd). "Replica A" and "replica B" are two
``EtcdBackend`` clients with their own connections, as two kubegate processes would have:

- cluster change: A writes ``clusters/<name>``; measured until B's ``SharedClusterStore`` watch has the
  new record in memory (what the discovery service then installs in the registry at once);
- lock: A runs ``SharedLockList.lock_user``; measured until B's watched ``SharedLockList.is_locked``
  refuses the user (what the proxy's stream sweep, every second, then acts on).

Per-request cost: ``is_locked`` and ``roles.current()`` — the only per-request calls whose
implementation differs between the ``local`` and ``etcd`` backends — timed in a loop for both (no
backend I/O happens on the request path with either).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import timeit
from pathlib import Path

from backend.etcd import EtcdBackend
from backend.testing import EtcdCluster
from certs.locks import LockList
from certs.shared_locks import SharedLockList
from discovery.shared_store import SharedClusterStore
from discovery.store import ClusterRecord
from kubegate.shared_roles import PREFIX as ROLE_PREFIX
from kubegate.shared_roles import SharedRoles
from rbac.identity import Identity
from rbac.roles import RoleWatcher

ROLE = """kind: role
version: v8
metadata: {name: viewer}
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources: [{kind: pods, namespace: '*', name: '*', verbs: [get]}]
"""


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    return f"p50 {p50:.1f} ms  p99 {p99:.1f} ms  (n={len(ordered)})"


def cluster_propagation(a: EtcdBackend, b: EtcdBackend, samples: int) -> list[float]:
    arrived = threading.Event()
    wanted = [""]
    store_b = SharedClusterStore(b)

    def on_change() -> None:
        if wanted[0] and store_b.cache is not None and f"clusters/{wanted[0]}" in store_b.cache.items:
            arrived.set()

    store_b.watch(on_change)
    store_a = SharedClusterStore(a)
    delays = []
    try:
        for i in range(samples):
            name = f"bench-{i}"
            arrived.clear()
            wanted[0] = name
            started = time.perf_counter()
            store_a.put(ClusterRecord(name=name, origin="kube_cluster", labels={"env": "bench"}, spec={}))
            if not arrived.wait(10):
                raise RuntimeError(f"cluster {name} never reached replica B")
            delays.append(time.perf_counter() - started)
    finally:
        store_b.stop()
    return delays


def lock_propagation(a: EtcdBackend, b: EtcdBackend, samples: int) -> list[float]:
    locks_b = SharedLockList(b, watch=True)
    locks_a = SharedLockList(a)
    delays = []
    try:
        for i in range(samples):
            who = Identity(user=f"user-{i}", roles=())
            started = time.perf_counter()
            locks_a.lock_user(who.user, reason="bench")
            while not locks_b.is_locked(who):
                if time.perf_counter() - started > 10:
                    raise RuntimeError("the lock never reached replica B")
                time.sleep(0.0002)
            delays.append(time.perf_counter() - started)
            locks_a.unlock_user(who.user)
    finally:
        locks_b.stop()
    return delays


def per_request(b: EtcdBackend, workdir: Path) -> None:
    who = Identity(user="alice", roles=("viewer",))
    b.put(ROLE_PREFIX + "viewer", ROLE.encode())
    shared_locks = SharedLockList(b, watch=True)
    shared_roles = SharedRoles(b)
    roles_dir = workdir / "roles"
    roles_dir.mkdir()
    (roles_dir / "viewer.yaml").write_text(ROLE)
    file_locks = LockList(workdir / "locks")
    file_locks.lock_user("somebody-else")
    shared_locks_writer = SharedLockList(b)
    shared_locks_writer.lock_user("somebody-else")
    time.sleep(0.5)
    file_roles = RoleWatcher(roles_dir, time.monotonic)
    n = 200_000
    try:
        for label, fn in (("is_locked, local (lock file)", lambda: file_locks.is_locked(who)),
                          ("is_locked, etcd (watched copy)", lambda: shared_locks.is_locked(who)),
                          ("roles.current(), local (roles dir)", file_roles.current),
                          ("roles.current(), etcd (watched copy)", shared_roles.current)):
            best = min(timeit.repeat(fn, number=n, repeat=3)) / n
            print(f"  {label:40s} {best * 1e6:.2f} us")
    finally:
        shared_locks.stop()
        shared_roles.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EtcdCluster(Path(tmp) / "etcd", members=3) as etcd:
        a = EtcdBackend(etcd.endpoints, prefix="/bench/")
        b = EtcdBackend(list(reversed(etcd.endpoints)), prefix="/bench/")  # B talks to another member first
        print("propagation, replica A write -> replica B's in-memory state (3-member etcd on loopback):")
        print(f"  cluster change: {percentiles(cluster_propagation(a, b, args.samples))}")
        print(f"  lock:           {percentiles(lock_propagation(a, b, args.samples))}")
        print("per-request calls (best of 3 x 200,000):")
        per_request(b, Path(tmp))


if __name__ == "__main__":
    main()

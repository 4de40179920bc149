"""The etcd backend over a real 3-member etcd whose leader is killed: a call made at once waits while the
two members left elect a new leader, and succeeds, instead of failing because each member, there but
leaderless, did not answer in time. With etcd wholly down a call still fails at once."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from backend.base import BackendUnavailable
from backend.etcd import EtcdBackend


def _leader(cluster) -> int:
    """The index of the member that is the leader, as the members' own status says."""
    for i, endpoint in enumerate(cluster.endpoints):
        if cluster.procs[i] is None:
            continue
        request = urllib.request.Request(f"{endpoint}/v3/maintenance/status", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=2) as response:
            status = json.load(response)
        if status.get("leader") == status["header"]["member_id"]:
            return i
    raise AssertionError("no member says it is the leader")


def test_calls_made_right_after_the_leader_dies_wait_for_the_election(etcd_cluster, etcd_prefix):
    # a per-call timeout shorter than the election (500 ms election timeout in backend.testing), so that
    # a round of the endpoints ends inside it: the call must go round again
    backend = EtcdBackend(etcd_cluster.endpoints, prefix=etcd_prefix, timeout=0.2, election_wait=10.0)
    backend.put("clusters/before", b"x")
    leader = _leader(etcd_cluster)
    etcd_cluster.kill(leader)
    try:
        for i in range(5):
            backend.put(f"clusters/after-{i}", b"y")
        assert backend.get("clusters/before").value == b"x"
        items, _ = backend.get_range("clusters/")
        assert sorted(item.key for item in items) == ["clusters/after-0", "clusters/after-1", "clusters/after-2",
                                                      "clusters/after-3", "clusters/after-4", "clusters/before"]
    finally:
        etcd_cluster.start(leader)
        etcd_cluster.wait_healthy()


def test_with_every_member_gone_a_call_fails_at_once(etcd_cluster, etcd_prefix):
    backend = EtcdBackend(etcd_cluster.endpoints, prefix=etcd_prefix, timeout=0.5, election_wait=10.0)
    etcd_cluster.stop_all()
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="no etcd endpoint answered"):
            backend.get("clusters/x")
        assert time.monotonic() - started < 3.0  # connection refused everywhere: no election to wait for
    finally:
        etcd_cluster.start_all()

"""The cluster registry the proxy reads: O(1) get, selection by kubernetes_service.resources, change
notification, and the crash-safe persisted store behind it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from discovery.errors import DiscoveryError
from discovery.model import Cluster
from discovery.registry import ClusterRegistry
from discovery.store import ClusterRecord, ClusterStore


def cluster(name: str, **labels: str) -> Cluster:
    return Cluster(name=name, labels=dict(labels), server=f"https://{name}.example:6443", origin="kube_cluster")


def recorder(registry: ClusterRegistry) -> list[tuple[str, str | None]]:
    events: list[tuple[str, str | None]] = []
    registry.subscribe(lambda name, c: events.append((name, None if c is None else c.labels.get("env"))))
    return events


def test_get_list_and_notifications_follow_upserts_and_removals():
    reg = ClusterRegistry()
    events = recorder(reg)
    reg.upsert(cluster("b", env="dev"), "dir:x")
    reg.upsert(cluster("a", env="prod"), "dir:x")
    assert reg.get("a").labels == {"env": "prod"}
    assert [c.name for c in reg.list()] == ["a", "b"]
    assert reg.upsert(cluster("a", env="prod"), "dir:x") is False  # unchanged: no event
    reg.upsert(cluster("a", env="qa"), "dir:x")
    reg.remove("b")
    assert reg.get("b") is None
    assert events == [("b", "dev"), ("a", "prod"), ("a", "qa"), ("b", None)]


def test_generation_is_bumped_on_every_change():
    reg = ClusterRegistry()
    reg.upsert(cluster("a", env="1"), "s")
    g1 = reg.get("a").generation
    reg.set_health("a", "healthy")
    g2 = reg.get("a").generation
    reg.set_dynamic_labels("a", {"arch": "x86_64"})
    assert g1 < g2 < reg.get("a").generation
    assert reg.get("a").health == "healthy"  # a label change keeps the health
    assert reg.get("a").labels == {"env": "1", "arch": "x86_64"}


def test_selection_serves_only_matching_clusters_and_a_label_change_unregisters():
    reg = ClusterRegistry(selectors=[{"env": "prod"}, {"team": ["a", "b"], "tier": "^gold|silver$"}])
    events = recorder(reg)
    reg.upsert(cluster("p", env="prod"), "s")
    reg.upsert(cluster("d", env="dev"), "s")
    reg.upsert(cluster("t", team="b", tier="silver"), "s")
    reg.upsert(cluster("u", team="b"), "s")  # all labels of an entry must match
    assert [c.name for c in reg.list()] == ["p", "t"]
    assert reg.get("d") is None and {c.name for c in reg.all()} == {"p", "d", "t", "u"}
    reg.set_dynamic_labels("p", {"env": "staging"})  # dynamic wins over static; stops matching
    assert reg.get("p") is None
    assert events[-1] == ("p", None)
    reg.set_dynamic_labels("d", {"env": "prod"})
    assert reg.get("d") is not None


def test_match_all_default_and_set_selectors_at_run_time():
    reg = ClusterRegistry()
    reg.upsert(cluster("x"), "s")  # no labels at all: '*': '*' still matches
    assert reg.get("x") is not None
    events = recorder(reg)
    reg.set_selectors([{"env": "prod"}])
    assert reg.get("x") is None and events == [("x", None)]


def test_a_name_owned_by_another_source_is_refused_naming_both():
    reg = ClusterRegistry()
    reg.upsert(cluster("a"), "kubeconfig:/k1")
    with pytest.raises(DiscoveryError, match="kubeconfig:/k1"):
        reg.upsert(cluster("a", env="x"), "dir:/d/a.yaml")
    errors = reg.replace_source("dir:/d/a.yaml", [cluster("a"), cluster("b")])
    assert len(errors) == 1 and reg.get("b") is not None
    assert reg.source_of("a") == "kubeconfig:/k1"


def test_replace_source_removes_what_a_source_no_longer_defines():
    reg = ClusterRegistry()
    reg.replace_source("f1", [cluster("a"), cluster("b")])
    reg.replace_source("f2", [cluster("c")])
    reg.replace_source("f1", [cluster("b")])
    assert [c.name for c in reg.list()] == ["b", "c"]


def test_a_failing_listener_does_not_stop_the_others():
    reg = ClusterRegistry()
    seen = []

    def broken(name, c):
        raise RuntimeError("boom")

    reg.subscribe(broken)
    unsubscribe = reg.subscribe(lambda name, c: seen.append(name))
    reg.upsert(cluster("a"), "s")
    unsubscribe()
    reg.upsert(cluster("b"), "s")
    assert seen == ["a"]


def test_list_returns_a_snapshot_the_caller_may_keep():
    reg = ClusterRegistry()
    reg.upsert(cluster("a"), "s")
    snap = reg.list()
    reg.upsert(cluster("b"), "s")
    assert [c.name for c in snap] == ["a"]
    assert len(reg.list()) == 2


# ---- the persisted store ---------------------------------------------------------------------------


def record(name: str, n: int = 0) -> ClusterRecord:
    return ClusterRecord(name=name, origin="kube_cluster", labels={"n": str(n)}, spec={"kubeconfig": "eA=="})


def test_store_round_trip_and_errors_name_the_file(tmp_path: Path):
    store = ClusterStore(tmp_path / "clusters")
    store.put(record("a", 1))
    assert store.get("a") == record("a", 1)
    (tmp_path / "clusters" / "bad.json").write_text("{nope")
    (tmp_path / "clusters" / "other.json").write_text(json.dumps(record("a").to_json()))
    records, errors = store.load_all()
    assert list(records) == ["a"]
    assert any("bad.json" in e and "JSON" in e for e in errors)
    assert any("other.json" in e and "must match" in e for e in errors)
    assert store.delete("a") and not store.delete("a")
    with pytest.raises(DiscoveryError, match="invalid cluster name"):
        store.put(record("../escape"))


WRITER = textwrap.dedent(
    """
    import sys
    from discovery.store import ClusterRecord, ClusterStore
    store = ClusterStore(sys.argv[1])
    big = "x" * 200_000  # large records make the kill land mid-write
    i = 0
    print("ready", flush=True)
    while True:  # single atomic writes and batches, alternately
        i += 1
        if i % 2:
            store.put(ClusterRecord(name=f"c{i % 5}", origin="kube_cluster", labels={"i": str(i)},
                                    spec={"kubeconfig": big}))
        else:
            store.put_many([ClusterRecord(name=f"c{n}", origin="kube_cluster", labels={"i": str(i)},
                                          spec={"kubeconfig": big}) for n in range(5)])
    """
)


def test_kill_9_during_registry_writes_leaves_a_readable_registry(tmp_path: Path):
    directory = tmp_path / "clusters"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(directory)], stdout=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        assert proc.stdout.readline().strip() == b"ready"
        store = ClusterStore(directory)
        # wait until all five records exist and the writer is well into rewriting them
        while len(store.load_all()[0]) < 5:
            pass
        while int(store.get("c0").labels["i"]) < 30:
            pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    records, errors = ClusterStore(directory).load_all()
    assert errors == []
    assert sorted(records) == ["c0", "c1", "c2", "c3", "c4"]
    assert all(len(r.spec["kubeconfig"]) == 200_000 for r in records.values())
    ClusterStore(directory).sweep_temporaries()
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]

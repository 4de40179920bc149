"""Prometheus metrics of discovery (names ``kubegate_…``), on the default registry.

Multiprocess-safe like ``proxy.metrics``: every worker keeps the same registry view, so the cluster
gauge uses ``livemax`` (a dead worker's values disappear, the others agree).
"""

from __future__ import annotations

from collections import Counter as _Tally
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from discovery.model import Cluster

DISCOVERY_RUNS = Counter(
    "kubegate_discovery_runs_total", "Discovery runs, by source (aws, azure, dir, store) and result.",
    ["source", "result"],
)
DISCOVERY_RUN_SECONDS = Histogram(
    "kubegate_discovery_run_duration_seconds", "Time of one discovery run, by source.", ["source"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
DISCOVERY_CHANGES = Counter(
    "kubegate_discovery_changes_total", "Clusters created/updated/deleted by discovery runs.", ["source", "action"]
)
DEFINITION_ERRORS = Gauge(
    "kubegate_cluster_definition_errors", "Cluster definitions that cannot be used right now, by source.",
    ["source"], multiprocess_mode="livemax",
)
CLUSTERS = Gauge(
    "kubegate_clusters", "Known clusters by origin (source) and health, served or not.", ["source", "health"],
    multiprocess_mode="livemax",
)
CLUSTERS_SERVED = Gauge(
    "kubegate_clusters_served", "Clusters matching kubernetes_service.resources.", multiprocess_mode="livemax"
)
HEALTH_CHECKS = Counter("kubegate_cluster_health_checks_total", "Cluster health checks, by result.", ["result"])
DYNAMIC_LABEL_FAILURES = Counter(
    "kubegate_dynamic_label_failures_total", "Dynamic label commands that failed or timed out."
)

_HEALTH_STATES = ("unknown", "healthy", "unhealthy")
_seen: set[tuple[str, str]] = set()


def update_cluster_gauges(clusters: Iterable[Cluster], served: int) -> None:
    tally = _Tally((c.origin, c.health) for c in clusters)
    for key in _seen - set(tally):
        CLUSTERS.labels(*key).set(0)
    for (origin, health), count in tally.items():
        CLUSTERS.labels(origin, health).set(count)
        _seen.add((origin, health))
    CLUSTERS_SERVED.set(served)

"""Per-request metrics are tallied in plain ints on the hot path and folded into prometheus-client by
``flush()``: after a flush the exported series are exactly what ``inc()`` / ``observe()`` per request
would have produced."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from proxy import metrics

# between bounds, exactly on bounds (a bucket's bound is inclusive: ``le``), zero, past the last bound
LATENCIES = [0.0001, 0.0005, 0.0007, 0.001, 0.003, 0.02, 0.5, 4.0, 31.0, 0.0, *metrics._LATENCY_BOUNDS[:-1], 1e9]


def _series(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> dict[str, float]:
    out = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.startswith(name) and all(sample.labels.get(k) == v for k, v in labels.items()):
                out[sample.name + "|" + sample.labels.get("le", "")] = sample.value
    return out


@pytest.mark.parametrize("told", ["at the head", "at the end"])
def test_flushed_histogram_equals_observing_each_request(told):
    """Told at the head (``observe_latency``: the full pipeline) or with the request's end
    (``request_finished(..., head_seconds)``: the fast path), the latencies make the same histogram."""
    cluster = f"tally-{told[3:]}"
    reference_registry = CollectorRegistry()
    reference = Histogram("ref_seconds", "reference", ["cluster", "verb"], registry=reference_registry,
                          buckets=metrics._LATENCY_BOUNDS[:-1])
    before = _series(REGISTRY, "kubegate_request_duration_seconds", {"cluster": cluster, "verb": "get"})
    for seconds in LATENCIES:
        if told == "at the head":
            metrics.observe_latency(cluster, "get", seconds)
        else:
            metrics.request_started()
            metrics.request_finished(cluster, "get", 200, 0, seconds)
        reference.labels(cluster, "get").observe(seconds)
    metrics.request_started()
    metrics.request_finished(cluster, "get", 504, 0)  # no head came (kubegate answered): no latency
    metrics.flush()
    after = _series(REGISTRY, "kubegate_request_duration_seconds", {"cluster": cluster, "verb": "get"})
    expected = _series(reference_registry, "ref_seconds", {"cluster": cluster, "verb": "get"})
    got = {key.replace("kubegate_request_duration_seconds", "ref_seconds"): value - before.get(key, 0.0)
           for key, value in after.items() if not key.split("|")[0].endswith("_created")}
    expected = {k: v for k, v in expected.items() if not k.split("|")[0].endswith("_created")}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert abs(got[key] - value) < 1e-9, key


def test_requests_bytes_and_in_flight_are_counted_once_flushed():
    def value(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    requests0 = value("kubegate_requests_total", {"cluster": "tally-r", "verb": "list", "code": "200"})
    denied0 = value("kubegate_requests_total", {"cluster": "tally-r", "verb": "list", "code": "403"})
    bytes0 = value("kubegate_bytes_relayed_total", {"direction": "to_client"})
    in_flight0 = value("kubegate_requests_in_flight", {})
    for _ in range(3):
        metrics.request_started()
    metrics.request_finished("tally-r", "list", 200, 1000)
    metrics.request_finished("tally-r", "list", 403, 0)
    assert value("kubegate_requests_total", {"cluster": "tally-r", "verb": "list", "code": "200"}) == requests0
    metrics.flush()
    assert value("kubegate_requests_total", {"cluster": "tally-r", "verb": "list", "code": "200"}) == requests0 + 1
    assert value("kubegate_requests_total", {"cluster": "tally-r", "verb": "list", "code": "403"}) == denied0 + 1
    assert value("kubegate_bytes_relayed_total", {"direction": "to_client"}) == bytes0 + 1000
    assert value("kubegate_requests_in_flight", {}) == in_flight0 + 1  # three started, two finished
    metrics.request_finished("tally-r", "list", 200, 0)
    metrics.flush()
    metrics.flush()  # a flush with nothing new changes nothing
    assert value("kubegate_requests_in_flight", {}) == in_flight0
    assert value("kubegate_requests_total", {"cluster": "tally-r", "verb": "list", "code": "200"}) == requests0 + 2

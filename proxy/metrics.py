"""Prometheus metrics of the data path (names ``kubegate_…``), on the default registry.

Defined once at import; with several worker processes prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set by the supervisor before workers start) sums them at scrape time —
gauges use ``livesum`` so a dead worker's values disappear.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "kubegate_requests_total", "Requests answered, by cluster, verb and HTTP code.", ["cluster", "verb", "code"]
)
REQUEST_SECONDS = Histogram(
    "kubegate_request_duration_seconds",
    "Time from request head to the end of the response head (long-lived streams: to the head).",
    ["cluster", "verb"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge("kubegate_requests_in_flight", "Requests being served.", multiprocess_mode="livesum")
OPEN_STREAMS = Gauge(
    "kubegate_open_streams", "Long-lived streams open, by kind.", ["kind"], multiprocess_mode="livesum"
)
BYTES_RELAYED = Counter(
    "kubegate_bytes_relayed_total", "Body and stream bytes relayed, by direction.", ["direction"]
)
TLS_HANDSHAKE_FAILURES = Counter(
    "kubegate_tls_handshake_failures_total", "Client TLS handshakes that failed, by reason.", ["reason"]
)
CONNECTIONS = Gauge("kubegate_client_connections", "Open client connections.", multiprocess_mode="livesum")
CONNECTIONS_REJECTED = Counter(
    "kubegate_client_connections_rejected_total", "Client connections refused, by reason.", ["reason"]
)
UPSTREAM_ERRORS = Counter(
    "kubegate_upstream_errors_total", "Upstream failures, by cluster and kind.", ["cluster", "kind"]
)
UPSTREAM_CONNECTIONS = Gauge(
    "kubegate_upstream_connections",
    "Upstream connections by cluster and state (h2, h2_streams, http1_idle, http1_busy).",
    ["cluster", "state"],
    multiprocess_mode="livesum",
)
DENIALS = Counter("kubegate_authorization_denials_total", "Requests denied by kubegate, by reason.", ["reason"])
PROTOCOL_ERRORS = Counter(
    "kubegate_client_protocol_errors_total", "Client requests refused by the HTTP codec, by status.", ["status"]
)
TAP_GAVE_UP = Counter(
    "kubegate_session_tap_gave_up_total",
    "exec/attach/port-forward sessions whose audit tap met bytes that are not the negotiated protocol "
    "(the relay went on unobserved), by kind.",
    ["kind"],
)


def upstream_error(cluster: str, kind: str) -> None:
    UPSTREAM_ERRORS.labels(cluster, kind).inc()


_children: dict[tuple[object, tuple[str, ...]], object] = {}


def child(metric: object, *labels: str) -> object:
    """``metric.labels(*labels)``, cached: label lookup costs microseconds on every request otherwise."""
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        found = metric.labels(*labels)  # type: ignore[attr-defined]
        if len(_children) < 100_000:
            _children[key] = found
    return found

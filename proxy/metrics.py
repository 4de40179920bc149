"""Prometheus metrics of the data path (names ``kubegate_…``), on the default registry.

Defined once at import; with several worker processes prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set by the supervisor before workers start) sums them at scrape time —
gauges use ``livesum`` so a dead worker's values disappear.

The per-request figures (requests by cluster/verb/code, the latency histogram, bytes to clients,
requests in flight) are counted on the hot path in plain ints (``request_started``,
``request_finished``, ``observe_latency``, from ``proxy.tally``: a dict update each, no lock, no mmap
write) and folded
into the prometheus-client metrics by ``flush()``: every second by the proxy's sweep and right
before every scrape of a single-process proxy (``kubegate.metrics_server.render_metrics``). A scrape
of workers sees figures at most one sweep old.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

from proxy import tally

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
    "Open upstream connections by cluster, protocol (h2, http1) and state (h2: open; http1: idle, busy).",
    ["cluster", "protocol", "state"],
    multiprocess_mode="livesum",
)
UPSTREAM_STREAMS = Gauge(
    "kubegate_upstream_streams",
    "Requests and streams (watches, logs -f) open on multiplexed upstream h2 connections, by cluster.",
    ["cluster"],
    multiprocess_mode="livesum",
)
DENIALS = Counter("kubegate_authorization_denials_total", "Requests denied by kubegate, by reason.", ["reason"])
ROLES_LOADED = Gauge(
    "kubegate_roles_loaded", "Roles the proxy serves (from auth.roles_dir).", multiprocess_mode="livemax"
)
ROLE_FILES_REFUSED = Gauge(
    "kubegate_role_files_refused",
    "Role files refused at the latest load (bad YAML, invalid key, duplicate name); their roles are not served.",
    multiprocess_mode="livemax",
)
PROTOCOL_ERRORS = Counter(
    "kubegate_client_protocol_errors_total", "Client requests refused by the HTTP codec, by status.", ["status"]
)
TAP_GAVE_UP = Counter(
    "kubegate_session_tap_gave_up_total",
    "exec/attach/port-forward sessions whose audit tap met bytes that are not the negotiated protocol "
    "(the relay went on unobserved), by kind.",
    ["kind"],
)
SESSION_RECORDINGS = Counter(
    "kubegate_session_recordings_total",
    "Session recordings by outcome: started, completed, open_failed (not started: refused when strict), "
    "write_failed (stopped mid-session: the session ended when strict).",
    ["outcome"],
)
SESSION_JOINS = Counter("kubegate_session_joins_total", "Live session joins (kubegate sessions join), by where the "
                        "session was followed from: this_process | recording_file | another_replica.", ["source"])
ENDPOINT_REQUESTS = Counter(
    "kubegate_endpoint_requests_total",
    "Requests answered by kubegate itself (/kubegate/<endpoint>/, 'unauthenticated': no client certificate), "
    "by endpoint and HTTP code.",
    ["endpoint", "code"],
)
AUDIT_WRITE_ERRORS = Counter(
    "kubegate_audit_write_errors_total",
    "Audit log writes or rotations that failed (full disk, I/O error); the lines are kept and retried.",
)
AUDIT_DROPPED = Counter(
    "kubegate_audit_events_dropped_total",
    "Audit events lost: the writer fell too far behind, or a failing disk held more than the retained limit.",
)


_UPSTREAM_SERIES = (("h2", "open", "h2_connections"), ("http1", "idle", "http1_idle"),
                    ("http1", "busy", "http1_busy"))
_upstream_clusters: set[str] = set()


def record_upstream(pools: Mapping[str, Mapping[str, int]]) -> None:
    """Set the upstream gauges from each cluster pool's ``state()``; a cluster whose pool is gone is
    set to 0 (multiprocess mode cannot remove a series)."""
    for name in _upstream_clusters - pools.keys():
        for protocol, state, _ in _UPSTREAM_SERIES:
            UPSTREAM_CONNECTIONS.labels(name, protocol, state).set(0)
        UPSTREAM_STREAMS.labels(name).set(0)
    _upstream_clusters.intersection_update(pools.keys())
    for name, counts in pools.items():
        for protocol, state, key in _UPSTREAM_SERIES:
            UPSTREAM_CONNECTIONS.labels(name, protocol, state).set(counts.get(key, 0))
        UPSTREAM_STREAMS.labels(name).set(counts.get("h2_streams", 0))
        _upstream_clusters.add(name)


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


# ------------------------------------------------------------------------ hot-path tallies (see top)

_LATENCY_BOUNDS: tuple[float, ...] = tuple(REQUEST_SECONDS._upper_bounds)  # ascending, ends with +Inf
tally.configure(_LATENCY_BOUNDS)
# counted in ``proxy.tally`` (compiled: C calls from the fast path), folded here by ``flush``
request_started = tally.request_started
request_abandoned = tally.request_abandoned
request_finished = tally.request_finished
observe_latency = tally.observe_latency


def flush() -> None:
    """Fold the tallies into the prometheus-client metrics (the same series ``observe``/``inc``
    would have produced: a histogram observation counts in the first bucket whose bound is >= it)."""
    counts, latencies = tally.take_requests()
    for (cluster, verb, code), n in counts.items():
        child(REQUESTS, cluster, verb, str(code)).inc(n)  # type: ignore[attr-defined]
    for (cluster, verb), per_bucket in latencies.items():
        hist = child(REQUEST_SECONDS, cluster, verb)
        buckets = hist._buckets  # type: ignore[attr-defined]
        for i, n in enumerate(per_bucket[:-1]):
            if n:
                buckets[i].inc(n)
        hist._sum.inc(per_bucket[-1])  # type: ignore[attr-defined]
    to_client, in_flight = tally.take_pending()
    if to_client:
        child(BYTES_RELAYED, "to_client").inc(to_client)  # type: ignore[attr-defined]
    if in_flight:
        IN_FLIGHT.inc(in_flight)

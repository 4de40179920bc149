"""The hot path's per-request metric tallies, in plain integers and floats: requests by (cluster, verb,
code), the latency histogram's buckets per (cluster, verb), bytes to clients and the change in requests
in flight. ``proxy.metrics`` re-exports the calls and folds the tallies into its prometheus-client
metrics (``metrics.flush``: every second, and before a scrape).

Compiled by Cython (``tally.pxd``): the fast path (``proxy/fastpath.py``) calls these as C functions
instead of Python calls through the ``metrics`` module (issue 9); the ``.py`` runs as it is where no
compiled module was built, with the same answers.
"""

from __future__ import annotations

_bounds: tuple[float, ...] = ()  # the histogram's upper bounds, ascending, ending with +Inf (``configure``)
request_counts: dict[tuple[str, str, int], int] = {}
latency: dict[tuple[str, str], list[float]] = {}  # per bucket (not cumulative), then the sum
_to_client = 0  # bytes to clients since the last ``take_pending``
_in_flight = 0  # change in requests in flight since the last ``take_pending``


def configure(bounds: tuple[float, ...]) -> None:
    """The latency histogram's upper bounds (ascending, the last +Inf): a seconds figure is counted in
    the first bucket whose bound is >= it, as prometheus-client's ``observe`` would."""
    global _bounds
    _bounds = tuple(float(b) for b in bounds)


def request_started() -> None:
    global _in_flight
    _in_flight += 1


def request_abandoned() -> None:
    """A started request handed over to be served again (and counted then)."""
    global _in_flight
    _in_flight -= 1


def request_finished(cluster: str, verb: str, code: int, bytes_out: int, head_seconds: float = -1.0) -> None:
    """A request ended; ``head_seconds`` (>= 0): the time to its answer's head, not yet observed (the fast
    path tells both at the end, in one call)."""
    global _to_client, _in_flight
    key = (cluster, verb, code)
    request_counts[key] = request_counts.get(key, 0) + 1
    _to_client += bytes_out
    _in_flight -= 1
    if head_seconds >= 0:
        observe_latency(cluster, verb, head_seconds)


def observe_latency(cluster: str, verb: str, seconds: float) -> None:
    key = (cluster, verb)
    counts = latency.get(key)
    if counts is None:
        counts = latency[key] = [0.0] * (len(_bounds) + 1)
    # The bucket ``bisect_left(_bounds, seconds)`` finds, by a scan of C doubles (``tally.pxd``): a dozen
    # comparisons cost less than the call to ``bisect``. The last bound is +Inf: the scan ends there.
    bucket = 0
    last = len(_bounds) - 1
    while bucket < last:
        bound = _bounds[bucket]
        if not bound < seconds:
            break
        bucket += 1
    counts[bucket] += 1
    counts[len(counts) - 1] += seconds


def take_requests() -> tuple[dict[tuple[str, str, int], int], dict[tuple[str, str], list[float]]]:
    """The request counts and the latency buckets gathered since the last call; both start again empty."""
    global request_counts, latency
    taken = (request_counts, latency)
    request_counts = {}
    latency = {}
    return taken


def take_pending() -> tuple[int, int]:
    """(bytes to clients, change in requests in flight) since the last call; both start again at 0."""
    global _to_client, _in_flight
    taken = (_to_client, _in_flight)
    _to_client = _in_flight = 0
    return taken

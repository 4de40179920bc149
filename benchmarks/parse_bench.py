"""httptools vs h11: the cost of parsing one typical kubectl request head (the choice for the HTTP/1.1
codec; see docs/ARCHITECTURE.md).

    python -m benchmarks.parse_bench [--n 100000]

Each parser gets the same bytes and must produce the method, target and header list (what the
pipeline needs). Also measured: kubegate's own ``proxy.protocol.http1.Http1ServerConnection`` (httptools
inside, plus the events the pipeline consumes) on the same head.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import h11
import httptools

HEAD = (
    b"GET /api/v1/namespaces/default/pods?limit=500 HTTP/1.1\r\n"
    b"Host: kubegate.example.com:3026\r\n"
    b"User-Agent: kubectl/v1.37.0 (linux/amd64) kubernetes/6b1f4f0\r\n"
    b"Accept: application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;"
    b"g=meta.k8s.io,application/json\r\n"
    b"Kubectl-Command: kubectl get\r\n"
    b"Kubectl-Session: 6c1a9d3e-5f0b-4b8e-9d55-0c7e2b1f3a44\r\n"
    b"Accept-Encoding: gzip\r\n"
    b"\r\n"
)


class _Collector:
    __slots__ = ("url", "headers", "done")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.done = True


def parse_httptools() -> tuple[bytes, bytes, int]:
    c = _Collector()
    p = httptools.HttpRequestParser(c)
    p.feed_data(HEAD)
    return p.get_method(), c.url, len(c.headers)


def parse_h11() -> tuple[bytes, bytes, int]:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(HEAD)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    return event.method, event.target, len(event.headers)


def parse_kubegate_codec() -> tuple[bytes, bytes, int]:
    from proxy.protocol.events import RequestHead, ServerLimits
    from proxy.protocol.http1 import Http1ServerConnection

    conn = Http1ServerConnection(ServerLimits())
    events = conn.receive_data(HEAD)
    head = events[0]
    assert isinstance(head, RequestHead)
    return head.method.encode(), head.target.encode(), len(head.headers)


def measure(fn: Callable[[], object], n: int) -> float:
    """Best of 5 runs of ``n`` parses: microseconds per parse."""
    fn()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.parse_bench", description=__doc__)
    parser.add_argument("--n", type=int, default=50_000)
    args = parser.parse_args(argv)
    assert parse_httptools()[1] == parse_h11()[1] == parse_kubegate_codec()[1]
    print(f"request head: {len(HEAD)} bytes, {parse_h11()[2]} headers; best of 5 × {args.n} parses")
    for name, fn in (("httptools (parser + header list)", parse_httptools), ("h11 (Connection + next_event)", parse_h11),
                     ("kubegate Http1ServerConnection (httptools)", parse_kubegate_codec)):
        print(f"  {name:45} {measure(fn, args.n):6.2f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The sandbox cluster alone: how fast is the upstream of kubegate's benchmarks?

    python -m benchmarks.sandbox_bench [--duration 3] [--watches 1000] [--json out.json]

Starts ``benchmarks.sandbox_proc`` (the sandbox in its own process, seeded with 500 realistic pods),
pinned to CPU 0 when ``taskset`` is available while the load runs on the others, then measures with
the shared load generator (``benchmarks.load``):

- GET one pod and LIST 500 pods: requests/s, p50/p99 latency and the sandbox's CPU time per request,
  at 1 and 16 concurrent clients, over HTTP/1.1 keep-alive and HTTP/2;
- the sans-IO codecs alone (``proxy.protocol.http1`` / ``http2``): CPU per GET exchange (request head
  in, response head + 1.1 KiB body out), no sockets;
- N idle watches (h2, 100 streams per connection): the sandbox's RSS growth per watch (measured
  first, before the request load leaves garbage behind).

Prints a table and one JSON document. Numbers are for this machine, one sandbox process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import load
from benchmarks.harness import cpu_seconds, raise_nofile, rss_bytes

GET_PATH = "/api/v1/namespaces/bench/pods/pod-0"
LIST_PATH = "/api/v1/namespaces/bench/pods"
IDLE_WATCH_PATH = "/api/v1/namespaces/bench-idle/pods?watch=true&allowWatchBookmarks=false"


def codec_cost(n: int = 5000) -> dict:
    """CPU microseconds per request/response exchange in each server codec (no I/O)."""
    import h2.config
    import h2.connection
    import h2.events

    from proxy.protocol.events import ResponseHead, ServerLimits
    from proxy.protocol.http1 import Http1ServerConnection
    from proxy.protocol.http2 import Http2ServerConnection

    body = b"x" * 1100
    headers = [(b"content-type", b"application/json")]
    out: dict = {}
    c1 = Http1ServerConnection(ServerLimits())
    raw = (
        b"GET /api/v1/namespaces/bench/pods/pod-0 HTTP/1.1\r\nHost: 127.0.0.1:6443\r\n"
        b"User-Agent: kubectl/v1.37.0 (linux/amd64) kubernetes/abc\r\nAccept: application/json\r\n\r\n"
    )
    t0 = time.process_time()
    for _ in range(n):
        sid = c1.receive_data(raw)[0].stream_id
        c1.send_response_head(ResponseHead(sid, 200, headers, content_length=len(body)))
        c1.send_body(sid, body, end_stream=True)
        c1.data_to_send()
    out["http1_us_per_request"] = round((time.process_time() - t0) / n * 1e6, 1)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    c2 = Http2ServerConnection(ServerLimits())
    c2.receive_data(client.data_to_send())
    client.receive_data(c2.data_to_send())
    c2.receive_data(client.data_to_send())
    request = [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", b"127.0.0.1:6443"),
        (b":path", b"/api/v1/namespaces/bench/pods/pod-0"),
        (b"user-agent", b"kubectl/v1.37.0 (linux/amd64) kubernetes/abc"),
        (b"accept", b"application/json"),
    ]
    spent = 0.0
    for _ in range(n):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, request, end_stream=True)
        frames = client.data_to_send()
        t0 = time.process_time()
        c2.receive_data(frames)
        c2.send_response_head(ResponseHead(sid, 200, headers, content_length=len(body)))
        c2.send_body(sid, body, end_stream=True)
        answer = c2.data_to_send()
        spent += time.process_time() - t0
        for event in client.receive_data(answer):
            if isinstance(event, h2.events.DataReceived):
                client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        update = client.data_to_send()
        if update:
            t0 = time.process_time()
            c2.receive_data(update)
            spent += time.process_time() - t0
    out["http2_us_per_request"] = round(spent / n * 1e6, 1)
    print(f"  codecs: {out}", file=sys.stderr, flush=True)
    return out


def start_sandbox(workdir: Path, pods: int) -> tuple[subprocess.Popen[str], dict]:
    cmd = [sys.executable, "-m", "benchmarks.sandbox_proc", str(workdir), "--pods", str(pods)]
    if shutil.which("taskset") and len(os.sched_getaffinity(0)) >= 2:
        cmd = ["taskset", "-c", "0", *cmd]
        os.sched_setaffinity(0, set(os.sched_getaffinity(0)) - {0})
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise RuntimeError("the sandbox process exited before it was ready")
    return proc, json.loads(line)


async def measure(info: dict, duration: float, watches: int) -> dict:
    ep = load.Endpoint("127.0.0.1", info["port"], info["ca_file"], info["cert_file"], info["key_file"])
    pid = info["pid"]
    watch_report: dict = {}
    if watches:
        await asyncio.sleep(1.0)
        rss0 = rss_bytes(pid)
        holder = load.WatchHolder(ep, IDLE_WATCH_PATH, watches)
        t0 = time.perf_counter()
        try:
            await holder.open(timeout=max(30.0, watches / 50))
            opened_in = time.perf_counter() - t0
            await asyncio.sleep(1.0)
            rss1 = rss_bytes(pid)
        finally:
            await holder.close()
        watch_report = {
            "watches": watches,
            "opened": holder.opened,
            "failed": holder.failed,
            "open_seconds": round(opened_in, 2),
            "rss_before_mib": round(rss0 / 2**20, 1),
            "rss_after_mib": round(rss1 / 2**20, 1),
            "kib_per_watch": round((rss1 - rss0) / 1024 / max(1, holder.opened), 2),
        }
        print(f"  idle watches: {watch_report}", file=sys.stderr, flush=True)
    cells = []
    for name, path in (("get-pod", GET_PATH), ("list-500-pods", LIST_PATH)):
        for protocol in ("h1", "h2"):
            for concurrency in (1, 16):
                cpu0 = cpu_seconds(pid)
                result = await load.run_load(
                    ep, path, protocol=protocol, concurrency=concurrency, duration=duration, warmup=3
                )
                cpu = cpu_seconds(pid) - cpu0
                cell = {
                    "request": name,
                    "protocol": protocol,
                    "concurrency": concurrency,
                    **result.summary(),
                    "sandbox_cpu_us_per_request": round(cpu / max(1, result.requests) * 1e6, 1),
                }
                cells.append(cell)
                print(
                    f"  {name:14} {protocol} c={concurrency:<3} {cell['rps']:>9.1f} req/s  "
                    f"p50 {cell['p50_ms']:.2f} ms  p99 {cell['p99_ms']:.2f} ms  "
                    f"cpu {cell['sandbox_cpu_us_per_request']} us/req  errors {cell['errors']}",
                    file=sys.stderr,
                    flush=True,
                )
    return {"requests": cells, "idle_watches": watch_report}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per cell (default 3)")
    parser.add_argument(
        "--watches", type=int, default=1000, help="idle watches to hold (default 1000; 0: skip)"
    )
    parser.add_argument("--pods", type=int, default=500)
    parser.add_argument("--json", metavar="FILE", help="also write the JSON report here")
    args = parser.parse_args(argv)
    raise_nofile()
    load.install_uvloop()
    workdir = Path(tempfile.mkdtemp(prefix="sandbox-bench-"))
    proc, info = start_sandbox(workdir, args.pods)
    try:
        report = asyncio.run(measure(info, args.duration, args.watches))
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    report["codecs"] = codec_cost()
    report["pods"] = args.pods
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

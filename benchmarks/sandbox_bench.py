"""The sandbox cluster alone: how fast is the upstream of kubegate's benchmarks?

    python -m benchmarks.sandbox_bench [--duration 3] [--watches 1000] [--json out.json]

Starts ``benchmarks.sandbox_proc`` (the sandbox in its own process, seeded with 500 realistic pods),
pinned to CPU 0 when ``taskset`` is available while the load runs on the others, then measures with
the shared load generator (``benchmarks.load``):

- GET one pod and LIST 500 pods: requests/s, p50/p99 latency and the sandbox's CPU time per request,
  at 1 and 16 concurrent clients, over HTTP/1.1 keep-alive and HTTP/2;
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
    report["pods"] = args.pods
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

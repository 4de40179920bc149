"""System calls per paced request, and what a proxy costs while no request arrives: figures that
explain the paced cell of ``python -m benchmarks`` (GETs at a fixed rate, each arriving alone).

    python -m benchmarks.syscalls [--requests 2000] [--rate 500] [--clients 10] [--idle 5]

Starts what ``python -m benchmarks`` starts (the sandbox, the fast nginx upstream, kubegate, the
reference nginx proxy; pinned as there). For kubegate and the reference nginx in turn: ``--clients``
keep-alive HTTP/1.1 connections opened and warmed, then ``perf trace -s`` attached to the proxy (every
thread) while ``--requests`` GETs of the benchmark pod are sent at ``--rate`` per second in total, each
client on its own schedule (as ``load.run_load`` paces them); the system calls each thread made ÷
requests. ``perf trace`` costs the traced process a little per system call, so the rate is lower than
the paced cell's 1,000/s by default: each request still arrives alone, the count per request is the
same. Then ``--idle`` seconds with the connections open and no request, untraced, and as long again
traced: each proxy's CPU time, wake-ups and system calls per second while idle (timers, threads
waking), which the paced cell spreads over its requests (at 1,000 requests/s, 1 ms of CPU per second
is 1 µs per request).

Before the traced run, the same paced GETs untraced: page faults and context switches per request (and
CPU time from the scheduler's nanosecond count, ``/proc/<pid>/task/*/schedstat``: unlike the counts, it
moves with whatever else runs on the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import harness, load

_ROW = re.compile(r"^\s+(\w+)\s+(\d+)\s+(\d+)\s")
_THREAD = re.compile(r"^\s*(.+?) \((\d+)\), (\d+) events")


def parse_perf_summary(text: str) -> dict[str, dict[str, int]]:
    """``perf trace -s`` output → {thread "name (tid)": {syscall: calls}}."""
    threads: dict[str, dict[str, int]] = {}
    current: dict[str, int] | None = None
    for line in text.splitlines():
        m = _THREAD.match(line)
        if m:
            current = threads.setdefault(f"{m.group(1)} ({m.group(2)})", {})
            continue
        m = _ROW.match(line)
        if m and current is not None and m.group(1) != "syscall":
            current[m.group(1)] = current.get(m.group(1), 0) + int(m.group(2))
    return threads


def task_counters(pid: int) -> dict[str, int]:
    """Summed over ``pid``'s threads: minor and major page faults, voluntary and involuntary context
    switches, CPU time in nanoseconds (the scheduler's count), and the user and system clock ticks (100 Hz)."""
    out = {"minor_faults": 0, "major_faults": 0, "voluntary_switches": 0, "involuntary_switches": 0, "cpu_ns": 0,
           "user_ticks": 0, "system_ticks": 0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = (task / "status").read_text()
            cpu_ns = int((task / "schedstat").read_text().split()[0])
        except OSError:  # the thread ended meanwhile
            continue
        out["minor_faults"] += int(fields[7])
        out["major_faults"] += int(fields[9])
        out["user_ticks"] += int(fields[11])
        out["system_ticks"] += int(fields[12])
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                out["voluntary_switches"] += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                out["involuntary_switches"] += int(line.split()[1])
        out["cpu_ns"] += cpu_ns
    return out


def _pids_of(pid: int) -> list[int]:
    """The process that does the work: kubegate's worker (the last of its tree), nginx's worker."""
    return [harness.process_tree(pid)[-1]]


class Traced:
    """``perf trace -s`` attached to ``pid`` (all its threads) until ``stop``."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen(["perf", "trace", "-s", "-p", str(pid), "-o", str(out)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # attached

    def stop(self) -> dict[str, dict[str, int]]:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return parse_perf_summary(self.out.read_text(errors="replace"))


async def paced(conns: list[load.H1Client], raw: bytes, requests: int, rate: float) -> dict[int, int]:
    """``requests`` GETs over ``conns`` at ``rate`` per second in total, each client on its own fixed
    schedule (staggered): the statuses seen."""
    clock = time.perf_counter
    interval = len(conns) / rate
    remaining = [requests]
    statuses: dict[int, int] = {}

    async def client(i: int) -> None:
        due = clock() + interval * i / len(conns)
        while remaining[0] > 0:
            remaining[0] -= 1
            wait = due - clock()
            if wait > 0:
                await asyncio.sleep(wait)
            due += interval
            status, _ = await conns[i].request(raw)
            statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(client(i) for i in range(len(conns))))
    return statuses


async def measure(pid: int, ep: load.Endpoint, label: str, requests: int, rate: float, clients: int,
                  idle: float, workdir: Path) -> dict:
    worker = _pids_of(pid)[0]
    conns = [await load.h1_connect(ep) for _ in range(clients)]
    raw = load.h1_request_bytes("GET", ep.prefix + harness.GET_PATH, ep.authority)
    try:
        await paced(conns, raw, clients * 20, rate)  # warm: plans, upstream connections
        before = task_counters(worker)
        untraced = await paced(conns, raw, requests, rate)
        after = task_counters(worker)
        if untraced.get(200, 0) != requests:
            raise RuntimeError(f"{label}: answers {untraced}")
        per_request_untraced = {k: round((after[k] - before[k]) / requests, 3) for k in before}
        per_request_untraced["cpu_us"] = round(per_request_untraced.pop("cpu_ns") / 1000, 1)
        ticks = (after["user_ticks"] - before["user_ticks"], after["system_ticks"] - before["system_ticks"])
        per_request_untraced.pop("user_ticks"), per_request_untraced.pop("system_ticks")
        per_request_untraced["user_share"] = round(ticks[0] / max(1, sum(ticks)), 2)  # of the CPU ticks
        # what python -m benchmarks counts (utime + stime), beside the scheduler's nanoseconds
        per_request_untraced["ticks_cpu_us"] = round(sum(ticks) / harness.CLK_TCK / requests * 1e6, 1)
        traced = Traced(worker, workdir / f"{label}.perf")
        cpu0 = harness.cpu_seconds(worker)
        statuses = await paced(conns, raw, requests, rate)
        cpu = harness.cpu_seconds(worker) - cpu0
        threads = traced.stop()
        ok = statuses.get(200, 0)
        if ok != requests:
            raise RuntimeError(f"{label}: answers {statuses}")
        per_request = {t: {k: round(v / ok, 2) for k, v in sorted(c.items(), key=lambda kv: -kv[1])}
                       for t, c in threads.items()}
        # idle: connections open, nothing sent
        idle0 = task_counters(worker)  # untraced (perf's own cost would count), then traced for the calls
        await asyncio.sleep(idle)
        idle1 = task_counters(worker)
        traced = Traced(worker, workdir / f"{label}-idle.perf")
        await asyncio.sleep(idle)
        idle_threads = traced.stop()
    finally:
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()
    return {
        "requests": ok, "rate": rate,
        "syscalls_per_request": round(sum(sum(c.values()) for c in threads.values()) / ok, 2),
        "by_thread": per_request,
        "cpu_us_per_request_traced": round(cpu / ok * 1e6, 1),
        "untraced_per_request": per_request_untraced,
        "idle_seconds": idle, "idle_per_second": {k: round((idle1[k] - idle0[k]) / idle, 1) for k in idle0},
        "idle_syscalls_per_second": {t: {k: round(v / idle, 1) for k, v in c.items()} for t, c in idle_threads.items()},
    }


def run(requests: int, rate: float, clients: int, idle: float) -> dict:
    if shutil.which("perf") is None:
        raise SystemExit("perf is not installed")
    load.install_uvloop()
    harness.raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="kubegate-syscalls-"))
    procs = harness.Processes(harness.Settings(), workdir)
    report: dict = {"commit": harness._git_commit()}
    try:
        procs.start()

        async def main() -> None:
            report["kubegate"] = await measure(procs.proxy_pid, procs.through_proxy(harness.FAST_CLUSTER),
                                               "kubegate", requests, rate, clients, idle, workdir)
            report["nginx"] = await measure(procs.nginx_pid, procs.through_nginx(harness.FAST_CLUSTER),
                                            "nginx", requests, rate, clients, idle, workdir)

        asyncio.run(main())
    finally:
        procs.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.syscalls", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle measured")
    args = parser.parse_args(argv)
    harness.rebuild_compiled()
    print(json.dumps(run(args.requests, args.rate, args.clients, args.idle), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

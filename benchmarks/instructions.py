"""Instructions per request and per relayed watch event, counted by valgrind's callgrind: figures that do
not move with whatever else runs on a shared machine (CPU time does).

    python -m benchmarks.instructions [--cells requests,events] [--requests 1000] [--warmup 200]
                                      [--clients 16] [--events 500]

Starts what ``python -m benchmarks`` starts (the sandbox, the fast nginx upstream, kubegate, the
reference nginx proxy) with kubegate and the reference nginx under ``valgrind --tool=callgrind``
(nginx as one process: ``master_process off``). For each proxy and each client protocol (HTTP/1.1
keep-alive over ``--clients`` connections, h2 over one connection with 16 streams in flight): the
connections opened, GETs of the benchmark pod to warm up, the counters dumped (which zeroes them:
``callgrind_control --dump``), ``--requests`` GETs, the counters dumped again; instructions ÷ requests. Everything the process
did in that window counts (its timers, a health check that fell in it): a few per cent at most.

The HTTP/1.1 cell also counts ``benchmarks.bare_relay`` doing the same GETs over the same connections:
a bare uvloop + httptools relay with no policy, the floor for a Python proxy of this job (nginx is the
floor for any proxy).

Watch events (``--cells events``): the setup of the ``events`` cell of ``python -m benchmarks``
(``harness._watch_event_cost``): one HTTP/1.1 watch of configmaps in ``bench-watch`` through the proxy
(kubegate reaches the sandbox over h2, nginx over HTTP/1.1), configmaps created directly on the sandbox.
They are created one at a time, the next once the watcher has seen the previous event, so each event
reaches the proxy on its own (as in the timed cell, where the sandbox is the slower side) and the count
does not depend on how many events a slow proxy under callgrind would find batched in one read.
After ``--warmup`` ÷ 4 events: dump, ``--events`` events, dump; instructions ÷ events.

exec stdout relay (``--cells exec``): the ``exec`` cell of ``python -m benchmarks``
(``harness.measure_exec``): ``head -c N /dev/zero`` in the sandbox's pod over WebSocket (v5), stdout
read to the end, through each proxy (both reach the Python sandbox over HTTP/1.1 and relay the upgraded
connection's bytes). After one warm-up session: a session of ``--exec-small`` bytes and one of
``--exec-mib`` MiB, each counted from its request to its end; the difference ÷ the difference in bytes
is the relay's cost per MiB, with the session's own cost (routing, decision, audit, the 101, set-up
and close) taken out; the small session's count is that per-session cost.

Large copies (``--vector-copies``): glibc copies and clears blocks of a few KiB and more with ``rep movsb`` /
``rep stosb``, which valgrind counts as one instruction per byte (the CPU moves 32-64 bytes a cycle).
That is most of a stream relay's count when its copies are large (kubegate's TLS goes through memory
BIOs, 16 KiB records and 256 KiB reads; nginx copies 4 KiB pieces, below glibc's threshold, at vector
loops' cost). ``--vector-copies`` starts the processes with ``GLIBC_TUNABLES`` raising both thresholds,
so every copy runs as a vector loop and counts about what it costs.

Paced GETs (``--cells paced``): the paced cell of ``python -m benchmarks`` sends GETs at 1,000/s over
10 keep-alive HTTP/1.1 connections, so each request arrives alone and pays in full what a loop
iteration and a wake-up cost. Here ``--requests`` GETs go one at a time, round-robin over
``--clients`` connections, each ``--gap`` ms after the previous answer arrived (the proxy has gone back
to waiting for events): instructions in that window ÷ requests. The window also holds the work a proxy
does with no request at all (timers, sweeps, threads waking), which callgrind's slowed-down run spreads
over fewer requests per second than 1,000; so the same connections are then left idle for
``--idle`` seconds, counted, and that rate is taken out. The paced cell also opens its ``--clients``
connections inside its measured window: ``--clients`` fresh connections are then opened, sent one GET
each and closed, one after the other, and counted. The report gives the instructions of one lone
request, the idle instructions per second, those of one connection, and what they add up to per request
of the paced cell (1,000/s for 3 s over 10 connections: ``harness.Settings``).
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

from benchmarks import harness, load
from benchmarks.harness import start_bare_relay


def _callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=300)


def _dumped_instructions(workdir: Path, pid: int, before: set[Path]) -> int:
    """The Ir total of the newest callgrind dump of ``pid`` (written by ``callgrind_control --dump``)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        new = sorted(set(workdir.glob(f"cg.{pid}*")) - before, key=lambda p: p.stat().st_mtime)
        for path in reversed(new):
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
        time.sleep(0.2)
    raise RuntimeError(f"no callgrind dump for pid {pid}")


async def _requests(conns: list, protocol: str, path: str, authority: str, n: int) -> dict[int, int]:
    """``n`` GETs spread over already-open connections (one in flight per connection for HTTP/1.1,
    all at once for h2 streams): the statuses seen."""
    statuses: dict[int, int] = {}
    remaining = [n]
    raw = load.h1_request_bytes("GET", path, authority) if protocol == "h1" else load.h2_headers("GET", path, authority)

    async def client(conn: object) -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            status, _ = await conn.request(raw)  # type: ignore[attr-defined]
            statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(client(conns[i % len(conns)]) for i in range(len(conns) if protocol == "h1" else 16)))
    return statuses


def _zero_counters(procs: harness.Processes, pid: int) -> None:
    """Dump ``pid``'s counters and wait for the dump (a dump zeroes them)."""
    before = set(procs.workdir.glob(f"cg.{pid}*"))
    _callgrind_control("--dump=warmup", str(pid))
    _dumped_instructions(procs.workdir, pid, before)


def _counted_since_zero(procs: harness.Processes, pid: int) -> int:
    """The instructions ``pid`` executed since the counters were last zeroed."""
    before = set(procs.workdir.glob(f"cg.{pid}*"))
    _callgrind_control("--dump=measured", str(pid))
    return _dumped_instructions(procs.workdir, pid, before)


async def count(procs: harness.Processes, pid: int, ep: load.Endpoint, protocol: str, requests: int,
                warmup: int, clients: int) -> dict:
    """Instructions per GET in steady state: the connections are opened and warmed before counting."""
    if protocol == "h1":
        conns = [await load.h1_connect(ep) for _ in range(clients)]
    else:
        conns = [await load.h2_connect(ep)]
    path = ep.prefix + harness.GET_PATH
    try:
        await _requests(conns, protocol, path, ep.authority, warmup)
        _zero_counters(procs, pid)
        statuses = await _requests(conns, protocol, path, ep.authority, requests)
        instructions = _counted_since_zero(procs, pid)
    finally:
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()
    ok = statuses.get(200, 0)
    if ok != requests:
        raise RuntimeError(f"GET {path} through {ep.authority} answered {statuses}")
    return {"requests": requests, "statuses": statuses, "instructions": instructions,
            "instructions_per_request": round(instructions / ok)}


async def count_watch_events(procs: harness.Processes, pid: int, ep: load.Endpoint, events: int, warmup: int,
                             tag: str) -> dict:
    """Instructions per watch event relayed by ``pid`` (see the module docstring: one event at a time)."""
    direct = procs.direct()
    run_id = f"{int(time.time() * 1000) % 10**9}-{tag}"
    namespace = "bench-watch"
    creator = await load.h1_connect(direct)
    rv = await load.current_resource_version(direct, f"/api/v1/namespaces/{namespace}/configmaps")
    watcher = await load.h1_connect(ep)
    loop = asyncio.get_running_loop()
    seen = [0]
    arrived: list[asyncio.Future[None] | None] = [None]
    target = [0]

    def on_chunk(chunk: bytes) -> None:
        seen[0] += chunk.count(b"\n")
        waiter = arrived[0]
        if waiter is not None and seen[0] >= target[0] and not waiter.done():
            waiter.set_result(None)

    async def one_at_a_time(first: int, n: int) -> None:
        for i in range(first, first + n):
            target[0] = seen[0] + 1
            arrived[0] = loop.create_future()
            status, _ = await creator.request(load.h1_request_bytes(
                "POST", f"/api/v1/namespaces/{namespace}/configmaps", direct.authority,
                harness._configmap(namespace, f"cm-{run_id}-{i}")))
            if status >= 300:
                raise RuntimeError(f"creating a configmap answered {status}")
            await asyncio.wait_for(arrived[0], 120)

    watcher.on_body_chunk = on_chunk
    head = asyncio.ensure_future(watcher.request(load.h1_request_bytes(
        "GET", f"{ep.prefix}{harness.EVENT_WATCH_PATH}&resourceVersion={rv}", ep.authority)))
    head.add_done_callback(load._consume)
    try:
        await one_at_a_time(0, warmup)
        status, _ = head.result()
        if status != 200:
            raise RuntimeError(f"the watch through {ep.authority} answered {status}")
        _zero_counters(procs, pid)
        start = seen[0]
        await one_at_a_time(warmup, events)
        instructions = _counted_since_zero(procs, pid)
        relayed = seen[0] - start
    finally:
        for conn in (watcher, creator):
            if conn.transport is not None:
                conn.transport.close()
    return {"events": relayed, "instructions": instructions, "instructions_per_event": round(instructions / max(1, relayed))}


# The pod's command with --exec-piece: stdout written in pieces of argv[2] bytes, argv[3] seconds apart,
# argv[1] bytes in all.
PACED_WRITER = ("import os, sys, time\n"
                "left, piece, pause = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])\n"
                "block = bytes(piece)\n"
                "while left > 0:\n"
                "    left -= os.write(1, block[:left])\n"
                "    time.sleep(pause)\n")


async def count_exec(procs: harness.Processes, pid: int, ep: load.Endpoint, mib: int, small: int,
                     piece: int = 0, pause: float = 0.0, wire: str = "websocket") -> dict:
    """Instructions per MiB of exec stdout relayed by ``pid``, and per session (see the module docstring).
    ``piece``: the pod writes its stdout in pieces of that many bytes, ``pause`` seconds apart; ``wire``:
    ``websocket`` (v5, kubectl from 1.30) or ``spdy`` (SPDY/3.1, kubectl before)."""
    pod = harness.GET_PATH
    exec_stdout = load.exec_stdout_spdy if wire == "spdy" else load.exec_stdout

    async def session(nbytes: int) -> tuple[int, int]:
        _zero_counters(procs, pid)
        command = [sys.executable, "-c", PACED_WRITER, str(nbytes), str(piece), str(pause)] if piece else None
        received, _ = await exec_stdout(ep, pod, nbytes, command)
        await asyncio.sleep(0.5)  # the proxy sees both ends close
        if received != nbytes:
            raise RuntimeError(f"exec through {ep.authority} relayed {received} of {nbytes} bytes")
        return received, _counted_since_zero(procs, pid)

    await session(small)  # warm-up: the upstream connection's first use, imports, caches
    small_bytes, small_instructions = await session(small)
    big_bytes, big_instructions = await session(mib * 2**20)
    per_mib = (big_instructions - small_instructions) / (big_bytes - small_bytes) * 2**20
    return {"bytes": big_bytes, "instructions": big_instructions, "instructions_per_session": small_instructions,
            "instructions_per_mib": round(per_mib)}


async def count_paced(procs: harness.Processes, pid: int, ep: load.Endpoint, requests: int, warmup: int,
                      clients: int, gap: float, idle: float) -> dict:
    """Instructions per lone GET and per second of idle (see the module docstring, ``--cells paced``)."""
    conns = [await load.h1_connect(ep) for _ in range(clients)]
    raw = load.h1_request_bytes("GET", ep.prefix + harness.GET_PATH, ep.authority)
    statuses: dict[int, int] = {}

    async def one_at_a_time(n: int) -> None:
        for i in range(n):
            await asyncio.sleep(gap)
            status, _ = await conns[i % clients].request(raw)
            statuses[status] = statuses.get(status, 0) + 1

    try:
        await one_at_a_time(max(warmup, clients))
        statuses.clear()
        _zero_counters(procs, pid)
        t0 = time.monotonic()
        await one_at_a_time(requests)
        busy = _counted_since_zero(procs, pid)
        elapsed = time.monotonic() - t0
        await asyncio.sleep(0.5)
        _zero_counters(procs, pid)
        t1 = time.monotonic()
        await asyncio.sleep(idle)
        idle_instructions = _counted_since_zero(procs, pid)
        idle_elapsed = time.monotonic() - t1
        # The paced cell opens its connections in the measured window: one connection's cost (TLS
        # handshake, first GET through the full pipeline, close), a new connection for each client.
        _zero_counters(procs, pid)
        t2 = time.monotonic()
        for _ in range(clients):
            fresh = await load.h1_connect(ep)
            status, _ = await fresh.request(raw)
            statuses[status] = statuses.get(status, 0) + 1
            assert fresh.transport is not None
            fresh.transport.close()
            await fresh.closed
        await asyncio.sleep(1.0)  # the proxy sees the close
        opened = _counted_since_zero(procs, pid)
        opened_elapsed = time.monotonic() - t2
    finally:
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()
    ok = statuses.get(200, 0)
    if ok != requests + clients:
        raise RuntimeError(f"GET through {ep.authority} answered {statuses}")
    per_second = idle_instructions / idle_elapsed
    lone = (busy - per_second * elapsed) / requests
    per_connection = (opened - per_second * opened_elapsed) / clients
    cell = harness.Settings()  # the paced cell: this many connections for this many requests
    cell_requests = cell.paced_rate * cell.duration
    return {"requests": requests, "seconds": round(elapsed, 2), "instructions": busy,
            "idle_instructions_per_second": round(per_second),
            "instructions_per_lone_request": round(lone),
            "instructions_per_connection": round(per_connection),
            "instructions_per_request_in_paced_cell": round(
                lone + per_second / cell.paced_rate + per_connection * cell.paced_clients / cell_requests)}


VECTOR_COPIES = "glibc.cpu.x86_rep_movsb_threshold=1000000000:glibc.cpu.x86_rep_stosb_threshold=1000000000"


def run(requests: int, warmup: int, clients: int, keep: str | None = None, cells: tuple[str, ...] = ("requests",),
        events: int = 500, gap: float = 0.005, idle: float = 10.0, exec_mib: int = 32, exec_small: int = 1024,
        vector_copies: bool = False, exec_piece: int = 0, exec_pause: float = 0.004,
        exec_wire: str = "websocket") -> dict:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind (with callgrind_control) is not installed")
    if vector_copies:  # inherited by every process the harness starts (see the module docstring)
        os.environ["GLIBC_TUNABLES"] = ":".join(filter(None, (os.environ.get("GLIBC_TUNABLES"), VECTOR_COPIES)))
    load.install_uvloop()
    harness.raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="kubegate-instr-"))
    settings = harness.Settings(pin=False, wrap=("valgrind", "--tool=callgrind", "--quiet",
                                                 f"--callgrind-out-file={workdir}/cg.%p"))
    procs = harness.Processes(settings, workdir)
    report: dict = {"requests": requests, "clients": clients, "commit": harness._git_commit(), "cells": [],
                    "vector_copies": vector_copies}
    if "events" in cells:
        report["events"] = events
    try:
        procs.start()
        kubegate_pid = harness.process_tree(procs.proxy_pid)[-1]

        async def main() -> None:
            if "paced" in cells:
                kg = await count_paced(procs, kubegate_pid, procs.through_proxy(harness.FAST_CLUSTER), requests,
                                       warmup, clients, gap, idle)
                ng = await count_paced(procs, procs.nginx_pid, procs.through_nginx(harness.FAST_CLUSTER), requests,
                                       warmup, clients, gap, idle)
                report["paced"] = {"clients": clients, "gap_ms": gap * 1000, "kubegate": kg, "nginx": ng,
                                   "ratio": round(kg["instructions_per_request_in_paced_cell"]
                                                  / max(1, ng["instructions_per_request_in_paced_cell"]), 2)}
                print(f"  paced GET: kubegate {kg['instructions_per_lone_request']:,} instructions/lone request, "
                      f"{kg['idle_instructions_per_second']:,}/s idle, {kg['instructions_per_connection']:,}/connection; "
                      f"nginx {ng['instructions_per_lone_request']:,}, {ng['idle_instructions_per_second']:,}/s, "
                      f"{ng['instructions_per_connection']:,} ({report['paced']['ratio']}× in the paced cell)",
                      file=sys.stderr, flush=True)
            if "exec" in cells:
                kg = await count_exec(procs, kubegate_pid, procs.through_proxy(), exec_mib, exec_small,
                                      exec_piece, exec_pause, exec_wire)
                ng = await count_exec(procs, procs.nginx_pid, procs.through_nginx(), exec_mib, exec_small,
                                      exec_piece, exec_pause, exec_wire)
                report["exec"] = {"mib": exec_mib, "piece": exec_piece, "wire": exec_wire, "kubegate": kg, "nginx": ng,
                                  "ratio": round(kg["instructions_per_mib"] / max(1, ng["instructions_per_mib"]), 2)}
                print(f"  exec stdout: kubegate {kg['instructions_per_mib']:,} instructions/MiB "
                      f"({kg['instructions_per_session']:,}/session), nginx {ng['instructions_per_mib']:,} "
                      f"({ng['instructions_per_session']:,}/session) ({report['exec']['ratio']}×)",
                      file=sys.stderr, flush=True)
            if "events" in cells:
                warm = max(10, warmup // 4)
                kg = await count_watch_events(procs, kubegate_pid, procs.through_proxy(), events, warm, "kubegate")
                ng = await count_watch_events(procs, procs.nginx_pid, procs.through_nginx(), events, warm, "nginx")
                report["watch_events"] = {"kubegate": kg, "nginx": ng, "ratio": round(
                    kg["instructions_per_event"] / max(1, ng["instructions_per_event"]), 2)}
                print(f"  watch events: kubegate {kg['instructions_per_event']:,} instructions/event, "
                      f"nginx {ng['instructions_per_event']:,} ({report['watch_events']['ratio']}×)",
                      file=sys.stderr, flush=True)
            for protocol in ("h1", "h2") if "requests" in cells else ():
                kg = await count(procs, kubegate_pid, procs.through_proxy(harness.FAST_CLUSTER), protocol,
                                 requests, warmup, clients)
                ng = await count(procs, procs.nginx_pid, procs.through_nginx(harness.FAST_CLUSTER), protocol,
                                 requests, warmup, clients)
                cell = {"protocol": protocol, "kubegate": kg, "nginx": ng,
                        "ratio": round(kg["instructions_per_request"] / max(1, ng["instructions_per_request"]), 2)}
                if protocol == "h1":
                    relay, ep = start_bare_relay(procs, settings.wrap)
                    try:
                        cell["bare_relay"] = await count(procs, relay.pid, ep, protocol, requests, warmup, clients)
                    finally:
                        relay.terminate()
                        relay.wait(30)
                report["cells"].append(cell)
                bare = cell.get("bare_relay")
                print(f"  GET {protocol}: kubegate {kg['instructions_per_request']:,} instructions/request, "
                      f"nginx {ng['instructions_per_request']:,} ({cell['ratio']}×)"
                      + (f", bare Python relay {bare['instructions_per_request']:,}" if bare else ""),
                      file=sys.stderr, flush=True)

        asyncio.run(main())
    finally:
        procs.close()
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            for dump in workdir.glob("cg.*"):
                shutil.copy(dump, Path(keep) / dump.name)
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def render(report: dict) -> str:
    lines: list[str] = []
    p = report.get("paced")
    if p:
        kg, ng = p["kubegate"], p["nginx"]
        lines += [f"Paced GET: {kg['requests']} requests one at a time over {p['clients']} HTTP/1.1 connections, "
                  f"{p['gap_ms']:g} ms apart, counted by callgrind (commit {report['commit']}); the paced cell's "
                  "figure adds the idle rate at its rate and its connections' set-up spread over its requests:", "",
                  "| | instructions per lone request | idle instructions per second | per connection (handshake, "
                  "first GET, close) | per request in the paced cell |",
                  "|---|---:|---:|---:|---:|"]
        for name, c in (("kubegate", kg), ("nginx", ng)):
            lines.append(f"| {name} | {c['instructions_per_lone_request']:,} | {c['idle_instructions_per_second']:,} | "
                         f"{c['instructions_per_connection']:,} | {c['instructions_per_request_in_paced_cell']:,} |")
        lines += [f"| kubegate ÷ nginx | | | | {p['ratio']:.2f}× |", ""]
    if report["cells"]:
        lines += [f"GET of one pod, {report['requests']} requests from {report['clients']} clients, "
                  f"counted by callgrind (commit {report['commit']}):", "",
                  "| client protocol | kubegate instructions/request | nginx instructions/request | kubegate ÷ nginx "
                  "| bare Python relay (``benchmarks.bare_relay``) |",
                  "|---|---:|---:|---:|---:|"]
        for c in report["cells"]:
            bare = c.get("bare_relay")
            lines.append(f"| {'HTTP/1.1' if c['protocol'] == 'h1' else 'h2'} | {c['kubegate']['instructions_per_request']:,} | "
                         f"{c['nginx']['instructions_per_request']:,} | {c['ratio']:.2f}× | "
                         f"{format(bare['instructions_per_request'], ',') if bare else '—'} |")
    e = report.get("exec")
    if e:
        if lines:
            lines.append("")
        lines += [f"exec stdout relay over {'SPDY/3.1' if e.get('wire') == 'spdy' else 'WebSocket'}, {e['mib']} MiB, counted by callgrind (commit {report['commit']}"
                  f"{', copies as vector loops' if report.get('vector_copies') else ''}): "
                  f"kubegate {e['kubegate']['instructions_per_mib']:,} instructions/MiB "
                  f"({e['kubegate']['instructions_per_session']:,} per session), nginx "
                  f"{e['nginx']['instructions_per_mib']:,} ({e['nginx']['instructions_per_session']:,}) ({e['ratio']:.2f}×)"]
    w = report.get("watch_events")
    if w:
        if lines:
            lines.append("")
        lines += [f"Watch event relay, {report['events']} events one at a time over one HTTP/1.1 "
                  f"watch, counted by callgrind (commit {report['commit']}): kubegate "
                  f"{w['kubegate']['instructions_per_event']:,} instructions/event, nginx "
                  f"{w['nginx']['instructions_per_event']:,} ({w['ratio']:.2f}×)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--cells", default="requests",
                        help="comma-separated: requests (GET cells), events (watch events), paced (lone GETs), "
                             "exec (exec stdout relay)")
    parser.add_argument("--exec-mib", type=int, default=32, help="MiB of exec stdout counted (--cells exec)")
    parser.add_argument("--exec-small", type=int, default=1024,
                        help="bytes of the small exec session whose count is taken out (--cells exec)")
    parser.add_argument("--exec-piece", type=int, default=0,
                        help="the pod writes stdout in pieces of this many bytes, --exec-pause ms apart, so that "
                             "each reaches the proxy on its own (--cells exec; default: head -c at full speed)")
    parser.add_argument("--exec-pause", type=float, default=4.0, help="ms between pieces (--exec-piece)")
    parser.add_argument("--exec-wire", choices=("websocket", "spdy"), default="websocket",
                        help="exec over WebSocket v5 (kubectl from 1.30) or SPDY/3.1 (before) (--cells exec)")
    parser.add_argument("--events", type=int, default=500, help="watch events counted (--cells events)")
    parser.add_argument("--gap", type=float, default=5.0, help="ms between an answer and the next lone GET (--cells paced)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle counted (--cells paced)")
    parser.add_argument("--vector-copies", action="store_true",
                        help="glibc copies without rep movsb/stosb, which callgrind counts per byte (see above)")
    parser.add_argument("--json", help="also write the report here")
    parser.add_argument("--keep", help="copy callgrind's dumps into this directory (for callgrind_annotate)")
    args = parser.parse_args(argv)
    harness.rebuild_compiled()
    cells = tuple(c.strip() for c in args.cells.split(",") if c.strip())
    unknown = set(cells) - {"requests", "events", "paced", "exec"}
    if unknown:
        parser.error(f"unknown cells: {', '.join(sorted(unknown))}")
    report = run(args.requests, args.warmup, args.clients, args.keep, cells, args.events, args.gap / 1000, args.idle,
                 args.exec_mib, args.exec_small, args.vector_copies, args.exec_piece, args.exec_pause / 1000,
                 args.exec_wire)
    print(render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

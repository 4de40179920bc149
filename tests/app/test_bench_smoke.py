"""The benchmark harness in its quickest mode: one run, every figure present in the JSON and the table,
for kubegate and for the reference nginx proxy measured beside it (nginx from .tools/bin, installed by
scripts/install-tools.sh)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_quick_benchmark_produces_every_figure(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-pin", "--duration", "0.2", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = list(tmp_path.glob("*-quick.json"))
    report = json.loads(path.read_text())

    cells = report["requests"]
    assert {(c["op"], c["protocol"], c["concurrency"], c["rate"]) for c in cells} == {
        (op, proto, conc, None) for op in ("get", "list") for proto in ("h1", "h2") for conc in (1, 4)
    } | {("get", "h1", 2, 200.0)}
    for cell in cells:
        for side in ("direct", "proxy", "nginx"):
            figures = cell[side]
            assert figures["requests"] > 0 and figures["errors"] == 0, cell
            assert figures["rps"] > 0 and figures["p50_ms"] > 0 and figures["p99_ms"] >= figures["p50_ms"]
        assert cell["proxy_cpu_us_per_request"] >= 0 and cell["nginx_cpu_us_per_request"] >= 0
        assert cell["cpu_ratio_to_nginx"] >= 0
    for cell in cells:  # the bare Python relay beside them in the HTTP/1.1 GET cells, and only there
        if cell["op"] == "get" and cell["protocol"] == "h1":
            assert cell["bare"]["requests"] > 0 and cell["bare"]["errors"] == 0, cell
            # CPU time is read in clock ticks (10 ms): a smoke cell's few requests may cost less than one
            assert cell["bare_cpu_us_per_request"] >= 0 and cell["bare"]["p50_ms"] > 0
        else:
            assert not cell["bare"], cell
    paced = next(c for c in cells if c["rate"])
    assert paced["proxy"]["rps"] <= 1.2 * paced["rate"]  # paced, not back to back
    list_cell = next(c for c in cells if c["op"] == "list")
    get_cell = next(c for c in cells if c["op"] == "get")
    assert list_cell["proxy"]["bytes_per_response"] > get_cell["proxy"]["bytes_per_response"]

    h2_watches, h1_watches = report["idle_watches"]
    assert h2_watches["protocol"] == "h2" and h2_watches["watches"] == h2_watches["opened"] == 20
    assert h1_watches["protocol"] == "h1" and h1_watches["watches"] == h1_watches["opened"] == 10
    assert "kib_per_watch" in h2_watches and "kib_per_watch" in h1_watches
    assert report["exec"]["proxy"]["bytes"] == report["exec"]["requested_bytes"] == 1024 * 1024
    assert report["exec"]["proxy"]["mb_per_s"] > 0 and "proxy_cpu_seconds_per_gb" in report["exec"]["proxy"]
    assert report["exec"]["nginx"]["bytes"] == 1024 * 1024 and "cpu_seconds_per_gb" in report["exec"]["nginx"]
    # two sessions through each proxy, alternated: each session's figure is kept beside the total's
    assert report["exec"]["rounds"] == 2
    assert len(report["exec"]["proxy"]["rounds_cpu_seconds_per_gb"]) == len(report["exec"]["nginx"]["rounds_cpu_seconds_per_gb"]) == 2
    assert report["watch_events"]["events"] >= 50
    assert "proxy_cpu_ms_per_1000_events" in report["watch_events"]
    assert report["watch_events"]["nginx"]["events"] >= 50 and "ratio_to_nginx" in report["watch_events"]
    assert report["meta"]["mode"] == "quick"

    table = result.stdout
    assert "| GET | HTTP/1.1 | 1 |" in table and "| LIST | h2 | 4 |" in table and "| 2 @ 200/s |" in table
    assert "kubegate ÷ nginx" in table
    assert "| GET HTTP/1.1 clients | bare relay req/s |" in table and "kubegate ÷ bare relay" in table
    assert "exec stdout relay" in table and "watch event relay" in table


def test_several_runs_are_reported_as_each_figures_median():
    from benchmarks.harness import median_report

    def report(cpu: float, ratio: float, watch_kib: float) -> dict:
        return {"meta": {"mode": "full", "json_path": f"run-{cpu}.json"},
                "requests": [{"op": "get", "protocol": "h1", "concurrency": 16, "rate": None,
                              "proxy_cpu_us_per_request": cpu, "cpu_ratio_to_nginx": ratio}],
                "idle_watches": [{"protocol": "h2", "watches": 1000, "kib_per_watch": watch_kib}]}

    merged = median_report([report(130, 3.5, 9.0), report(120, 3.9, 5.0), report(300, 2.0, 7.0)])
    [cell] = merged["requests"]
    assert (cell["op"], cell["rate"], cell["concurrency"]) == ("get", None, 16)
    assert cell["proxy_cpu_us_per_request"] == 130 and cell["cpu_ratio_to_nginx"] == 3.5
    assert merged["idle_watches"][0]["kib_per_watch"] == 7.0
    assert merged["meta"]["runs"] == 3 and len(merged["meta"]["json_paths"]) == 3


def test_the_paced_instruction_cell_is_rendered_per_part_and_as_the_cells_ratio():
    from benchmarks.instructions import render

    def part(lone: int, idle: int, connection: int, cell: int) -> dict:
        return {"requests": 500, "instructions_per_lone_request": lone, "idle_instructions_per_second": idle,
                "instructions_per_connection": connection, "instructions_per_request_in_paced_cell": cell}

    report = {"commit": "abc1234", "cells": [], "paced": {
        "clients": 10, "gap_ms": 5.0, "ratio": 1.35, "kubegate": part(121_794, 643_682, 9_081_667, 152_710),
        "nginx": part(83_533, 36, 8_911_086, 113_237)}}
    text = render(report)
    assert "Paced GET: 500 requests one at a time over 10 HTTP/1.1 connections, 5 ms apart" in text
    assert "| kubegate | 121,794 | 643,682 | 9,081,667 | 152,710 |" in text
    assert "| nginx | 83,533 | 36 | 8,911,086 | 113,237 |" in text
    assert "| kubegate ÷ nginx | | | | 1.35× |" in text


def test_the_exec_instruction_cell_is_rendered_per_mib_with_the_session_cost_apart():
    from benchmarks.instructions import render

    def proxy(per_mib: int, per_session: int) -> dict:
        return {"bytes": 32 << 20, "instructions": 0, "instructions_per_mib": per_mib,
                "instructions_per_session": per_session}

    report = {"commit": "abc1234", "cells": [], "vector_copies": True, "exec": {
        "mib": 32, "ratio": 0.96, "kubegate": proxy(7_782_245, 20_596_276), "nginx": proxy(8_145_221, 9_322_523)}}
    text = render(report)
    assert "exec stdout relay over WebSocket, 32 MiB, counted by callgrind (commit abc1234, copies as vector loops)" in text
    assert "kubegate 7,782,245 instructions/MiB (20,596,276 per session), nginx 8,145,221 (9,322,523) (0.96×)" in text


def test_system_calls_are_read_per_thread_from_perf_trace_summary():
    from benchmarks.syscalls import parse_perf_summary

    text = """
 Summary of events:

 python (4210), 5321 events, 71.2%

   syscall            calls  errors  total       min       avg       max       stddev
                                     (msec)    (msec)    (msec)    (msec)        (%)
   --------------- --------  ------ -------- --------- --------- ---------     ------
   read                2020      0    30.379     0.011     0.015     0.808      2.75%
   epoll_pwait         1810      0   830.567     0.000     0.271     4.028      9.21%

 audit-writer (4212), 40 events, 0.5%

   syscall            calls  errors  total       min       avg       max       stddev
                                     (msec)    (msec)    (msec)    (msec)        (%)
   --------------- --------  ------ -------- --------- --------- ---------     ------
   futex                 20      2   800.003     0.010     0.016     0.061      1.36%
"""
    assert parse_perf_summary(text) == {"python (4210)": {"read": 2020, "epoll_pwait": 1810},
                                        "audit-writer (4212)": {"futex": 20}}


@pytest.mark.e2e
def test_the_bare_relay_answers_as_the_upstream_does_and_refuses_clients_without_a_certificate():
    """``benchmarks.bare_relay`` (the floor the instruction counts compare with) does the job it is
    counted for: the benchmark pod through it is the answer the fast upstream gives, three times on one
    keep-alive connection; a client without a certificate from kubegate's CA gets no TLS session."""
    import asyncio
    import dataclasses
    import shutil
    import ssl
    import tempfile

    from benchmarks import harness, load

    workdir = Path(tempfile.mkdtemp(prefix="kubegate-bare-"))  # as the harness's (nginx's worker reads in it)
    procs = harness.Processes(dataclasses.replace(harness.Settings.quick(), pin=False), workdir)
    try:
        procs.start()
        relay, ep = harness.start_bare_relay(procs, ())
        try:
            async def gets() -> tuple[list[tuple[int, int]], tuple[int, int]]:
                relayed = await load.h1_connect(ep)
                direct = await load.h1_connect(procs.fast_direct())
                try:
                    answers = [await relayed.request(load.h1_request_bytes("GET", ep.prefix + harness.GET_PATH, ep.authority))
                               for _ in range(3)]
                    return answers, await direct.request(load.h1_request_bytes("GET", harness.GET_PATH, "127.0.0.1"))
                finally:
                    for conn in (relayed, direct):
                        if conn.transport is not None:
                            conn.transport.close()

            answers, direct = asyncio.run(gets())  # (status, body bytes)
            assert direct[0] == 200 and direct[1] > 1000
            assert answers == [direct] * 3

            anonymous = ssl.create_default_context(cafile=ep.ca_file)
            anonymous.check_hostname = False
            with pytest.raises((ssl.SSLError, ConnectionError)):  # noqa: PT012 - the handshake or the first read fails
                with socket.create_connection((ep.host, ep.port), timeout=10) as raw, \
                        anonymous.wrap_socket(raw) as tls:
                    tls.sendall(load.h1_request_bytes("GET", ep.prefix + harness.GET_PATH, ep.authority))
                    if not tls.recv(1):
                        raise ConnectionError("closed without an answer")
        finally:
            relay.terminate()
            relay.wait(30)
    finally:
        procs.close()
        shutil.rmtree(workdir, ignore_errors=True)

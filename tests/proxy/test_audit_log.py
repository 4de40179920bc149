"""proxy.audit.AuditLog, the product's audit sink: lines reach the file within the flush interval with no
later event needed, at once for session events, all of them on close; size-based rotation keeps
``max_files`` files and loses no line even with several processes appending to one file; a failing disk
is logged, counted and retried, and never raises into (or blocks) the caller."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from proxy.audit import AuditLog


def _lines(path: Path) -> list[dict]:
    """The complete lines written so far (a line the writer is still writing is not one yet)."""
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _request(n: int) -> dict:
    return {"event": "request", "time": time.time(), "request_id": f"r{n}", "n": n, "user": "alice"}


def test_request_lines_are_written_within_the_flush_interval_without_a_later_event(tmp_path):
    path = tmp_path / "audit.log"
    sink = AuditLog(str(path))  # the default interval: 200 ms
    try:
        for n in range(6):
            sink(_request(n))
        # The issue: 6 requests gave 4 lines, still 4 ten seconds later (a write needed a later event).
        assert _wait_for(lambda: len(_lines(path)) == 6, timeout=5)
        assert [e["n"] for e in _lines(path)] == list(range(6))
    finally:
        sink.close()


def test_the_caller_only_queues_formatting_and_writing_happen_on_the_writer_thread(tmp_path):
    path = tmp_path / "audit.log"
    sink = AuditLog(str(path), flush_interval=3600)
    try:
        sink({"event": "request", "not_json": object()})  # formatted later (default=str), never raises here
        sink(_request(1))
        assert path.read_text() == ""
        sink({"event": "session.start", "request_id": "s1"})  # session events wake the writer at once
        assert _wait_for(lambda: len(_lines(path)) == 3, timeout=5)
        assert _lines(path)[0]["not_json"].startswith("<object object")
    finally:
        sink.close()


def test_close_writes_everything_queued(tmp_path):
    path = tmp_path / "audit.log"
    sink = AuditLog(str(path), flush_interval=3600)
    for n in range(1000):
        sink(_request(n))
    sink.close()
    assert [e["n"] for e in _lines(path)] == list(range(1000))
    sink.close()  # idempotent


def test_size_rotation_keeps_max_files_and_the_newest_lines_in_order(tmp_path):
    path = tmp_path / "audit.log"
    sink = AuditLog(str(path), flush_interval=3600, max_size=4000, max_files=3)
    try:
        for n in range(600):
            sink(_request(n))
            if n % 10 == 9:
                sink.flush()
    finally:
        sink.close()
    files = [Path(f"{path}.{i}") for i in (3, 2, 1)] + [path]
    assert all(f.exists() for f in files)
    assert not Path(f"{path}.4").exists()
    assert all(f.stat().st_size <= 4000 for f in files)
    numbers = [e["n"] for f in files for e in _lines(f)]
    assert numbers == list(range(numbers[0], 600))  # contiguous, newest last: nothing lost in what is kept
    assert oct(path.stat().st_mode & 0o777) == "0o600"


WRITER = textwrap.dedent("""
    import sys, time
    from proxy.audit import AuditLog
    sink = AuditLog(sys.argv[1], flush_interval=0.005, max_size=64 * 1024, max_files=1000)
    for n in range(int(sys.argv[3])):
        sink({"event": "request", "worker": sys.argv[2], "n": n, "pad": "x" * 100})
        if n % 50 == 0:
            time.sleep(0.002)
    sink.close()
""")


def test_workers_appending_to_one_file_rotate_it_without_losing_a_line(tmp_path):
    """Two real processes (as two kubegate workers) share one audit path and both rotate it."""
    path = tmp_path / "audit.log"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, "3000"], env=env)
             for name in ("a", "b")]
    for proc in procs:
        assert proc.wait(60) == 0
    files = [path, *tmp_path.glob("audit.log.*")]
    files = [f for f in files if not f.name.endswith(".lock")]
    assert len(files) > 4  # it did rotate, several times
    seen: dict[str, list[int]] = {"a": [], "b": []}
    for f in files:
        for event in _lines(f):
            seen[event["worker"]].append(event["n"])
    assert sorted(seen["a"]) == list(range(3000)) and sorted(seen["b"]) == list(range(3000))


def _errors() -> float:
    return REGISTRY.get_sample_value("kubegate_audit_write_errors_total") or 0.0


def _dropped() -> float:
    return REGISTRY.get_sample_value("kubegate_audit_events_dropped_total") or 0.0


def test_a_full_disk_is_logged_counted_and_never_raises_nor_blocks(tmp_path, caplog):
    """A full disk, simulated portably with /dev/full (every write fails with ENOSPC; no tmpfs or root
    needed). The caller never sees an error; the writer logs once, counts every failed write, keeps the
    lines up to ``max_retained`` bytes and counts what it had to drop."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    errors_before, dropped_before = _errors(), _dropped()
    caplog.set_level(logging.ERROR, logger="kubegate.audit")
    sink = AuditLog("/dev/full", flush_interval=0.01, max_retained=2000)
    try:
        started = time.perf_counter()
        for n in range(200):
            sink(_request(n))
        assert time.perf_counter() - started < 1.0  # queued, not written, on the caller's thread
        assert _wait_for(lambda: sink.dropped > 0 and sink.write_errors >= 1, timeout=10)
        sink(_request(200))  # the next line fails too, is kept, retried
        assert _wait_for(lambda: sink.write_errors >= 3, timeout=10)
    finally:
        sink.close()
    assert _errors() - errors_before == sink.write_errors
    assert _dropped() - dropped_before == sink.dropped
    failures = [r for r in caplog.records if "cannot write the audit log" in r.getMessage()]
    assert len(failures) == 1 and failures[0].problem == os.strerror(28)  # ENOSPC, logged once per streak


def test_lines_kept_through_a_write_failure_are_written_when_the_path_works_again(tmp_path):
    """The audit path first names a full device (a symlink to /dev/full); an operator then frees the path
    (replaces it with a writable file, as logrotate would): the writer notices the new file and writes
    the lines it kept, in order, none lost."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    path = tmp_path / "audit.log"
    path.symlink_to("/dev/full")
    sink = AuditLog(str(path), flush_interval=0.01, max_size=1 << 20, max_files=2)
    try:
        for n in range(50):
            sink(_request(n))
        assert _wait_for(lambda: sink.write_errors > 0, timeout=10)
        path.unlink()
        path.write_text("")
        for n in range(50, 60):
            sink(_request(n))
        assert _wait_for(lambda: len(_lines(path)) == 60, timeout=10)
    finally:
        sink.close()
    assert [e["n"] for e in _lines(path)] == list(range(60))
    assert sink.dropped == 0


def test_a_writer_far_behind_drops_and_counts_instead_of_growing_without_bound(tmp_path):
    before = _dropped()
    sink = AuditLog(str(tmp_path / "audit.log"), flush_interval=3600, max_queued=100)
    try:
        for n in range(150):
            sink(_request(n))
        assert sink.dropped == 50 and _dropped() - before == 50
    finally:
        sink.close()
    assert len(_lines(tmp_path / "audit.log")) == 100


def test_a_dash_writes_the_lines_to_standard_output():
    code = ("from proxy.audit import AuditLog\n"
            "sink = AuditLog('-')\n"
            "sink({'event': 'request', 'n': 1})\n"
            "sink({'event': 'session.start', 'n': 2})\n"
            "sink.close()\n"
            "print('after close', flush=True)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == '{"event":"request","n":1}\n{"event":"session.start","n":2}\nafter close\n'


def test_a_writer_stuck_on_a_hung_disk_does_not_hang_the_caller_nor_the_shutdown(tmp_path, caplog):
    """A hung disk (an NFS server gone), simulated with a FIFO nobody reads: the writer thread blocks in
    write() once the pipe is full; the caller keeps queueing at memory speed and close() gives up after
    its timeout instead of hanging kubegate's shutdown."""
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # held open, never read
    caplog.set_level(logging.ERROR, logger="kubegate.audit")
    try:
        sink = AuditLog(str(fifo), flush_interval=0.01)
        started = time.perf_counter()
        for n in range(5000):  # ~500 KB: far more than a pipe holds
            sink({**_request(n), "pad": "x" * 100})
        assert time.perf_counter() - started < 2.0
        time.sleep(0.3)  # the writer is now blocked in write()
        started = time.perf_counter()
        sink.close(timeout=0.5)
        assert time.perf_counter() - started < 3.0
        assert any("audit writer stuck" in r.getMessage() for r in caplog.records)
    finally:
        os.close(reader)  # the pipe breaks: the stuck write ends (EPIPE is counted, not raised)


def test_a_fast_path_line_encoded_from_its_parts_is_the_events_line(tmp_path):
    """``request_line`` (the fast path: the parts that do not change between repeats of one request
    encoded once) writes the same line as ``request_audit_event`` would: the same fields in the same order
    with the same values (but the time and latency of the moment), non-ASCII names included."""
    from proxy.audit import request_audit_event, request_line_parts
    from proxy.policy import Verdict
    from proxy.protocol.audit_line import request_line
    from rbac.identity import Identity

    class Cluster:
        name = "prod-ü"

    identity = Identity(user="zoë", roles=("admin", "dev"))
    verdict = Verdict(True, user="zoë", groups=("ops", "system:authenticated"), verb="get", resource="pods",
                      namespace="default", name="web-1")
    path = "/api/v1/namespaces/default/pods/web-1"
    started = time.perf_counter()
    event = request_audit_event("r-1", identity, verdict, Cluster, "GET", path, 200, started, 2410, 0, "::1", None)
    parts = request_line_parts(identity, verdict, "prod-ü", "GET", path, "::1")
    audit = AuditLog(str(tmp_path / "audit.log"))
    audit.append_line(request_line(parts, b"r-1", 200, (time.perf_counter() - started) * 1000, time.time(), 2410))
    audit(event)
    audit.close()
    fast, full = (json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines())
    assert list(fast) == list(full)
    assert {k: v for k, v in fast.items() if k not in ("time", "latency_ms")} == {
        k: v for k, v in full.items() if k not in ("time", "latency_ms")}
    assert isinstance(fast["latency_ms"], float) and fast["time"].endswith("Z")


def test_a_fast_path_line_writes_its_time_and_latency_as_the_event_would():
    """``request_line`` formats the time and the latency straight into the line (no ``rfc3339_micro``
    string, ``round`` or ``orjson.dumps`` per request): the same text as the event's ``time``
    (``rfc3339_micro``) and ``latency_ms`` (``round(ms, 3)`` as orjson writes it), at the edges of rounding
    (half a microsecond of latency either side, whole milliseconds, zero, long ones) and of the second."""
    import orjson

    from proxy.protocol.audit_line import request_line
    from proxy.timestamps import rfc3339_micro

    latencies = [0.0, 1e-7, 0.0004999, 0.0005, 0.0005000001, 0.001, 0.0015, 0.0025, 0.9995, 1.0, 0.0123, 99.9995,
                 3600.0, 12345.6785]
    instants = [1_765_000_000.0, 1_765_000_000.999999, 1_765_000_001.0000005, 1_765_123_456.5]
    for latency in latencies:
        for now in instants:
            raw = request_line((b',"code":', b',"latency_ms":', b"}"), b"r-1", 200, latency * 1000, now, 1)
            assert json.loads(raw)["time"] == rfc3339_micro(now)
            assert b'"latency_ms":' + orjson.dumps(round(latency * 1000, 3)) + b',"bytes_out"' in raw


def test_a_fast_path_lines_latency_is_rounded_as_round_rounds_it_near_every_half():
    """Latencies of every size, and a thousandth and a half ± the error of a multiplication (where the
    compiled build's rounding in integers hands over to C's ``%.3f``), written as ``round(ms, 3)`` is."""
    import random

    import orjson

    from proxy.protocol.audit_line import request_line

    rng = random.Random(3)
    latencies = [rng.uniform(0, 10 ** rng.randint(-3, 11)) for _ in range(3000)]
    latencies += [(rng.randint(0, 10**9) + 0.5) / 1000 * (1 + rng.choice((-1, 0, 1)) * 2e-16) for _ in range(3000)]
    for ms in latencies:
        raw = request_line((b',"code":', b',"latency_ms":', b"}"), b"r-1", 200, ms, 1_765_000_000.5, 1)
        assert b'"latency_ms":' + orjson.dumps(round(ms, 3)) + b',"bytes_out"' in raw, ms


def test_a_long_fast_path_line_is_written_whole():
    """A line of several KiB (a long path, many groups) is written whole: the compiled build sizes the line
    by its pieces."""
    from proxy.protocol.audit_line import request_line

    parts = (b',"path":"/' + b"a" * 3000 + b'","code":', b',"latency_ms":', b"}")
    line = json.loads(request_line(parts, b"r-1", 200, 1.5, 1_765_000_000.5, 7))
    assert (line["path"], line["code"], line["latency_ms"], line["bytes_out"]) == ("/" + "a" * 3000, 200, 1.5, 7)


def test_a_batch_mixing_encoded_lines_events_and_an_unencodable_event_loses_only_that_event(tmp_path, caplog):
    """The writer joins a batch of encoded request lines at once; when events are among them each item is
    encoded on its own, and one that cannot be (here: an integer too large for JSON) is dropped, counted
    and logged while every other line is written in its order."""
    audit = AuditLog(str(tmp_path / "audit.log"), flush_interval=3600)
    audit.append_line(b'{"n":1}')
    audit({"event": "request", "n": 2})
    audit({"event": "request", "n": 1 << 70})  # orjson refuses integers beyond 64 bits
    audit.append_line(b'{"n":4}')
    audit.flush()
    audit.append_line(b'{"n":5}')  # a batch of encoded lines only
    audit.close()
    lines = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert [line["n"] for line in lines] == [1, 2, 4, 5]
    assert audit.dropped == 1 and "not serialisable" in caplog.text

"""`kubegate start --workers 2`: two processes serve one port, /metrics sums both, a killed worker is
restarted, SIGTERM stops everything cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kubegate.demo import free_port, prepare_demo_state

ROOT = Path(__file__).resolve().parents[2]

UPSTREAM = """\
apiVersion: v1
kind: Config
clusters: [{name: c1, cluster: {server: "https://127.0.0.1:9", certificate-authority-data: ""}}]
users: [{name: u, user: {token: abc}}]
contexts: [{name: c1, context: {cluster: c1, user: u}}]
current-context: c1
"""


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def _wait(predicate, timeout: float = 30.0, what: str = "condition"):  # noqa: ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _children(pid: int) -> set[int]:
    out = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with open(task / "children") as f:
            out.update(int(x) for x in f.read().split())
    return out


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _established_on_port(port: int) -> dict[str, int]:
    """inode → remote port of ESTABLISHED TCP sockets whose local port is ``port`` (server side)."""
    out = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        local, remote, state, inode = parts[1], parts[2], parts[3], parts[9]
        if state == "01" and int(local.split(":")[1], 16) == port:
            out[inode] = int(remote.split(":")[1], 16)
    return out


@pytest.fixture
def two_workers(tmp_path):
    (tmp_path / "up.kubeconfig").write_text(UPSTREAM)
    state = prepare_demo_state(tmp_path / "state", tmp_path / "up.kubeconfig", proxy_port=free_port(),
                               metrics_port=free_port(), workers=2,
                               extra_config={"proxy": {"listen": "127.0.0.1:0"}})
    # listen on :0 — the supervisor resolves it once and both workers share the concrete port
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "kubegate", "start", "-c", str(state.config_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    metrics = f"http://127.0.0.1:{state.metrics_port}"
    try:
        _wait(lambda: _get(metrics + "/readyz")[0] == 200 or proc.poll() is not None, what="readyz")
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        yield proc, state, metrics
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _proxy_port(supervisor_pid: int) -> int:
    """The port the workers listen on (read from their listening sockets)."""
    workers = _children(supervisor_pid)
    inodes = set().union(*(_socket_inodes(w) for w in workers))
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] == "0A" and parts[9] in inodes:
            return int(parts[1].split(":")[1], 16)
    raise AssertionError("no listening socket found in the workers")


def _client(state) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(state.ca_file))
    ctx.load_cert_chain(str(state.cert_file), str(state.key_file))
    ctx.check_hostname = False
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _request(sock: ssl.SSLSocket, path: str) -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: kubegate\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head.split(b"\r\n", 1)[0] + b"\n" + body


@pytest.mark.e2e
def test_two_workers_share_one_port_and_metrics_sum_both(two_workers):
    proc, state, metrics = two_workers
    workers = _children(proc.pid)
    assert len(workers) == 2
    port = _proxy_port(proc.pid)
    ctx = _client(state)
    socks = []
    try:
        for _ in range(24):  # SO_REUSEPORT hashes each connection to one worker
            sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
            answer = _request(sock, "/k8s/clusters/no-such-cluster/api")
            assert answer.startswith(b"HTTP/1.1 404"), answer
            assert json.loads(answer.split(b"\n", 1)[1])["reason"] == "NotFound"
            socks.append(sock)
        established = _established_on_port(port)
        served_by = {w: len(_socket_inodes(w) & established.keys()) for w in workers}
        assert all(count > 0 for count in served_by.values()), served_by
        assert sum(served_by.values()) == 24
    finally:
        for sock in socks:
            sock.close()
    def requests_404() -> float:
        status, text = _get(metrics + "/metrics")
        assert status == 200
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("kubegate_requests_total{") and 'code="404"' in line)

    # both workers' counters, summed by the supervisor; a worker folds its per-request tallies into the
    # shared metric files every sweep (1 s), so a scrape sees them within about a second
    _wait(lambda: requests_404() == 24, what="24 requests counted", timeout=10)
    status, text = _get(metrics + "/metrics")
    assert 'kubegate_workers{state="configured"} 2.0' in text
    assert 'kubegate_workers{state="ready"} 2.0' in text
    assert 'kubegate_certificate_expiry_timestamp_seconds{certificate="serving"}' in text
    # process_* metrics with several workers: the supervisor sums itself and its workers (from /proc)
    rss = next(float(line.split()[1]) for line in text.splitlines()
               if line.startswith("process_resident_memory_bytes "))
    own = sum(int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
              for pid in (proc.pid, *workers))
    assert 0.5 * own < rss < 2 * own
    assert "process_cpu_seconds_total " in text and "process_open_fds " in text
    assert "_created" not in text
    assert "kubegate_roles_loaded 2.0" in text and "kubegate_role_files_refused 0.0" in text  # not summed
    # the health of each cluster, by name, also from the supervisor (its API server does not answer)
    _wait(lambda: 'kubegate_cluster_healthy{cluster="sandbox"} 0.0' in _get(metrics + "/metrics")[1],
          what="kubegate_cluster_healthy for the sandbox cluster")


@pytest.mark.e2e
def test_a_killed_worker_is_restarted_and_sigterm_stops_cleanly(two_workers):
    proc, state, metrics = two_workers
    before = _children(proc.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    after = _wait(lambda: (c := _children(proc.pid)) and len(c) == 2 and victim not in c and c,
                  what="a replacement worker")
    assert len(after - before) == 1
    _wait(lambda: _get(metrics + "/readyz")[0] == 200, what="ready again")
    assert "kubegate_worker_restarts_total 1.0" in _get(metrics + "/metrics")[1]
    port = _proxy_port(proc.pid)
    with _client(state).wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10)) as sock:
        assert _request(sock, "/k8s/clusters/x/api").startswith(b"HTTP/1.1 404")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    for pid in after:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]

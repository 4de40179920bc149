"""Every exec through kubegate leaves a ``session.start`` and a ``session.end`` audit record with the exit
code and the bytes per stream, on both wires: WebSocket (``v5.channel.k8s.io``, kubectl 1.37) and SPDY/3.1
(kubectl 1.20), whatever protocol the client speaks to the proxy (h2 or HTTP/1.1)."""

from __future__ import annotations

import os
import select
import subprocess
import time
import uuid
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

ADMIN_ROLE = """
kind: role
version: v8
metadata: {name: admin}
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources: [{kind: '*', api_group: '*', namespace: '*', name: '*', verbs: ['*']}]
    kubernetes_groups: ['system:masters']
"""
WIRE = {"1.37": ("websocket", "v5.channel.k8s.io"), "1.20": ("SPDY/3.1", "v4.channel.k8s.io")}


def _version(kubectl: str) -> str:
    return kubectl.rsplit("-", 1)[-1]


def _session(px, marker: str, timeout: float = 20.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (start, end) audit records of the one session whose command carries ``marker``; the relay may
    close a moment after kubectl exits, so wait for the end record."""
    deadline = time.monotonic() + timeout
    while True:
        mine = [e for e in list(px.audit_events) if marker in (e.get("query") or "")]
        starts = [e for e in mine if e["event"] == "session.start"]
        ends = [e for e in mine if e["event"] == "session.end"]
        if ends or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(starts) == 1 and len(ends) == 1, mine
    return starts[0], ends[0]


def test_an_exec_is_audited_with_start_end_exit_code_and_bytes_per_stream(k, kubectl, px):
    marker = uuid.uuid4().hex
    payload = os.urandom(200_000)  # many frames each way: the counts must survive frame boundaries
    result = k("exec", "-i", "-n", "dev", "web-1", "--", "sh", "-c", f"cat; echo {marker} >&2; exit 5",
               input=payload, timeout=60)
    assert result.returncode == 5, result.stderr
    assert result.stdout == payload

    start, end = _session(px, marker)
    upgrade, stream_protocol = WIRE[_version(kubectl)]
    for record in (start, end):
        assert record["request_id"] == start["request_id"]
        assert record["user"] == "alice" and record["roles"] == ["admin"] and record["cluster"] == "sandbox"
        assert record["client_ip"] == "127.0.0.1"
        assert record["kind"] == "exec" and record["namespace"] == "dev" and record["pod"] == "web-1"
        assert record["protocol"].lower() == upgrade.lower()
        assert "system:authenticated" in record["impersonated_groups"]
    assert "exit_code" not in start and "bytes_to_client" not in start
    assert end["time"] >= start["time"]

    assert end["exit_code"] == 5
    assert end["stream_protocol"] == stream_protocol
    assert "tap_failed" not in end
    streams = end["stream_bytes"]
    assert streams["stdin"] == {"from_client": len(payload), "from_server": 0}
    assert streams["stdout"] == {"from_client": 0, "from_server": len(payload)}
    assert streams["stderr"] == {"from_client": 0, "from_server": len(marker) + 1}
    # Raw bytes on the wire: the payload plus framing, never less.
    assert len(payload) < end["bytes_from_client"] < len(payload) + 20_000
    assert len(payload) < end["bytes_to_client"] < len(payload) + 20_000
    assert end["stopped"] is None

    (request,) = [e for e in list(px.audit_events) if e["event"] == "request" and e["request_id"] == start["request_id"]]
    assert request["code"] == 101 and request["verb"] == "exec"
    assert request["bytes_out"] == end["bytes_to_client"] and request["bytes_in"] == end["bytes_from_client"]


def test_a_successful_exec_is_audited_with_exit_code_zero(k, kubectl, px):
    marker = uuid.uuid4().hex
    result = k("exec", "-n", "dev", "web-1", "--", "echo", marker)
    assert result.returncode == 0 and result.stdout.decode() == marker + "\n"
    _, end = _session(px, marker)
    assert end["exit_code"] == 0
    assert end["stream_bytes"]["stdout"]["from_server"] == len(marker) + 1


def test_a_client_that_vanishes_mid_exec_still_ends_its_session_record(kubectl, admin_kubeconfig, px, wire):
    marker = uuid.uuid4().hex
    env = dict(os.environ, **({"DISABLE_HTTP2": "1"} if wire == "http1" else {}))
    proc = subprocess.Popen(
        [kubectl, "--kubeconfig", str(admin_kubeconfig), "exec", "-i", "-n", "dev", "web-1", "--",
         "sh", "-c", f"echo {marker}; cat"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    try:
        assert proc.stdout is not None
        seen = b""
        deadline = time.monotonic() + 30
        while marker.encode() not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                seen += chunk
        assert marker.encode() in seen
        proc.kill()  # no exit code, no close frames: the connection just drops
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    start, end = _session(px, marker)
    assert end["request_id"] == start["request_id"]
    assert end["exit_code"] is None
    assert end["stream_bytes"]["stdout"]["from_server"] == len(marker) + 1


def test_the_audit_file_gets_both_session_lines_as_the_session_ends(sandbox, kubectl, tmp_path):
    """With the product's sink (``AuditLog``, a JSON-lines file) session records are written at once, not
    held in the request-line buffer."""
    import json

    from proxy.audit import AuditLog
    from proxy.testing import cluster_for_sandbox, running_proxy
    from rbac import RoleWatcher

    roles_dir = tmp_path / "roles"
    roles_dir.mkdir()
    (roles_dir / "admin.yaml").write_text(ADMIN_ROLE)
    log_path = tmp_path / "audit.log"
    sink = AuditLog(str(log_path), flush_interval=3600)
    try:
        with running_proxy(tmp_path / "proxy", clusters=[cluster_for_sandbox(sandbox)],
                           roles=RoleWatcher(str(roles_dir), time.time), audit=sink) as own:
            kubeconfig = own.kubeconfig("alice", ["admin"], ["sandbox"])
            marker = uuid.uuid4().hex
            result = subprocess.run(
                [kubectl, "--kubeconfig", str(kubeconfig), "exec", "-n", "dev", "web-1", "--", "sh", "-c",
                 f"echo {marker}; exit 2"], capture_output=True, timeout=60,
            )
            assert result.returncode == 2, result.stderr
            deadline = time.monotonic() + 20
            lines: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                lines = [json.loads(line) for line in log_path.read_text().splitlines()]
                if any(e["event"] == "session.end" for e in lines):
                    break
                time.sleep(0.02)
            events = [e["event"] for e in lines if marker in (e.get("query") or "")]
            assert events == ["session.start", "session.end"], lines
            (end,) = [e for e in lines if e["event"] == "session.end"]
            assert end["exit_code"] == 2 and end["stream_bytes"]["stdout"]["from_server"] == len(marker) + 1
    finally:
        sink.close()


def test_a_port_forward_is_audited_with_the_bytes_of_its_data_streams(k, kubectl, popen_kubectl, px, tmp_path):
    """kubectl 1.37 tunnels SPDY in WebSocket (``SPDY/3.1+portforward.k8s.io``), 1.20 speaks SPDY: the
    tap reads the data streams' bytes either way."""
    import re
    import socket

    from proxy.testing import echo_pod_manifest, tcp_echo_server

    with tcp_echo_server() as echo_port:
        name = f"pf-audit-{uuid.uuid4().hex[:8]}"
        manifest = tmp_path / "pod.yaml"
        manifest.write_text(echo_pod_manifest(name, "dev", echo_port))
        assert k("apply", "-f", str(manifest)).returncode == 0
        try:
            proc = popen_kubectl("port-forward", "-n", "dev", f"pod/{name}", ":8080")
            assert proc.stdout is not None
            line = b""
            deadline = time.monotonic() + 60
            while b"\n" not in line and time.monotonic() < deadline:
                if select.select([proc.stdout], [], [], 0.5)[0]:
                    chunk = os.read(proc.stdout.fileno(), 4096)
                    if not chunk:
                        break
                    line += chunk
            match = re.search(rb"127\.0\.0\.1:(\d+) -> 8080", line)
            assert match, line
            payload = os.urandom(50_000)
            with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=60) as sock:
                sock.sendall(payload)
                received = b""
                while len(received) < len(payload) and (chunk := sock.recv(65536)):
                    received += chunk
            assert received == payload
            proc.terminate()
            proc.wait(timeout=60)

            deadline = time.monotonic() + 60
            ends: list[dict[str, Any]] = []
            while not ends and time.monotonic() < deadline:
                ends = [e for e in list(px.audit_events) if e["event"] == "session.end" and e.get("pod") == name]
                time.sleep(0.02)
            (end,) = ends
            (start,) = [e for e in list(px.audit_events) if e["event"] == "session.start" and e.get("pod") == name]
            assert start["request_id"] == end["request_id"] and end["kind"] == "portforward"
            expected = "SPDY/3.1+portforward.k8s.io" if _version(kubectl) == "1.37" else "portforward.k8s.io"
            assert end["stream_protocol"] == expected
            assert end["stream_bytes"]["data"] == {"from_client": len(payload), "from_server": len(payload)}
            assert "tap_failed" not in end
        finally:
            k("delete", "pod", name, "-n", "dev", "--wait=false")


def test_a_client_reading_slowly_gets_every_byte_in_order_and_the_counts_match(popen_kubectl, kubectl, px):
    """Backpressure on the relay's reused read buffers: kubectl's stdout is a pipe nobody reads for a while,
    so kubectl stops reading, kubegate's writes toward it queue up and the upstream's reads pause; then the
    pipe is drained. Every byte of ``seq`` (a different byte at every offset, so a read buffer written over
    while a write still held it would show) arrives in order, and the tap counted them all."""
    count = 400_000
    expected = b"".join(b"%d\n" % i for i in range(1, count + 1))  # ~2.7 MB, several MB-sized TCP windows
    marker = uuid.uuid4().hex
    proc = popen_kubectl("exec", "-n", "dev", "web-1", "--", "sh", "-c", f"seq 1 {count}; echo {marker} >&2")
    assert proc.stdout is not None
    time.sleep(3)  # the pipe (64 KiB) and the socket buffers fill; kubegate holds the rest back
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out == expected
    _, end = _session(px, marker)
    assert end["stream_bytes"]["stdout"]["from_server"] == len(expected)
    assert len(expected) < end["bytes_to_client"] < len(expected) + 40_000

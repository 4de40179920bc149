"""A port-forward session is indexed and audited with its session id, start and stop, and the bytes it
moved, but no content is recorded (kubectl 1.37: SPDY tunnelled in WebSocket; 1.20: SPDY)."""

from __future__ import annotations

import os
import re
import select
import socket
import subprocess
import time
import uuid

import pytest

from proxy.recording.index import FileSessionIndex
from proxy.testing import echo_pod_manifest, tcp_echo_server
from tests.sessions.conftest import wait_for

pytestmark = pytest.mark.e2e


def _forward(kubectl: str, kubeconfig, name: str, payload: bytes) -> None:
    """``kubectl port-forward`` to the pod, ``payload`` through it and back, then kubectl stops."""
    proc = subprocess.Popen([kubectl, "--kubeconfig", str(kubeconfig), "port-forward", "-n", "dev", f"pod/{name}", ":8080"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = b""
        deadline = time.monotonic() + 60
        while b"\n" not in line and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 0.5)[0]:
                line += os.read(proc.stdout.fileno(), 4096)
        match = re.search(rb"127\.0\.0\.1:(\d+) -> 8080", line)
        assert match, line
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=60) as sock:
            sock.sendall(payload)
            received = b""
            while len(received) < len(payload) and (chunk := sock.recv(65536)):
                received += chunk
        assert received == payload
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_a_port_forward_session_has_start_stop_and_bytes(kubectl, rpx, sessions_dir, tmp_path):
    kubeconfig = rpx.kubeconfig("alice", ["admin"], ["sandbox"])
    name = f"pf-rec-{uuid.uuid4().hex[:8]}"
    payload = os.urandom(30_000)
    run = [kubectl, "--kubeconfig", str(kubeconfig)]
    with tcp_echo_server() as echo_port:
        manifest = tmp_path / "pod.yaml"
        manifest.write_text(echo_pod_manifest(name, "dev", echo_port))
        assert subprocess.run([*run, "apply", "-f", str(manifest)], capture_output=True, timeout=60).returncode == 0
        try:
            _forward(kubectl, kubeconfig, name, payload)
        finally:
            subprocess.run([*run, "delete", "pod", name, "-n", "dev", "--wait=false"], capture_output=True, timeout=60)
    index = FileSessionIndex(str(sessions_dir))
    record = wait_for(lambda: next((r for r in index.list() if r.get("pod") == name and r.get("state") == "ended"), None),
                      60, "the ended port-forward session")
    assert record["kind"] == "portforward" and record["user"] == "alice" and record["recording"] is None
    assert record["bytes_to_client"] > len(payload) and record["bytes_from_client"] > len(payload)
    assert record["end_time"] >= record["start_time"] and record["duration_s"] >= 0
    events = [e for e in list(rpx.audit_events) if e.get("session_id") == record["session_id"]]
    assert [e["event"] for e in events] == ["session.start", "session.end"]
    assert events[1]["stream_bytes"]["data"] == {"from_client": len(payload), "from_server": len(payload)}
    assert not list(sessions_dir.glob(f"{record['session_id']}.cast"))

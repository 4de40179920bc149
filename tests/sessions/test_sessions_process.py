"""kubegate as its own process (``kubegate start``): a recording survives the proxy being SIGKILLed
mid-session (the cast written so far is readable), and ``kubegate sessions ls / play / export`` read
the index and recordings from the config's state directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from proxy.recording.cast import output_text, read_cast
from tests.sessions.conftest import KubegateProcess, PtyKubectl, ended_session, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from sandbox.testing import running_sandbox

    with running_sandbox(tmp_path_factory.mktemp("sb")) as sandbox:
        yield sandbox


def test_a_proxy_killed_mid_session_leaves_a_readable_recording(tmp_path, sb, kubectl_new):
    gate = KubegateProcess(tmp_path / "gate", sb, "  recording: {flush_interval: 50ms}")
    marker = uuid.uuid4().hex[:12]
    term = PtyKubectl([kubectl_new, "--kubeconfig", str(gate.kubeconfig("alice", "admin")), "exec", "-it", "-n",
                       "dev", "web-1", "--", "sh", "-c", f"echo ready-{marker}; exec sh -i"], dict(os.environ, TERM="xterm"))
    try:
        term.read_until(f"ready-{marker}".encode())
        term.type("echo before-$((40+2))\r")
        term.read_until(b"before-42")
        casts = wait_for(lambda: [p for p in gate.sessions_dir.glob("*.cast")
                                  if b"before-42" in p.read_bytes()], 30, "the output in the recording")
        gate.proc.send_signal(signal.SIGKILL)
        gate.proc.wait(30)
        term.wait(30)  # kubectl sees the connection drop
    finally:
        term.close()
        gate.stop()
    header, events = read_cast(casts[0].read_bytes())
    assert header["kubegate"]["user"] == "alice" and header["kubegate"]["pod"] == "web-1"
    text = output_text(events)
    assert f"ready-{marker}" in text and "before-42" in text
    listed = gate.cli("sessions", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    (record,) = [json.loads(line) for line in listed.stdout.splitlines() if marker in line.decode()]
    assert record["state"] == "live"  # the proxy died before it could write the end
    table = gate.cli("sessions", "ls").stdout.decode()
    assert any(record["session_id"] in line and "interrupted" in line for line in table.splitlines())
    played = gate.cli("sessions", "play", record["session_id"], "--raw")
    assert played.returncode == 0 and b"before-42" in played.stdout


def test_sessions_ls_play_and_export(tmp_path, sb, kubectl_new):
    gate = KubegateProcess(tmp_path / "gate", sb)
    marker = uuid.uuid4().hex[:12]
    try:
        term = PtyKubectl([kubectl_new, "--kubeconfig", str(gate.kubeconfig("alice", "admin")), "exec", "-it", "-n",
                           "dev", "web-1", "--", "sh", "-c", f"echo hello-{marker}; sleep 1; echo bye-{marker}"],
                          dict(os.environ, TERM="xterm"))
        try:
            assert term.wait(60) == 0
        finally:
            term.close()
        other = subprocess.run([kubectl_new, "--kubeconfig", str(gate.kubeconfig("carol", "auditor")), "exec", "-n",
                                "dev", "web-1", "--", "echo", f"plain-{marker}"], capture_output=True, timeout=60)
        assert other.returncode == 0, other.stderr
        record = ended_session(gate.sessions_dir, f"hello-{marker}")
        ended_session(gate.sessions_dir, f"plain-{marker}")
    finally:
        gate.stop()

    listing = gate.cli("sessions", "ls")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.decode().splitlines()
    assert lines[0].split()[:4] == ["ID", "STARTED", "USER", "CLUSTER"]
    assert any(record["session_id"] in line and "alice" in line and "ended" in line for line in lines)
    only_carol = gate.cli("sessions", "ls", "--user", "carol").stdout.decode()
    assert f"plain-{marker}" in only_carol and record["session_id"] not in only_carol
    assert gate.cli("sessions", "ls", "--cluster", "elsewhere").stdout.decode().count("\n") == 1  # the header
    assert record["session_id"] in gate.cli("sessions", "ls", "--since", "1h").stdout.decode()
    assert record["session_id"] not in gate.cli("sessions", "ls", "--since", "2099-01-01T00:00:00").stdout.decode()

    exported = gate.cli("sessions", "export", record["session_id"])
    assert exported.returncode == 0
    assert exported.stdout == (gate.sessions_dir / f"{record['session_id']}.cast").read_bytes()
    header, events = read_cast(exported.stdout)
    assert header["version"] == 2 and header["kubegate"]["session_id"] == record["session_id"]

    raw = gate.cli("sessions", "play", record["session_id"], "--raw")
    assert raw.returncode == 0 and raw.stdout.decode() == output_text(events)
    fast = gate.cli("sessions", "play", record["session_id"], "--speed", "10")
    assert fast.returncode == 0 and fast.stdout.decode() == output_text(events)

    missing = gate.cli("sessions", "play", uuid.uuid4().hex)
    assert missing.returncode == 1 and b"no session" in missing.stderr

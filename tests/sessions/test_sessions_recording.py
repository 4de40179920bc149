"""An interactive ``kubectl exec -it`` through kubegate is recorded as an asciicast v2 that replays to the
same terminal screen, on both wires: WebSocket (kubectl 1.37, ``v5.channel.k8s.io``) and SPDY/3.1
(kubectl 1.20). kubectl runs under a real pseudo-terminal; a person's keys, a terminal resize and an exit
code go through the proxy to the sandbox's pty shell."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import pytest

from proxy.recording.cast import output_text, read_cast
from tests.sessions.conftest import PtyKubectl, ended_session, replay_screen

pytestmark = pytest.mark.e2e


def test_an_interactive_exec_replays_to_the_same_screen(kubectl, rpx, sessions_dir):
    marker = uuid.uuid4().hex[:12]
    kubeconfig = rpx.kubeconfig("alice", ["admin"], ["sandbox"])
    term = PtyKubectl([kubectl, "--kubeconfig", str(kubeconfig), "exec", "-it", "-n", "dev", "web-1", "--",
                       "sh", "-c", f"echo ready-{marker}; exec sh -i"], dict(os.environ, TERM="xterm"))
    try:
        term.read_until(f"ready-{marker}".encode())
        term.type("echo sum-$((6*7))\r")
        term.read_until(b"sum-42")
        term.resize(100, 30)
        for _ in range(100):  # kubectl sends the new size when it handles SIGWINCH: ask until it arrived
            term.type("stty size\r")
            term.read_until(b"\r\n# ")
            if b"30 100" in term.output:
                break
            time.sleep(0.1)
        assert b"30 100" in term.output
        term.type("printf 'caf\\303\\251 done\\n'\r")
        term.read_until("café done".encode())
        term.type("exit 3\r")
        assert term.wait() == 3
        owner_screen = term.screen.display
    finally:
        term.close()

    record = ended_session(sessions_dir, marker)
    assert record["tty"] is True and record["exit_code"] == 3
    assert record["user"] == "alice" and record["roles"] == ["admin"] and record["cluster"] == "sandbox"
    assert record["namespace"] == "dev" and record["pod"] == "web-1"
    assert record["recording"] == str(sessions_dir / f"{record['session_id']}.cast")
    cast = (sessions_dir / f"{record['session_id']}.cast").read_bytes()
    header, events = read_cast(cast)
    assert header["version"] == 2
    meta = header["kubegate"]
    assert meta["user"] == "alice" and meta["roles"] == ["admin"] and meta["cluster"] == "sandbox"
    assert meta["pod"] == "web-1" and meta["command"][:2] == ["sh", "-c"] and meta["session_id"] == record["session_id"]
    assert header["timestamp"] == int(meta["start_time"])
    codes = {code for _, code, _ in events}
    assert {"o", "i", "r"} <= codes  # output, input (the admin role records it) and resizes
    assert ("r", "100x30") in [(c, d) for _, c, d in events]
    typed = "".join(d for _, c, d in events if c == "i")
    assert "echo sum-$((6*7))\r" in typed and "exit 3\r" in typed
    times = [t for t, _, _ in events]
    assert times == sorted(times)
    assert "café done" in output_text(events)
    assert any("sum-42" in line for line in owner_screen) and any("café done" in line for line in owner_screen)
    assert replay_screen(cast).display == owner_screen


def test_a_non_interactive_exec_is_audited_with_command_and_exit_code(kubectl, rpx, sessions_dir):
    marker = uuid.uuid4().hex[:12]
    kubeconfig = rpx.kubeconfig("alice", ["admin"], ["sandbox"])
    result = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "exec", "-n", "dev", "web-1", "--",
                             "sh", "-c", f"echo out-{marker}; exit 4"], capture_output=True, timeout=60)
    assert result.returncode == 4 and result.stdout == f"out-{marker}\n".encode()
    record = ended_session(sessions_dir, marker)
    assert record["tty"] is False and record["exit_code"] == 4
    assert record["recording"] is None  # non-interactive content is not recorded by default
    events = [e for e in list(rpx.audit_events) if e.get("session_id") == record["session_id"]]
    kinds = [e["event"] for e in events]
    assert kinds == ["session.start", "session.end", "exec"]
    (exec_event,) = [e for e in events if e["event"] == "exec"]
    assert exec_event["command"] == ["sh", "-c", f"echo out-{marker}; exit 4"] and exec_event["exit_code"] == 4
    assert exec_event["user"] == "alice" and exec_event["pod"] == "web-1"
    end = events[1]
    assert end["duration_s"] >= 0 and end["bytes_to_client"] > 0 and end["exit_code"] == 4
    assert json.dumps(events)  # every event is plain JSON


def test_a_role_can_record_non_interactive_sessions_too(kubectl, rpx, sessions_dir):
    marker = uuid.uuid4().hex[:12]
    kubeconfig = rpx.kubeconfig("carol", ["auditor"], ["sandbox"])
    result = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "exec", "-i", "-n", "dev", "web-1", "--",
                             "sh", "-c", f"cat; echo err-{marker} >&2"], input=b"piped input\n",
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    record = ended_session(sessions_dir, marker)
    _, events = read_cast((sessions_dir / f"{record['session_id']}.cast").read_bytes())
    text = output_text(events)
    assert "piped input\n" in text and f"err-{marker}\n" in text  # stdout and stderr are both "o"
    assert not [e for e in events if e[1] == "i"]  # the auditor role does not record input

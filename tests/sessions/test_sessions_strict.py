"""``proxy.recording.mode: strict``: a session that must be recorded is refused with a clear Status when
its recording cannot be written (before anything reaches the cluster); in best_effort mode it goes on
unrecorded. The store here is a directory path under a regular file: unwritable even for root."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from proxy.recording.index import FileSessionIndex
from proxy.recording.recorder import Recordings
from proxy.recording.stores import FileStore
from tests.sessions.conftest import PtyKubectl, write_roles

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["strict", "best_effort"])
def broken_store_proxy(request, tmp_path_factory):
    from proxy.testing import cluster_for_sandbox, running_proxy
    from rbac import RoleWatcher
    from sandbox.testing import running_sandbox

    base = tmp_path_factory.mktemp("strict")
    (base / "not-a-dir").write_text("a file")
    roles = RoleWatcher(str(write_roles(base / "roles")), time.time)
    recordings = Recordings(FileStore(str(base / "not-a-dir" / "sessions")), FileSessionIndex(str(base / "index")),
                            mode=request.param)
    with running_sandbox(base / "sandbox") as sb:
        with running_proxy(base / "proxy", clusters=[cluster_for_sandbox(sb)], roles=roles, recordings=recordings) as px:
            yield request.param, px


def test_an_interactive_session_that_cannot_be_recorded(broken_store_proxy, kubectl):
    mode, px = broken_store_proxy
    marker = uuid.uuid4().hex[:12]
    term = PtyKubectl([kubectl, "--kubeconfig", str(px.kubeconfig("alice", ["admin"], ["sandbox"])), "exec", "-it",
                       "-n", "dev", "web-1", "--", "sh", "-c", f"echo ran-{marker}"], dict(os.environ, TERM="xterm"))
    try:
        code = term.wait(60)
        assert term.proc.stderr is not None
        stderr = term.proc.stderr.read().decode()
    finally:
        term.close()
    if mode == "strict":
        assert code != 0 and f"ran-{marker}".encode() not in term.output
        assert "must be recorded (recording mode strict)" in stderr and "cannot create" in stderr, stderr
        assert any(e["event"] == "request" and e["path"].endswith("/exec") and e["code"] == 503
                   for e in list(px.audit_events))
        assert not [e for e in list(px.audit_events) if e["event"] == "session.start" and marker in str(e.get("command"))]
    else:
        assert code == 0 and f"ran-{marker}".encode() in term.output
        (start,) = [e for e in list(px.audit_events) if e["event"] == "session.start" and marker in str(e.get("command"))]
        assert start["recording"] is None


def test_a_session_no_role_records_is_not_affected_by_strict_mode(broken_store_proxy, kubectl):
    _, px = broken_store_proxy
    result = subprocess.run([kubectl, "--kubeconfig", str(px.kubeconfig("alice", ["admin"], ["sandbox"])), "exec",
                             "-n", "dev", "web-1", "--", "echo", "unrecorded"], capture_output=True, timeout=60)
    assert result.returncode == 0 and result.stdout == b"unrecorded\n", result.stderr

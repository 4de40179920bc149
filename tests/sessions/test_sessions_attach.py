"""``kubectl attach -it`` to a pod's console (a container with ``tty: true``) is recorded like an exec:
the session's kind is ``attach`` and the cast holds what the console showed."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from proxy.recording.cast import output_text, read_cast
from proxy.recording.index import FileSessionIndex
from tests.sessions.conftest import PtyKubectl, wait_for

pytestmark = pytest.mark.e2e


def test_an_interactive_attach_is_recorded(kubectl, rpx, sessions_dir, tmp_path):
    kubeconfig = rpx.kubeconfig("alice", ["admin"], ["sandbox"])
    name = f"console-{uuid.uuid4().hex[:8]}"
    manifest = tmp_path / "pod.yaml"
    manifest.write_text("apiVersion: v1\nkind: Pod\n"
                        f"metadata: {{name: {name}, namespace: dev}}\n"
                        "spec: {containers: [{name: main, image: busybox, tty: true, stdin: true}]}\n")
    run = [kubectl, "--kubeconfig", str(kubeconfig)]
    assert subprocess.run([*run, "apply", "-f", str(manifest)], capture_output=True, timeout=60).returncode == 0
    term = PtyKubectl([*run, "attach", "-it", "-n", "dev", name, "-c", "main"], dict(os.environ, TERM="xterm"))
    try:
        term.type("echo attached-$((5*5))\r")
        term.read_until(b"attached-25")
    finally:
        term.close()  # the person closes the terminal: kubectl goes, the session ends
        subprocess.run([*run, "delete", "pod", name, "-n", "dev", "--wait=false"], capture_output=True, timeout=60)
    index = FileSessionIndex(str(sessions_dir))
    record = wait_for(lambda: next((r for r in index.list() if r.get("pod") == name and r.get("state") == "ended"), None),
                      60, "the ended attach session")
    assert record["kind"] == "attach" and record["tty"] is True and record["container"] == "main"
    header, events = read_cast((sessions_dir / f"{record['session_id']}.cast").read_bytes())
    assert header["kubegate"]["kind"] == "attach"
    assert "attached-25" in output_text(events)

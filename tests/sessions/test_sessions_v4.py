"""WebSocket ``v4.channel.k8s.io`` (what the official ``kubernetes`` Python client speaks for exec): an
interactive session with a pty, input, a resize and an exit code is recorded like kubectl's."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from proxy.recording.cast import output_text, read_cast
from tests.sessions.conftest import ended_session

pytestmark = pytest.mark.e2e


def test_a_v4_websocket_session_is_recorded(rpx, sessions_dir, tmp_path):
    from kubernetes import client, config
    from kubernetes.stream import stream
    from kubernetes.stream.ws_client import RESIZE_CHANNEL

    marker = uuid.uuid4().hex[:12]
    kubeconfig = rpx.kubeconfig("alice", ["admin"], ["sandbox"], path=tmp_path / "kubeconfig")
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as api:
        api.set_default_header("sec-websocket-protocol", "v4.channel.k8s.io")  # the client offers v5 first
        ws = stream(client.CoreV1Api(api).connect_get_namespaced_pod_exec, "web-1", "dev",
                    command=["sh", "-c", f"echo ready-{marker}; exec sh -i"], stdin=True, stdout=True, stderr=True,
                    tty=True, _preload_content=False)
        try:
            ws.write_channel(RESIZE_CHANNEL, json.dumps({"Width": 90, "Height": 20}))
            seen = ""
            deadline = time.monotonic() + 30
            while f"ready-{marker}" not in seen and time.monotonic() < deadline:
                ws.update(timeout=1)
                seen += ws.read_stdout(timeout=0) if ws.peek_stdout() else ""
            ws.write_stdin("stty size; echo v4-$((3*3)); exit 6\n")
            while ws.is_open() and time.monotonic() < deadline:
                ws.update(timeout=1)
                seen += ws.read_stdout(timeout=0) if ws.peek_stdout() else ""
            assert "20 90" in seen and "v4-9" in seen
            assert ws.returncode == 6
        finally:
            ws.close()
    record = ended_session(sessions_dir, marker)
    assert record["exit_code"] == 6 and record["protocol"].lower() == "websocket"
    (end,) = [e for e in list(rpx.audit_events) if e.get("session_id") == record["session_id"] and e["event"] == "session.end"]
    assert end["stream_protocol"] == "v4.channel.k8s.io"
    _, events = read_cast((sessions_dir / f"{record['session_id']}.cast").read_bytes())
    assert ("r", "90x20") in [(code, data) for _, code, data in events]
    assert "v4-9" in output_text(events)
    assert "exit 6" in "".join(data for _, code, data in events if code == "i")

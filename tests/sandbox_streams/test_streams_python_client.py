"""The `kubernetes` Python client's stream() exec over WebSocket against sandbox.streams."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.stream import stream

pytestmark = pytest.mark.e2e


def _core(harness) -> client.CoreV1Api:
    config = client.Configuration()
    config.host = harness.url
    return client.CoreV1Api(client.ApiClient(config))


def test_stream_exec_returns_stdout(harness):
    api = _core(harness)
    out = stream(api.connect_get_namespaced_pod_exec, "web", "default", command=["echo", "from-python"],
                 stderr=True, stdin=False, stdout=True, tty=False)
    assert out == "from-python\n"


def test_stream_exec_with_stdin_and_exit_code(harness):
    api = _core(harness)
    resp = stream(api.connect_get_namespaced_pod_exec, "web", "default",
                  command=["sh", "-c", "read line; echo got:$line; echo oops >&2; exit 7"],
                  stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False)
    resp.write_stdin("hello\n")
    resp.run_forever(timeout=20)
    assert resp.read_stdout() == "got:hello\n"
    assert resp.read_stderr() == "oops\n"
    assert resp.returncode == 7
    resp.close()

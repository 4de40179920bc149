"""A real ``kubegate start`` process against a real (sandbox) cluster: every answered request has its audit
line on disk within the flush window (200 ms) with no later event needed, so ``kill -9`` loses none
answered before that window, and SIGTERM loses none at all."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from kubegate.demo import free_port, prepare_demo_state

ROOT = Path(__file__).resolve().parents[2]
ANSWERED = 25


def _ready(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("kubegate did not become ready")


def _get(sock: ssl.SSLSocket, path: str) -> int:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: kubegate\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ", 2)[1])


@pytest.mark.e2e
@pytest.mark.parametrize("ending", ["sigkill-after-the-window", "sigterm-at-once"])
def test_every_answered_request_is_in_the_audit_log_when_the_worker_dies(tmp_path, sandbox_cluster, ending):
    state = prepare_demo_state(tmp_path / "state", sandbox_cluster.admin_kubeconfig, proxy_port=free_port(),
                               metrics_port=free_port())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "kubegate", "start", "-c", str(state.config_path)],
                            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    marker = uuid.uuid4().hex
    path = f"/k8s/clusters/{state.cluster_name}/api/v1/namespaces/ns-{marker}/configmaps"  # only these requests
    try:
        _ready(f"http://127.0.0.1:{state.metrics_port}/readyz", proc)
        ctx = ssl.create_default_context(cafile=str(state.ca_file))
        ctx.load_cert_chain(str(state.cert_file), str(state.key_file))
        ctx.set_alpn_protocols(["http/1.1"])
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", state.proxy_port), timeout=30),
                             server_hostname="127.0.0.1") as sock:
            codes = [_get(sock, path) for _ in range(ANSWERED)]
        assert codes == [200] * ANSWERED
        if ending == "sigkill-after-the-window":
            time.sleep(1.0)  # the window is 200 ms; generous for a loaded machine
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        else:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if proc.stderr is not None:
            proc.stderr.close()
    audit = state.state_dir / "audit.log"
    mine = [e for e in map(json.loads, audit.read_text().splitlines())
            if e["event"] == "request" and e["path"] == path]
    assert len(mine) == ANSWERED
    assert {(e["user"], e["code"], e["verb"]) for e in mine} == {("demo", 200, "list")}


def test_audit_rotation_settings_are_validated_and_printed_by_config_check(tmp_path):
    from kubegate.config import ConfigError, config_from_mapping

    cfg = config_from_mapping({"audit": {"max_size": "10MiB", "max_files": 3}}, base_dir=str(tmp_path))
    assert (cfg.audit.max_size, cfg.audit.max_files) == (10 * 1024 * 1024, 3)
    assert config_from_mapping({"audit": {"max_size": 0}}).audit.max_size == 0  # never rotate
    with pytest.raises(ConfigError) as bad:
        config_from_mapping({"audit": {"max_size": "1KiB", "max_files": 0}}, source_name="kubegate.yaml")
    assert bad.value.problems == ["kubegate.yaml: audit.max_files: 0 is below the minimum 1"]
    with pytest.raises(ConfigError) as small:
        config_from_mapping({"audit": {"max_size": "1KiB"}}, source_name="kubegate.yaml")
    assert small.value.problems == ["kubegate.yaml: audit.max_size: 1KiB is too small to rotate by "
                                    "(at least 64KiB; 0 never rotates)"]

    path = tmp_path / "kubegate.yaml"
    path.write_text("audit: {max_size: 5MiB}\n")
    (tmp_path / "roles").mkdir()  # config check also checks the paths and (not here) the ports
    result = subprocess.run([sys.executable, "-m", "kubegate", "config", "check", "--skip-ports", "-c", str(path)],
                            cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert "max_size: 5MiB" in result.stdout and "max_files: 10" in result.stdout

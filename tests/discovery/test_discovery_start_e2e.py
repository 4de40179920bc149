"""The product path: a running ``kubegate start`` picks up ``kubegate clusters add`` without a restart,
serves the cluster to kubectl, checks its health (``clusters ls``, ``/metrics``), and ``clusters rm``
takes it away again (404, like any unknown cluster)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from kubegate.demo import free_port, viewer_binding

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_ROLES = ROOT / "examples" / "roles"


def kubegate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "kubegate", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def wait_until(predicate, what: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Polls an external process's observable state (HTTP, CLI output): there is no event to await."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting until {what}")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except OSError:
        return 0, ""


@pytest.mark.e2e
def test_clusters_add_and_rm_reach_a_running_kubegate(tmp_path, sandbox_cluster, kubectl_new):
    sandbox_cluster.store.put_object("rbac.authorization.k8s.io", "clusterrolebindings", viewer_binding())
    upstream = Path(sandbox_cluster.admin_kubeconfig).read_bytes()  # absolute paths inside
    resource = tmp_path / "east.yaml"
    resource.write_text(yaml.safe_dump({
        "kind": "kube_cluster", "version": "v3", "metadata": {"name": "east", "labels": {"env": "prod"}},
        "spec": {"kubeconfig": base64.b64encode(upstream).decode()}}))
    port, metrics_port = free_port(), free_port()
    (tmp_path / "kubegate.yaml").write_text(f"""
version: v1
state_dir: ./state
proxy:
  listen: 127.0.0.1:{port}
  public_addr: 127.0.0.1:{port}
  limits: {{shutdown_grace: 5s}}
metrics: {{listen: 127.0.0.1:{metrics_port}}}
auth: {{roles_dir: {EXAMPLE_ROLES}}}
""")
    assert kubegate("ca", "init", "-c", "kubegate.yaml", cwd=tmp_path).returncode == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "kubegate", "start", "-c", "kubegate.yaml"], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: get(f"http://127.0.0.1:{metrics_port}/readyz")[0] == 200, "kubegate is ready", proc)
        added = kubegate("clusters", "add", "-f", str(resource), "-c", "kubegate.yaml", cwd=tmp_path)
        assert added.returncode == 0 and "cluster east added" in added.stdout, added.stderr
        made = kubegate("kubeconfig", "-c", "kubegate.yaml", "--user", "alice", "--roles", "viewer",
                        "--out", "alice.kubeconfig", cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        kubeconfig = tmp_path / "alice.kubeconfig"
        assert [c["name"] for c in yaml.safe_load(kubeconfig.read_text())["contexts"]] == ["east"]

        def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([kubectl_new, "--kubeconfig", str(kubeconfig), *args], capture_output=True,
                                  text=True, timeout=60)

        # served within the watch interval (about a second), no restart
        wait_until(lambda: kubectl("get", "ns", "default", "-o", "name").returncode == 0, "east is served", proc)
        # health: checked at once for a new cluster, exported as a metric, recorded for `clusters ls`
        healthy_gauge = 'kubegate_clusters{health="healthy",source="kube_cluster"} 1.0'
        wait_until(lambda: healthy_gauge in get(f"http://127.0.0.1:{metrics_port}/metrics")[1],
                   "the health metric says east is healthy", proc)
        listed = kubegate("clusters", "ls", "-o", "json", "-c", "kubegate.yaml", cwd=tmp_path)
        [row] = json.loads(listed.stdout)["clusters"]
        assert (row["name"], row["origin"], row["health"], row["served"]) == ("east", "kube_cluster", "healthy", True)
        assert row["labels"] == {"env": "prod"}

        removed = kubegate("clusters", "rm", "east", "-c", "kubegate.yaml", cwd=tmp_path)
        assert removed.returncode == 0, removed.stderr

        def gone() -> bool:
            result = kubectl("get", "ns", "default")
            return result.returncode != 0 and "(NotFound)" in result.stderr

        wait_until(gone, "east is no longer served", proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, proc.stderr.read() if proc.stderr else ""

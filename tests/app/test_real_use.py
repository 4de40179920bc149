"""The README's "real use" path, step by step, against a cluster listed in a kubeconfig file:
`kubegate ca init` → `kubegate kubeconfig --user …` → `kubegate start -c` → kubectl through kubegate;
SIGTERM stops it cleanly. kubectl 1.20 too (SPDY-era client, HTTP/2 to the proxy)."""

from __future__ import annotations

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


def _kubegate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "kubegate", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def _ready(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
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


@pytest.mark.e2e
def test_ca_init_kubeconfig_start_and_kubectl(tmp_path, sandbox_cluster, kubectl):
    sandbox_cluster.store.put_object("rbac.authorization.k8s.io", "clusterrolebindings", viewer_binding())
    # The "real" cluster: a kubeconfig with a context named prod (upstream credentials: system:masters).
    upstream = yaml.safe_load(Path(sandbox_cluster.admin_kubeconfig).read_text())
    base = Path(sandbox_cluster.admin_kubeconfig).parent
    for section, key in (("clusters", "cluster"), ("users", "user")):
        for entry in upstream[section]:
            for field in ("certificate-authority", "client-certificate", "client-key"):
                if field in entry[key] and not os.path.isabs(entry[key][field]):
                    entry[key][field] = str(base / entry[key][field])
    upstream["contexts"][0]["name"] = "prod"
    upstream["current-context"] = "prod"
    (tmp_path / "clusters.kubeconfig").write_text(yaml.safe_dump(upstream))
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
kubernetes_service:
  kubeconfig_files: [./clusters.kubeconfig]
""")
    init = _kubegate("ca", "init", "-c", "kubegate.yaml", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    assert (tmp_path / "state" / "ca" / "ca.pem").exists()

    start_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "kubegate", "start", "-c", "kubegate.yaml"], cwd=tmp_path,
                            env=start_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _ready(f"http://127.0.0.1:{metrics_port}/readyz", proc)
        made = _kubegate("kubeconfig", "-c", "kubegate.yaml", "--user", "alice", "--roles", "viewer",
                         "--out", "alice.kubeconfig", cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        kubeconfig = tmp_path / "alice.kubeconfig"
        contexts = [c["name"] for c in yaml.safe_load(kubeconfig.read_text())["contexts"]]
        assert contexts == ["prod"]

        pods = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "get", "pods", "-A"],
                              capture_output=True, text=True, timeout=60)
        assert pods.returncode == 0, pods.stderr
        assert pods.stdout.split()[:2] == ["NAMESPACE", "NAME"]
        secrets = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "get", "secrets", "-A"],
                                 capture_output=True, text=True, timeout=60)
        assert secrets.returncode != 0 and "forbidden" in secrets.stderr.lower()
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert 'kubegate_requests_total{cluster="prod"' in metrics
        assert 'kubegate_workers{state="ready"} 1.0' in metrics
        assert 'kubegate_certificate_expiry_timestamp_seconds{certificate="client_ca"}' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, proc.stderr.read() if proc.stderr else ""
    audit = (tmp_path / "state" / "audit.log").read_text()
    assert '"alice"' in audit and '"prod"' in audit

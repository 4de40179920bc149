"""Dynamic label values reach the CLI: `kubegate start` runs a kube_cluster's `dynamic_labels` commands
and records the values in its state directory; `clusters ls` shows them and `kubegate kubeconfig` gives
a context for a role that matches one (before the proxy ran them, it cannot). Real processes: the CLI
and the proxy are `.venv/bin/kubegate` subprocesses. The cluster's API server is an unreachable
placeholder address (nothing is forwarded; its health check failing is beside the point here)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import yaml

from kubegate.demo import free_port

ROOT = Path(__file__).resolve().parents[2]
KUBEGATE = str(ROOT / ".venv" / "bin" / "kubegate")

UPSTREAM = yaml.safe_dump({
    "apiVersion": "v1", "kind": "Config", "current-context": "c",
    "clusters": [{"name": "c", "cluster": {"server": "https://192.0.2.1:6443"}}],
    "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
})


def kubegate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KUBEGATE, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_dynamic_label_values_are_seen_by_clusters_ls_and_kubeconfig(tmp_path):
    (tmp_path / "clusters").mkdir()
    (tmp_path / "clusters" / "lab.yaml").write_text(yaml.safe_dump({
        "kind": "kube_cluster", "version": "v3", "metadata": {"name": "lab", "labels": {"team": "core"}},
        "spec": {"kubeconfig": base64.b64encode(UPSTREAM.encode()).decode(),
                 "dynamic_labels": {"env": {"command": ["/bin/echo", "dev"], "period": "1h"}}},
    }))
    port, metrics_port = free_port(), free_port()
    (tmp_path / "kubegate.yaml").write_text(yaml.safe_dump({
        "version": "v1", "state_dir": "./state",
        "proxy": {"listen": f"127.0.0.1:{port}", "limits": {"shutdown_grace": "2s"}},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        "auth": {"roles_dir": str(ROOT / "examples" / "roles")},
        "kubernetes_service": {"clusters_dir": "./clusters"},
    }))
    assert kubegate("ca", "init", "-c", "kubegate.yaml", cwd=tmp_path).returncode == 0

    # before any proxy ran the command: the key is known, its value is not
    listed = kubegate("clusters", "ls", "-c", "kubegate.yaml", cwd=tmp_path)
    assert "env=?,team=core" in listed.stdout, listed.stdout
    made = kubegate("kubeconfig", "-c", "kubegate.yaml", "--user", "alice", "--roles", "dev-access",
                    "--out", "-", cwd=tmp_path)
    assert made.returncode == 1 and "no cluster is visible" in made.stderr

    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    proxy = subprocess.Popen([KUBEGATE, "start", "-c", "kubegate.yaml"], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        rows: dict = {}
        while time.monotonic() < deadline:
            assert proxy.poll() is None, "kubegate start exited"
            listed = kubegate("clusters", "ls", "-c", "kubegate.yaml", "-o", "json", cwd=tmp_path)
            rows = {r["name"]: r for r in json.loads(listed.stdout)["clusters"]}
            if rows["lab"]["labels"].get("env") == "dev":
                break
            time.sleep(0.5)
        assert rows["lab"]["labels"] == {"env": "dev", "team": "core"}
        assert rows["lab"]["dynamic_labels"] == ["env"]
        table = kubegate("clusters", "ls", "-c", "kubegate.yaml", cwd=tmp_path).stdout
        assert "env=dev,team=core" in table

        made = kubegate("kubeconfig", "-c", "kubegate.yaml", "--user", "alice", "--roles", "dev-access",
                        "--out", "-", cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        assert [c["name"] for c in yaml.safe_load(made.stdout)["contexts"]] == ["lab"]
    finally:
        proxy.send_signal(signal.SIGTERM)
        assert proxy.wait(60) == 0

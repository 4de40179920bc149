"""`kubegate clusters setup CLUSTER`: the RBAC a cluster needs for kubegate, printed or applied with the
operator's own kubeconfig; `clusters ls` says "impersonation not permitted" until it is there. Real
processes throughout: `kubegate start`, the CLI, kubectl 1.37 (`apply` with the operator's kubeconfig and
requests through kubegate), against the sandbox's real RBAC (sandbox/authz.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import yaml


def wait_for_health(kubegate_cli, cwd, name: str, wanted: str) -> dict:
    deadline = time.monotonic() + 60
    row: dict = {}
    while time.monotonic() < deadline:
        listed = kubegate_cli("clusters", "ls", "-c", "kubegate.yaml", "-o", "json", cwd=cwd)
        row = {r["name"]: r for r in json.loads(listed.stdout)["clusters"]}[name]
        if row["health"] == wanted:
            return row
        time.sleep(0.3)
    raise AssertionError(f"cluster {name} never became {wanted}: {row}")


def test_setup_prints_and_applies_the_rbac_kubegate_needs(
    tmp_path, sandbox_cluster, upstream_kubeconfig, kubegate_yaml, kubegate_cli, start_kubegate, kubectl_new
):
    # kubegate's upstream identity: a plain user the cluster grants nothing (no system:masters)
    weak = sandbox_cluster.client_kubeconfig("kubegate-upstream")
    upstream_kubeconfig(tmp_path / "clusters.kubeconfig", ["kubegate-upstream@lab"], source=weak)
    _, metrics_port = kubegate_yaml(tmp_path, {"kubeconfig_files": [
        {"path": "./clusters.kubeconfig", "labels": {"env": "dev"}}]})
    proxy = start_kubegate(tmp_path, metrics_port)

    row = wait_for_health(kubegate_cli, tmp_path, "lab", "unhealthy")
    assert row["health_detail"].startswith("impersonation not permitted: cannot impersonate users, groups"), row
    table = kubegate_cli("clusters", "ls", "-c", "kubegate.yaml", cwd=tmp_path).stdout
    assert "\nlab: unhealthy: impersonation not permitted: cannot impersonate users, groups" in table
    assert "impersonation not permitted" in kubegate_cli("clusters", "show", "lab", "-c", "kubegate.yaml",
                                                         cwd=tmp_path).stdout

    printed = kubegate_cli("clusters", "setup", "lab", "-c", "kubegate.yaml", "--traits", "kubernetes_groups=dev",
                           cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert "kubegate authenticates as 'kubegate-upstream'" in printed.stdout  # from a SelfSubjectReview
    objects = {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")): o
               for o in yaml.safe_load_all(printed.stdout)}
    impersonator = objects[("ClusterRole", "kubegate-impersonator", None)]
    assert {"apiGroups": [""], "resources": ["users", "groups", "serviceaccounts"], "verbs": ["impersonate"]} \
        in impersonator["rules"]
    assert objects[("ClusterRoleBinding", "kubegate-impersonator", None)]["subjects"] == [
        {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "kubegate-upstream"}]
    dev_binding = objects[("RoleBinding", "kubegate-role-dev-access", "dev")]
    assert {s["name"] for s in dev_binding["subjects"]} == {"dev", "developers"}
    assert ("ClusterRoleBinding", "kubegate-role-viewer", None) in objects
    assert "# role admin: group 'system:masters' is built into Kubernetes: not bound" in printed.stdout

    # alice (dev-access) is refused while the cluster is unhealthy
    made = kubegate_cli("kubeconfig", "-c", "kubegate.yaml", "--user", "alice", "--roles", "dev-access",
                        "--traits", "kubernetes_groups=dev", "--out", "alice.kubeconfig", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    alice = [kubectl_new, "--kubeconfig", "alice.kubeconfig", "get", "pods", "-n", "dev", "-o", "name"]
    refused = subprocess.run(alice, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0

    applied = kubegate_cli("clusters", "setup", "lab", "-c", "kubegate.yaml", "--traits", "kubernetes_groups=dev",
                           "--apply", "--kubeconfig", str(sandbox_cluster.admin_kubeconfig), "--kubectl", kubectl_new,
                           cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr
    assert "clusterrolebinding.rbac.authorization.k8s.io/kubegate-impersonator created" in applied.stdout
    assert "rolebinding.rbac.authorization.k8s.io/kubegate-role-dev-access created" in applied.stdout
    again = kubegate_cli("clusters", "setup", "lab", "-c", "kubegate.yaml", "--traits", "kubernetes_groups=dev",
                         "--apply", "--kubeconfig", str(sandbox_cluster.admin_kubeconfig), "--kubectl", kubectl_new,
                         cwd=tmp_path)
    assert again.returncode == 0 and "created" not in again.stdout, again.stdout + again.stderr  # idempotent

    # a restarted proxy checks at once: healthy, and alice's request passes kubegate and the cluster
    proxy.send_signal(signal.SIGTERM)
    assert proxy.wait(60) == 0
    start_kubegate(tmp_path, metrics_port)
    assert wait_for_health(kubegate_cli, tmp_path, "lab", "healthy")["health_detail"] == ""
    pods = subprocess.run(alice, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert pods.returncode == 0, pods.stderr
    assert {"pod/web-1", "pod/web-2", "pod/db-0"} <= set(pods.stdout.split())

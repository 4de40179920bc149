"""`kubegate kubeconfig --pin`: one certificate per cluster, each pinned to it; a pinned certificate
reaches its cluster without the `/k8s/clusters/<name>` prefix, which kubectl 1.20's `get --raw /api/...`
needs (it drops the server URL's path). Real kubectl 1.20 and 1.37, real `kubegate start`, the sandbox."""

from __future__ import annotations

import base64
import json
import subprocess

import yaml

from certs.identity import from_pem
from kubegate.demo import viewer_binding


def test_pinned_credentials_make_kubectl_1_20_get_raw_work(
    tmp_path, sandbox_cluster, upstream_kubeconfig, kubegate_yaml, kubegate_cli, start_kubegate, kubectl_old,
    kubectl_new,
):
    # the cluster's own RBAC lets the viewer role's group read (as `kubegate clusters setup` would)
    sandbox_cluster.store.put_object("rbac.authorization.k8s.io", "clusterrolebindings", viewer_binding())
    upstream_kubeconfig(tmp_path / "clusters.kubeconfig", ["kubernetes-admin@kubernetes", "lab"])
    _, metrics_port = kubegate_yaml(tmp_path, {"kubeconfig_files": ["./clusters.kubeconfig"]})
    start_kubegate(tmp_path, metrics_port)

    shared = kubegate_cli("kubeconfig", "-c", "kubegate.yaml", "--user", "alice", "--roles", "viewer",
                          "--out", "shared.kubeconfig", cwd=tmp_path)
    assert shared.returncode == 0, shared.stderr
    raw = [kubectl_old, "--kubeconfig", "shared.kubeconfig", "--context", "lab", "get", "--raw",
           "/api/v1/namespaces/dev/pods"]
    refused = subprocess.run(raw, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0  # an unpinned certificate: /api/... names no cluster

    pinned = kubegate_cli("kubeconfig", "-c", "kubegate.yaml", "--user", "alice", "--roles", "viewer",
                          "--pin", "--out", "pinned.kubeconfig", cwd=tmp_path)
    assert pinned.returncode == 0, pinned.stderr
    document = yaml.safe_load((tmp_path / "pinned.kubeconfig").read_text())
    assert [(c["name"], c["context"]["user"]) for c in document["contexts"]] == [
        ("kubernetes", "alice@kubernetes"), ("lab", "alice@lab")]
    for user in document["users"]:
        identity = from_pem(base64.b64decode(user["user"]["client-certificate-data"]))
        assert identity.pinned_cluster == user["name"].split("@")[1]

    for context in ("kubernetes", "lab"):
        got = subprocess.run([kubectl_old, "--kubeconfig", "pinned.kubeconfig", "--context", context, "get",
                              "--raw", "/api/v1/namespaces/dev/pods"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert got.returncode == 0, got.stderr
        assert {p["metadata"]["name"] for p in json.loads(got.stdout)["items"]} >= {"web-1", "web-2"}
    # the pinned kubeconfig works for ordinary commands of both kubectl versions too
    for kubectl in (kubectl_old, kubectl_new):
        pods = subprocess.run([kubectl, "--kubeconfig", "pinned.kubeconfig", "--context", "lab", "get", "pods",
                               "-n", "dev", "-o", "name"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert pods.returncode == 0, pods.stderr
        assert "pod/web-1" in pods.stdout.split()
    # a certificate pinned to "lab" cannot reach "kubernetes" through the prefix either
    document["contexts"][0]["context"]["user"] = "alice@lab"
    (tmp_path / "crossed.kubeconfig").write_text(yaml.safe_dump(document))
    crossed = subprocess.run([kubectl_new, "--kubeconfig", "crossed.kubeconfig", "--context", "kubernetes", "get",
                              "--raw", "/k8s/clusters/kubernetes/api/v1/namespaces"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert crossed.returncode != 0 and "not found" in crossed.stderr.lower(), crossed.stderr

    audit = [json.loads(line) for line in (tmp_path / "state" / "audit.log").read_text().splitlines()]
    raw_events = [e for e in audit if "/api/v1/namespaces/dev/pods" in json.dumps(e)]
    assert raw_events, "the un-prefixed requests were audited"

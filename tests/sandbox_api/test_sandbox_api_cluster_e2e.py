"""The resource side through the real sandbox server (TLS, h2/HTTP/1.1, client certificates, RBAC):
kubectl 1.37 and 1.20 and the kubernetes Python client cannot tell it from a cluster."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from sandbox.testing import running_sandbox

    with running_sandbox(tmp_path_factory.mktemp("sandbox-api-cluster")) as sb:
        yield sb


def run(kubectl: str, kubeconfig: object, cache: Path, *args: str, ok: bool = True,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache), *args],
                          capture_output=True, text=True, timeout=30, input=stdin)
    if ok:
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    out: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.put(line.rstrip("\n"))
        out.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return out


def _wait_line(lines: queue.Queue[str | None], want: str, seen: list[str]) -> str:
    while True:
        line = lines.get(timeout=15)
        assert line is not None, f"stream ended without {want!r}: {seen}"
        seen.append(line)
        if want in line:
            return line


def test_kubectl_reads_writes_and_streams(kubectl: str, cluster, tmp_path: Path) -> None:
    sb = cluster
    ns = "e2e-" + Path(kubectl).name.replace(".", "-")
    kc, cache = sb.admin_kubeconfig, tmp_path / "cache"
    run(kubectl, kc, cache, "create", "namespace", ns)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: p1, namespace: {ns}, labels: {{app: e2e}}}}\n"
        "spec:\n  containers: [{name: main, image: nginx:1.27}]\n---\n"
        f"apiVersion: example.kubegate.dev/v1\nkind: Widget\nmetadata: {{name: w1, namespace: {ns}}}\n"
        "spec: {size: 1}\n")
    assert "pod/p1 created" in run(kubectl, kc, cache, "apply", "-f", str(manifest)).stdout
    ssa = run(kubectl, kc, cache, "apply", "--server-side", "-f", str(manifest)).stdout
    assert "widget.example.kubegate.dev/w1 serverside-applied" in ssa

    table = run(kubectl, kc, cache, "get", "pods", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] and table[1].split()[0] == "p1"
    listed = run(kubectl, kc, cache, "get", "pods", "-A", "-l", "app=e2e", "-o", "json").stdout
    assert [p["metadata"]["name"] for p in json.loads(listed)["items"]] == ["p1"]
    as_yaml = yaml.safe_load(run(kubectl, kc, cache, "get", "wg", "w1", "-n", ns, "-o", "yaml").stdout)
    assert as_yaml["spec"] == {"size": 1}
    described = run(kubectl, kc, cache, "describe", "pod", "p1", "-n", ns).stdout
    assert re.search(r"^Name:\s+p1$", described, re.M) and re.search(r"^Status:\s+Running$", described, re.M)

    watcher = subprocess.Popen([kubectl, "--kubeconfig", str(kc), "--cache-dir", str(cache), "get", "pods", "-n",
                                ns, "-w"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen: list[str] = []
        watch_lines = _lines(watcher)
        _wait_line(watch_lines, "p1", seen)
        run(kubectl, kc, cache, "patch", "pod", "p1", "-n", ns, "--type", "merge", "-p",
            '{"metadata":{"labels":{"changed":"yes"}}}')
        sb.store.put_object("", "pods", dict(sb.store.get_object("", "pods", ns, "p1"),
                                             status={"phase": "Failed", "containerStatuses": []}))
        row = _wait_line(watch_lines, "Failed", seen)
        assert row.split()[:3] == ["p1", "0/1", "Failed"]
    finally:
        watcher.terminate()
        watcher.wait(10)
    run(kubectl, kc, cache, "delete", "namespace", ns)
    assert sb.store.get_object("example.kubegate.dev", "widgets", ns, "w1") is None


def test_logs_follow_through_tls(kubectl: str, cluster, tmp_path: Path) -> None:
    sb = cluster
    proc = subprocess.Popen([kubectl, "--kubeconfig", str(sb.admin_kubeconfig), "--cache-dir", str(tmp_path),
                             "logs", "-f", "db-0", "-n", "dev"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        lines = _lines(proc)
        seen: list[str] = []
        _wait_line(lines, "db-0 ready", seen)
        sb.store.append_log("dev", "db-0", f"line for {Path(kubectl).name}")
        _wait_line(lines, f"line for {Path(kubectl).name}", seen)
    finally:
        proc.terminate()
        proc.wait(10)


def test_forbidden_is_worded_like_the_apiserver(kubectl: str, cluster, tmp_path: Path) -> None:
    kc = cluster.client_kubeconfig("nobody", [])
    denied = run(kubectl, kc, tmp_path, "get", "secrets", "-n", "dev", ok=False)
    assert denied.returncode != 0
    assert ('secrets is forbidden: User "nobody" cannot list resource "secrets" in API group "" in the '
            'namespace "dev"') in denied.stderr


def test_python_client_list_watch_create(cluster) -> None:
    from kubernetes import client, config, watch

    api_client = config.new_client_from_config(str(cluster.admin_kubeconfig))
    v1 = client.CoreV1Api(api_client)
    pods = v1.list_namespaced_pod("prod")
    assert [p.metadata.name for p in pods.items] == ["api-0", "web-1"]
    created = v1.create_namespaced_config_map(
        "prod", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-e2e"), data={"a": "1"}))
    w = watch.Watch()
    seen = []
    for event in w.stream(v1.list_namespaced_config_map, "prod", resource_version=pods.metadata.resource_version,
                          timeout_seconds=10):
        seen.append((event["type"], event["object"].metadata.name))
        if event["object"].metadata.name == "py-e2e":
            w.stop()
    assert ("ADDED", "py-e2e") in seen and created.metadata.resource_version
    v1.delete_namespaced_config_map("py-e2e", "prod")


def test_malformed_review_is_400(cluster) -> None:
    """The real ReviewService behind the Api: a review it cannot read is the client's fault."""
    import asyncio

    from sandbox.types import ApiRequest, UserInfo

    body = b'{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","spec":"nope"}'
    req = ApiRequest("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {},
                     {"content-type": "application/json"}, body, UserInfo("someone", ("system:authenticated",)))
    resp = asyncio.run_coroutine_threadsafe(cluster.server.api.handle(req), cluster.loop).result(10)
    assert resp.status == 400 and json.loads(resp.body)["reason"] == "BadRequest"

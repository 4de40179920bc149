"""Real clients (kubectl 1.37 and 1.20, the kubernetes Python client) against the API layer, served
over plain HTTP by the test harness in conftest.py (no TLS or authentication involved here)."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e


class Kubectl:
    def __init__(self, binary: str, kubeconfig: str, cache: Path) -> None:
        self.base = [binary, "--kubeconfig", kubeconfig, "--cache-dir", str(cache)]

    def __call__(self, *args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.base + list(args), input=stdin, capture_output=True, text=True, timeout=30)
        if ok:
            assert proc.returncode == 0, f"kubectl {' '.join(args)} failed: {proc.stderr}"
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.base + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def k(kubectl: str, plain_sandbox, tmp_path: Path) -> Kubectl:
    return Kubectl(kubectl, plain_sandbox.kubeconfig(tmp_path), tmp_path / "cache")


class Lines:
    """Lines of a running process, read on a thread so waits can time out."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 15) -> str:
        while True:
            line = self.queue.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"process ended before a matching line; saw {self.seen}")
            self.seen.append(line)
            if predicate(line):
                return line


@pytest.fixture
def running() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)


def test_get_in_every_output_form(k: Kubectl) -> None:
    table = k("get", "pods", "-n", "dev").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert [row.split()[:3] for row in table[1:]] == [["db-0", "1/1", "Running"], ["web-1", "1/1", "Running"],
                                                      ["web-2", "1/1", "Running"]]
    everywhere = k("get", "pods", "-A").stdout.splitlines()
    assert everywhere[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert {row.split()[0] for row in everywhere[1:]} == {"default", "dev", "prod", "kube-system"}
    labelled = k("get", "pods", "-A", "-l", "app=web", "-o", "name").stdout.split()
    assert labelled == ["pod/web-1", "pod/web-2", "pod/web-1"]
    as_json = json.loads(k("get", "pods", "-n", "dev", "-l", "tier in (backend)", "-o", "json").stdout)
    assert [p["metadata"]["name"] for p in as_json["items"]] == ["db-0"]
    as_yaml = yaml.safe_load(k("get", "pod", "web-1", "-n", "dev", "-o", "yaml").stdout)
    assert as_yaml["kind"] == "Pod" and as_yaml["status"]["phase"] == "Running"
    widgets = k("get", "wg", "-n", "prod").stdout.splitlines()
    assert widgets[0].split() == ["NAME", "AGE"] and widgets[1].split()[0] == "gear"
    missing = k("get", "pod", "ghost", "-n", "dev", ok=False)
    assert missing.returncode == 1 and 'pods "ghost" not found' in missing.stderr


def test_describe_pod_shows_events(k: Kubectl) -> None:
    out = k("describe", "pod", "web-1", "-n", "dev").stdout
    assert "Name:" in out and "web-1" in out and "Status:" in out and "Running" in out
    assert "Successfully assigned dev/web-1 to sandbox-node-1" in out


MANIFEST = """
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: dev}
data: {mode: MODE}
---
apiVersion: v1
kind: Pod
metadata: {name: applied, namespace: dev, labels: {app: applied}}
spec:
  containers:
  - {name: main, image: nginx:1.27}
  - {name: side, image: IMAGE}
---
apiVersion: example.kubegate.dev/v1
kind: Widget
metadata: {name: cog, namespace: dev}
spec: {size: SIZE}
"""


def _manifest(tmp_path: Path, mode: str, image: str, size: int) -> str:
    path = tmp_path / f"manifest-{mode}.yaml"
    path.write_text(MANIFEST.replace("MODE", mode).replace("IMAGE", image).replace("SIZE", str(size)))
    return str(path)


@pytest.mark.parametrize("server_side", [False, True], ids=["client-side", "server-side"])
def test_apply_create_then_configure(k: Kubectl, tmp_path: Path, server_side: bool) -> None:
    extra = ["--server-side"] if server_side else []
    first = k("apply", *extra, "-f", _manifest(tmp_path, "one", "busybox:1.36", 1)).stdout
    verb = "serverside-applied" if server_side else "created"
    assert f"configmap/settings {verb}" in first and f"widget.example.kubegate.dev/cog {verb}" in first
    second = k("apply", *extra, "-f", _manifest(tmp_path, "two", "busybox:1.37", 2)).stdout
    assert ("pod/applied serverside-applied" if server_side else "pod/applied configured") in second
    pod = json.loads(k("get", "pod", "applied", "-n", "dev", "-o", "json").stdout)
    assert [c["image"] for c in pod["spec"]["containers"]] == ["nginx:1.27", "busybox:1.37"]
    assert json.loads(k("get", "cm", "settings", "-n", "dev", "-o", "json").stdout)["data"] == {"mode": "two"}
    assert json.loads(k("get", "widgets", "cog", "-n", "dev", "-o", "json").stdout)["spec"] == {"size": 2}
    deleted = k("delete", "-f", _manifest(tmp_path, "two", "busybox:1.37", 2)).stdout
    assert 'pod "applied" deleted' in deleted
    assert k("get", "pods", "-n", "dev", "-o", "name").stdout.split() == ["pod/db-0", "pod/web-1", "pod/web-2"]


def test_patch_types_and_delete(k: Kubectl) -> None:
    assert "patched" in k("patch", "pod", "web-1", "-n", "dev", "-p",
                          '{"spec":{"containers":[{"name":"main","image":"nginx:9"}]}}').stdout
    k("patch", "pod", "web-1", "-n", "dev", "--type", "merge", "-p", '{"metadata":{"labels":{"m":"1"}}}')
    k("patch", "pod", "web-1", "-n", "dev", "--type", "json", "-p",
      '[{"op":"add","path":"/metadata/labels/j","value":"2"}]')
    pod = json.loads(k("get", "pod", "web-1", "-n", "dev", "-o", "json").stdout)
    assert pod["spec"]["containers"][0]["image"] == "nginx:9"
    assert pod["metadata"]["labels"]["m"] == "1" and pod["metadata"]["labels"]["j"] == "2"
    bad = k("patch", "pod", "web-1", "-n", "dev", "--type", "json", "-p", '[{"op":"remove","path":"/nope"}]', ok=False)
    assert bad.returncode != 0
    refused = k("patch", "wg", "gear", "-n", "dev", "-p", '{"spec":{"size":9}}', ok=False)
    assert "unknown format" in refused.stderr or "not supported" in refused.stderr
    assert 'pod "web-2" deleted' in k("delete", "pod", "web-2", "-n", "dev").stdout
    assert k("get", "pods", "-n", "dev", "-o", "name").stdout.split() == ["pod/db-0", "pod/web-1"]


def test_watch_sees_a_change_made_by_another_client(k: Kubectl, plain_sandbox, running: list) -> None:
    proc = k.popen("get", "pods", "-n", "dev", "-w")
    running.append(proc)
    lines = Lines(proc)
    lines.wait_for(lambda line: line.startswith("web-2"))
    plain_sandbox.store.put_object("", "pods", dict(
        plain_sandbox.store.get_object("", "pods", "dev", "db-0"),
        status={"phase": "Failed", "containerStatuses": []}))
    changed = lines.wait_for(lambda line: line.startswith("db-0") and "Failed" in line)
    assert changed.split()[:3] == ["db-0", "0/1", "Failed"]


def test_logs_follow_streams_new_lines(k: Kubectl, plain_sandbox, running: list) -> None:
    proc = k.popen("logs", "-f", "web-1", "-n", "dev")
    running.append(proc)
    lines = Lines(proc)
    lines.wait_for(lambda line: line == "web-1 ready")
    plain_sandbox.store.append_log("dev", "web-1", "attached output")
    lines.wait_for(lambda line: line == "attached output")
    lines.wait_for(lambda line: "heartbeat" in line)
    proc.terminate()
    assert proc.wait(10) != 0 or True


def test_python_client_list_watch_create(plain_sandbox, tmp_path: Path) -> None:
    from kubernetes import client, config, watch

    api_client = config.new_client_from_config(plain_sandbox.kubeconfig(tmp_path))
    v1 = client.CoreV1Api(api_client)
    pods = v1.list_namespaced_pod("dev", label_selector="app=web")
    assert [p.metadata.name for p in pods.items] == ["web-1", "web-2"]
    rv = pods.metadata.resource_version
    created = v1.create_namespaced_config_map(
        "dev", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="from-python"), data={"k": "v"}))
    assert created.metadata.uid and created.data == {"k": "v"}
    w = watch.Watch()
    events = []
    for event in w.stream(v1.list_namespaced_config_map, "dev", resource_version=rv, timeout_seconds=10):
        events.append((event["type"], event["object"].metadata.name))
        w.stop()
    assert events == [("ADDED", "from-python")]
    with pytest.raises(client.ApiException) as info:
        v1.create_namespaced_config_map("dev", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="from-python")))
    assert info.value.status == 409 and json.loads(info.value.body)["reason"] == "AlreadyExists"
    widgets = client.CustomObjectsApi(api_client).list_namespaced_custom_object(
        "example.kubegate.dev", "v1", "dev", "widgets")
    assert [w["metadata"]["name"] for w in widgets["items"]] == ["gear"]


def test_imperative_commands(k: Kubectl) -> None:
    """kubectl create (typed clients send protobuf in 1.37), scale, set image, label, expose, run."""
    assert "namespace/scratch created" in k("create", "namespace", "scratch").stdout
    k("create", "configmap", "cfg", "-n", "scratch", "--from-literal=a=b")
    k("create", "secret", "generic", "sec", "-n", "scratch", "--from-literal=p=s3cret")
    k("create", "serviceaccount", "robot", "-n", "scratch")
    k("create", "deployment", "api", "-n", "scratch", "--image=nginx:1.27", "--replicas=2", "--port=80")
    k("create", "role", "reader", "-n", "scratch", "--verb=get", "--resource=pods")
    k("create", "rolebinding", "reader", "-n", "scratch", "--role=reader", "--user=bob")
    assert "deployment.apps/api scaled" in k("scale", "deployment", "api", "-n", "scratch", "--replicas=5").stdout
    k("set", "image", "deployment/api", "-n", "scratch", "nginx=nginx:1.28")
    k("label", "deployment", "api", "-n", "scratch", "tier=web")
    k("expose", "deployment", "api", "-n", "scratch", "--port=80")
    k("run", "one-off", "-n", "scratch", "--image=busybox")
    dep = json.loads(k("get", "deploy", "api", "-n", "scratch", "-o", "json").stdout)
    assert dep["spec"]["replicas"] == 5 and dep["metadata"]["labels"]["tier"] == "web"
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"
    secret = json.loads(k("get", "secret", "sec", "-n", "scratch", "-o", "json").stdout)
    assert secret["data"] == {"p": "czNjcmV0"} and secret["type"] == "Opaque"
    binding = json.loads(k("get", "rolebinding", "reader", "-n", "scratch", "-o", "json").stdout)
    assert binding["roleRef"]["name"] == "reader" and binding["subjects"][0]["name"] == "bob"
    names = k("get", "all", "-n", "scratch", "-o", "name").stdout.split()
    assert {"pod/one-off", "service/api", "deployment.apps/api"} <= set(names)
    pods = k("get", "pods", "-n", "scratch", "-l", "app=api", "-o", "json").stdout
    images = [p["spec"]["containers"][0]["image"] for p in json.loads(pods)["items"]]
    assert images == ["nginx:1.28"] * 5  # the deployment controller rolled the pods to the new template
    assert "successfully rolled out" in k("rollout", "status", "deployment/api", "-n", "scratch").stdout
    assert k("auth", "can-i", "list", "pods").stdout.strip() == "yes"
    k("delete", "namespace", "scratch")
    assert k("get", "cm", "-n", "scratch", "-o", "name").stdout.strip() == ""


def test_server_side_apply_conflict_needs_force(k: Kubectl, tmp_path: Path) -> None:
    k("create", "configmap", "owned", "-n", "dev", "--from-literal=a=b")
    manifest = tmp_path / "owned.yaml"
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: owned, namespace: dev}\ndata: {a: c}\n")
    refused = k("apply", "--server-side", "-f", str(manifest), ok=False)
    assert refused.returncode != 0
    assert 'Apply failed with 1 conflict: conflict with "kubectl-create" using v1: .data.a' in refused.stderr
    k("apply", "--server-side", "--force-conflicts", "-f", str(manifest))
    assert json.loads(k("get", "cm", "owned", "-n", "dev", "-o", "json").stdout)["data"] == {"a": "c"}


def test_server_dry_run_and_diff(k: Kubectl, tmp_path: Path) -> None:
    """kubectl 1.20 finds dryRun support in /openapi/v2 (protobuf), 1.37 in /openapi/v3."""
    manifest = tmp_path / "cm.yaml"
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-config, namespace: dev}\n"
                        "data: {LOG_LEVEL: trace, FEATURE_X: 'on'}\n")
    assert "configured (server dry run)" in k("apply", "--dry-run=server", "-f", str(manifest)).stdout
    diff = k("diff", "-f", str(manifest), ok=False)
    assert diff.returncode == 1, diff.stderr  # 1: differences found
    assert "+  LOG_LEVEL: trace" in diff.stdout and "-  LOG_LEVEL: debug" in diff.stdout
    live = json.loads(k("get", "cm", "app-config", "-n", "dev", "-o", "json").stdout)
    assert live["data"]["LOG_LEVEL"] == "debug"

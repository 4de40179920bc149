"""The sandbox behaves like a cluster where the demo's users poke at it with kubectl: a Deployment replaces
the pods deleted under it, every pod has its own IP, `exec -it` gets a real terminal (a shell with job
control), and a CustomResourceDefinition, once created, serves its kind (discovery and CRUD) until deleted.
All driven through the real kubectl binaries against a running sandbox."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: crontabs.stable.example.com}
spec:
  group: stable.example.com
  scope: Namespaced
  names: {plural: crontabs, singular: crontab, kind: CronTab, shortNames: [ct]}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {type: object, properties: {cronSpec: {type: string}, image: {type: string}}}
"""
CRONTAB = """
apiVersion: stable.example.com/v1
kind: CronTab
metadata: {name: nightly, namespace: default}
spec: {cronSpec: "0 3 * * *", image: busybox}
"""


def _kubectl(kubectl: str, sandbox, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([kubectl, "--kubeconfig", str(sandbox.admin_kubeconfig), *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def _pods(kubectl: str, sandbox, *selector: str) -> list[dict]:
    return json.loads(_ok(_kubectl(kubectl, sandbox, "get", "pods", "-o", "json", *selector)))["items"]


def test_a_deployment_replaces_the_pods_deleted_under_it(sandbox_cluster, kubectl):
    _ok(_kubectl(kubectl, sandbox_cluster, "create", "deployment", "web", "--image=nginx", "--replicas=3",
                 "-n", "default"))
    before = {p["metadata"]["name"] for p in _pods(kubectl, sandbox_cluster, "-n", "default", "-l", "app=web")}
    assert len(before) == 3
    _ok(_kubectl(kubectl, sandbox_cluster, "delete", "pods", "-n", "default", "-l", "app=web", "--wait=false"))
    after = {p["metadata"]["name"] for p in _pods(kubectl, sandbox_cluster, "-n", "default", "-l", "app=web")}
    assert len(after) == 3 and not after & before  # three new pods, as the ReplicaSet controller makes
    deployment = json.loads(_ok(_kubectl(kubectl, sandbox_cluster, "get", "deployment", "web", "-n", "default",
                                         "-o", "json")))
    assert deployment["status"]["readyReplicas"] == 3
    one = sorted(after)[0]
    _ok(_kubectl(kubectl, sandbox_cluster, "delete", "pod", one, "-n", "default", "--wait=false"))
    names = {p["metadata"]["name"] for p in _pods(kubectl, sandbox_cluster, "-n", "default", "-l", "app=web")}
    assert len(names) == 3 and one not in names


def test_every_pod_gets_its_own_ip(sandbox_cluster, kubectl_new):
    _ok(_kubectl(kubectl_new, sandbox_cluster, "create", "deployment", "many", "--image=nginx", "--replicas=40",
                 "-n", "default"))
    _ok(_kubectl(kubectl_new, sandbox_cluster, "run", "single", "--image=busybox", "-n", "default"))
    ips = [p["status"]["podIP"] for p in _pods(kubectl_new, sandbox_cluster, "-A")]
    assert len(ips) >= 48 and len(set(ips)) == len(ips), sorted(ips)


def _exec_in_a_terminal(argv: list[str], typed: list[bytes], timeout: float = 30.0) -> bytes:
    """Run kubectl under a pty (as a person at a terminal would), type each line once the previous
    output settled, and return everything the terminal showed."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: kubectl, with the pty as its terminal
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    out = b""
    deadline = time.monotonic() + timeout

    def read_until_quiet(quiet: float = 0.8) -> None:
        nonlocal out
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < quiet:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    return
                if not chunk:
                    return
                out += chunk
                last = time.monotonic()

    try:
        read_until_quiet(2.0)
        for line in typed:
            os.write(fd, line)
            read_until_quiet()
    finally:
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            reaped, _ = os.waitpid(pid, os.WNOHANG)
            if reaped == 0:  # kubectl still running: end it
                os.kill(pid, 9)
                os.waitpid(pid, 0)
        os.close(fd)
    return out


def test_exec_it_gets_a_real_terminal_in_the_pods_own_directory(sandbox_cluster, kubectl):
    shown = _exec_in_a_terminal(
        [kubectl, "--kubeconfig", str(sandbox_cluster.admin_kubeconfig), "exec", "-it", "-n", "default", "hello",
         "--", "sh"],
        [b"tty; pwd; echo done-$((40+2))\r", b"exit\r"])
    text = shown.decode(errors="replace")
    assert "done-42" in text, text
    assert "can't access tty" not in text and "job control turned off" not in text
    assert "/dev/pts/" in text
    assert str(Path(sandbox_cluster.state_dir) / "pods" / "default" / "hello") in text


@pytest.mark.parametrize("version", ["1.37", "1.20"])
def test_a_created_crd_serves_its_kind_until_deleted(sandbox_cluster, version, kubectl_new, kubectl_old):
    kubectl = kubectl_new if version == "1.37" else kubectl_old
    _ok(_kubectl(kubectl, sandbox_cluster, "apply", "-f", "-", stdin=CRD))
    assert "created" in _ok(_kubectl(kubectl, sandbox_cluster, "apply", "-f", "-", stdin=CRONTAB))
    listed = _ok(_kubectl(kubectl, sandbox_cluster, "get", "crontabs", "-n", "default"))
    assert listed.split()[:2] == ["NAME", "AGE"] and "nightly" in listed
    got = json.loads(_ok(_kubectl(kubectl, sandbox_cluster, "get", "ct", "nightly", "-n", "default", "-o", "json")))
    assert got["kind"] == "CronTab" and got["spec"]["cronSpec"] == "0 3 * * *"
    resources = _ok(_kubectl(kubectl, sandbox_cluster, "api-resources", "--api-group", "stable.example.com"))
    assert "crontabs" in resources and "CronTab" in resources
    _ok(_kubectl(kubectl, sandbox_cluster, "patch", "crontab", "nightly", "-n", "default", "--type", "merge",
                 "-p", '{"spec":{"image":"alpine"}}'))
    assert "alpine" in _ok(_kubectl(kubectl, sandbox_cluster, "get", "crontab", "nightly", "-n", "default",
                                    "-o", "jsonpath={.spec.image}"))
    crd = json.loads(_ok(_kubectl(kubectl, sandbox_cluster, "get", "crd", "crontabs.stable.example.com",
                                  "-o", "json")))
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True"
    _ok(_kubectl(kubectl, sandbox_cluster, "delete", "crd", "crontabs.stable.example.com"))
    gone = _kubectl(kubectl, sandbox_cluster, "get", "crontabs", "-n", "default")
    assert gone.returncode != 0 and "crontabs" in gone.stderr

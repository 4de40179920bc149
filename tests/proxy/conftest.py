"""Fixtures for the proxy tests: one sandbox cluster and one kubegate proxy in front of it per test
session (per xdist worker), plus helpers to run kubectl through the proxy."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ADMIN_ROLE = """
kind: role
version: v8
metadata: {name: admin}
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources: [{kind: '*', api_group: '*', namespace: '*', name: '*', verbs: ['*']}]
    kubernetes_groups: ['system:masters']
"""

DEV_ROLE = """
kind: role
version: v8
metadata: {name: dev}
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources:
      - {kind: pods, api_group: '', namespace: dev, name: '*', verbs: [get, list, watch]}
    kubernetes_groups: ['system:masters']
"""

WEB_ROLE = """
kind: role
version: v8
metadata: {name: web}
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources:
      - {kind: pods, api_group: '', namespace: '*', name: 'web-*', verbs: [get, list, watch]}
    kubernetes_groups: ['system:masters']
"""


def write_roles(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "admin.yaml").write_text(ADMIN_ROLE)
    (directory / "dev.yaml").write_text(DEV_ROLE)
    (directory / "web.yaml").write_text(WEB_ROLE)
    return directory


@pytest.fixture(scope="session")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """(sandbox, proxy) for the session: the proxy serves the sandbox as cluster ``sandbox``."""
    from proxy.testing import cluster_for_sandbox, running_proxy
    from rbac import RoleWatcher
    from sandbox.testing import running_sandbox

    base = tmp_path_factory.mktemp("gate")
    roles = RoleWatcher(str(write_roles(base / "roles")), time.time)
    with running_sandbox(base / "sandbox") as sb:
        with running_proxy(base / "proxy", clusters=[cluster_for_sandbox(sb)], roles=roles) as px:
            yield sb, px


@pytest.fixture(scope="session")
def sandbox(gate):
    return gate[0]


@pytest.fixture(scope="session")
def px(gate):
    return gate[1]


@pytest.fixture(scope="session")
def admin_kubeconfig(px) -> Path:
    return px.kubeconfig("alice", ["admin"], ["sandbox"])


@pytest.fixture(params=["h2", "http1"], scope="session")
def wire(request: pytest.FixtureRequest) -> str:
    """The client-side protocol: kubectl's default (h2 by ALPN) or HTTP/1.1 (DISABLE_HTTP2=1: client-go
    configures HTTP/2 itself, so GODEBUG=http2client=0 does not turn it off)."""
    return request.param


def kubectl_env(wire: str) -> dict[str, str]:
    env = dict(os.environ)
    if wire == "http1":
        env["DISABLE_HTTP2"] = "1"
    return env


def run_kubectl(kubectl: str, kubeconfig: Path, *args: str, wire: str = "h2", input: bytes | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [kubectl, "--kubeconfig", str(kubeconfig), *args],
        input=input, capture_output=True, timeout=timeout, env=kubectl_env(wire),
    )


@pytest.fixture
def k(kubectl: str, admin_kubeconfig: Path, wire: str):
    """Run kubectl (each version, each wire protocol) through kubegate as an admin."""

    def run(*args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return run_kubectl(kubectl, admin_kubeconfig, *args, wire=wire, input=input, timeout=timeout)

    return run


@pytest.fixture
def popen_kubectl(kubectl: str, admin_kubeconfig: Path, wire: str):
    """Start a long-running kubectl through kubegate; killed at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [kubectl, "--kubeconfig", str(admin_kubeconfig), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=kubectl_env(wire),
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def k_as(kubectl: str, px, wire: str):
    """``k_as(user, roles)`` → a kubectl runner with a fresh certificate for that identity."""

    def make(user: str, roles: list[str]):
        kubeconfig = px.kubeconfig(user, roles, ["sandbox"])

        def run(*args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
            return run_kubectl(kubectl, kubeconfig, *args, wire=wire, input=input, timeout=timeout)

        return run

    return make

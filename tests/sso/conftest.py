"""A real kubegate server (``kubegate start`` in its own process, the same wiring as production) in front
of a sandbox cluster, plus a way to run the ``kubegate`` CLI against it with a private ``KUBEGATE_HOME``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

ROLES = {
    "admin": """
kind: role
version: v8
metadata: {name: admin}
spec:
  options: {max_session_ttl: 8h}
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources: [{kind: '*', api_group: '*', namespace: '*', name: '*', verbs: ['*']}]
    kubernetes_groups: ['system:masters']
""",
    "short": """
kind: role
version: v8
metadata: {name: short}
spec:
  options: {max_session_ttl: 30m}
  allow:
    kubernetes_labels: {env: dev}
    kubernetes_resources: [{kind: pods, api_group: '', namespace: '*', name: '*', verbs: [get, list]}]
    kubernetes_groups: ['{{internal.kubernetes_groups}}']
""",
}


def cluster_kubeconfig(sandbox, path: Path, name: str, labels: dict[str, str]) -> Path:
    """The sandbox's admin kubeconfig as a cluster source: one context ``name`` with ``labels``."""
    upstream = yaml.safe_load(Path(sandbox.admin_kubeconfig).read_text())
    base = Path(sandbox.admin_kubeconfig).parent
    for section, key in (("clusters", "cluster"), ("users", "user")):
        for entry in upstream[section]:
            for field in ("certificate-authority", "client-certificate", "client-key"):
                if field in entry[key] and not os.path.isabs(entry[key][field]):
                    entry[key][field] = str(base / entry[key][field])
    context = upstream["contexts"][0]
    context["name"] = name
    context["context"]["extensions"] = [{"name": "kubegate.dev/labels", "extension": labels}]
    upstream["current-context"] = name
    path.write_text(yaml.safe_dump(upstream))
    return path


@dataclass
class Gate:
    directory: Path
    port: int
    metrics_port: int
    home: Path

    @property
    def proxy(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def state(self) -> Path:
        return self.directory / "state"

    def env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "KUBEGATE_HOME": str(self.home), **extra}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return env

    def kubegate(self, *args: str, timeout: float = 90, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kubegate", *args], cwd=self.directory, env=self.env(**extra),
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def issued(self) -> list:
        from certs.store import FileAuthStore

        return FileAuthStore.in_state_dir(self.state).issued()

    @property
    def pin(self) -> str:
        from certs.ca import load_certificate_file
        from certs.issuance import ca_pin

        return ca_pin(load_certificate_file(self.state / "ca" / "ca.pem"))

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()


@contextmanager
def running_gate(directory: Path, sandbox, auth_extra: str = "", workers: int = 1) -> Iterator[Gate]:
    """``kubegate start`` with clusters ``sandbox`` (env=dev) and ``prod`` (env=prod), both the sandbox;
    with ``workers`` > 1 the steps of one sign-in may land on different worker processes."""
    from kubegate.demo import free_port
    from kubegate.listeners import held_by

    directory.mkdir(parents=True, exist_ok=True)
    roles = directory / "roles"
    roles.mkdir(exist_ok=True)
    for name, text in ROLES.items():
        (roles / f"{name}.yaml").write_text(text)
    cluster_kubeconfig(sandbox, directory / "dev.kubeconfig", "sandbox", {"env": "dev"})
    cluster_kubeconfig(sandbox, directory / "prod.kubeconfig", "prod", {"env": "prod"})
    port, metrics_port = free_port(), free_port()
    (directory / "kubegate.yaml").write_text(f"""
version: v1
state_dir: ./state
proxy:
  listen: 127.0.0.1:{port}
  public_addr: 127.0.0.1:{port}
  workers: {workers}
  limits: {{shutdown_grace: 2s}}
metrics: {{listen: 127.0.0.1:{metrics_port}}}
auth:
  roles_dir: ./roles
{auth_extra}
kubernetes_service:
  kubeconfig_files: [./dev.kubeconfig, ./prod.kubeconfig]
""")
    gate = Gate(directory, port, metrics_port, directory / "home")
    init = gate.kubegate("ca", "init", "-c", "kubegate.yaml")
    assert init.returncode == 0, init.stderr
    log = open(directory / "kubegate.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "kubegate", "start", "-c", "kubegate.yaml"], cwd=directory,
                            env=gate.env(), stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (directory / "kubegate.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=2) as response:
                    if response.status == 200 and held_by(proc.pid, "127.0.0.1", metrics_port, port):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "kubegate did not become ready"
            time.sleep(0.05)
        yield gate
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def module_sandbox(tmp_path_factory: pytest.TempPathFactory):
    from sandbox.testing import running_sandbox

    with running_sandbox(tmp_path_factory.mktemp("sso-sandbox")) as sb:
        yield sb


def status_of(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"


def parse_json(text: str) -> object:
    return json.loads(text)

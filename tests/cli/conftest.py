"""Fixtures for tests that drive the real CLI against the sandbox: an upstream kubeconfig with context
names of one's choosing, a kubegate.yaml on free ports, and `kubegate start` as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import yaml

from kubegate.demo import free_port
from kubegate.listeners import held_by

ROOT = Path(__file__).resolve().parents[2]
KUBEGATE = str(ROOT / ".venv" / "bin" / "kubegate")


def run_kubegate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``.venv/bin/kubegate ARGS`` in ``cwd`` (a real process)."""
    return subprocess.run([KUBEGATE, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def absolute_kubeconfig(source: Path) -> dict:
    """``source`` (a sandbox kubeconfig) with its file references made absolute."""
    doc = yaml.safe_load(source.read_text())
    for section, key in (("clusters", "cluster"), ("users", "user")):
        for entry in doc[section]:
            for field in ("certificate-authority", "client-certificate", "client-key"):
                if field in entry[key] and not os.path.isabs(entry[key][field]):
                    entry[key][field] = str(source.parent / entry[key][field])
    return doc


@pytest.fixture
def upstream_kubeconfig(sandbox_cluster) -> Callable[..., Path]:
    """``write(path, contexts, source=None)``: a kubeconfig whose contexts (named as given, as real tools
    name them) all reach the sandbox with the credentials of ``source`` (default: the sandbox admin,
    system:masters)."""

    def write(path: Path, contexts: Sequence[str], source: Path | None = None) -> Path:
        doc = absolute_kubeconfig(Path(source or sandbox_cluster.admin_kubeconfig))
        [cluster], [user] = doc["clusters"], doc["users"]
        doc["contexts"] = [{"name": name, "context": {"cluster": cluster["name"], "user": user["name"]}}
                           for name in contexts]
        doc["current-context"] = contexts[0]
        path.write_text(yaml.safe_dump(doc))
        return path

    return write


def write_kubegate_yaml(directory: Path, kubernetes_service: dict) -> tuple[int, int]:
    """``directory/kubegate.yaml`` on free loopback ports with the example roles; returns the ports."""
    port, metrics_port = free_port(), free_port()
    (directory / "kubegate.yaml").write_text(yaml.safe_dump({
        "version": "v1", "state_dir": "./state",
        "proxy": {"listen": f"127.0.0.1:{port}", "public_addr": f"127.0.0.1:{port}",
                  "limits": {"shutdown_grace": "2s"}},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        "auth": {"roles_dir": str(ROOT / "examples" / "roles")},
        "kubernetes_service": kubernetes_service,
    }))
    return port, metrics_port


@pytest.fixture
def start_kubegate() -> Iterator[Callable[[Path, int], subprocess.Popen]]:
    """``start(cwd, metrics_port)``: ``kubegate ca init`` (once) then ``kubegate start -c kubegate.yaml`` in
    ``cwd``, returned once ``/readyz`` answers 200; stopped with SIGTERM (and checked to exit 0) after the
    test."""
    procs: list[subprocess.Popen] = []

    def start(cwd: Path, metrics_port: int) -> subprocess.Popen:
        if not (cwd / "state" / "ca" / "ca.pem").exists():
            init = run_kubegate("ca", "init", "-c", "kubegate.yaml", cwd=cwd)
            assert init.returncode == 0, init.stderr
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        with open(cwd / "kubegate.stderr", "wb") as log:  # a file: a pipe nobody reads could fill up
            proc = subprocess.Popen([KUBEGATE, "start", "-c", "kubegate.yaml"], cwd=cwd, env=env,
                                    stdout=subprocess.DEVNULL, stderr=log)
        procs.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (cwd / "kubegate.stderr").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=2) as response:
                    if response.status == 200 and held_by(proc.pid, "127.0.0.1", metrics_port):
                        return proc
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("kubegate did not become ready")

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        assert proc.wait(60) == 0


@pytest.fixture
def kubegate_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``kubegate_cli(*args, cwd=DIR)``: run ``.venv/bin/kubegate``."""
    return run_kubegate


@pytest.fixture
def kubegate_yaml() -> Callable[[Path, dict], tuple[int, int]]:
    """``kubegate_yaml(directory, kubernetes_service)`` → (proxy port, metrics port)."""
    return write_kubegate_yaml

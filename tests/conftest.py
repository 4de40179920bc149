"""Shared fixtures: paths to the real kubectl binaries installed by scripts/install-tools.sh. Before
anything else, the compiled codec is rebuilt if its sources changed (scripts/build_compiled.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

if not os.environ.get("PYTEST_XDIST_WORKER"):  # once per run, before any test imports the codec
    # The suite runs against the compiled codec as built from the sources as they are now
    # (tests/protocol_http/test_compiled_codec.py fails if it is not used).
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_compiled.py")], check=False)

TOOLS_BIN = ROOT / ".tools" / "bin"


def _kubectl(version: str) -> str:
    path = TOOLS_BIN / f"kubectl-{version}"
    if not path.exists():
        pytest.fail(f"{path} missing: run scripts/setup.sh (it installs kubectl {version})")
    return str(path)


@pytest.fixture(scope="session")
def kubectl_new() -> str:
    """kubectl 1.37 (WebSocket-first for exec/attach/port-forward)."""
    return _kubectl("1.37")


@pytest.fixture(scope="session")
def kubectl_old() -> str:
    """kubectl 1.20 (SPDY only)."""
    return _kubectl("1.20")


@pytest.fixture(params=["1.37", "1.20"], scope="session")
def kubectl(request: pytest.FixtureRequest) -> str:
    """Each kubectl version in turn."""
    return _kubectl(request.param)


@pytest.fixture(autouse=True)
def _no_user_kubeconfig(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Tests never read the developer's ~/.kube/config (kubectl gets an explicit --kubeconfig), and each
    test has its own HOME, so kubectl's discovery cache (~/.kube/cache) never carries one test's answers
    into another."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture
def sandbox_cluster(tmp_path: Path):
    """A running sandbox cluster (real Api/Store/streams, TLS on a random loopback port), stopped after
    the test. See sandbox.testing.RunningSandbox: .url .port .ca_pem_path .admin_kubeconfig .store
    .client_kubeconfig(user, groups) .issue_client_cert(user, groups) .token_kubeconfig(user, groups)."""
    from sandbox.testing import running_sandbox

    with running_sandbox(tmp_path / "sandbox-cluster") as sb:
        yield sb


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto's AWS server (``ThreadedMotoServer``, real HTTP on loopback) for one test module: its URL."""
    from moto.server import ThreadedMotoServer

    from kubegate.demo import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()

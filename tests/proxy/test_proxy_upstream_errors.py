"""Upstream failures become Kubernetes Status answers naming the cluster: unreachable 503, TLS failure
502, no answer in time 504 — each with a request id in a header."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time

import pytest

from discovery.model import Cluster

pytestmark = pytest.mark.e2e

ROLE = (
    "kind: role\nversion: v8\nmetadata: {name: admin}\nspec:\n  allow:\n"
    "    kubernetes_labels: {'*': '*'}\n"
    "    kubernetes_resources: [{kind: '*', api_group: '*', namespace: '*', name: '*', verbs: ['*']}]\n"
    "    kubernetes_groups: ['system:masters']\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def broken(tmp_path_factory, sandbox):
    """A proxy with three broken clusters: nothing listening, a wrong CA, and a silent TLS server."""
    from certs.ca import CertificateAuthority
    from proxy.forward import ProxySettings
    from proxy.testing import cluster_for_sandbox, running_proxy
    from proxy.upstream import PoolSettings
    from rbac import RoleWatcher

    base = tmp_path_factory.mktemp("broken")
    roles = base / "roles"
    roles.mkdir()
    (roles / "admin.yaml").write_text(ROLE)
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, then never says anything
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(silent.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    stranger = CertificateAuthority.create_in_memory()
    clusters = [
        Cluster(name="dead", labels={}, server=f"https://127.0.0.1:{free_port()}"),
        Cluster(name="wrong-ca", labels={}, server=cluster_for_sandbox(sandbox).server, ca_pem=stranger.cert_pem),
        Cluster(name="silent", labels={}, server=f"https://127.0.0.1:{silent.getsockname()[1]}"),
    ]
    with running_proxy(
        base / "proxy", clusters=clusters, roles=RoleWatcher(str(roles), time.time),
        settings=ProxySettings(response_head_timeout=1.0), pool_settings=PoolSettings(connect_timeout=1.0),
    ) as px:
        cert, key = px.issue_user("alice", ["admin"])
        ctx = ssl.create_default_context(cafile=str(px.ca_pem_path))
        ctx.load_cert_chain(str(cert), str(key))
        ctx.set_alpn_protocols(["http/1.1"])
        yield px, ctx
    silent.close()
    for sock in held:
        sock.close()


def get(px, ctx, cluster: str) -> tuple[int, dict[str, str], dict]:
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", px.port), timeout=15), server_hostname="127.0.0.1") as s:
        s.sendall(f"GET /k8s/clusters/{cluster}/api/v1/pods HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


@pytest.mark.parametrize(
    ("cluster", "code", "words"),
    [
        ("dead", 503, "unreachable"),
        ("wrong-ca", 502, "TLS handshake"),
        ("silent", 504, ""),
    ],
)
def test_upstream_failure_is_a_status_naming_the_cluster(broken, cluster, code, words):
    px, ctx = broken
    status, headers, body = get(px, ctx, cluster)
    assert status == code
    assert body["kind"] == "Status" and body["code"] == code
    assert cluster in body["message"] and words in body["message"]
    assert headers["x-kubegate-request-id"]
    assert any(e.get("code") == code and e.get("cluster") == cluster for e in px.audit_events)

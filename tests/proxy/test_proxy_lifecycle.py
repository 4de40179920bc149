"""Long-lived streams end cleanly when their certificate expires, their user is locked, their cluster
is removed, or kubegate shuts down; two proxies (worker processes) can share one port."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

pytestmark = pytest.mark.e2e

ROLE = (
    "kind: role\nversion: v8\nmetadata: {name: admin}\nspec:\n  allow:\n"
    "    kubernetes_labels: {'*': '*'}\n"
    "    kubernetes_resources: [{kind: '*', api_group: '*', namespace: '*', name: '*', verbs: ['*']}]\n"
    "    kubernetes_groups: ['system:masters']\n"
)
WATCH = b"GET /k8s/clusters/sandbox/api/v1/namespaces/dev/pods?watch=true HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def roles(tmp_path):
    from rbac import RoleWatcher

    directory = tmp_path / "roles"
    directory.mkdir()
    (directory / "admin.yaml").write_text(ROLE)
    return RoleWatcher(str(directory), time.time)


def connect(px, user: str = "alice") -> ssl.SSLSocket:
    cert, key = px.issue_user(user, ["admin"])
    ctx = ssl.create_default_context(cafile=str(px.ca_pem_path))
    ctx.load_cert_chain(str(cert), str(key))
    ctx.set_alpn_protocols(["http/1.1"])
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", px.port), timeout=15), server_hostname="127.0.0.1")
    sock.settimeout(15)
    return sock


def start_watch(px, user: str = "alice") -> ssl.SSLSocket:
    sock = connect(px, user)
    sock.sendall(WATCH)
    head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head
    wait_for(lambda: px.stats()["streams"] == ["watch"])
    return sock


def ends_cleanly(sock: ssl.SSLSocket) -> bool:
    """The chunked watch response is terminated properly (kubectl then re-watches or reports)."""
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ssl.SSLError, ConnectionError):
            return False
        if not chunk:
            return False
        data += chunk
    return True


def wait_for(predicate: Callable[[], bool], timeout: float = 30) -> None:
    """Poll until ``predicate()`` holds; the deadline only bounds a failure (generous for loaded runs)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def simple_get(px, user: str = "alice") -> bytes:
    with connect(px, user) as sock:
        sock.sendall(b"GET /k8s/clusters/sandbox/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_a_watch_ends_when_its_certificate_expires(sandbox, roles, tmp_path):
    from proxy.testing import cluster_for_sandbox, running_proxy

    offset = [timedelta(0)]
    clock = lambda: datetime.now(UTC) + offset[0]  # noqa: E731
    with running_proxy(tmp_path / "px", clusters=[cluster_for_sandbox(sandbox)], roles=roles, clock=clock) as px:
        sock = start_watch(px)
        offset[0] = timedelta(hours=2)  # the 1 h certificate is now expired
        assert ends_cleanly(sock)
        sock.close()
        wait_for(lambda: px.stats()["exchanges"] == 0)
        stopped = [e for e in px.audit_events if e.get("stopped")]
        assert stopped and "expired" in stopped[-1]["stopped"]


def test_a_lock_ends_the_users_streams_and_refuses_new_requests(sandbox, roles, tmp_path):
    from certs.locks import LockList
    from proxy.testing import cluster_for_sandbox, running_proxy

    locks = LockList(tmp_path / "locks")
    with running_proxy(tmp_path / "px", clusters=[cluster_for_sandbox(sandbox)], roles=roles, locks=locks) as px:
        sock = start_watch(px, "mallory")
        assert simple_get(px, "mallory").startswith(b"HTTP/1.1 200")
        locks.lock_user("mallory", reason="left the team")
        assert ends_cleanly(sock)
        sock.close()
        refused = simple_get(px, "mallory")
        assert refused.startswith(b"HTTP/1.1 403") and b"left the team" in refused
        assert simple_get(px, "alice").startswith(b"HTTP/1.1 200")


def test_removing_a_cluster_ends_its_streams_and_routes(sandbox, roles, tmp_path):
    from discovery.registry import ClusterRegistry
    from proxy.testing import cluster_for_sandbox, running_proxy

    registry = ClusterRegistry()
    registry.upsert(cluster_for_sandbox(sandbox), "test")
    with running_proxy(tmp_path / "px", clusters=registry, roles=roles) as px:
        sock = start_watch(px)
        registry.remove("sandbox")
        assert ends_cleanly(sock)
        sock.close()
        assert simple_get(px).startswith(b"HTTP/1.1 404")


def test_graceful_shutdown_ends_watches_cleanly_and_stops_accepting(sandbox, roles, tmp_path):
    from proxy.testing import cluster_for_sandbox, running_proxy

    with running_proxy(tmp_path / "px", clusters=[cluster_for_sandbox(sandbox)], roles=roles) as px:
        sock = start_watch(px)
        port = px.port
        px.call(lambda: px.proxy.shutdown(grace=2.0))
        assert ends_cleanly(sock)
        sock.close()
        assert px.stats()["connections"] == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_two_proxies_share_one_port(sandbox, roles, tmp_path):
    from proxy.server import listening_socket
    from proxy.testing import cluster_for_sandbox, running_proxy

    probe = listening_socket("127.0.0.1", 0, reuse_port=True)
    port = probe.getsockname()[1]
    probe.close()
    cluster = cluster_for_sandbox(sandbox)
    with running_proxy(tmp_path / "a", clusters=[cluster], roles=roles, port=port, reuse_port=True) as first:
        with running_proxy(tmp_path / "b", clusters=[cluster], roles=roles, port=port, reuse_port=True,
                           ca=first.ca) as second:
            for _ in range(40):
                assert simple_get(first).startswith(b"HTTP/1.1 200")
                if first.audit_events and second.audit_events:
                    break
            assert first.audit_events and second.audit_events  # the kernel spread connections over both


def test_a_role_edit_applies_to_the_next_request_despite_memoised_decisions(sandbox, tmp_path):
    from proxy.testing import cluster_for_sandbox, running_proxy
    from rbac import RoleWatcher

    directory = tmp_path / "roles"
    directory.mkdir()
    (directory / "admin.yaml").write_text(ROLE)
    watcher = RoleWatcher(str(directory), time.time, min_check_interval=0.0)
    with running_proxy(tmp_path / "px", clusters=[cluster_for_sandbox(sandbox)], roles=watcher) as px:
        for _ in range(3):  # the same request, decided once and memoised
            assert simple_get(px).startswith(b"HTTP/1.1 200")
        (directory / "admin.yaml").write_text(ROLE.replace("kubernetes_labels: {'*': '*'}", "kubernetes_labels: {env: none}"))
        wait_for(lambda: simple_get(px).startswith(b"HTTP/1.1 404"))  # the cluster is no longer visible


def test_connections_over_the_limit_are_refused(sandbox, roles, tmp_path):
    from prometheus_client import REGISTRY

    from proxy.forward import ProxySettings
    from proxy.testing import cluster_for_sandbox, running_proxy

    def rejected() -> float:
        return REGISTRY.get_sample_value("kubegate_client_connections_rejected_total", {"reason": "max_connections"}) or 0

    with running_proxy(tmp_path / "px", clusters=[cluster_for_sandbox(sandbox)], roles=roles,
                       settings=ProxySettings(max_connections=1)) as px:
        first = start_watch(px)
        before = rejected()
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            connect(px).sendall(WATCH)
        assert rejected() > before
        first.close()
        wait_for(lambda: px.stats()["connections"] == 0)
        assert simple_get(px).startswith(b"HTTP/1.1 200")  # a free slot again

"""What the fast-path tests share (``test_proxy_fast_path.py`` for HTTP/1.1 clients,
``test_proxy_fast_path_h2.py`` for HTTP/2 ones): a kubegate proxy of their own in front of their own
sandbox API server, so locks, roles and clusters can change under it without touching the session's;
ways to look at the proxy's connection objects (the plans they hold) and at its audit lines and metrics.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from prometheus_client import REGISTRY

from proxy import metrics
from proxy.connection import ClientConnection
from proxy.testing import wait_for

CLUSTER = "fast"
POD = f"/k8s/clusters/{CLUSTER}/api/v1/namespaces/dev/pods/web-1"
OTHER_POD = f"/k8s/clusters/{CLUSTER}/api/v1/namespaces/dev/pods/web-2"
BULK_NAMESPACE = "bulk"
BULK_LIST = f"/k8s/clusters/{CLUSTER}/api/v1/namespaces/{BULK_NAMESPACE}/configmaps"
BULK_ITEMS = 1000  # ~1.2 KB each: a LIST answer of ~1.2 MB, far above the transports' high water
LONG_NAMESPACE = "long"  # 2,000 more (``running_gate(long_list=True)``): ~1.8 MB gzipped, a long chunked answer
LONG_ITEMS = 2000
SEND_TIMEOUT = 2.0  # the proxy's client_send_timeout here

READER_ROLE = """
kind: role
version: v8
metadata: {name: reader}
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources:
      - {kind: pods, api_group: '', namespace: NAMESPACE, name: '*', verbs: [get, list]}
    kubernetes_groups: ['system:masters']
"""


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


class HasSocket(Protocol):
    sock: socket.socket


@dataclass
class Gate:
    sandbox: Any
    px: Any
    registry: Any
    roles_dir: Path
    locks: Any

    def proxy_connection(self, client: HasSocket) -> ClientConnection:
        """The proxy's object for ``client``'s connection (found by the client's address)."""
        local = client.sock.getsockname()

        async def find() -> ClientConnection:
            for conn in self.px.proxy.fwd.connections:
                if conn.transport is not None and conn.transport.get_extra_info("peername") == local:
                    return conn
            raise LookupError(local)

        return self.px.call(find)

    def shrink_send_buffer(self, client: HasSocket, size: int = 16384) -> None:
        """Give the proxy's socket to ``client`` a small kernel send buffer (loopback autotunes it to
        megabytes) and its transport a 64 KiB high-water mark (uvloop's TLS default is 512 KiB): what
        the client does not read then soon stays in the proxy's transport, which pauses writing, as on
        a real network with a slow reader."""
        conn = self.proxy_connection(client)

        async def shrink() -> None:
            conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
            conn.transport.set_write_buffer_limits(high=65536)

        self.px.call(shrink)

    def plans(self, client: HasSocket) -> dict[Any, Any]:
        """The plans the proxy's connection for ``client`` holds: keyed by request bytes (HTTP/1.1) or
        by decoded request head (HTTP/2)."""
        conn = self.proxy_connection(client)

        async def read() -> dict[Any, Any]:
            return dict(conn.plans or conn.h2_plans or {})

        return self.px.call(read)

    def audit(self, request_id: str) -> dict[str, Any]:
        """The audit line of one request (waits for it)."""
        wait_for(lambda: any(e.get("request_id") == request_id for e in self.px.audit_events), timeout=10)
        return next(e for e in self.px.audit_events if e.get("request_id") == request_id)

    def audited(self, user: str) -> list[dict[str, Any]]:
        """The audit lines of ``user``'s requests so far, in order."""
        return [e for e in self.px.audit_events if e.get("user") == user]

    def requests_counted(self, verb: str, code: int, cluster: str = CLUSTER) -> float:
        async def flush() -> None:
            metrics.flush()

        self.px.call(flush)
        return REGISTRY.get_sample_value(
            "kubegate_requests_total", {"cluster": cluster, "verb": verb, "code": str(code)}) or 0.0

    def role_set(self) -> Any:
        """The role set the proxy decides with now (a new object after each change of the role files)."""

        async def read() -> Any:
            return self.px.proxy.fwd.role_source.current()

        return self.px.call(read)

    def add_cluster(self, name: str) -> None:
        """Another cluster, ``name``, served by the same sandbox (removed by the test)."""
        from proxy.testing import cluster_for_sandbox

        self.registry.upsert(cluster_for_sandbox(self.sandbox, name=name), "test-fast")

    def close_upstream_connections(self) -> None:
        """What the sandbox's idle sweep does to an idle keep-alive connection: close it from the server
        side (call on the sandbox's loop)."""
        for conn in list(self.sandbox.server._connections):
            conn.codec.close()
            conn.flush()
            conn.close_transport()

    @contextlib.contextmanager
    def sandbox_held(self, then: Callable[[], None] = lambda: None) -> Iterator[None]:
        """The sandbox's event loop held for the block (it reads and answers nothing); ``then`` runs on
        that loop before it goes on."""
        holding, release = threading.Event(), threading.Event()

        def hold() -> None:
            holding.set()
            release.wait(30)
            then()

        self.sandbox.loop.call_soon_threadsafe(hold)
        assert holding.wait(10)
        try:
            yield
        finally:
            release.set()


@contextlib.contextmanager
def running_gate(base: Path, *, long_list: bool = False) -> Iterator[Gate]:
    """The proxy (``client_send_timeout`` = ``SEND_TIMEOUT``, roles from files, a lock list) and its
    sandbox as cluster ``fast``, with pods web-1..3 in ``dev``, ``BULK_ITEMS`` configmaps in ``bulk``
    and, with ``long_list``, ``LONG_ITEMS`` in ``long``."""
    from certs.locks import LockList
    from discovery.registry import ClusterRegistry
    from proxy.forward import ProxySettings
    from proxy.testing import cluster_for_sandbox, running_proxy
    from rbac import RoleWatcher
    from sandbox.testing import running_sandbox
    from tests.proxy.conftest import write_roles

    roles_dir = write_roles(base / "roles")
    (roles_dir / "reader.yaml").write_text(READER_ROLE.replace("NAMESPACE", "dev"))
    roles = RoleWatcher(str(roles_dir), time.time, min_check_interval=0.0)
    locks = LockList(base / "locks")
    with running_sandbox(base / "sandbox") as sb:
        lists = ((BULK_NAMESPACE, BULK_ITEMS), (LONG_NAMESPACE, LONG_ITEMS))
        for namespace, items in lists if long_list else lists[:1]:
            for n in range(items):
                sb.store.put_object("", "configmaps", {
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": f"cm-{n:04d}", "namespace": namespace, "labels": {"n": str(n)}},
                    "data": {"blob": base64.b64encode(random.Random(n).randbytes(750)).decode()},  # gzip: -25 %
                })
        registry = ClusterRegistry()
        registry.upsert(cluster_for_sandbox(sb, name=CLUSTER), "test")
        settings = ProxySettings(client_send_timeout=SEND_TIMEOUT)
        with running_proxy(base / "proxy", clusters=registry, roles=roles, locks=locks, settings=settings) as px:
            yield Gate(sb, px, registry, roles_dir, locks)


def record_starts(monkeypatch: pytest.MonkeyPatch, cls: type) -> list[Any]:
    """Every exchange of class ``cls`` started from now until the test ends, in order (a wrapper of
    ``cls.start`` set with monkeypatch: no product code for it)."""
    started: list[Any] = []
    original = cls.start

    def start(self: Any) -> None:
        started.append(self)
        original(self)

    monkeypatch.setattr(cls, "start", start)
    return started


def same_fields(answer: Response) -> list[tuple[str, str]]:
    """The answer's header fields that must not differ between two answers to one request (all but the
    request id and the date), checking there is exactly one request id."""
    assert [k for k, _ in answer.headers].count("x-kubegate-request-id") == 1, answer.headers
    return sorted((k, v) for k, v in answer.headers if k not in ("x-kubegate-request-id", "date"))


def comparable(event: dict[str, Any]) -> dict[str, Any]:
    """An audit line without what differs from one request to the next."""
    return {k: v for k, v in event.items() if k not in ("time", "request_id", "latency_ms")}

"""Run a real kubegate proxy in-process for tests (own thread, own uvloop loop, random port).

    with running_proxy(tmp_path, clusters=[cluster], roles=role_watcher) as px:
        kubeconfig = px.kubeconfig("alice", ["dev"], clusters=["sandbox"])
        subprocess.run([kubectl, "--kubeconfig", kubeconfig, "get", "pods", "-A"], check=True)
        px.audit_events        # what the proxy audited (when no audit sink was given)
        px.stats()             # connections / exchanges / streams / pools, read on the proxy's loop
        px.settled()           # no connection, exchange, handshake or upstream stream in flight
        read_all(sock), wait_for(predicate), open_fds()   # helpers for raw-socket tests

``clusters`` is a ``ClusterSource`` or a list of ``Cluster`` (put into a ``ClusterRegistry``).
``cluster_for_sandbox(sb)`` builds the ``Cluster`` for a sandbox from ``sandbox.testing`` (its admin
certificate, which may impersonate). Certificates come from an in-memory kubegate CA (``px.ca``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from discovery.model import Cluster, ClusterSource, StaticCredentials, UpstreamCredentials
from proxy.app import Proxy
from proxy.forward import ProxySettings
from proxy.upstream import PoolSettings

T = TypeVar("T")


class RunningProxy:
    def __init__(self, proxy: Proxy, loop: asyncio.AbstractEventLoop, ca: Any, workdir: Path) -> None:
        self.proxy = proxy
        self.loop = loop
        self.ca = ca
        self.workdir = workdir
        self.ca_pem_path = workdir / "kubegate-ca.pem"
        self.ca_pem_path.write_bytes(ca.cert_pem)
        self.audit_events: list[dict[str, Any]] = []
        self._n = 0

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def cluster_url(self, name: str) -> str:
        return f"{self.url}/k8s/clusters/{name}"

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
        """Run a coroutine function on the proxy's loop and wait for its result."""

        async def run() -> T:
            return await fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def stats(self) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            return self.proxy.stats()

        return self.call(read)

    def settled(self) -> bool:
        """Nothing in flight: no client connection, exchange or handshake, no upstream stream busy."""
        stats = self.stats()
        return (
            stats["connections"] == 0
            and stats["exchanges"] == 0
            and stats["handshakes"] == 0
            and all(p["h2_streams"] == 0 and p["http1_busy"] == 0 for p in stats["pools"].values())
        )

    def issue_user(
        self,
        user: str,
        roles: list[str] | tuple[str, ...],
        *,
        ttl: timedelta = timedelta(hours=1),
        traits: dict[str, list[str]] | None = None,
        cluster: str | None = None,
    ) -> tuple[Path, Path]:
        """(cert_path, key_path) of a new client certificate from the proxy's CA."""
        issued = self.ca.issue_user_certificate(user, list(roles), ttl, traits=traits, cluster=cluster)
        self._n += 1
        cert = self.workdir / f"{user}-{self._n}.crt"
        key = self.workdir / f"{user}-{self._n}.key"
        cert.write_bytes(issued.cert_pem)
        key.write_bytes(issued.key_pem)
        key.chmod(0o600)
        return cert, key

    def kubeconfig(
        self,
        user: str,
        roles: list[str] | tuple[str, ...],
        clusters: list[str],
        *,
        path: Path | None = None,
        ttl: timedelta = timedelta(hours=1),
        traits: dict[str, list[str]] | None = None,
    ) -> Path:
        """A kubeconfig for ``user`` with one context per cluster (first one current)."""
        from certs.kubeconfig import write_kubeconfig

        cert, key = self.issue_user(user, roles, ttl=ttl, traits=traits)
        self._n += 1
        path = path or self.workdir / f"kubeconfig-{user}-{self._n}.yaml"
        write_kubeconfig(
            path, f"127.0.0.1:{self.port}", clusters, self.ca.cert_pem, cert.read_bytes(), key.read_bytes(), current=clusters[0]
        )
        return path


def read_all(sock: socket.socket, limit: float = 10) -> bytes:
    """Everything the peer sends until it closes (or ``limit`` seconds pass, or the connection resets)."""
    sock.settimeout(limit)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (ConnectionResetError, ssl.SSLError, TimeoutError):
        pass
    return out


def wait_for(predicate: Callable[[], bool], timeout: float = 30, describe: Callable[[], object] = lambda: "") -> None:
    """Poll until ``predicate()`` holds; the deadline only bounds a failure (generous for loaded runs);
    ``describe()`` says what was seen when it fails."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in {timeout} s {describe()}")
        time.sleep(0.02)


def open_fds() -> int:
    """File descriptors of this process (the in-process proxy's included)."""
    return len(os.listdir("/proc/self/fd"))


def cluster_for_sandbox(sb: Any, name: str = "sandbox", labels: dict[str, str] | None = None) -> Cluster:
    """The ``Cluster`` kubegate uses to reach a running sandbox (its admin client certificate)."""
    cert_path, key_path = _sandbox_admin_cert(sb)
    return Cluster(
        name=name,
        labels=labels if labels is not None else {"env": "test"},
        server=sb.url,
        ca_pem=Path(sb.ca_pem_path).read_bytes(),
        credentials=StaticCredentials(
            UpstreamCredentials(client_cert_pem=Path(cert_path).read_bytes(), client_key_pem=Path(key_path).read_bytes())
        ),
        origin="kubeconfig",
    )


def _sandbox_admin_cert(sb: Any) -> tuple[str, str]:
    issued = sb.issue_client_cert("kubegate-proxy", ["system:masters"])
    return str(issued[0]), str(issued[1])


@contextlib.contextmanager
def running_proxy(
    workdir: Path,
    *,
    clusters: ClusterSource | list[Cluster],
    roles: Any = None,
    policy: Any = None,
    audit: Callable[[dict[str, Any]], None] | None = None,
    locks: Any = None,
    settings: ProxySettings | None = None,
    pool_settings: PoolSettings | None = None,
    ca: Any = None,
    sweep_interval: float = 0.2,
    clock: Callable[[], Any] | None = None,
    port: int = 0,
    reuse_port: bool = False,
    recordings: Any = None,
) -> Iterator[RunningProxy]:
    from certs.ca import CertificateAuthority
    from discovery.registry import ClusterRegistry

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ca = ca or CertificateAuthority.create_in_memory()
    server = ca.issue_server_certificate(["127.0.0.1", "localhost"])
    cert_file = workdir / "kubegate-server.crt"
    key_file = workdir / "kubegate-server.key"
    ca_file = workdir / "kubegate-client-ca.pem"
    cert_file.write_bytes(server.cert_pem)
    key_file.write_bytes(server.key_pem)
    ca_file.write_bytes(ca.cert_pem)
    if isinstance(clusters, list):
        registry = ClusterRegistry()
        for cluster in clusters:
            registry.upsert(cluster, "test")
        source: ClusterSource = registry
    else:
        source = clusters
    collected: list[dict[str, Any]] = []
    proxy = Proxy(
        clusters=source,
        roles=roles,
        policy=policy,
        cert_file=str(cert_file),
        key_file=str(key_file),
        client_ca_file=str(ca_file),
        audit=audit or collected.append,
        locks=locks,
        settings=settings,
        pool_settings=pool_settings,
        sweep_interval=sweep_interval,
        clock=clock,
        port=port,
        reuse_port=reuse_port,
        recordings=recordings,
    )
    loop = uvloop.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            try:
                await proxy.start()
            except BaseException as exc:
                failure.append(exc)
            finally:
                started.set()

        loop.run_until_complete(boot())
        if not failure:
            loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=run, name="kubegate-proxy", daemon=True)
    thread.start()
    started.wait(30)
    if failure:
        thread.join(10)
        raise failure[0]
    running = RunningProxy(proxy, loop, ca, workdir)
    running.audit_events = collected
    try:
        yield running
    finally:
        try:
            asyncio.run_coroutine_threadsafe(proxy.shutdown(grace=1.0), loop).result(30)
        finally:

            async def cancel_rest() -> None:
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

            asyncio.run_coroutine_threadsafe(cancel_rest(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)


class EchoUpstream:
    """A stand-in API server that answers every request with what it received (method, target, headers
    as a list of pairs) and records the request heads in ``.requests`` (upgrade requests too, answered
    200 instead of switching protocols): to check exactly which headers
    kubegate sends upstream. Serves HTTP/1.1 and h2 (ALPN) over TLS on a random loopback port. With
    ``switch_upgrades`` an HTTP/1.1 upgrade request (SPDY/3.1, WebSocket) gets a ``101`` with the same
    ``Upgrade`` instead, then every byte echoed back unparsed: a relay that must move whatever bytes a
    client sends."""

    def __init__(self, workdir: Path, *, h2: bool = True, switch_upgrades: bool = False) -> None:
        from certs.ca import CertificateAuthority

        self.ca = CertificateAuthority.create_in_memory()
        issued = self.ca.issue_server_certificate(["127.0.0.1"])
        workdir.mkdir(parents=True, exist_ok=True)
        self.cert_file = workdir / "echo.crt"
        self.key_file = workdir / "echo.key"
        self.cert_file.write_bytes(issued.cert_pem)
        self.key_file.write_bytes(issued.key_pem)
        self.h2 = h2
        self.switch_upgrades = switch_upgrades
        self.requests: list[dict[str, Any]] = []
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def cluster(self, name: str = "echo", labels: dict[str, str] | None = None, token: str | None = None) -> Cluster:
        return Cluster(
            name=name,
            labels=labels or {"env": "test"},
            server=self.url,
            ca_pem=self.ca.cert_pem,
            credentials=StaticCredentials(UpstreamCredentials(bearer_token=token)),
        )

    async def serve(self) -> asyncio.AbstractServer:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        ctx.set_alpn_protocols(["h2", "http/1.1"] if self.h2 else ["http/1.1"])
        loop = asyncio.get_running_loop()
        self.loop = loop
        server = await loop.create_server(lambda: _EchoProtocol(self), "127.0.0.1", 0, ssl=ctx)
        self.port = server.sockets[0].getsockname()[1]
        return server


class _EchoProtocol(asyncio.Protocol):
    def __init__(self, echo: EchoUpstream) -> None:
        self.echo = echo
        self.transport: asyncio.Transport | None = None
        self.codec: Any = None
        self.heads: dict[int, Any] = {}
        self.bodies: dict[int, bytes] = {}
        self.raw = False  # switched protocols: echo bytes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        from proxy.protocol.http1 import Http1ServerConnection
        from proxy.protocol.http2 import Http2ServerConnection

        self.transport = transport  # type: ignore[assignment]
        ssl_object = transport.get_extra_info("ssl_object")
        h2 = ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2"
        self.codec = Http2ServerConnection() if h2 else Http1ServerConnection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        import json

        from proxy.protocol.events import RequestBody, RequestEnd, RequestHead, ResponseHead, UpgradeRequested

        if self.raw:
            if self.transport is not None:
                self.transport.write(data)
            return
        for event in self.codec.receive_data(data):
            if isinstance(event, UpgradeRequested) and self.echo.switch_upgrades:
                self._switch(event)
                return
            if isinstance(event, RequestHead):
                self.heads[event.stream_id] = event
                self.bodies[event.stream_id] = b""
            elif isinstance(event, RequestBody):
                self.bodies[event.stream_id] += event.data
                self.codec.acknowledge_received(event.stream_id, len(event.data))
            elif isinstance(event, RequestEnd | UpgradeRequested):
                # an upgrade (exec/attach/portforward) is recorded and answered 200, never switched
                head = event.head if isinstance(event, UpgradeRequested) else self.heads.pop(event.stream_id)
                self.bodies.setdefault(event.stream_id, b"")
                record = {
                    "method": head.method,
                    "target": head.target,
                    "authority": head.authority,
                    "http_version": head.http_version,
                    "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in head.headers],
                    "body": self.bodies.pop(event.stream_id).decode("latin-1"),
                }
                self.echo.requests.append(record)
                body = json.dumps(record).encode()
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                self.codec.send_response_head(ResponseHead(event.stream_id, 200, headers, content_length=len(body)))
                self.codec.send_body(event.stream_id, body, end_stream=True)
        self._flush()

    def _switch(self, event: Any) -> None:
        head = event.head
        self.echo.requests.append({"method": head.method, "target": head.target, "headers": [
            [k.decode("latin-1"), v.decode("latin-1")] for k, v in head.headers]})
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "
                             + (head.header(b"upgrade") or b"") + b"\r\n\r\n" + event.trailing)
        self.raw = True

    def _flush(self) -> None:
        data = self.codec.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)
        if self.codec.must_close and self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        return None


@contextlib.contextmanager
def running_echo_upstream(workdir: Path, *, h2: bool = True, switch_upgrades: bool = False) -> Iterator[EchoUpstream]:
    """An ``EchoUpstream`` on its own thread and loop for the duration of the block."""
    echo = EchoUpstream(Path(workdir), h2=h2, switch_upgrades=switch_upgrades)
    loop = uvloop.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            holder["server"] = await echo.serve()
            ready.set()

        loop.run_until_complete(boot())
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=run, name="echo-upstream", daemon=True)
    thread.start()
    ready.wait(30)
    try:
        yield echo
    finally:

        async def stop() -> None:
            holder["server"].close()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@contextlib.contextmanager
def tcp_echo_server() -> Iterator[int]:
    """A loopback TCP server that echoes the bytes of one connection (a port-forward target for a sandbox
    pod, see :func:`echo_pod_manifest`); yields its port."""
    import socket

    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def echo_pod_manifest(name: str, namespace: str, local_port: int) -> str:
    """A sandbox pod whose container port 8080 is forwarded to ``127.0.0.1:local_port``."""
    return (
        "apiVersion: v1\nkind: Pod\n"
        f"metadata: {{name: {name}, namespace: {namespace}, annotations: "
        f"{{sandbox.kubegate.dev/port-8080: '{local_port}'}}}}\n"
        "spec: {containers: [{name: main, image: busybox, ports: [{containerPort: 8080}]}]}\n"
    )

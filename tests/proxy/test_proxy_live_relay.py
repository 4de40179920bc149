"""The live body relay (``proxy/relay/live.py``, issue 9): watch events go from the upstream protocol to
the client codec by callbacks through a ``LiveRelay``, compiled where the build made it. What it must
keep: events in order and at once, the client's stream ended as a broken one when the upstream dies
mid-watch (never a clean end that a client would take for "nothing more"), nothing held by the proxy
afterwards, and the audit line's byte count.

Real parts: the sandbox API server in a process of its own (``benchmarks.sandbox_proc``, killed with
SIGKILL mid-watch), kubegate in-process, an HTTP/1.1 TLS client and the ``kubernetes`` Python client.
Backpressure (a watcher that stops reading, an h2 watcher whose window shuts) is covered by
``test_proxy_watch_relay.py``, filtered watches by ``test_proxy_kubectl.py`` and ``tests/rbac``,
protobuf watches and stop reasons by ``test_proxy_stream_end_reasons.py``."""

from __future__ import annotations

import importlib.machinery
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.testing import wait_for

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "bench-watch"  # seeded by benchmarks.sandbox_proc


@pytest.fixture
def upstream(tmp_path) -> Iterator[dict]:
    """The sandbox in its own process: its JSON description (port, pid, CA, admin client files)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.sandbox_proc", str(tmp_path / "sandbox"), "--pods", "1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, "the sandbox process did not start"
        info = json.loads(line)
        info["proc"] = proc
        yield info
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


@pytest.fixture
def rp(upstream, tmp_path) -> Iterator:
    from discovery.model import Cluster, StaticCredentials, UpstreamCredentials
    from proxy.testing import running_proxy
    from rbac import RoleWatcher

    from .conftest import write_roles

    cluster = Cluster(
        name="sandbox", labels={"env": "test"}, server=f"https://127.0.0.1:{upstream['port']}",
        ca_pem=Path(upstream["ca_file"]).read_bytes(),
        credentials=StaticCredentials(UpstreamCredentials(
            client_cert_pem=Path(upstream["cert_file"]).read_bytes(),
            client_key_pem=Path(upstream["key_file"]).read_bytes())),
        origin="kubeconfig",
    )  # fmt: skip
    audit: list[dict] = []
    roles = RoleWatcher(str(write_roles(tmp_path / "roles")), time.time)
    with running_proxy(tmp_path / "proxy", clusters=[cluster], roles=roles, audit=audit.append) as proxy:
        proxy.audit_events = audit
        yield proxy


def tls_socket(port: int, ca: str, cert: str, key: str) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30), server_hostname="127.0.0.1")
    return sock


def create_configmap(upstream: dict, name: str) -> None:
    """Straight on the sandbox (not through kubegate), as the benchmark's events cell does."""
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}}).encode()
    with tls_socket(upstream["port"], upstream["ca_file"], upstream["cert_file"], upstream["key_file"]) as sock:
        sock.sendall(b"POST /api/v1/namespaces/%s/configmaps HTTP/1.1\r\nHost: sandbox\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (NAMESPACE.encode(), len(body), body))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 201"), answer[:200]


class ChunkedReader:
    """An HTTP/1.1 chunked response read from a socket: its chunks, and whether it ended cleanly."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.buf = b""
        self.clean_end = False

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def head(self) -> bytes:
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), "the connection closed before the response head"
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return head

    def chunk(self) -> bytes | None:
        """The next chunk's bytes; None when the stream ended (``clean_end`` says how)."""
        while True:
            line_end = self.buf.find(b"\r\n")
            if line_end >= 0:
                size = int(self.buf[:line_end], 16)
                if size == 0:
                    self.clean_end = True
                    return None
                if len(self.buf) >= line_end + 2 + size + 2:
                    data = self.buf[line_end + 2 : line_end + 2 + size]
                    self.buf = self.buf[line_end + 2 + size + 2 :]
                    return data
            try:
                if not self._fill():
                    return None
            except (ConnectionError, ssl.SSLError):
                return None


def test_the_live_relay_is_the_compiled_module_unless_pure_python_is_asked_for():
    from proxy.relay import live

    path = Path(live.__file__)
    if os.environ.get("KUBEGATE_PURE_PYTHON") == "1":
        assert path.name == "live.py"
    elif path.name == "live.py":
        pytest.skip("no compiled build here (no C compiler, or the build failed): the .py runs")
    else:
        assert path.name == "live" + importlib.machinery.EXTENSION_SUFFIXES[0]
        assert "__dict__" not in dir(live.LiveRelay)  # an extension type: fields declared in live.pxd


def test_events_arrive_one_by_one_and_an_upstream_killed_mid_watch_breaks_the_clients_stream(rp, upstream):
    cert, key = rp.issue_user("alice", ["admin"])
    watcher = tls_socket(rp.port, str(rp.ca_pem_path), str(cert), str(key))
    watcher.sendall(b"GET /k8s/clusters/sandbox/api/v1/namespaces/%s/configmaps?watch=1 HTTP/1.1\r\nHost: kubegate\r\n\r\n"
                    % NAMESPACE.encode())
    reader = ChunkedReader(watcher)
    head = reader.head()
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower(), head
    seen: list[str] = []
    for i in range(5):
        create_configmap(upstream, f"cm-{i}")
        while len(seen) <= i:  # each event arrives before the next object is made: no batching needed
            data = reader.chunk()
            assert data is not None, f"the watch ended after {seen}"
            for line in data.splitlines():
                event = json.loads(line)
                if event["object"]["metadata"]["name"].startswith("cm-"):
                    seen.append(event["object"]["metadata"]["name"])
    assert seen == [f"cm-{i}" for i in range(5)]
    wait_for(lambda: rp.stats()["streams"] == ["watch"], 30, rp.stats)

    os.kill(upstream["pid"], signal.SIGKILL)  # the API server dies: its connection to kubegate breaks
    upstream["proc"].wait(30)
    started = time.monotonic()
    assert reader.chunk() is None
    assert not reader.clean_end, "an upstream that died must not look like a watch that ended normally"
    assert time.monotonic() - started < 20
    watcher.close()
    wait_for(lambda: rp.stats()["exchanges"] == 0, 30, rp.stats)  # nothing of the watch is left in kubegate
    wait_for(lambda: any(e.get("path", "").endswith("configmaps") for e in rp.audit_events), 30)
    [line] = [e for e in rp.audit_events if e.get("path", "").endswith("configmaps")]
    assert line["bytes_out"] >= sum(len(f'"name":"cm-{i}"') for i in range(5))  # counted by the relay

"""Protocol abuse by an authenticated client: HTTP/2 rapid reset, CONTINUATION floods, HPACK bombs,
SETTINGS/PING floods, a flow-control window that never opens, HTTP/1.1 smuggling shapes, slow heads
and bodies, garbage after an upgrade, and 10,000 idle connections. Each attack is refused (a GOAWAY,
a 4xx ``Status``, a close), counted, and leaves the proxy answering another client within 5 s with
its connections, tasks and file descriptors back to where they were.

The h2 attackers run as their own process (``hostile_client.py``): the proxy under test runs in this
process, so the attacker's CPU and sockets are not counted as the proxy's."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

pytestmark = pytest.mark.e2e

HOSTILE = Path(__file__).with_name("hostile_client.py")
ENHANCE_YOUR_CALM = 0xB
PROTOCOL_ERROR = 0x1
COMPRESSION_ERROR = 0x9


@pytest.fixture(scope="module")
def fp(sandbox, tmp_path_factory) -> Iterator:
    """A proxy of its own (counts and fds are this module's) with short limits in front of the sandbox."""
    from proxy.forward import ProxySettings
    from proxy.testing import cluster_for_sandbox, running_proxy
    from rbac import RoleWatcher

    from .conftest import write_roles

    base = tmp_path_factory.mktemp("floods")
    roles = RoleWatcher(str(write_roles(base / "roles")), time.time)
    settings = ProxySettings(header_timeout=1.0, idle_timeout=30.0, max_header_bytes=8192)
    with running_proxy(base / "proxy", clusters=[cluster_for_sandbox(sandbox)], roles=roles, settings=settings) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def creds(fp) -> tuple[Path, Path]:
    return fp.issue_user("alice", ["admin"])


def client_context(px, creds: tuple[Path, Path], alpn: str = "http/1.1") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(px.ca_pem_path))
    ctx.load_cert_chain(str(creds[0]), str(creds[1]))
    ctx.set_alpn_protocols([alpn])
    return ctx


def tls_connect(px, creds: tuple[Path, Path], alpn: str = "http/1.1") -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", px.port), timeout=10)
    return client_context(px, creds, alpn).wrap_socket(raw, server_hostname="127.0.0.1")


def read_all(sock: socket.socket, limit: float = 10) -> bytes:
    sock.settimeout(limit)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (ConnectionResetError, ssl.SSLError, TimeoutError):
        pass
    return out


def wait_for(predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("kubegate_client_connections_rejected_total", {"reason": reason}) or 0.0


def protocol_errors(status: int) -> float:
    return REGISTRY.get_sample_value("kubegate_client_protocol_errors_total", {"status": str(status)}) or 0.0


def settled(px) -> bool:
    stats = px.stats()
    return (
        stats["connections"] == 0
        and stats["exchanges"] == 0
        and stats["handshakes"] == 0
        and all(p["h2_streams"] == 0 and p["http1_busy"] == 0 for p in stats["pools"].values())
    )


def answers_within(px, creds: tuple[Path, Path], seconds: float = 5.0) -> float:
    """Another client's GET /version is answered 200 within ``seconds``; returns how long it took."""
    started = time.monotonic()
    with tls_connect(px, creds) as sock:
        sock.sendall(b"GET /k8s/clusters/sandbox/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = read_all(sock, limit=seconds)
    took = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert took < seconds, f"another client waited {took:.1f} s"
    return took


@pytest.fixture
def baseline(fp, creds) -> Iterator[int]:
    """Warm (the pooled upstream connection exists), settled; yields the fd count, and at the end checks
    the proxy is back to it: no connection, exchange, handshake or upstream stream left."""
    answers_within(fp, creds)
    wait_for(lambda: settled(fp))
    fds = open_fds()
    yield fds
    try:
        wait_for(lambda: settled(fp) and open_fds() <= fds)
    except AssertionError:
        raise AssertionError(f"not back to baseline: {fp.stats()}, fds {open_fds()} > {fds}") from None


def attack(px, creds: tuple[Path, Path], name: str, *, seconds: float = 10.0, count: int = 1_000_000,
           path: str = "/k8s/clusters/sandbox/version", background: bool = False):
    """Run ``hostile_client.py`` against the proxy; its JSON report (or the running process)."""
    cmd = [sys.executable, str(HOSTILE), name, "--port", str(px.port), "--ca", str(px.ca_pem_path),
           "--cert", str(creds[0]), "--key", str(creds[1]), "--count", str(count), "--seconds", str(seconds),
           "--path", path]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if background:
        return proc
    out, err = proc.communicate(timeout=seconds + 60)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


# --- HTTP/2 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [("rapid-reset", "h2_rapid_reset"), ("ping-flood", "h2_ping_flood"), ("settings-flood", "h2_settings_flood")],
)
def test_h2_floods_get_goaway_enhance_your_calm(fp, creds, baseline, name, reason):
    """Cheap frames that cost the server work (a stream and its reset; a PING or SETTINGS to answer)
    sent faster than the per-second budget: the connection gets GOAWAY(ENHANCE_YOUR_CALM) and is
    closed, long before the attacker runs out of frames, while another client is answered."""
    before = rejected(reason)
    proc = attack(fp, creds, name, background=True)
    try:
        answers_within(fp, creds)
        out, err = proc.communicate(timeout=70)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["closed"], report
    assert report["goaway"] == ENHANCE_YOUR_CALM, report
    assert report["sent"] < 1_000_000, report
    wait_for(lambda: rejected(reason) > before)
    answers_within(fp, creds)


def test_continuation_flood_is_a_connection_error(fp, creds, baseline):
    """CONTINUATION frames without END_HEADERS never end a header block: after a bounded number the
    connection is ended with GOAWAY (h2 keeps at most 64 CONTINUATION frames of one block)."""
    report = attack(fp, creds, "continuation")
    assert report["closed"] and report["goaway"] in (PROTOCOL_ERROR, ENHANCE_YOUR_CALM), report
    assert report["sent"] < 1000, report  # without the bound: 77,000 frames in 10 s, the connection open
    answers_within(fp, creds)


def test_hpack_bomb_is_refused_before_it_is_decoded_whole(fp, creds, baseline):
    """A 4000-byte field in the dynamic table referred to 20,000 times (~20 KB on the wire, 80 MB
    decoded): the decoder stops at its header list limit; the connection ends with GOAWAY."""
    report = attack(fp, creds, "hpack-bomb", count=20_000)
    assert report["bomb_bytes_on_wire"] < 64 * 1024
    assert report["closed"] and report["goaway"] in (ENHANCE_YOUR_CALM, COMPRESSION_ERROR, PROTOCOL_ERROR), report
    answers_within(fp, creds)


def test_dynamic_table_larger_than_advertised_is_a_connection_error(fp, creds, baseline):
    """A dynamic table size update above the proxy's SETTINGS_HEADER_TABLE_SIZE (4096) is refused."""
    report = attack(fp, creds, "table-size")
    assert report["closed"] and report["goaway"] in (COMPRESSION_ERROR, PROTOCOL_ERROR), report
    answers_within(fp, creds)

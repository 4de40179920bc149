"""The server's upgrade hand-off: exec through the sandbox server with both kubectl versions, and
refused upgrades answered with a Status before the connection closes."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess

import pytest

pytestmark = pytest.mark.e2e


def test_exec_exit_code_and_stdin(sandbox_cluster, kubectl) -> None:
    base = [kubectl, "--kubeconfig", str(sandbox_cluster.admin_kubeconfig), "exec", "-n", "dev", "web-1"]
    out = subprocess.run(
        [*base, "--", "sh", "-c", "echo out; echo err >&2; exit 3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (out.returncode, out.stdout) == (3, "out\n")
    assert "err\n" in out.stderr
    piped = subprocess.run(
        [*base, "-i", "--", "cat"], input="hello stdin\n", capture_output=True, text=True, timeout=60
    )
    assert (piped.returncode, piped.stdout) == (0, "hello stdin\n")
    assert _wait_idle(sandbox_cluster) == (0, 0)  # no connection or task outlives the sessions


def _wait_idle(sb, timeout: float = 10.0) -> tuple[int, int]:
    import time

    deadline = time.monotonic() + timeout
    counts = sb.counts()
    while counts != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.02)
        counts = sb.counts()
    return counts


def _upgrade(sb, user: str | None, groups: list[str], path: str, extra: str = "") -> tuple[bytes, bytes]:
    ctx = ssl.create_default_context(cafile=str(sb.ca_pem_path))
    if user is not None:
        cert, key = sb.issue_client_cert(user, groups)
        ctx.load_cert_chain(str(cert), str(key))
    ctx.set_alpn_protocols(["http/1.1"])
    with ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", sb.port), timeout=10), server_hostname="127.0.0.1"
    ) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            f"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n{extra}\r\n".encode()
        )
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


EXEC = "/api/v1/namespaces/dev/pods/web-1/exec?command=ls&stdout=1"


@pytest.mark.parametrize(
    ("user", "groups", "path", "extra", "status"),
    [
        (
            "root",
            ["system:masters"],
            "/api/v1/namespaces/dev/pods/no-such-pod/exec?command=ls&stdout=1",
            "",
            404,
        ),
        ("alice", [], EXEC, "", 403),  # no RBAC right to create pods/exec
        (None, [], EXEC, "", 401),  # no credentials
        ("alice", [], EXEC, "Impersonate-User: root\r\n", 403),  # impersonation refused
    ],
    ids=["no-such-pod", "forbidden", "anonymous", "impersonation-refused"],
)
def test_refused_upgrade_is_a_status_then_close(sandbox_cluster, user, groups, path, extra, status) -> None:
    head, body = _upgrade(sandbox_cluster, user, groups, path, extra)
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"connection: close" in head.lower()
    doc = json.loads(body)
    assert (doc["kind"], doc["code"]) == ("Status", status)
    assert _wait_idle(sandbox_cluster) == (0, 0)

"""A stream kubegate ends tells the client why, the way each protocol can carry it, and kubectl prints it:

- ``get -w`` (a JSON watch): an ERROR event with the Status (lock: 403, expired certificate: 401, cluster
  changed or removed: 503); a protobuf watch (client-go typed clients) the same event in protobuf framing;
- ``logs -f``: the reason as the last line of the log text, then an abort, so kubectl exits non-zero (a
  log stream has no place for a Status);
- ``exec``: the error channel's Status (WebSocket v5 with kubectl 1.37, SPDY/3.1 with kubectl 1.20) and,
  on WebSocket, a close frame (1000) instead of a dropped connection ("websocket: close 1006").
- ``port-forward``: the reason on each forwarded connection's error stream (SPDY with 1.20, SPDY tunnelled
  in WebSocket with 1.37), which kubectl logs.

Real kubectl 1.37 and 1.20 against a real (sandbox) cluster through a proxy with its own lock list and a
clock the test moves."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROLE = (
    "kind: role\nversion: v8\nmetadata: {name: admin}\nspec:\n  allow:\n"
    "    kubernetes_labels: {'*': '*'}\n"
    "    kubernetes_resources: [{kind: '*', api_group: '*', namespace: '*', name: '*', verbs: ['*']}]\n"
    "    kubernetes_groups: ['system:masters']\n"
)


class Gate:
    """A proxy in front of a sandbox with a lock list, a movable clock, a roles directory the test edits
    and a registry it changes (cluster ``churn`` is the sandbox again, under another name)."""

    def __init__(self, px, locks, offset: list[timedelta], registry, roles_dir: Path, churn) -> None:
        self.px, self.locks, self.offset, self.registry = px, locks, offset, registry
        self.roles_dir, self.churn = roles_dir, churn


@pytest.fixture(scope="module")
def gate(tmp_path_factory) -> Iterator[Gate]:
    from certs.locks import LockList
    from discovery.registry import ClusterRegistry
    from proxy.testing import cluster_for_sandbox, running_proxy
    from rbac import RoleWatcher
    from sandbox.testing import running_sandbox

    base = tmp_path_factory.mktemp("stream-end")
    roles_dir = base / "roles"
    roles_dir.mkdir()
    (roles_dir / "admin.yaml").write_text(ROLE)
    offset = [timedelta(0)]
    with running_sandbox(base / "sandbox") as sandbox:
        registry = ClusterRegistry()
        registry.upsert(cluster_for_sandbox(sandbox), "test")
        churn = cluster_for_sandbox(sandbox, name="churn")
        registry.upsert(churn, "test")
        locks = LockList(base / "locks")
        with running_proxy(base / "px", clusters=registry, roles=RoleWatcher(str(roles_dir), time.time, 0.1),
                           locks=locks, clock=lambda: datetime.now(UTC) + offset[0]) as px:
            yield Gate(px, locks, offset, registry, roles_dir, churn)


@dataclass
class Cause:
    """One way kubegate ends a stream, for one fresh user: ``end()`` does it, ``restore()`` undoes it."""

    name: str
    user: str
    roles: list[str]
    cluster: str
    end: Callable[[], None]
    restore: Callable[[], None]
    says: str  # what the client is told (a part of the Status message)
    code: int


@pytest.fixture(params=["lock", "expired-certificate", "role-revoked", "cluster-removed"])
def cause(request, gate) -> Iterator[Cause]:
    user = f"{request.param.replace('-', '')}{time.monotonic_ns() % 10**9}"
    role = f"temp-{user}"
    if request.param == "lock":
        made = Cause(request.param, user, ["admin"], "sandbox", lambda: gate.locks.lock_user(user, reason="left the team"),
                     lambda: gate.locks.unlock_user(user), f'user "{user}" is locked: left the team', 403)
    elif request.param == "expired-certificate":
        made = Cause(request.param, user, ["admin"], "sandbox",
                     lambda: gate.offset.__setitem__(0, timedelta(hours=2)),  # certificates last 1 h
                     lambda: gate.offset.__setitem__(0, timedelta(0)), "certificate expired", 401)
    elif request.param == "role-revoked":
        (gate.roles_dir / f"{role}.yaml").write_text(ROLE.replace("{name: admin}", f"{{name: {role}}}"))
        time.sleep(0.3)  # the watcher looks at most every 0.1 s
        made = Cause(request.param, user, [role], "sandbox", lambda: (gate.roles_dir / f"{role}.yaml").unlink(),
                     lambda: None, "your roles no longer allow it: they no longer give access to cluster 'sandbox'",
                     403)
    else:
        made = Cause(request.param, user, ["admin"], "churn", lambda: gate.registry.remove("churn", "test"),
                     lambda: gate.registry.upsert(gate.churn, "test"), "cluster churn was removed", 404)
    yield made
    made.restore()


def _kubeconfig(gate: Gate, cause: Cause) -> Path:
    return gate.px.kubeconfig(cause.user, cause.roles, [cause.cluster])


def _start(kubectl: str, kubeconfig: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([kubectl, "--kubeconfig", str(kubeconfig), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _until_output(proc: subprocess.Popen[bytes], needle: bytes, timeout: float = 60) -> None:
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        assert time.monotonic() < deadline, seen
        if select.select([proc.stdout], [], [], 0.5)[0]:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, seen
            seen += chunk


def _watch_status(gate: Gate, user: str) -> int | None:
    """The HTTP status of ``user``'s watch through the proxy (0 before the upstream's head), None if none."""

    async def read() -> int | None:
        found = [ex.status for ex in gate.px.proxy.fwd.exchanges if ex.kind == "watch" and ex.identity.user == user]
        return found[0] if found else None

    return gate.px.call(read)


def _wait(predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def _ended(proc: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, str, str]:
    """kubectl's exit code and output once kubegate ended its stream (stdin stays open until then: an exec
    of ``cat`` would otherwise end on its own, successfully)."""
    try:
        proc.wait(timeout)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def test_get_watch_is_told_why_kubegate_ended_it(gate, kubectl, cause):
    proc = _start(kubectl, _kubeconfig(gate, cause), "get", "pods", "-n", "dev", "-w")
    _until_output(proc, b"web-1")  # the list; the watch follows it
    _wait(lambda: _watch_status(gate, cause.user) is not None)
    # The sandbox, like an apiserver, sends a watch's response head with its first event: make one, so
    # that the stream is under way when it is ended (before that, the client gets an ordinary error
    # response with the same Status; see test_a_watch_ended_before_its_first_event_gets_the_status).
    touch = gate.px.kubeconfig("toucher", ["admin"], [cause.cluster])
    subprocess.run([kubectl, "--kubeconfig", str(touch), "annotate", "pod", "web-1", "-n", "dev",
                    f"touched={time.monotonic_ns()}", "--overwrite"], check=True, capture_output=True, timeout=60)
    _wait(lambda: _watch_status(gate, cause.user) == 200)
    cause.end()
    code, out, err = _ended(proc)
    # kubectl prints the ERROR event's Status as a row of its table and exits 0 when the watch ends (a
    # watch gives kubectl no way to fail: an abort would only add a decode-error row).
    assert code == 0, err
    reason = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}[cause.code]
    assert re.search(rf"STATUS\s+REASON\s+MESSAGE\nFailure\s+{reason}\s+.*{re.escape(cause.says)}", out), out


def test_logs_follow_is_told_why_kubegate_ended_it(gate, kubectl, cause):
    proc = _start(kubectl, _kubeconfig(gate, cause), "logs", "-f", "-n", "dev", "web-1")
    _until_output(proc, b"web-1 ready")
    cause.end()
    code, out, err = _ended(proc)
    # A log is text: the reason is its last line; then the stream is aborted, so kubectl exits 1.
    last = out.rstrip("\n").rsplit("\n", 1)[-1]
    assert last.startswith("kubegate: ") and cause.says in last, out
    assert code == 1 and "stream error" in err, err


def test_exec_is_told_why_kubegate_ended_it(gate, kubectl, cause):
    proc = _start(kubectl, _kubeconfig(gate, cause), "exec", "-i", "-n", "dev", "web-1", "--", "sh", "-c", "echo ready; cat")
    _until_output(proc, b"ready")
    cause.end()
    code, out, err = _ended(proc)
    # The error channel's Status (WebSocket v5 for 1.37, SPDY v4 for 1.20): kubectl prints its message.
    assert code == 1, err
    assert err.startswith("error: ") and cause.says in err and "1006" not in err, err


@contextmanager
def _stand_in_api(gate: Gate, tmp_path: Path, answer: bytes) -> Iterator[list[ssl.SSLSocket]]:
    """Cluster ``standin``: a TLS server that reads each request, sends ``answer`` (maybe nothing) and keeps
    the connection open; yields the connections it accepted. A stand-in for an API server in a state the
    sandbox cannot be put in (one that has not answered yet; a protobuf watch: the sandbox's are JSON)."""
    from certs.ca import CertificateAuthority
    from discovery.model import Cluster

    ca = CertificateAuthority.create_in_memory()
    issued = ca.issue_server_certificate(["127.0.0.1"])
    (tmp_path / "api.pem").write_bytes(issued.cert_pem + issued.key_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(tmp_path / "api.pem"))
    server_ctx.set_alpn_protocols(["http/1.1"])
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[ssl.SSLSocket] = []

    def serve() -> None:
        while True:
            try:
                raw, _ = server.accept()
            except OSError:
                return
            try:
                conn = server_ctx.wrap_socket(raw, server_side=True)
                conn.recv(65536)  # the request
                conn.sendall(answer)
                accepted.append(conn)
            except OSError:
                raw.close()

    threading.Thread(target=serve, daemon=True).start()
    gate.registry.upsert(Cluster(name="standin", labels={"env": "test"}, server=f"https://127.0.0.1:{server.getsockname()[1]}",
                                 ca_pem=ca.cert_pem), "test")
    try:
        yield accepted
    finally:
        gate.registry.remove("standin", "test")
        server.close()
        for conn in accepted:
            conn.close()


def _user_socket(gate: Gate, user: str) -> ssl.SSLSocket:
    cert, key = gate.px.issue_user(user, ["admin"])
    ctx = ssl.create_default_context(cafile=str(gate.px.ca_pem_path))
    ctx.load_cert_chain(str(cert), str(key))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", gate.px.port), timeout=30), server_hostname="127.0.0.1")


def test_a_watch_ended_before_the_upstream_answered_gets_the_status_as_its_answer(gate, tmp_path):
    """Before the upstream's response head (an API server that has not answered yet) there is no stream to
    carry an event: the client gets an ordinary error response with the Status, not a reset."""
    user = f"early{time.monotonic_ns() % 10**9}"
    try:
        with _stand_in_api(gate, tmp_path, b"") as accepted, _user_socket(gate, user) as sock:
            sock.sendall(b"GET /k8s/clusters/standin/api/v1/namespaces/dev/pods?watch=true HTTP/1.1\r\nHost: x\r\n\r\n")
            _wait(lambda: _watch_status(gate, user) == 0 and bool(accepted))
            gate.locks.lock_user(user, reason="left the team")
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
    finally:
        gate.locks.unlock_user(user)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403"), head
    status = json.loads(body)
    assert status["kind"] == "Status" and status["reason"] == "Forbidden"
    assert status["message"] == f'kubegate ended this stream: user "{user}" is locked: left the team'


def _unchunk(body: bytes) -> tuple[bytes, bool]:
    """An HTTP/1.1 chunked body's bytes so far, and whether its last chunk came."""
    out, pos = b"", 0
    while (line_end := body.find(b"\r\n", pos)) >= 0:
        size = int(body[pos:line_end], 16)
        if size == 0:
            return out, True
        if len(body) < line_end + 2 + size + 2:
            break
        out += body[line_end + 2 : line_end + 2 + size]
        pos = line_end + 2 + size + 2
    return out, False


def test_a_protobuf_watch_gets_an_error_event_with_the_status(gate, tmp_path):
    """A protobuf watch (client-go typed clients) ended by a lock gets an ERROR event in the protobuf watch
    framing, whose Status client-go decodes with its protobuf serializer; then a clean end. The kubernetes
    Python client and kubectl's get -w speak JSON only, so the stream is read with the project's protobuf
    reader, from an API server stand-in that answers in protobuf."""
    from proxy.protocol import protobuf_watch
    from proxy.protocol.protobuf_wire import fields as protobuf_fields
    from proxy.protocol.protobuf_wire import length_delimited, unwrap

    pod = b"k8s\x00" + length_delimited(1, length_delimited(1, "v1") + length_delimited(2, "Pod")) + length_delimited(
        2, length_delimited(1, length_delimited(1, "web-1")))
    added = length_delimited(1, "ADDED") + length_delimited(2, length_delimited(1, pod))
    framed = len(added).to_bytes(4, "big") + added
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.kubernetes.protobuf;stream=watch\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(framed):x}\r\n".encode() + framed + b"\r\n")
    user = f"proto{time.monotonic_ns() % 10**9}"
    try:
        with _stand_in_api(gate, tmp_path, answer), _user_socket(gate, user) as sock:
            sock.sendall(b"GET /k8s/clusters/standin/api/v1/namespaces/dev/pods?watch=true HTTP/1.1\r\nHost: x\r\n"
                         b"Accept: application/vnd.kubernetes.protobuf;stream=watch, application/json\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data or not protobuf_watch.events(_unchunk(data.partition(b"\r\n\r\n")[2])[0]):
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
            gate.locks.lock_user(user, reason="left the team")
            while not _unchunk(data.partition(b"\r\n\r\n")[2])[1]:
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
    finally:
        gate.locks.unlock_user(user)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"application/vnd.kubernetes.protobuf;stream=watch" in head, head
    payload, ended = _unchunk(body)
    assert ended, body  # a clean end after the event
    (first, _), (kind, raw) = protobuf_watch.events(payload)
    assert first == "ADDED" and kind == "ERROR"
    status = unwrap(raw)
    assert (status.api_version, status.kind) == ("v1", "Status")
    fields = dict(protobuf_fields(status.raw))
    assert fields[2] == b"Failure" and fields[4] == b"Forbidden" and fields[6] == 403
    assert fields[3].decode() == f'kubegate ended this stream: user "{user}" is locked: left the team'


def test_port_forward_is_told_why_kubegate_ended_it(gate, kubectl, tmp_path):
    """kubectl port-forward (SPDY with 1.20, SPDY tunnelled in WebSocket with 1.37) reads each forwarded
    connection's error stream and prints its text: a lock ends the session with the reason there."""
    from proxy.testing import echo_pod_manifest, tcp_echo_server

    user = f"pf{time.monotonic_ns() % 10**9}"
    kubeconfig = gate.px.kubeconfig(user, ["admin"], ["sandbox"])
    pod = f"pf-{user}"
    manifest = tmp_path / "pod.yaml"
    try:
        with tcp_echo_server() as echo_port:
            manifest.write_text(echo_pod_manifest(pod, "dev", echo_port))
            subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "apply", "-f", str(manifest)], check=True,
                           capture_output=True, timeout=60)
            proc = _start(kubectl, kubeconfig, "port-forward", "-n", "dev", f"pod/{pod}", ":8080")
            assert proc.stdout is not None
            seen = b""
            while not (match := re.search(rb"127\.0\.0\.1:(\d+) -> 8080", seen)):
                assert select.select([proc.stdout], [], [], 60)[0], seen
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, seen
                seen += chunk
            with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=30) as sock:
                sock.sendall(b"ping")
                assert sock.recv(4) == b"ping"  # the forwarded connection is open, its streams too
                gate.locks.lock_user(user, reason="left the team")
                code, out, err = _ended(proc)
    finally:
        gate.locks.unlock_user(user)
        subprocess.run([kubectl, "--kubeconfig", str(gate.px.kubeconfig("cleaner", ["admin"], ["sandbox"])), "delete",
                        "pod", pod, "-n", "dev", "--wait=false"], capture_output=True, timeout=60)
    said = f'user "{user}" is locked: left the team'  # (1.37 logs it quoted: its quotes escaped)
    assert said in err or said.replace('"', '\\"') in err, (code, out, err)

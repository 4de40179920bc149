"""kubectl 1.37 and 1.20, over h2 and HTTP/1.1, through kubegate to the sandbox cluster: everything a
user does works the same as against the cluster directly."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import threading
import time
import uuid

import pytest

pytestmark = pytest.mark.e2e


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def ok(result):
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode()


# Deadlines only bound a failure: every wait below ends as soon as what it awaits has happened, so a
# generous deadline costs nothing when the machine is fast and avoids flakes when it is loaded.
DEADLINE = 60.0


def read_until(stream, done, timeout: float = DEADLINE) -> bytes:
    """Read a subprocess pipe until ``done(bytes so far)`` holds, the pipe closes or the deadline passes;
    returns what was read."""
    seen = b""
    deadline = time.monotonic() + timeout
    while not done(seen) and time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.5)
        if ready:
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                break
            seen += chunk
    return seen


def available(stream) -> bytes:
    """What a subprocess pipe holds right now, without blocking (for failure messages)."""
    if stream is None or not select.select([stream], [], [], 0)[0]:
        return b""
    return os.read(stream.fileno(), 65536)


def await_watch(px, path_part: str, timeout: float = DEADLINE) -> None:
    """Wait until the proxy serves a watch whose path contains ``path_part`` (the request reached it)."""

    async def watching() -> bool:
        return any(ex.kind == "watch" and path_part in ex.head.path for ex in px.proxy.fwd.exchanges)

    deadline = time.monotonic() + timeout
    while not px.call(watching):
        assert time.monotonic() < deadline, f"no watch on {path_part} reached the proxy"
        time.sleep(0.02)


def test_get_pods_in_all_namespaces(k):
    out = ok(k("get", "pods", "-A"))
    assert re.search(r"^dev\s+web-1\s", out, re.M)
    assert re.search(r"^prod\s+api-0\s", out, re.M)


def test_get_one_pod_as_json(k):
    pod = json.loads(ok(k("get", "pod", "web-1", "-n", "dev", "-o", "json")))
    assert pod["kind"] == "Pod"
    assert pod["metadata"]["name"] == "web-1"


def test_unknown_object_is_the_clusters_not_found(k):
    result = k("get", "pod", "no-such-pod", "-n", "dev")
    assert result.returncode != 0
    assert b'pods "no-such-pod" not found' in result.stderr


def test_apply_patch_delete_a_configmap(k, tmp_path):
    name = unique("cm")
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: dev}}\ndata: {{a: '1'}}\n"
    )
    assert "created" in ok(k("apply", "-f", str(manifest)))
    ok(k("patch", "configmap", name, "-n", "dev", "--type", "merge", "-p", '{"data":{"b":"2"}}'))
    data = json.loads(ok(k("get", "configmap", name, "-n", "dev", "-o", "json")))["data"]
    assert data == {"a": "1", "b": "2"}
    assert "deleted" in ok(k("delete", "configmap", name, "-n", "dev"))
    assert k("get", "configmap", name, "-n", "dev").returncode != 0


def test_logs(k):
    assert "web-1 ready" in ok(k("logs", "-n", "dev", "web-1"))


def test_logs_follow_streams_until_stopped(popen_kubectl):
    proc = popen_kubectl("logs", "-f", "-n", "dev", "web-1")
    assert proc.stdout is not None
    seen = read_until(proc.stdout, lambda seen: b"web-1 ready" in seen)
    assert b"web-1 ready" in seen
    assert proc.poll() is None  # still following


def test_watch_sees_a_new_object_event_by_event(k, px, popen_kubectl, tmp_path):
    name = unique("watched")
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: dev}}\n")
    proc = popen_kubectl("get", "configmaps", "-n", "dev", "-w", "--output-watch-events", "-o", "name")
    assert proc.stdout is not None
    await_watch(px, "/namespaces/dev/configmaps")  # the object is created after the watch started
    ok(k("apply", "-f", str(manifest)))
    seen = read_until(proc.stdout, lambda seen: f"configmap/{name}".encode() in seen)
    assert f"configmap/{name}".encode() in seen, seen


def test_exec_prints_output(k):
    assert ok(k("exec", "-n", "dev", "web-1", "--", "echo", "hello-through-kubegate")) == "hello-through-kubegate\n"


def test_exec_with_piped_stdin_ends_by_itself(k):
    payload = b"line one\nline two\n"
    result = k("exec", "-i", "-n", "dev", "web-1", "--", "cat", input=payload, timeout=DEADLINE)
    assert result.returncode == 0, result.stderr
    assert result.stdout == payload


def test_exec_exit_code_is_propagated(k):
    result = k("exec", "-n", "dev", "web-1", "--", "sh", "-c", "exit 3")
    assert result.returncode == 3


def test_cp_round_trip(k, tmp_path):
    source = tmp_path / "source.bin"
    payload = os.urandom(200_000)
    source.write_bytes(payload)
    target = unique("copied")
    ok(k("cp", str(source), f"dev/web-1:{target}"))
    back = tmp_path / "back.bin"
    ok(k("cp", f"dev/web-1:{target}", str(back)))
    assert back.read_bytes() == payload


def test_auth_can_i(k):
    assert ok(k("auth", "can-i", "get", "pods", "-n", "dev")).strip() == "yes"


class _Echo:
    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)


def test_port_forward_round_trips_bytes(k, popen_kubectl, tmp_path):
    echo = _Echo()
    name = unique("pf")
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\n"
        f"metadata: {{name: {name}, namespace: dev, annotations: {{sandbox.kubegate.dev/port-8080: '{echo.port}'}}}}\n"
        "spec: {containers: [{name: main, image: busybox, ports: [{containerPort: 8080}]}]}\n"
    )
    ok(k("apply", "-f", str(manifest)))
    try:
        proc = popen_kubectl("port-forward", "-n", "dev", f"pod/{name}", ":8080")
        assert proc.stdout is not None
        line = read_until(proc.stdout, lambda seen: b"\n" in seen).decode()
        match = re.search(r"127\.0\.0\.1:(\d+) -> 8080", line)
        assert match, line + available(proc.stderr).decode(errors="replace")
        payload = os.urandom(100_000)
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=DEADLINE) as sock:
            sock.sendall(payload)
            received = b""
            while len(received) < len(payload):
                chunk = sock.recv(65536)
                assert chunk, "connection closed early"
                received += chunk
        assert received == payload
    finally:
        echo.sock.close()
        k("delete", "pod", name, "-n", "dev", "--wait=false")


def test_a_role_without_exec_gets_a_forbidden_status(k_as):
    dora = k_as("dora", ["dev"])
    assert "web-1" in ok(dora("get", "pods", "-n", "dev"))
    denied = dora("exec", "-n", "dev", "web-1", "--", "echo", "no")
    assert denied.returncode != 0
    assert b"forbidden" in denied.stderr.lower()
    hidden = dora("get", "pods", "-n", "prod")
    assert hidden.returncode != 0
    assert b"forbidden" in hidden.stderr.lower()


def test_exec_session_is_audited_with_its_exit_code(k, px):
    result = k("exec", "-n", "dev", "web-1", "--", "sh", "-c", "echo audited; exit 4")
    assert result.returncode == 4

    def ends():
        return [e for e in px.audit_events if e["event"] == "session.end" and e.get("exit_code") == 4]

    deadline = time.monotonic() + DEADLINE  # the relay may close a moment after kubectl exits
    while not ends() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ends()
    assert ends()[-1]["user"] == "alice" and ends()[-1]["cluster"] == "sandbox"


def test_a_name_restricted_role_sees_only_its_pods_in_lists_and_watches(k, k_as, px, kubectl, wire, tmp_path):
    import subprocess

    wendy = k_as("wendy", ["web"])
    listed = ok(wendy("get", "pods", "-A", "-o", "name")).split()
    assert listed and all(name.startswith("pod/web-") for name in listed)
    assert "pod/api-0" not in listed and "pod/db-0" not in listed

    kubeconfig = px.kubeconfig("wendy", ["web"], ["sandbox"])
    env = dict(os.environ, **({"DISABLE_HTTP2": "1"} if wire == "http1" else {}))
    watch = subprocess.Popen([kubectl, "--kubeconfig", str(kubeconfig), "get", "pods", "-A", "-w", "-o", "name"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    hidden, shown = unique("api"), unique("web")
    try:
        assert watch.stdout is not None
        await_watch(px, "/api/v1/pods")
        # Created after the watch started, the hidden pod first: the watch delivers events in order, so
        # once the shown pod's event is out, the hidden one's would have been printed before it.
        for name in (hidden, shown):
            manifest = tmp_path / f"{name}.yaml"
            manifest.write_text(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: dev}}\n"
                                "spec: {containers: [{name: main, image: busybox}]}\n")
            ok(k("apply", "-f", str(manifest)))
        out = read_until(watch.stdout, lambda seen: f"pod/{shown}".encode() in seen)
        names = out.decode().split()
        assert f"pod/{shown}" in names, (out, available(watch.stderr))
        assert "pod/web-1" in names  # from the watch's initial list
        assert all(name.startswith("pod/web-") for name in names), names
        assert f"pod/{hidden}" not in names
    finally:
        watch.kill()
        watch.wait(timeout=DEADLINE)
        for stream in (watch.stdout, watch.stderr):
            if stream is not None:
                stream.close()
        k("delete", "pod", hidden, shown, "-n", "dev", "--wait=false")


def test_exec_with_a_tty(kubectl, admin_kubeconfig, wire):
    import pty
    import subprocess

    master, slave = pty.openpty()
    env = dict(os.environ, **({"DISABLE_HTTP2": "1"} if wire == "http1" else {}))
    proc = subprocess.Popen(
        [kubectl, "--kubeconfig", str(admin_kubeconfig), "exec", "-it", "-n", "dev", "web-1", "--", "sh"],
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True, close_fds=True, env=env,
    )
    os.close(slave)
    try:
        os.write(master, b"tty -s && echo IS-A-TTY; echo $((6*7))x\n")
        out = b""
        deadline = time.monotonic() + DEADLINE
        while b"42x" not in out and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                try:
                    out += os.read(master, 4096)
                except OSError:
                    break
        assert b"IS-A-TTY" in out and b"42x" in out, out
        os.write(master, b"exit 7\n")
        assert proc.wait(timeout=DEADLINE) == 7
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_exec_into_a_missing_pod_relays_the_upstream_refusal(k):
    result = k("exec", "-n", "dev", "no-such-pod", "--", "echo", "x", timeout=DEADLINE)
    assert result.returncode != 0
    assert b'"no-such-pod" not found' in result.stderr


def test_attach_talks_to_the_pods_console(popen_kubectl):
    proc = popen_kubectl("attach", "-i", "-n", "dev", "web-1")
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"echo attached-$((40+2))\n")
    proc.stdin.flush()
    seen = read_until(proc.stdout, lambda seen: b"attached-42" in seen)
    assert b"attached-42" in seen, (seen, available(proc.stderr))
    proc.stdin.close()  # stdin EOF detaches
    assert proc.wait(timeout=DEADLINE) == 0

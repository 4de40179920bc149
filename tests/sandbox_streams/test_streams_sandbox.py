"""exec / cp / port-forward / attach end to end through the real sandbox server (TLS, authentication,
RBAC, sandbox.streams), with kubectl 1.37 (WebSocket) and 1.20 (SPDY) and the Python client."""

from __future__ import annotations

import copy
import os
import pty
import re
import select
import socket
import subprocess
import time

import pytest

pytestmark = pytest.mark.e2e


def kubectl_run(kubectl: str, kubeconfig, *args: str, input: bytes | None = None):
    return subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), *args], input=input, capture_output=True,
                          timeout=30)


def test_exec_stdin_and_exit_code(kubectl, sandbox_cluster):
    result = kubectl_run(kubectl, sandbox_cluster.admin_kubeconfig, "exec", "-i", "-n", "default", "hello", "--",
                         "sh", "-c", "cat; echo done >&2; exit 3", input=b"through TLS\n")
    assert result.stdout == b"through TLS\n"
    assert b"done\n" in result.stderr
    assert result.returncode == 3


def test_exec_with_tty(kubectl, sandbox_cluster):
    master, slave = pty.openpty()
    proc = subprocess.Popen([kubectl, "--kubeconfig", str(sandbox_cluster.admin_kubeconfig), "exec", "-it",
                             "hello", "--", "sh"], stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    try:
        os.write(master, b"tty -s && echo TTY-$((2*21))\n")
        seen = b""
        deadline = time.monotonic() + 20
        while b"TTY-42" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                seen += os.read(master, 4096)
        assert b"TTY-42" in seen
        os.write(master, b"exit 4\n")
        assert proc.wait(timeout=20) == 4
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_cp_round_trip(kubectl, sandbox_cluster, tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes(b"copy me\n" * 1000)
    assert kubectl_run(kubectl, sandbox_cluster.admin_kubeconfig, "cp", str(source), "hello:in.txt").returncode == 0
    back = tmp_path / "back.txt"
    result = kubectl_run(kubectl, sandbox_cluster.admin_kubeconfig, "cp", "hello:in.txt", str(back))
    assert result.returncode == 0, result.stderr
    assert back.read_bytes() == source.read_bytes()


def test_port_forward_through_the_sandbox(kubectl, sandbox_cluster, echo_server):
    pod = copy.deepcopy(sandbox_cluster.store.get_object("", "pods", "default", "hello"))
    pod["metadata"]["name"] = "echo"
    pod["metadata"]["annotations"] = {"sandbox.kubegate.dev/port-80": str(echo_server.port)}
    for key in ("resourceVersion", "uid", "creationTimestamp"):
        pod["metadata"].pop(key, None)
    sandbox_cluster.store.put_object("", "pods", pod)
    proc = subprocess.Popen([kubectl, "--kubeconfig", str(sandbox_cluster.admin_kubeconfig), "port-forward",
                             "pod/echo", ":80"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        match = re.search(r"127\.0\.0\.1:(\d+) -> 80", line)
        assert match, line
        payload = os.urandom(50_000)
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=10) as sock:
            sock.sendall(payload)
            received = b""
            while len(received) < len(payload):
                chunk = sock.recv(65536)
                assert chunk
                received += chunk
        assert received == payload
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_exec_without_permission_is_forbidden_after_the_fallback(kubectl, sandbox_cluster, tmp_path):
    kubeconfig = sandbox_cluster.client_kubeconfig("mallory", [], tmp_path / "mallory.kubeconfig")
    result = kubectl_run(kubectl, kubeconfig, "exec", "hello", "--", "true")
    assert result.returncode != 0
    assert b"forbidden" in result.stderr.lower()


def test_python_client_stream_exec(sandbox_cluster):
    from kubernetes import client, config
    from kubernetes.stream import stream

    api = client.CoreV1Api(config.new_client_from_config(config_file=str(sandbox_cluster.admin_kubeconfig)))
    resp = stream(api.connect_get_namespaced_pod_exec, "hello", "default",
                  command=["sh", "-c", "echo py-$((1+1)); exit 6"], stderr=True, stdin=False, stdout=True,
                  tty=False, _preload_content=False)
    resp.run_forever(timeout=20)
    assert resp.read_stdout() == "py-2\n"
    assert resp.returncode == 6
    resp.close()


def test_attach_to_the_pod_console(kubectl, sandbox_cluster):
    # Each parametrized run has its own sandbox (own event loop) on the same pod: the console of an
    # earlier server must not be reused.
    proc = subprocess.Popen([kubectl, "--kubeconfig", str(sandbox_cluster.admin_kubeconfig), "attach", "-i",
                             "hello"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"echo console-$((3*3))\n")
        proc.stdin.flush()
        seen = b""
        deadline = time.monotonic() + 20
        while b"console-9" not in seen and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 1)[0]:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                seen += chunk
        assert b"console-9" in seen
        proc.stdin.close()
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

"""exec / cp / attach / port-forward with real kubectl (1.37: WebSocket; 1.20: SPDY) against
sandbox.streams, served by the plain-HTTP pod harness (sandbox.stream_harness)."""

from __future__ import annotations

import os
import pty
import re
import select
import socket
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def run(kubectl: str, kubeconfig: str, *args: str, input: bytes | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([kubectl, "--kubeconfig", kubeconfig, *args], input=input, capture_output=True,
                          timeout=timeout)


def test_exec_prints_command_output(kubectl, harness_kubeconfig):
    result = run(kubectl, harness_kubeconfig, "exec", "web", "--", "echo", "hello", "world")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello world\n"


def test_exec_runs_in_the_pods_own_directory(kubectl, harness, harness_kubeconfig):
    result = run(kubectl, harness_kubeconfig, "exec", "web", "--", "pwd")
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.decode().strip()) == harness.pod_root / "default" / "web"


def test_exec_with_piped_stdin_ends_by_itself(kubectl, harness_kubeconfig):
    data = b"".join(b"line %d\n" % i for i in range(5000))
    result = run(kubectl, harness_kubeconfig, "exec", "-i", "web", "--", "cat", input=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == data


def test_exec_separates_stdout_and_stderr(kubectl, harness_kubeconfig):
    result = run(kubectl, harness_kubeconfig, "exec", "web", "--", "sh", "-c", "echo out; echo err >&2")
    assert result.returncode == 0
    assert result.stdout == b"out\n"
    assert b"err\n" in result.stderr


def test_exec_propagates_the_exit_code(kubectl, harness_kubeconfig):
    result = run(kubectl, harness_kubeconfig, "exec", "web", "--", "sh", "-c", "exit 3")
    assert result.returncode == 3
    assert b"command terminated with exit code 3" in result.stderr


def test_exec_of_a_missing_program_is_an_error_not_a_hang(kubectl, harness_kubeconfig):
    result = run(kubectl, harness_kubeconfig, "exec", "web", "--", "/no/such/program")
    assert result.returncode != 0
    assert b"no/such/program" in result.stderr


def test_exec_in_an_unknown_container_is_refused(kubectl, harness_kubeconfig):
    result = run(kubectl, harness_kubeconfig, "exec", "shell", "-c", "nope", "--", "true")
    assert result.returncode != 0
    assert b"nope" in result.stderr


def test_exec_with_a_tty_runs_under_a_pty_and_resizes(kubectl, harness_kubeconfig):
    master, slave = pty.openpty()
    os.set_blocking(master, True)
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    proc = subprocess.Popen(
        [kubectl, "--kubeconfig", harness_kubeconfig, "exec", "-it", "web", "--", "sh"],
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True, close_fds=True,
    )
    os.close(slave)
    try:
        os.write(master, b"tty -s && echo IS-A-TTY; stty size; echo $((6*7))x\n")
        output = _read_until(master, b"42x", timeout=20)
        assert b"IS-A-TTY" in output
        assert b"33 111" in output
        os.write(master, b"exit 5\n")
        assert proc.wait(timeout=20) == 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    out = b""
    while needle not in out:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{needle!r} not seen; got {out!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def test_cp_to_and_from_a_pod(kubectl, harness, harness_kubeconfig, tmp_path):
    source = tmp_path / "source.bin"
    payload = os.urandom(300_000)
    source.write_bytes(payload)
    up = run(kubectl, harness_kubeconfig, "cp", str(source), "web:copied.bin")
    assert up.returncode == 0, up.stderr
    assert (harness.pod_root / "default" / "web" / "copied.bin").read_bytes() == payload

    back = tmp_path / "back.bin"
    down = run(kubectl, harness_kubeconfig, "cp", "web:copied.bin", str(back))
    assert down.returncode == 0, down.stderr
    assert back.read_bytes() == payload


def test_port_forward_round_trips_bytes(kubectl, harness_kubeconfig):
    proc = subprocess.Popen([kubectl, "--kubeconfig", harness_kubeconfig, "port-forward", "pod/web", ":8080"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        match = re.search(r"127\.0\.0\.1:(\d+) -> 8080", line)
        assert match, line
        local = int(match.group(1))
        for attempt in range(2):  # two connections through one port-forward session
            payload = os.urandom(100_000) + b"attempt %d" % attempt
            with socket.create_connection(("127.0.0.1", local), timeout=10) as sock:
                sock.sendall(payload)
                received = b""
                while len(received) < len(payload):
                    chunk = sock.recv(65536)
                    assert chunk, "connection closed early"
                    received += chunk
            assert received == payload
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_attach_talks_to_the_pods_console(kubectl, harness_kubeconfig):
    proc = subprocess.Popen([kubectl, "--kubeconfig", harness_kubeconfig, "attach", "-i", "web"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"echo attached-$((40+2))\n")
        proc.stdin.flush()
        assert _read_line_with(proc.stdout.fileno(), b"attached-42", timeout=20)
        proc.stdin.close()  # stdin EOF detaches; the console keeps running
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _read_line_with(fd: int, needle: bytes, timeout: float) -> bool:
    return needle in _read_until(fd, needle, timeout)


def test_port_forward_of_two_ports_with_concurrent_connections(kubectl, harness_kubeconfig):
    proc = subprocess.Popen([kubectl, "--kubeconfig", harness_kubeconfig, "port-forward", "pod/web", ":8080",
                             ":9090"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        locals_: dict[int, int] = {}
        while len(locals_) < 2:
            line = proc.stdout.readline().decode()
            assert line, "port-forward ended early"
            match = re.search(r"127\.0\.0\.1:(\d+) -> (\d+)", line)
            if match:
                locals_[int(match.group(2))] = int(match.group(1))
        socks = [socket.create_connection(("127.0.0.1", locals_[port]), timeout=10)
                 for port in (8080, 9090, 8080)]
        for i, sock in enumerate(socks):  # interleaved: each connection has its own stream pair
            sock.sendall(b"conn-%d;" % i)
        for i, sock in enumerate(socks):
            expected = b"conn-%d;" % i
            received = b""
            while len(received) < len(expected):
                chunk = sock.recv(1024)
                assert chunk
                received += chunk
            assert received == expected
            sock.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_attach_with_a_tty_to_a_tty_console(kubectl, harness, harness_kubeconfig):
    pod = harness.pods[("default", "shell")]
    for container in pod["spec"]["containers"]:
        container.update(tty=True, stdin=True)
    master, slave = pty.openpty()
    proc = subprocess.Popen([kubectl, "--kubeconfig", harness_kubeconfig, "attach", "-it", "shell", "-c", "main"],
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        os.write(master, b"tty -s && echo CONSOLE-TTY-$((5*5))\n")
        assert b"CONSOLE-TTY-25" in _read_until(master, b"CONSOLE-TTY-25", timeout=20)
    finally:
        proc.kill()
        proc.wait()
        os.close(master)

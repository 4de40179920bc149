"""Fixtures for the stream tests: a pod API harness (sandbox.stream_harness) and a loopback echo server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.stream_harness import StreamHarness, make_pod


class EchoServer:
    """Loopback TCP echo server (one thread per connection), for port-forward tests."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
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

    def close(self) -> None:
        self._stop = True
        self.sock.close()


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def harness(tmp_path: Path, echo_server: EchoServer) -> Iterator[StreamHarness]:
    pods = [
        make_pod("web", annotations={"sandbox.kubegate.dev/port-8080": str(echo_server.port),
                                     "sandbox.kubegate.dev/port-9090": str(echo_server.port)}),
        make_pod("shell", containers=("main", "sidecar")),
    ]
    with StreamHarness(pods, tmp_path / "pods") as h:
        yield h


@pytest.fixture
def harness_kubeconfig(harness: StreamHarness, tmp_path: Path) -> str:
    return str(harness.kubeconfig(tmp_path / "kubeconfig"))

"""Fixtures for the certs tests: an injectable clock, a fresh CA, and a tiny mTLS HTTPS server that
requires client certificates from that CA (standing in for the proxy in handshake tests)."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from certs.ca import CertificateAuthority
from certs.identity import identity_from_certificate
from rbac.identity import Identity


class FakeClock:
    """Unix seconds that move only when a test says so."""

    def __init__(self, start: float | None = None) -> None:
        self.now = float(int(start if start is not None else time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    authority, created = CertificateAuthority.load_or_create(tmp_path / "state" / "ca")
    assert created
    return authority


class MtlsServer:
    """An HTTPS server on 127.0.0.1 that requires a client certificate signed by ``ca``.

    Every request is answered with a Kubernetes ``/version``-like JSON document; ``identities`` records
    the kubegate identity read from each request's client certificate, ``paths`` the request paths.
    """

    def __init__(self, ca: CertificateAuthority, workdir: Path) -> None:
        cert_file, key_file, _ = ca.ensure_server_certificate(
            ["127.0.0.1", "localhost"], workdir / "server.pem", workdir / "server-key.pem"
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        context.load_verify_locations(cadata=ca.cert_pem.decode())
        context.verify_mode = ssl.CERT_REQUIRED
        self.identities: list[Identity] = []
        self.paths: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def setup(self) -> None:
                self.request.do_handshake()
                super().setup()

            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                der = self.request.getpeercert(binary_form=True)
                from cryptography import x509

                owner.identities.append(identity_from_certificate(x509.load_der_x509_certificate(der)))
                owner.paths.append(self.path)
                body = json.dumps(
                    {
                        "major": "1",
                        "minor": "37",
                        "gitVersion": "v1.37.0-kubegate-test",
                        "gitCommit": "0000000",
                        "gitTreeState": "clean",
                        "buildDate": "2026-01-01T00:00:00Z",
                        "goVersion": "go1.25",
                        "compiler": "gc",
                        "platform": "linux/amd64",
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(
            self.server.socket, server_side=True, do_handshake_on_connect=False
        )
        self.port = self.server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def mtls_server(ca: CertificateAuthority, tmp_path: Path) -> Iterator[MtlsServer]:
    server = MtlsServer(ca, tmp_path / "mtls")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def mtls_server_for(tmp_path: Path) -> Iterator[Callable[[CertificateAuthority], MtlsServer]]:
    """A factory: ``mtls_server_for(ca)`` starts an MtlsServer trusting ``ca``; all are closed at teardown."""
    servers: list[MtlsServer] = []

    def start(authority: CertificateAuthority) -> MtlsServer:
        server = MtlsServer(authority, tmp_path / f"mtls-{len(servers)}")
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()

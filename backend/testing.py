"""A real etcd cluster on loopback for tests and benchmarks (Debian's ``etcd`` binary in .tools/bin).

    with EtcdCluster(tmp_path, members=3) as etcd:
        backend = EtcdBackend(etcd.endpoints, prefix="/t/")
        etcd.kill(0)             # SIGKILL one member (its data stays)
        etcd.start(0)            # and back, with the same data
        etcd.stop_all(); etcd.start_all()

    with EtcdCluster(tmp_path, members=1, tls=True) as etcd:   # https, client certificates required
        EtcdBackend(etcd.endpoints, ca_file=etcd.ca_file, cert_file=etcd.client_cert, key_file=etcd.client_key)

Ports come from the OS (bound to 0, released, handed to etcd). Short heartbeat and election timeouts
make elections (and so the minimum lease TTL, ~1 s) fast. With ``tls=True`` the client URLs are https
with a serving certificate for 127.0.0.1 and ``--client-cert-auth`` (certificates from the sandbox's
test PKI, ``sandbox.tls.SandboxPKI``). Every member is this object's own child
process, ended by PID on exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
ETCD = ROOT / ".tools" / "bin" / "etcd"


def etcd_binary() -> str | None:
    if ETCD.is_file():
        return str(ETCD)
    return shutil.which("etcd")


def _member_certificate(pki: object, directory: Path) -> tuple[str, str]:
    """A serving certificate for 127.0.0.1 that is also a client certificate: etcd 3.4's JSON gateway
    dials its own gRPC server with the member's certificate, which ``--client-cert-auth`` then checks."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from certs import building
    from certs.files import write_atomic

    key = building.generate_private_key()
    now = datetime.now(UTC)
    builder = building.leaf_builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etcd-member")]),
                                    key.public_key(), pki.ca_cert, now - timedelta(minutes=5),  # type: ignore[attr-defined]
                                    now + timedelta(days=1))
    builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                           ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    builder = builder.add_extension(x509.SubjectAlternativeName(building.san_entries(["127.0.0.1", "localhost"])),
                                    critical=False)
    cert = building.sign(builder, pki.ca_key)  # type: ignore[attr-defined]
    cert_path, key_path = directory / "member.crt", directory / "member.key"
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    write_atomic(key_path, building.private_key_pem(key), 0o600)
    return str(cert_path), str(key_path)


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EtcdCluster:
    def __init__(self, workdir: Path, members: int = 3, *, token: str = "kubegate-test", tls: bool = False) -> None:
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError("etcd is not installed: run scripts/install-tools.sh")
        self.binary = binary
        self.workdir = Path(workdir)
        self.names = [f"m{i}" for i in range(members)]
        self.client_ports = [_port() for _ in self.names]
        self.peer_ports = [_port() for _ in self.names]
        self.token = token
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * members
        self.tls = tls
        self.ca_file = self.client_cert = self.client_key = None
        if tls:
            from sandbox.tls import SandboxPKI

            pki = SandboxPKI(self.workdir / "tls")
            self.ca_file = str(pki.ca_cert_path)
            self.server_cert, self.server_key = _member_certificate(pki, self.workdir / "tls")
            cert, key = pki.issue_client_cert("kubegate", [])
            self.client_cert, self.client_key = str(cert), str(key)

    @property
    def endpoints(self) -> list[str]:
        scheme = "https" if self.tls else "http"
        return [f"{scheme}://127.0.0.1:{port}" for port in self.client_ports]

    def _args(self, i: int) -> list[str]:
        initial = ",".join(f"{name}=http://127.0.0.1:{port}" for name, port in zip(self.names, self.peer_ports,
                                                                                   strict=True))
        return [
            self.binary, "--name", self.names[i], "--data-dir", str(self.workdir / self.names[i]),
            "--listen-client-urls", self.endpoints[i], "--advertise-client-urls", self.endpoints[i],
            "--listen-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--log-level", "error", "--logger", "zap",
        ] + ([
            "--cert-file", self.server_cert, "--key-file", self.server_key, "--client-cert-auth",
            "--trusted-ca-file", self.ca_file,
        ] if self.tls else [])

    def start(self, i: int) -> None:
        if self.procs[i] is not None and self.procs[i].poll() is None:
            return
        log = open(self.workdir / f"{self.names[i]}.log", "ab")  # noqa: SIM115 - owned by the child
        self.procs[i] = subprocess.Popen(self._args(i), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()

    def start_all(self, timeout: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        fresh = not any((self.workdir / name).exists() for name in self.names)
        for attempt in range(3):
            for i in range(len(self.names)):
                self.start(i)
            try:
                self.wait_healthy(timeout)
                return
            except RuntimeError:
                exited = any(p is not None and p.poll() is not None for p in self.procs)
                if not (fresh and exited) or attempt == 2:
                    raise
            # a port picked a moment ago was taken by someone else before etcd bound it: new ports
            self.stop_all()
            for name in self.names:
                shutil.rmtree(self.workdir / name, ignore_errors=True)
            self.client_ports = [_port() for _ in self.names]
            self.peer_ports = [_port() for _ in self.names]

    def wait_healthy(self, timeout: float = 30.0, members: list[int] | None = None) -> None:
        deadline = time.monotonic() + timeout
        wanted = members if members is not None else [i for i, p in enumerate(self.procs) if p is not None]
        while True:
            if all(self._healthy(i) for i in wanted):
                return
            if time.monotonic() > deadline:
                logs = {n: (self.workdir / f"{n}.log").read_text(errors="replace")[-2000:] for n in self.names}
                raise RuntimeError(f"etcd did not become healthy in {timeout}s: {logs}")
            time.sleep(0.1)

    def _healthy(self, i: int) -> bool:
        context = None
        if self.tls:
            context = ssl.create_default_context(cafile=self.ca_file)
            context.load_cert_chain(self.client_cert, self.client_key)
        try:
            with urllib.request.urlopen(f"{self.endpoints[i]}/health", timeout=2, context=context) as response:
                return b'"true"' in response.read()
        except OSError:
            return False

    def kill(self, i: int) -> None:
        """SIGKILL member ``i`` (as a crash: no clean shutdown); its data directory stays."""
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        self.procs[i] = None

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for i, proc in enumerate(self.procs):
            if proc is not None:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            self.procs[i] = None

    def __enter__(self) -> EtcdCluster:
        self.start_all()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_all()

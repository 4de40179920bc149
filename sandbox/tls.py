"""The sandbox cluster's own PKI: a CA, a serving certificate for loopback, client certificates.

Files in ``<state_dir>/pki/`` (keys 0600)::

    ca.crt ca.key             the sandbox CA (clients trust ca.crt; the server verifies client certs with it)
    server.crt server.key     serving certificate: 127.0.0.1, ::1, localhost (+ extra hosts)
    users/<name>.crt/.key     client certificates issued by ``issue_client_cert`` (CN = user, O = groups)

Client certificates are what kube-apiserver's x509 authenticator reads: ``CN`` is the user name and
each ``O`` a group. Keys are EC P-256 (fast handshakes). An existing CA is loaded, never replaced.
Certificates are put together with :mod:`certs.building` (the profile kubegate's own CA uses) and
written with :func:`certs.files.write_atomic`.
"""

from __future__ import annotations

import os
import re
import ssl
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs import building
from certs.files import write_atomic

CA_VALIDITY = timedelta(days=3650)
LEAF_VALIDITY = timedelta(days=365)
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class SandboxPKI:
    """Load or create the sandbox CA in ``<state_dir>/pki`` and issue certificates from it."""

    def __init__(self, state_dir: str | os.PathLike[str], extra_hosts: Sequence[str] = ()) -> None:
        self.dir = Path(state_dir) / "pki"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.ca_cert_path = self.dir / "ca.crt"
        self.ca_key_path = self.dir / "ca.key"
        self.server_cert_path = self.dir / "server.crt"
        self.server_key_path = self.dir / "server.key"
        self._lock = threading.Lock()
        if self.ca_cert_path.exists() and self.ca_key_path.exists():
            self.ca_cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
            key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{self.ca_key_path}: not an EC private key")
            self.ca_key = key
        else:
            self.ca_key, self.ca_cert = self._new_ca()
            write_atomic(self.ca_key_path, building.private_key_pem(self.ca_key), 0o600)
            write_atomic(self.ca_cert_path, self.ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
        hosts = ["127.0.0.1", "::1", "localhost", *extra_hosts]
        self._issue_server(hosts)

    @property
    def ca_pem(self) -> bytes:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)

    # ------------------------------------------------------------------ issuance

    def _new_ca(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = building.generate_private_key()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, "kubegate-sandbox-ca"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kubegate sandbox"),
            ]
        )
        now = datetime.now(UTC)
        return key, building.self_signed_ca(key, name, now - timedelta(minutes=5), now + CA_VALIDITY)

    def _leaf(
        self,
        subject: x509.Name,
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName] | None = None,
        validity: timedelta = LEAF_VALIDITY,
        not_before: datetime | None = None,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = building.generate_private_key()
        start = not_before or datetime.now(UTC) - timedelta(minutes=5)
        builder = building.leaf_builder(subject, key.public_key(), self.ca_cert, start, start + validity)
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, building.sign(builder, self.ca_key)

    def _issue_server(self, hosts: Iterable[str]) -> None:
        key, cert = self._leaf(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubegate-sandbox-apiserver")]),
            ExtendedKeyUsageOID.SERVER_AUTH,
            building.san_entries(dict.fromkeys(hosts)),
        )
        write_atomic(self.server_key_path, building.private_key_pem(key), 0o600)
        write_atomic(self.server_cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)

    def issue_client_cert_pem(
        self,
        user: str,
        groups: Sequence[str] = (),
        validity: timedelta = LEAF_VALIDITY,
        not_before: datetime | None = None,
    ) -> tuple[bytes, bytes]:
        """(cert PEM, key PEM) for ``CN=user`` with one ``O`` per group."""
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, user))
        key, cert = self._leaf(x509.Name(attrs), ExtendedKeyUsageOID.CLIENT_AUTH, None, validity, not_before)
        return cert.public_bytes(serialization.Encoding.PEM), building.private_key_pem(key)

    def issue_client_cert(
        self, user: str, groups: Sequence[str] = (), directory: str | os.PathLike[str] | None = None
    ) -> tuple[Path, Path]:
        """Issue a client certificate and write it (cert 0644, key 0600); returns (cert_path, key_path)."""
        cert_pem, key_pem = self.issue_client_cert_pem(user, groups)
        out = Path(directory) if directory is not None else self.dir / "users"
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        stem = _SAFE.sub("_", user) or "user"
        with self._lock:
            n = 0
            while (out / f"{stem}{'-' + str(n) if n else ''}.crt").exists():
                n += 1
            stem = f"{stem}{'-' + str(n) if n else ''}"
            cert_path, key_path = out / f"{stem}.crt", out / f"{stem}.key"
            write_atomic(cert_path, cert_pem, 0o644)
            write_atomic(key_path, key_pem, 0o600)
        return cert_path, key_path

    # ------------------------------------------------------------------ TLS

    def server_ssl_context(self) -> ssl.SSLContext:
        """TLS 1.2+, ALPN h2 + http/1.1, client certificates OPTIONAL (verified against the CA when sent,
        so a request without one can still be answered 401 like kube-apiserver does)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.server_cert_path, self.server_key_path)
        ctx.load_verify_locations(cafile=str(self.ca_cert_path))
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        ctx.options |= ssl.OP_NO_COMPRESSION
        return ctx


def write_kubeconfig(
    path: str | os.PathLike[str],
    server_url: str,
    ca_pem_path: str | os.PathLike[str],
    *,
    user: str = "sandbox-admin",
    cert_path: str | os.PathLike[str] | None = None,
    key_path: str | os.PathLike[str] | None = None,
    token: str | None = None,
    context: str = "sandbox",
) -> Path:
    """Write a kubeconfig (mode 0600: it names a private key or holds a token) for one identity."""
    auth: dict[str, str] = {}
    if cert_path is not None and key_path is not None:
        auth = {"client-certificate": str(cert_path), "client-key": str(key_path)}
    if token is not None:
        auth["token"] = token
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "sandbox", "cluster": {"server": server_url, "certificate-authority": str(ca_pem_path)}}
        ],
        "users": [{"name": user, "user": auth}],
        "contexts": [{"name": context, "context": {"cluster": "sandbox", "user": user}}],
        "current-context": context,
        "preferences": {},
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, yaml.safe_dump(doc, sort_keys=False).encode(), 0o600)
    return out

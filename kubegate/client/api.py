"""A small HTTPS client for a proxy's ``/kubegate/auth/`` endpoint (``http.client`` + ``ssl``; JSON).

Trust: the proxy's serving certificate is verified against a CA the caller already trusts (a pinned
kubegate CA, or the system store). ``fetch_pinned_ca`` is the first contact of a bot (and of a person
given ``--ca-pin``): it reads ``/kubegate/auth/ca`` without verifying — nothing secret is sent on that
connection — accepts the CA only if its public key hashes to the pin, and then checks that the proxy's
own certificate chains to it before anything else is said.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from cryptography import x509

from certs.issuance import ca_pin

__all__ = ["AuthClient", "ClientError", "fetch_pinned_ca", "split_proxy"]

TIMEOUT = 30.0


class ClientError(RuntimeError):
    """The proxy refused (the message is its Status message) or could not be reached."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


def split_proxy(proxy: str) -> tuple[str, int]:
    text = proxy.strip().removeprefix("https://").rstrip("/")
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ClientError(f"--proxy must be HOST:PORT, got {proxy!r}")
    return host, int(port)


@contextmanager
def _identity_file(cert_pem: bytes, key_pem: bytes) -> Iterator[str]:
    fd, path = tempfile.mkstemp(prefix="kubegate-id-", suffix=".pem")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(cert_pem.rstrip(b"\n") + b"\n" + key_pem)
        yield path
    finally:
        os.unlink(path)


class AuthClient:
    def __init__(self, proxy: str, ca_pem: bytes | None = None, identity: tuple[bytes, bytes] | None = None) -> None:
        self.proxy = proxy
        self.host, self.port = split_proxy(proxy)
        ctx = ssl.create_default_context(cadata=ca_pem.decode() if ca_pem else None)
        if ca_pem is None:
            ctx.load_default_certs()
        if identity is not None:
            with _identity_file(*identity) as path:
                ctx.load_cert_chain(path)
        self.context = ctx

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> tuple[int, Any]:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=TIMEOUT)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            conn.request(method, f"/kubegate/auth/{path}", body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except ssl.SSLCertVerificationError as exc:
            raise ClientError(f"the proxy at {self.proxy} is not trusted: {exc.verify_message} (give the kubegate "
                              "CA pin with --ca-pin sha256:…)") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ClientError(f"cannot reach the kubegate proxy at {self.proxy}: {exc}") from None
        finally:
            conn.close()
        try:
            answer = json.loads(data) if data else None
        except ValueError:
            raise ClientError(f"the proxy answered {response.status} without JSON", response.status) from None
        if response.status >= 400:
            message = answer.get("message") if isinstance(answer, dict) else None
            raise ClientError(message or f"the proxy answered {response.status}", response.status)
        return response.status, answer

    def get(self, path: str) -> Any:
        return self.request("GET", path)[1]

    def post(self, path: str, body: Mapping[str, Any]) -> Any:
        return self.request("POST", path, body)[1]


def fetch_pinned_ca(proxy: str, pin: str) -> bytes:
    """The kubegate CA of ``proxy``, accepted only when its SPKI SHA-256 equals ``pin`` (``sha256:<hex>``)
    and the proxy's serving certificate chains to it; ``ClientError`` otherwise (nothing else is sent)."""
    if not pin.startswith("sha256:") or len(pin) != 7 + 64:
        raise ClientError(f"--ca-pin must look like sha256:<64 hex digits>, got {pin!r}")
    host, port = split_proxy(proxy)
    unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(host, port, context=unverified, timeout=TIMEOUT)
    try:
        conn.request("GET", "/kubegate/auth/ca", headers={"Accept": "application/json"})
        response = conn.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise ClientError(f"cannot reach the kubegate proxy at {proxy}: {exc}") from None
    finally:
        conn.close()
    try:
        ca_pem = json.loads(data)["ca"].encode()
        certificate = x509.load_pem_x509_certificate(ca_pem)
    except (ValueError, KeyError, TypeError):
        raise ClientError(f"{proxy} did not answer a kubegate CA on /kubegate/auth/ca") from None
    actual = ca_pin(certificate)
    if actual != pin.lower():
        raise ClientError(f"the CA of {proxy} does not match the pin: expected {pin}, got {actual}; refusing "
                          "to go on (wrong proxy, or someone in between)")
    AuthClient(proxy, ca_pem).get("ca")  # the serving certificate must chain to the pinned CA
    return ca_pem

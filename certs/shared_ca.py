"""The kubegate CA shared by every replica (``backend.type: etcd``): stored in the backend, its private
key encrypted with a key file each replica holds (``backend.ca_key_file``).

Why encrypted-in-the-backend rather than designated auth replicas: every replica issues its own serving
certificate at start and (issue 11) certificates at login, so every replica needs to sign; designated
auth replicas would add a second kind of process, an internal RPC and a single point of failure for
logins. With the key encrypted (AES-256-GCM, the CA certificate's fingerprint as associated data), a
copy of etcd or of its backups reveals nothing; only a host holding the 32-byte key file can sign.
The CA certificate itself is public.

Key ``ca/bundle``: ``{"cert": PEM, "key": base64(nonce ‖ AES-GCM(ca-key PEM))}``, written once with
``create``: when two replicas start together, one CA wins and the other adopts it. Each replica keeps
a local copy in ``<state_dir>/ca/`` (what ``certs.ca.CertificateAuthority.load`` reads).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backend.base import Backend
from certs.ca import CA_CERT_NAME, CA_KEY_NAME, CAError, CertificateAuthority, private_key_pem
from certs.files import ensure_private_dir, write_atomic

KEY = "ca/bundle"


def read_key_file(path: str | os.PathLike[str] | None) -> bytes:
    """The 32-byte key: raw bytes, or 64 hex digits, or base64 of 32 bytes (whitespace ignored)."""
    if not path:
        raise CAError("backend.ca_key_file is required with backend.type etcd: every replica holds the same "
                      "32-byte key to decrypt the shared CA key (create one: head -c 32 /dev/urandom > FILE)")
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CAError(f"backend.ca_key_file: cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) == 32:
        return raw
    text = raw.strip()
    for decode in (bytes.fromhex, base64.b64decode):
        try:
            key = decode(text.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            continue
        if len(key) == 32:
            return key
    raise CAError(f"backend.ca_key_file: {path} must hold 32 bytes (raw, hex or base64)")


def _seal(key: bytes, cert_pem: bytes, key_pem: bytes) -> dict[str, str]:
    nonce = os.urandom(12)
    aad = _fingerprint(cert_pem)
    return {"cert": cert_pem.decode(), "key": base64.b64encode(nonce + AESGCM(key).encrypt(nonce, key_pem, aad)).decode()}


def _open(key: bytes, bundle: dict[str, str]) -> tuple[bytes, bytes]:
    cert_pem = bundle["cert"].encode()
    sealed = base64.b64decode(bundle["key"])
    try:
        key_pem = AESGCM(key).decrypt(sealed[:12], sealed[12:], _fingerprint(cert_pem))
    except Exception:
        raise CAError("the shared CA key does not decrypt with backend.ca_key_file: this replica holds a "
                      "different key file than the one that stored the CA") from None
    return cert_pem, key_pem


def _fingerprint(cert_pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256())


def sync_ca(backend: Backend, ca_dir: str | os.PathLike[str], key_file: str | None) -> tuple[CertificateAuthority, str]:
    """Make ``ca_dir`` hold the shared CA and return it, with what happened: ``stored`` (this replica's
    CA became the shared one), ``adopted`` (the shared CA replaced or filled the local copy) or
    ``current`` (the local copy was already the shared CA)."""
    key = read_key_file(key_file)
    item = backend.get(KEY)
    if item is None:
        ca, _ = CertificateAuthority.load_or_create(ca_dir)
        bundle = _seal(key, ca.cert_pem, private_key_pem(ca.private_key))
        if backend.create(KEY, json.dumps(bundle).encode()) is not None:
            return ca, "stored"
        item = backend.get(KEY)  # another replica stored its CA first: adopt it
        if item is None:
            raise CAError("the shared CA vanished while it was being stored; start again")
    cert_pem, key_pem = _open(key, json.loads(item.value))
    directory = ensure_private_dir(ca_dir)
    cert_path = directory / CA_CERT_NAME
    if cert_path.is_file() and cert_path.read_bytes() == cert_pem and (directory / CA_KEY_NAME).is_file():
        return CertificateAuthority.load(directory), "current"
    write_atomic(directory / CA_KEY_NAME, key_pem, 0o600)
    write_atomic(cert_path, cert_pem, 0o644)
    return CertificateAuthority.load(directory), "adopted"

"""kubegate's certificate authority: one EC P-256 key pair in ``<state_dir>/ca/``.

Files (``certs.paths`` names them)::

    <state_dir>/ca/ca.pem           the CA certificate (0644): clients trust it, the proxy verifies with it
    <state_dir>/ca/ca-key.pem       the CA private key (0600)
    <state_dir>/ca/server.pem       the proxy's serving certificate (0644), issued by ``ca init``
    <state_dir>/ca/server-key.pem   its private key (0600)

Creation is atomic: the CA key and certificate are written into a fresh temporary directory which is
then renamed to ``ca/``; two processes racing to create it end up sharing the one that won, and a crash
never leaves a key without its certificate. An existing CA is loaded, never overwritten.

Issued certificates:

- user / bot client certificates (``issue_user_certificate``): ``CN`` = user, one ``O`` per role,
  ``keyUsage = digitalSignature`` (critical), ``extendedKeyUsage = clientAuth``, the kubegate identity
  extension (``certs.extension``), a random positive 128-bit serial, ``notBefore`` back-dated by
  ``CLOCK_SKEW`` (one minute) so a client whose clock is slightly behind still accepts it.
- the proxy's serving certificate (``issue_server_certificate``): SANs (DNS or IP) from the public
  addresses, the listen address and ``localhost``/``127.0.0.1``/``::1``; ``serverAuth``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.building import (
    generate_private_key,
    leaf_builder,
    private_key_pem,
    san_entries,
    self_signed_ca,
    sign,
)
from certs.extension import (
    IDENTITY_EXTENSION_OID,
    ExtensionPayload,
    encode_identity_extension,
    normalize_traits,
)
from certs.files import write_atomic

__all__ = [
    "Clock",
    "CLOCK_SKEW",
    "CA_TTL",
    "SERVER_TTL",
    "CertificateAuthority",
    "CAError",
    "CertificateVerificationError",
    "IssuedCertificate",
    "generate_private_key",
    "host_from_address",
    "server_hosts",
    "serial_hex",
    "same_public_key",
    "verify_client_chain",
    "load_certificate_file",
]

Clock = Callable[[], float]  # unix time in seconds

CLOCK_SKEW = timedelta(minutes=1)
CA_TTL = timedelta(days=3650)
SERVER_TTL = timedelta(days=365)
SERVER_RENEW_BEFORE = timedelta(days=30)
CA_CERT_NAME = "ca.pem"
CA_KEY_NAME = "ca-key.pem"
SERVER_CERT_NAME = "server.pem"
SERVER_KEY_NAME = "server-key.pem"
DEFAULT_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


class CAError(RuntimeError):
    """The CA directory is unusable (partial, unreadable, key and certificate do not match)."""


class CertificateVerificationError(ValueError):
    """A certificate does not chain to the kubegate CA, is out of its validity period or has the wrong use."""


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    certificate: x509.Certificate
    cert_pem: bytes
    key_pem: bytes | None  # None when the caller supplied the public key (it keeps the private key)

    @property
    def serial(self) -> str:
        return serial_hex(self.certificate.serial_number)

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    @property
    def not_before(self) -> datetime:
        return self.certificate.not_valid_before_utc


def serial_hex(serial: int) -> str:
    """The lower-case hex form of a serial number, as ``Identity.serial`` and the lock list use it."""
    return format(serial, "x")


def same_public_key(a: PublicKeyTypes, b: PublicKeyTypes) -> bool:
    """Whether two public keys are the same key (compared by their SubjectPublicKeyInfo)."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return a.public_bytes(serialization.Encoding.DER, spki) == b.public_bytes(
        serialization.Encoding.DER, spki
    )


def load_certificate_file(path: str | os.PathLike[str]) -> x509.Certificate:
    """The first certificate of a PEM (or DER) file."""
    data = Path(path).read_bytes()
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def host_from_address(address: str) -> str:
    """``host:port`` / ``[v6]:port`` / ``host`` / ``https://host:port/path`` → the host part."""
    text = address.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0]
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"bad address {address!r}: unterminated '['")
        return text[1:end]
    if text.count(":") == 1:
        return text.rsplit(":", 1)[0]
    return text  # plain host, or a bare IPv6 address without port


def server_hosts(public_addrs: Iterable[str], listen: str | None = None) -> list[str]:
    """Distinct SAN host names for the proxy: public addresses, the listen address unless it is the
    unspecified address (0.0.0.0 / ::), then localhost, 127.0.0.1 and ::1."""
    hosts: list[str] = []
    candidates = [host_from_address(a) for a in public_addrs if a]
    if listen:
        host = host_from_address(listen)
        if host and not _is_unspecified(host):
            candidates.append(host)
    candidates.extend(DEFAULT_LOCAL_HOSTS)
    for host in candidates:
        normalized = _normalize_host(host)
        if normalized and normalized not in hosts:
            hosts.append(normalized)
    return hosts


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _normalize_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower().rstrip(".")


def _now(clock: Clock) -> datetime:
    return datetime.fromtimestamp(clock(), tz=UTC).replace(microsecond=0)


class CertificateAuthority:
    """The kubegate CA. Build it with ``load_or_create(ca_dir)`` (or ``load``); then issue certificates."""

    def __init__(
        self,
        certificate: x509.Certificate,
        private_key: ec.EllipticCurvePrivateKey,
        directory: Path | None = None,
        clock: Clock = time.time,
    ) -> None:
        if certificate.public_key().public_numbers() != private_key.public_key().public_numbers():
            raise CAError("the CA private key does not match the CA certificate")
        self.certificate = certificate
        self.private_key = private_key
        self.directory = directory
        self.clock = clock
        self.cert_pem = certificate.public_bytes(serialization.Encoding.PEM)

    # ----------------------------------------------------------------------------------- construction
    @classmethod
    def create_in_memory(
        cls, clock: Clock = time.time, common_name: str | None = None
    ) -> CertificateAuthority:
        """A new CA that lives only in this process (tests, throw-away setups)."""
        key = generate_private_key()
        now = _now(clock)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kubegate"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name or f"kubegate CA {secrets.token_hex(4)}"),
            ]
        )
        certificate = self_signed_ca(key, name, now - CLOCK_SKEW, now + CA_TTL)
        return cls(certificate, key, None, clock)

    @classmethod
    def load(cls, ca_dir: str | os.PathLike[str], clock: Clock = time.time) -> CertificateAuthority:
        """Load an existing CA from ``ca_dir``; ``CAError`` if it is missing or broken."""
        directory = Path(ca_dir)
        cert_path, key_path = directory / CA_CERT_NAME, directory / CA_KEY_NAME
        if not cert_path.exists() or not key_path.exists():
            missing = [p.name for p in (cert_path, key_path) if not p.exists()]
            raise CAError(
                f"no kubegate CA in {directory}: missing {', '.join(missing)} (run `kubegate ca init`)"
            )
        try:
            certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise CAError(f"cannot read the kubegate CA in {directory}: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CAError(f"{key_path}: the CA key must be an EC key")
        return cls(certificate, key, directory, clock)

    @classmethod
    def load_or_create(
        cls, ca_dir: str | os.PathLike[str], clock: Clock = time.time
    ) -> tuple[CertificateAuthority, bool]:
        """Load the CA in ``ca_dir`` or create it atomically. Returns ``(ca, created)``."""
        directory = Path(ca_dir)
        if (directory / CA_CERT_NAME).exists() or (directory / CA_KEY_NAME).exists():
            return cls.load(directory, clock), False
        fresh = cls.create_in_memory(clock)
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            os.chmod(staging, 0o700)
            write_atomic(staging / CA_KEY_NAME, private_key_pem(fresh.private_key), 0o600)
            write_atomic(staging / CA_CERT_NAME, fresh.cert_pem, 0o644)
            try:
                os.rename(staging, directory)  # atomic; also replaces an empty pre-created directory
            except OSError:
                # Someone else created it (or the directory holds something else): load what is there.
                return cls.load(directory, clock), False
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return cls(fresh.certificate, fresh.private_key, directory, clock), True

    # --------------------------------------------------------------------------------------- accessors
    @property
    def cert_path(self) -> Path:
        if self.directory is None:
            raise CAError("this CA lives in memory only: it has no ca.pem")
        return self.directory / CA_CERT_NAME

    @property
    def key_path(self) -> Path:
        if self.directory is None:
            raise CAError("this CA lives in memory only: it has no key file")
        return self.directory / CA_KEY_NAME

    @property
    def fingerprint_sha256(self) -> str:
        """``AB:CD:…`` SHA-256 fingerprint of the CA certificate (what ``ca init`` prints)."""
        return ":".join(f"{b:02X}" for b in self.certificate.fingerprint(hashes.SHA256()))

    # ---------------------------------------------------------------------------------------- issuing
    def _builder(
        self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey, ttl: timedelta
    ) -> x509.CertificateBuilder:
        if ttl <= timedelta(0):
            raise ValueError(f"ttl must be positive, got {ttl}")
        now = _now(self.clock)
        not_after = min(now + ttl, self.certificate.not_valid_after_utc)
        return leaf_builder(subject, public_key, self.certificate, now - CLOCK_SKEW, not_after)

    def issue_user_certificate(
        self,
        user: str,
        roles: Sequence[str],
        ttl: timedelta,
        traits: Mapping[str, Sequence[str] | str] | None = None,
        cluster: str | None = None,
        kind: str = "user",
        public_key: ec.EllipticCurvePublicKey | None = None,
    ) -> IssuedCertificate:
        """A client certificate for ``user`` with ``roles`` valid for ``ttl`` (capped at the CA's expiry).

        A new P-256 key is generated unless ``public_key`` is given (then ``key_pem`` is None).
        """
        _check_name("user", user)
        for role in roles:
            _check_name("role", role)
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, user)]
        attributes.extend(x509.NameAttribute(NameOID.ORGANIZATION_NAME, role) for role in roles)
        key = None
        if public_key is None:
            key = generate_private_key()
            public_key = key.public_key()
        payload = ExtensionPayload(traits=normalize_traits(traits), cluster=cluster or None, kind=kind)
        certificate = sign(
            self._builder(x509.Name(attributes), public_key, ttl)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(encode_identity_extension(payload), critical=False),
            self.private_key,
        )
        return IssuedCertificate(
            certificate, certificate.public_bytes(serialization.Encoding.PEM), private_key_pem(key) if key else None
        )

    def reissue_client_certificate(self, certificate: x509.Certificate, ttl: timedelta) -> IssuedCertificate:
        """A certificate naming whom ``certificate`` names, as it names them (its subject, extended key
        usage and kubegate identity extension, copied), for a new key: what a replica presents to
        another replica on behalf of a client whose own key it does not hold (``proxy.recording.peer``).
        Valid for ``ttl``, never past ``certificate``'s own expiry. ``certificate`` must be a client
        certificate of this CA."""
        if certificate.issuer != self.certificate.subject:
            raise ValueError("the certificate was not issued by this CA")
        try:
            usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usage = x509.ExtendedKeyUsage([])
        if ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
            raise ValueError("not a client certificate")
        now = _now(self.clock)
        not_after = min(now + ttl, self.certificate.not_valid_after_utc, certificate.not_valid_after_utc)
        if not_after <= now:
            raise ValueError("the certificate has expired")
        key = generate_private_key()
        builder = leaf_builder(certificate.subject, key.public_key(), self.certificate, now - CLOCK_SKEW, not_after)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        for extension in certificate.extensions:
            if extension.oid == IDENTITY_EXTENSION_OID:
                builder = builder.add_extension(extension.value, critical=extension.critical)
        issued = sign(builder, self.private_key)
        return IssuedCertificate(issued, issued.public_bytes(serialization.Encoding.PEM), private_key_pem(key))

    def issue_server_certificate(
        self, hosts: Sequence[str], ttl: timedelta = SERVER_TTL, common_name: str | None = None
    ) -> IssuedCertificate:
        """The proxy's serving certificate: SAN per host (IP or DNS), ``serverAuth``."""
        if not hosts:
            raise ValueError("a server certificate needs at least one host name")
        key = generate_private_key()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kubegate"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name or hosts[0]),
            ]
        )
        certificate = sign(
            self._builder(subject, key.public_key(), ttl)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(san_entries(hosts)), critical=False),
            self.private_key,
        )
        return IssuedCertificate(
            certificate, certificate.public_bytes(serialization.Encoding.PEM), private_key_pem(key)
        )

    def ensure_server_certificate(
        self,
        hosts: Sequence[str],
        cert_path: str | os.PathLike[str] | None = None,
        key_path: str | os.PathLike[str] | None = None,
        ttl: timedelta = SERVER_TTL,
    ) -> tuple[Path, Path, bool]:
        """Keep a serving certificate for ``hosts`` on disk (default ``ca/server.pem`` + ``server-key.pem``).

        Re-issues it when it is missing, unreadable, not issued by this CA, lacks one of ``hosts`` or
        expires within 30 days. Returns ``(cert_path, key_path, issued_now)``.
        """
        if cert_path is not None and key_path is not None:
            cert_file, key_file = Path(cert_path), Path(key_path)
        elif self.directory is not None:
            cert_file = Path(cert_path) if cert_path else self.directory / SERVER_CERT_NAME
            key_file = Path(key_path) if key_path else self.directory / SERVER_KEY_NAME
        else:
            raise CAError("an in-memory CA needs explicit serving certificate paths")
        if self._server_certificate_ok(cert_file, key_file, hosts):
            return cert_file, key_file, False
        issued = self.issue_server_certificate(hosts, ttl)
        assert issued.key_pem is not None
        write_atomic(key_file, issued.key_pem, 0o600)
        write_atomic(cert_file, issued.cert_pem, 0o644)
        return cert_file, key_file, True

    def _server_certificate_ok(self, cert_file: Path, key_file: Path, hosts: Sequence[str]) -> bool:
        try:
            certificate = load_certificate_file(cert_file)
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        except (OSError, ValueError, TypeError):
            return False
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            return False
        if not same_public_key(key.public_key(), certificate.public_key()):
            return False
        try:
            certificate.verify_directly_issued_by(self.certificate)
        except (ValueError, TypeError, InvalidSignature):
            return False
        if certificate.not_valid_after_utc - _now(self.clock) < SERVER_RENEW_BEFORE:
            return False
        try:
            san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        present = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
        present.update(name.lower() for name in san.get_values_for_type(x509.DNSName))
        return all(_normalize_host(host) in present for host in hosts)

    def verify(self, certificate: x509.Certificate) -> None:
        """``verify_client_chain(certificate, self)`` at the CA's clock."""
        verify_client_chain(certificate, self)


def _check_name(what: str, value: str) -> None:
    if not isinstance(value, str) or not value or value != value.strip():
        raise ValueError(f"{what} name must be a non-empty string without surrounding spaces, got {value!r}")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError(f"{what} name must not contain control characters: {value!r}")


def verify_client_chain(
    certificate: x509.Certificate,
    ca: CertificateAuthority | x509.Certificate,
    now: datetime | None = None,
) -> None:
    """Check that ``certificate`` is a kubegate client certificate the proxy would accept.

    Signed by the CA (directly), within its validity period at ``now`` (default: the CA's clock, or the
    wall clock for a bare CA certificate), not a CA itself, and usable for ``clientAuth``. Raises
    ``CertificateVerificationError`` saying which check failed.
    """
    if isinstance(ca, CertificateAuthority):
        ca_certificate = ca.certificate
        moment = now or _now(ca.clock)
    else:
        ca_certificate = ca
        moment = now or datetime.now(tz=UTC)
    if certificate.issuer != ca_certificate.subject:
        raise CertificateVerificationError(
            f"certificate issuer {certificate.issuer.rfc4514_string()!r} is not the kubegate CA "
            f"{ca_certificate.subject.rfc4514_string()!r}"
        )
    try:
        certificate.verify_directly_issued_by(ca_certificate)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateVerificationError(
            f"certificate signature does not verify with the kubegate CA: {exc}"
        ) from None
    if moment < certificate.not_valid_before_utc:
        raise CertificateVerificationError(
            f"certificate is not valid before {certificate.not_valid_before_utc.isoformat()}"
        )
    if moment > certificate.not_valid_after_utc:
        raise CertificateVerificationError(
            f"certificate expired at {certificate.not_valid_after_utc.isoformat()}"
        )
    with contextlib.suppress(x509.ExtensionNotFound):
        if certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise CertificateVerificationError("a CA certificate cannot be used as a client certificate")
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return  # no EKU: any use (RFC 5280), as OpenSSL treats it
    if (
        ExtendedKeyUsageOID.CLIENT_AUTH not in usages
        and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usages
    ):
        raise CertificateVerificationError(
            "certificate is not valid for client authentication (no clientAuth EKU)"
        )

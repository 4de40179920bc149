"""Certificate building blocks: the one X.509 profile for a CA and the certificates it signs.

Used by kubegate's CA (``certs.ca``) and by the sandbox cluster's own PKI (``sandbox.tls``), which
differ in names, lifetimes and files, not in how a certificate is put together:

- keys are EC P-256 (fast handshakes), written as unencrypted PKCS#8 PEM;
- serials are 128 random bits with the top bit set (always positive, always 16 bytes);
- a CA certificate: ``basicConstraints CA:TRUE, pathlen:0`` (critical), ``keyUsage digitalSignature,
  keyCertSign, cRLSign`` (critical), subject and authority key identifiers;
- a leaf certificate: ``basicConstraints CA:FALSE`` (critical), ``keyUsage digitalSignature``
  (critical), its subject key identifier and the issuer's as authority key identifier; the caller adds
  the extended key usage, SANs or other extensions and signs (``sign``).
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "generate_private_key",
    "private_key_pem",
    "random_serial",
    "san_entries",
    "self_signed_ca",
    "leaf_builder",
    "sign",
]


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def random_serial() -> int:
    # 128 random bits with the top bit set: always positive, always 16 significant bytes.
    return secrets.randbits(128) | (1 << 127)


def san_entries(hosts: Iterable[str]) -> list[x509.GeneralName]:
    """A subjectAltName entry per host: an IP address where it parses as one, else a DNS name."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def sign(builder: x509.CertificateBuilder, issuer_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return builder.sign(issuer_key, hashes.SHA256())


def self_signed_ca(
    key: ec.EllipticCurvePrivateKey, name: x509.Name, not_before: datetime, not_after: datetime
) -> x509.Certificate:
    """A self-signed CA certificate for ``key`` (may sign end-entity certificates only: pathlen 0)."""
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(random_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )
    return sign(builder, key)


def leaf_builder(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Certificate,
    not_before: datetime,
    not_after: datetime,
) -> x509.CertificateBuilder:
    """An end-entity certificate issued by ``issuer``, before its extended key usage and SANs."""
    try:
        issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski)
    except x509.ExtensionNotFound:
        issuer_key = issuer.public_key()
        if not isinstance(issuer_key, ec.EllipticCurvePublicKey):
            raise ValueError("the issuer's key must be an EC key") from None
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(aki, critical=False)
    )

"""Reading a kubegate identity back out of a client certificate (DESIGN §3).

``identity_from_certificate(cert)`` maps a certificate issued by ``certs.ca`` to an
``rbac.identity.Identity``:

- ``user``: the subject ``CN`` (exactly one; missing or empty → ``IdentityError``);
- ``roles``: the subject ``O`` values, in certificate order;
- ``traits``, ``pinned_cluster``, ``kind``: from the kubegate extension (``certs.extension``). A
  certificate without it is still an identity (no traits, no pinned cluster, kind ``user``), so a
  plain ``CN``/``O`` certificate signed by the CA works; a *malformed* extension is an
  ``IdentityError`` — never silently ignored;
- ``serial``: the serial number in lower-case hex; ``not_after``: the expiry (aware UTC).

It does not check the signature or validity period: the TLS handshake already did (and
``certs.ca.verify_client_chain`` does it for tools and tests).
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from certs.ca import serial_hex
from certs.extension import (
    IDENTITY_EXTENSION_OID,
    ExtensionError,
    ExtensionPayload,
    decode_identity_extension,
)
from rbac.identity import Identity

__all__ = ["IdentityError", "identity_from_certificate", "from_der", "from_pem"]


class IdentityError(ValueError):
    """The certificate does not carry a usable kubegate identity; the message says why."""


def identity_from_certificate(cert: x509.Certificate) -> Identity:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise IdentityError(f"certificate subject must have exactly one CN (the user), found {len(names)}")
    user = names[0].value
    if not isinstance(user, str) or not user:
        raise IdentityError("certificate subject CN (the user) is empty")
    roles: list[str] = []
    for attribute in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME):
        value = attribute.value
        if not isinstance(value, str) or not value:
            raise IdentityError("certificate subject has an empty O (role)")
        roles.append(value)
    payload = _payload(cert)
    return Identity(
        user=user,
        roles=tuple(roles),
        traits=dict(payload.traits),
        pinned_cluster=payload.cluster,
        kind=payload.kind,
        serial=serial_hex(cert.serial_number),
        not_after=cert.not_valid_after_utc,
    )


def _payload(cert: x509.Certificate) -> ExtensionPayload:
    try:
        extensions = cert.extensions
    except ValueError as exc:  # duplicate or undecodable extensions
        raise IdentityError(f"certificate extensions cannot be parsed: {exc}") from None
    try:
        extension = extensions.get_extension_for_oid(IDENTITY_EXTENSION_OID)
    except x509.ExtensionNotFound:
        return ExtensionPayload()
    value = extension.value
    if not isinstance(
        value, x509.UnrecognizedExtension
    ):  # pragma: no cover - cryptography never knows our OID
        raise IdentityError("kubegate extension has an unexpected type")
    try:
        return decode_identity_extension(value.value)
    except ExtensionError as exc:
        raise IdentityError(
            f"malformed kubegate identity extension ({IDENTITY_EXTENSION_OID.dotted_string}): {exc}"
        ) from None


def from_der(data: bytes) -> Identity:
    """The identity in a DER certificate (what ``ssl.SSLSocket.getpeercert(binary_form=True)`` returns)."""
    try:
        cert = x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise IdentityError(f"not a DER certificate: {exc}") from None
    return identity_from_certificate(cert)


def from_pem(data: bytes) -> Identity:
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise IdentityError(f"not a PEM certificate: {exc}") from None
    return identity_from_certificate(cert)

"""The caller's identity from its (already verified) client certificate.

``certs.identity.identity_from_certificate`` is the authority (kubegate extension: traits, pinned cluster,
kind). When that module is not importable this falls back to the X.509 subject alone (CN = user, one O
per role), which is enough to authorize by roles. Results are cached by certificate bytes: one parse per
certificate, not per connection.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from cryptography import x509
from cryptography.x509.oid import NameOID

from rbac.identity import Identity


def _subject_identity(cert: x509.Certificate) -> Identity:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return Identity(
        user=str(cn[0].value) if cn else "",
        roles=tuple(str(o.value) for o in orgs),
        serial=format(cert.serial_number, "x"),
        not_after=cert.not_valid_after_utc,
    )


def _resolve_parser() -> Callable[[x509.Certificate], Identity]:
    try:
        from certs.identity import identity_from_certificate
    except ImportError:
        return _subject_identity
    return identity_from_certificate


class IdentityCache:
    """DER bytes → (certificate, identity), bounded LRU."""

    def __init__(self, size: int = 4096, parser: Callable[[x509.Certificate], Identity] | None = None) -> None:
        self._size = size
        self._parser = parser or _resolve_parser()
        self._items: OrderedDict[bytes, tuple[x509.Certificate, Identity]] = OrderedDict()

    def get(self, der: bytes) -> tuple[x509.Certificate, Identity]:
        hit = self._items.get(der)
        if hit is not None:
            self._items.move_to_end(der)
            return hit
        cert = x509.load_der_x509_certificate(der)
        entry = (cert, self._parser(cert))
        self._items[der] = entry
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return entry

"""Issuing a certificate on someone's behalf, with the lifetime rules and the issued-serials record.

``Issuer.issue`` is the one place the auth endpoint (login, renewal, bot join) turns an authenticated
identity into a certificate:

- lifetime: the kind's default (users 8 h, bots 1 h), lowered to the smallest ``max_session_ttl`` of the
  roles, to the global ``auth.max_certificate_ttl`` and to ``not_after`` when the caller gives one (a
  user's renewal never outlives the certificate it replaces);
- roles must exist (an unknown role is refused, never silently dropped);
- the public key comes from the client (it keeps its private key; the CA key never leaves the server);
- every certificate is recorded in the ``AuthStore`` (serial, user, kind, roles, expiry, how).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs.access import cap_ttl, unknown_roles
from certs.ca import CertificateAuthority, Clock, IssuedCertificate
from certs.store import AuthStore, IssuedRecord
from rbac.roles import RoleSet

__all__ = ["IssueError", "Issuer", "LifetimePolicy", "ca_pin", "load_public_key"]


class IssueError(ValueError):
    """The certificate cannot be issued (unknown roles, bad public key, nothing left of its lifetime)."""


@dataclass(frozen=True, slots=True)
class LifetimePolicy:
    user_ttl: timedelta = timedelta(hours=8)
    bot_ttl: timedelta = timedelta(hours=1)
    max_ttl: timedelta = timedelta(hours=30)


def ca_pin(certificate: x509.Certificate) -> str:
    """``sha256:<hex>`` of the CA certificate's SubjectPublicKeyInfo (what ``bot start --ca-pin`` checks)."""
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return "sha256:" + digest.finalize().hex()


def load_public_key(pem: str) -> ec.EllipticCurvePublicKey:
    """The client's public key (PEM SubjectPublicKeyInfo); only EC P-256, like every kubegate key."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError, AttributeError):
        raise IssueError("public_key is not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise IssueError("public_key must be an EC P-256 key")
    return key


class Issuer:
    def __init__(
        self,
        ca: CertificateAuthority,
        store: AuthStore,
        roles: Callable[[], RoleSet],
        policy: LifetimePolicy | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.ca = ca
        self.store = store
        self.roles = roles
        self.policy = policy or LifetimePolicy()
        self.clock = clock

    def lifetime(self, kind: str, roles: Sequence[str], not_after: datetime | None = None) -> timedelta:
        wanted = self.policy.bot_ttl if kind == "bot" else self.policy.user_ttl
        ttl = min(cap_ttl(wanted, roles, self.roles()).ttl, self.policy.max_ttl)
        if not_after is not None:
            ttl = min(ttl, not_after - datetime.fromtimestamp(self.clock(), tz=UTC))
        return ttl

    def issue(
        self,
        *,
        user: str,
        roles: Sequence[str],
        traits: Mapping[str, Sequence[str]],
        kind: str,
        public_key: ec.EllipticCurvePublicKey,
        via: str,
        not_after: datetime | None = None,
        cluster: str | None = None,
    ) -> IssuedCertificate:
        if not roles:
            raise IssueError(f"{user!r} maps to no kubegate role: nothing to issue")
        missing = unknown_roles(roles, self.roles())
        if missing:
            raise IssueError(f"role(s) {', '.join(missing)} do not exist on this kubegate server")
        ttl = self.lifetime(kind, roles, not_after)
        if ttl < timedelta(seconds=60):
            raise IssueError("the session has (almost) expired: sign in again")
        issued = self.ca.issue_user_certificate(
            user, list(roles), ttl, traits={k: list(v) for k, v in traits.items()}, cluster=cluster, kind=kind,
            public_key=public_key,
        )
        self.store.record_issued(
            IssuedRecord(
                serial=issued.serial,
                user=user,
                kind=kind,
                roles=tuple(roles),
                not_after=issued.not_after.timestamp(),
                issued_at=self.clock(),
                via=via,
            )
        )
        return issued

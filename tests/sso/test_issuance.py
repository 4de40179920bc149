"""Certificate lifetimes and the issued-serials record (``certs.issuance``, ``certs.store``), without a
network: users 8 h, bots 1 h, lowered by the roles' max_session_ttl, by auth.max_certificate_ttl and, for a
user's renewal, by the certificate it replaces; unknown roles are refused and nothing is recorded."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from certs.ca import CertificateAuthority
from certs.issuance import IssueError, Issuer, LifetimePolicy, ca_pin, load_public_key
from certs.store import BotRecord, FileAuthStore, StoreError
from kubegate.client.login import new_key
from rbac.roles import RoleSet, parse_roles_yaml

ROLES = """
kind: role
version: v8
metadata: {name: dev}
spec: {allow: {kubernetes_labels: {'*': '*'}}}
---
kind: role
version: v8
metadata: {name: brief}
spec: {options: {max_session_ttl: 30m}, allow: {kubernetes_labels: {'*': '*'}}}
"""


@pytest.fixture
def issuer(tmp_path):
    roles = RoleSet(parse_roles_yaml(ROLES))
    return Issuer(CertificateAuthority.create_in_memory(), FileAuthStore(tmp_path), lambda: roles,
                  LifetimePolicy(max_ttl=timedelta(hours=6)))


def lifetime(issued) -> timedelta:
    return issued.not_after - issued.not_before - timedelta(minutes=1)  # notBefore is back-dated a minute


def key():
    return load_public_key(new_key()[1])


@pytest.mark.parametrize(("kind", "roles", "expected"), [
    ("user", ["dev"], timedelta(hours=6)),      # 8 h default, capped by max_certificate_ttl 6 h
    ("bot", ["dev"], timedelta(hours=1)),
    ("user", ["dev", "brief"], timedelta(minutes=30)),  # the most restrictive role wins
])
def test_lifetimes(issuer, kind, roles, expected):
    issued = issuer.issue(user="alice", roles=roles, traits={}, kind=kind, public_key=key(), via="test")
    assert lifetime(issued) == expected
    record = issuer.store.issued()[-1]
    assert (record.serial, record.user, record.kind, record.roles) == (issued.serial, "alice", kind, tuple(roles))


def test_a_renewal_is_capped_by_the_certificate_it_replaces(issuer):
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=10)
    issued = issuer.issue(user="alice", roles=["dev"], traits={}, kind="user", public_key=key(), via="renew",
                          not_after=until)
    assert abs(issued.not_after - until) <= timedelta(seconds=2)
    with pytest.raises(IssueError, match="session has"):
        issuer.issue(user="alice", roles=["dev"], traits={}, kind="user", public_key=key(), via="renew",
                     not_after=datetime.now(UTC) + timedelta(seconds=30))


def test_unknown_roles_and_no_roles_are_refused_and_nothing_is_recorded(issuer):
    with pytest.raises(IssueError, match="role\\(s\\) ghost do not exist"):
        issuer.issue(user="alice", roles=["dev", "ghost"], traits={}, kind="user", public_key=key(), via="t")
    with pytest.raises(IssueError, match="maps to no kubegate role"):
        issuer.issue(user="alice", roles=[], traits={}, kind="user", public_key=key(), via="t")
    assert issuer.store.issued() == []


def test_only_p256_public_keys_are_accepted():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_pem = rsa.generate_private_key(65537, 2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(IssueError, match="EC P-256"):
        load_public_key(rsa_pem)


def test_join_tokens_are_single_use_and_expire(tmp_path):
    store = FileAuthStore(tmp_path)
    store.put_bot(BotRecord("ci", ("dev",)))
    secret, _ = store.add_join_token("ci", ttl=60, now=1000.0)
    assert store.take_join_token(secret, now=1001.0).bot == "ci"
    with pytest.raises(StoreError, match="already used"):
        store.take_join_token(secret, now=1001.0)
    late, _ = store.add_join_token("ci", ttl=60, now=1000.0)
    with pytest.raises(StoreError, match="expired"):
        store.take_join_token(late, now=1061.0)
    assert secret not in " ".join(p.name for p in (tmp_path / "tokens").iterdir())  # stored by hash only
    kept, _ = store.add_join_token("ci", ttl=60, now=time.time())
    assert store.remove_bot("ci") and store.get_bot("ci") is None
    with pytest.raises(StoreError, match="unknown join token"):
        store.take_join_token(kept, now=time.time())  # removing the bot removed its unused tokens


def test_pending_logins_are_taken_once(tmp_path):
    store = FileAuthStore(tmp_path)
    store.put_pending("state-1", {"nonce": "n"})
    assert store.take_pending("state-1") == {"nonce": "n"}
    assert store.take_pending("state-1") is None


def test_ca_pin_is_the_sha256_of_the_public_key():
    import hashlib

    from cryptography.hazmat.primitives import serialization

    ca = CertificateAuthority.create_in_memory()
    spki = ca.certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    assert ca_pin(ca.certificate) == "sha256:" + hashlib.sha256(spki).hexdigest()

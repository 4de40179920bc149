"""Authentication (certificates, token file) and impersonation, as kube-apiserver does them."""

from __future__ import annotations

import ipaddress
import json
import ssl
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from sandbox.auth import Authenticator, ImpersonationFailure, TokenFile, impersonate, user_from_certificate
from sandbox.tls import SandboxPKI, write_kubeconfig
from sandbox.types import RequestAttributes, UserInfo


class RecordingAuthorizer:
    """Allows exactly the (resource, subresource, name) triples given; records what was asked."""

    def __init__(self, allowed: set[tuple[str, str, str]]) -> None:
        self.allowed = allowed
        self.asked: list[RequestAttributes] = []

    def authorize(self, attrs: RequestAttributes) -> tuple[bool, str]:
        self.asked.append(attrs)
        return (attrs.resource, attrs.subresource, attrs.name) in self.allowed, ""


ALICE = UserInfo("alice", ("dev", "system:authenticated"))


def h(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in pairs]


def test_no_impersonation_headers_is_none() -> None:
    assert impersonate(ALICE, h(("Accept", "*/*")), RecordingAuthorizer(set())) is None


def test_user_and_groups_are_each_checked_and_system_authenticated_added() -> None:
    authz = RecordingAuthorizer({("users", "", "bob"), ("groups", "", "ops"), ("groups", "", "qa")})
    user = impersonate(
        ALICE,
        h(("Impersonate-User", "bob"), ("Impersonate-Group", "ops"), ("Impersonate-Group", "qa")),
        authz,
    )
    assert user == UserInfo("bob", ("ops", "qa", "system:authenticated"))
    assert [(a.verb, a.resource, a.name, a.user.username) for a in authz.asked] == [
        ("impersonate", "users", "bob", "alice"),
        ("impersonate", "groups", "ops", "alice"),
        ("impersonate", "groups", "qa", "alice"),
    ]


def test_uid_and_extras_use_the_authentication_group() -> None:
    authz = RecordingAuthorizer(
        {("users", "", "bob"), ("uids", "", "1234"), ("userextras", "scopes", "view")}
    )
    user = impersonate(
        ALICE,
        h(("Impersonate-User", "bob"), ("Impersonate-Uid", "1234"), ("Impersonate-Extra-Scopes", "view")),
        authz,
    )
    assert isinstance(user, UserInfo)
    assert (user.uid, user.extra) == ("1234", {"scopes": ("view",)})
    assert {a.api_group for a in authz.asked[1:]} == {"authentication.k8s.io"}


def test_refused_user_is_403_in_apiserver_wording() -> None:
    result = impersonate(ALICE, h(("Impersonate-User", "bob")), RecordingAuthorizer(set()))
    assert isinstance(result, ImpersonationFailure) and result.status == 403
    body = json.loads(result.body)
    assert body["message"] == (
        'users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope'
    )
    assert (body["reason"], body["code"], body["details"]) == (
        "Forbidden",
        403,
        {"name": "bob", "kind": "users"},
    )


def test_refused_group_names_the_group() -> None:
    result = impersonate(
        ALICE,
        h(("Impersonate-User", "bob"), ("Impersonate-Group", "admins")),
        RecordingAuthorizer({("users", "", "bob")}),
    )
    assert isinstance(result, ImpersonationFailure)
    assert json.loads(result.body)["message"].startswith(
        'groups "admins" is forbidden: User "alice" cannot impersonate'
    )


def test_service_account_is_checked_in_its_namespace_and_gets_its_groups() -> None:
    authz = RecordingAuthorizer({("serviceaccounts", "", "builder")})
    user = impersonate(
        ALICE,
        h(
            ("Impersonate-User", "system:serviceaccount:ci:builder"),
        ),
        authz,
    )
    assert user == UserInfo(
        "system:serviceaccount:ci:builder",
        ("system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"),
    )
    assert authz.asked[0].namespace == "ci"


def test_groups_without_user_is_the_apiserver_internal_error() -> None:
    result = impersonate(
        ALICE,
        h(
            ("Impersonate-Group", "ops"),
        ),
        RecordingAuthorizer({("groups", "", "ops")}),
    )
    assert isinstance(result, ImpersonationFailure) and result.status == 500
    assert "without impersonating a user" in json.loads(result.body)["message"]


def test_token_file_parses_the_apiserver_csv_format(tmp_path: Path) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text('abc123,bob,uid-7,"dev,ops"\nxyz,carol,u2\n')
    tokens = TokenFile(path)
    assert tokens.authenticate("abc123") == UserInfo("bob", ("dev", "ops", "system:authenticated"), "uid-7")
    assert tokens.authenticate("xyz") == UserInfo("carol", ("system:authenticated",), "u2")
    assert tokens.authenticate("nope") is None
    tokens.add("new", "dave", "u3", ["g"])
    assert tokens.authenticate("new") == UserInfo("dave", ("g", "system:authenticated"), "u3")


@pytest.mark.parametrize("text", ["onlytoken\n", ",bob,uid\n"])
def test_bad_token_file_lines_are_errors_naming_the_line(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValueError, match=":1:"):
        TokenFile.parse(text, "tokens.csv")


def test_authenticator_prefers_certificate_then_bearer_token(tmp_path: Path) -> None:
    tokens = TokenFile(tmp_path / "t.csv")
    tokens.add("tok", "bob")
    authn = Authenticator(tokens)
    cert_user = UserInfo("alice", ("system:authenticated",))
    assert authn.authenticate(cert_user, b"Bearer tok") == cert_user
    assert authn.authenticate(None, b"Bearer tok").username == "bob"
    assert authn.authenticate(None, b"bearer tok").username == "bob"
    assert authn.authenticate(None, b"Bearer wrong") is None
    assert authn.authenticate(None, b"Basic dG9rOg==") is None
    assert authn.authenticate(None, None) is None


def test_pki_writes_private_keys_0600_and_serves_loopback(tmp_path: Path) -> None:
    pki = SandboxPKI(tmp_path)
    for key in (pki.ca_key_path, pki.server_key_path):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(pki.server_cert_path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    # Reloading keeps the same CA.
    assert SandboxPKI(tmp_path).ca_pem == pki.ca_pem
    ctx = pki.server_ssl_context()
    assert ctx.verify_mode == ssl.CERT_OPTIONAL


def test_client_certificates_carry_user_and_groups(tmp_path: Path) -> None:
    pki = SandboxPKI(tmp_path)
    cert_path, key_path = pki.issue_client_cert("alice", ["dev", "ops"], tmp_path / "out")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    user = user_from_certificate(x509.load_pem_x509_certificate(cert_path.read_bytes()))
    assert user == UserInfo("alice", ("dev", "ops", "system:authenticated"))
    second, _ = pki.issue_client_cert("alice", [], tmp_path / "out")
    assert second != cert_path


def test_kubeconfig_names_server_ca_and_credentials(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "kc", "https://127.0.0.1:1234", tmp_path / "ca.crt", user="bob", token="t0k"
    )
    doc = yaml.safe_load(path.read_text())
    assert doc["clusters"][0]["cluster"] == {
        "server": "https://127.0.0.1:1234",
        "certificate-authority": str(tmp_path / "ca.crt"),
    }
    assert doc["users"][0] == {"name": "bob", "user": {"token": "t0k"}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

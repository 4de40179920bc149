"""The auth endpoint on the proxy's listener refuses bad requests with a Status naming the problem and
issues nothing; an expired certificate gets kubectl a readable 401 instead of a bare EOF."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import time
from datetime import timedelta

import pytest

from tests.sso.conftest import running_gate

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gate(module_sandbox, tmp_path_factory):
    with running_gate(tmp_path_factory.mktemp("endpoint"), module_sandbox) as running:
        yield running


def call(gate, method: str, path: str, body: bytes | None = None, identity: tuple[str, str] | None = None):
    ctx = ssl.create_default_context(cafile=str(gate.state / "ca" / "ca.pem"))
    if identity:
        ctx.load_cert_chain(*identity)
    conn = http.client.HTTPSConnection("127.0.0.1", gate.port, context=ctx, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def issued_by_operator(gate, tmp_path, hours_ago: float = 0.0, ttl: timedelta = timedelta(hours=1)):
    from certs.ca import CertificateAuthority

    ca = CertificateAuthority.load(gate.state / "ca", clock=lambda: time.time() - hours_ago * 3600)
    issued = ca.issue_user_certificate("alice", ["admin"], ttl)
    cert, key = tmp_path / f"alice-{hours_ago}.crt", tmp_path / f"alice-{hours_ago}.key"
    cert.write_bytes(issued.cert_pem)
    key.write_bytes(issued.key_pem)
    return issued, (str(cert), str(key))


@pytest.mark.parametrize(("method", "path", "body", "code", "message"), [
    ("GET", "/kubegate/auth/nothing-here", None, 404, "no such auth endpoint: /kubegate/auth/nothing-here"),
    ("GET", "/kubegate/auth/login/start", None, 405, "GET is not allowed on /kubegate/auth/login/start"),
    ("POST", "/kubegate/auth/login/start", b"{not json", 400, "the request body is not JSON"),
    ("POST", "/kubegate/auth/login/start", b'{"connector": "okta", "redirect_uri": "http://127.0.0.1:1/cb", '
     b'"public_key": "x"}', 404, "unknown connector 'okta' (connectors: none configured)"),
    ("POST", "/kubegate/auth/login/finish", b'{"state": "made-up", "code": "c"}', 400,
     "unknown or already used login state: start kubegate login again"),
    ("POST", "/kubegate/auth/renew", b'{"public_key": "x"}', 401,
     "this needs a client certificate from this kubegate (run kubegate login)"),
    ("GET", "/kubegate/auth/clusters", None, 401,
     "this needs a client certificate from this kubegate (run kubegate login)"),
    ("POST", "/kubegate/auth/join", b'{"token": "t", "public_key": "not a key"}', 400,
     "public_key is not a PEM public key"),
])
def test_bad_requests_are_refused_with_a_status_and_nothing_is_issued(gate, method, path, body, code, message):
    before = len(gate.issued())
    status, answer = call(gate, method, path, body)
    assert status == code
    assert answer["kind"] == "Status" and answer["code"] == code and answer["message"] == message
    assert len(gate.issued()) == before
    assert f'kubegate_endpoint_requests_total{{code="{code}",endpoint="auth"}}' in gate.metrics()


def test_public_ca_and_its_pin_need_no_certificate(gate):
    status, answer = call(gate, "GET", "/kubegate/auth/ca")
    assert status == 200
    assert answer["ca"] == (gate.state / "ca" / "ca.pem").read_text() and answer["pin"] == gate.pin


def test_a_user_renewal_rotates_the_key_but_never_extends_the_session(gate, tmp_path):
    from certs.issuance import load_public_key
    from kubegate.client.login import new_key

    issued, identity = issued_by_operator(gate, tmp_path, ttl=timedelta(minutes=20))
    _, public = new_key()
    status, answer = call(gate, "POST", "/kubegate/auth/renew", json.dumps({"public_key": public}).encode(), identity)
    assert status == 200, answer
    from cryptography import x509

    renewed = x509.load_pem_x509_certificate(answer["certificate"].encode())
    assert renewed.not_valid_after_utc <= issued.not_after
    assert renewed.public_key() == load_public_key(public)
    assert gate.issued()[-1].via == "renew" and gate.issued()[-1].serial == answer["serial"]


def test_an_expired_certificate_cannot_renew(gate, tmp_path):
    from kubegate.client.login import new_key

    issued, identity = issued_by_operator(gate, tmp_path, hours_ago=3)
    before = len(gate.issued())
    status, answer = call(gate, "POST", "/kubegate/auth/renew", json.dumps({"public_key": new_key()[1]}).encode(),
                          identity)
    expiry = issued.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (status, answer["message"]) == (401, f"your certificate expired at {expiry}; run kubegate login")
    assert len(gate.issued()) == before


def test_kubectl_with_an_expired_certificate_prints_why(gate, tmp_path, kubectl):
    from certs.kubeconfig import write_kubeconfig

    issued, _ = issued_by_operator(gate, tmp_path, hours_ago=3)
    kubeconfig = tmp_path / "expired.kubeconfig"
    write_kubeconfig(kubeconfig, gate.proxy, ["sandbox"], (gate.state / "ca" / "ca.pem").read_bytes(),
                     issued.cert_pem, issued.key_pem)
    result = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "get", "pods"], capture_output=True,
                            text=True, timeout=60)
    expiry = issued.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert result.returncode != 0, result.stderr
    assert f"kubegate: your certificate expired at {expiry}; run kubegate login" in result.stderr
    assert "EOF" not in result.stderr


def test_an_expired_certificate_cannot_join_a_live_session(gate, tmp_path):
    """The listener lets expired certificates through (for the readable 401): /kubegate/sessions/ must
    refuse them too, before looking at the session."""
    issued, identity = issued_by_operator(gate, tmp_path, hours_ago=3)
    status, answer = call(gate, "GET", "/kubegate/sessions/0123456789abcdef/stream", identity=identity)
    assert status == 401 and "your certificate expired" in answer["message"]
    status, answer = call(gate, "GET", "/kubegate/sessions/0123456789abcdef/stream")
    assert status == 401 and "no client certificate" in answer["message"]


def test_what_operators_issue_with_the_ca_key_is_recorded_too(gate, tmp_path):
    issued = gate.kubegate("users", "issue", "-c", "kubegate.yaml", "--user", "carol", "--roles", "admin",
                           "--ttl", "1h", "--out", str(tmp_path))
    assert issued.returncode == 0, issued.stderr
    record = gate.issued()[-1]
    assert (record.user, record.roles, record.via) == ("carol", ("admin",), "operator")


def test_an_expired_sign_in_gets_kubectl_the_same_message_through_the_exec_plugin(gate, tmp_path, kubectl_new,
                                                                                   monkeypatch):
    """Not in a terminal, `kubegate kube credentials` hands kubectl the expired certificate anyway, so the
    proxy's 401 says what happened and what to do."""
    from kubegate.client.kubeconfig import merge_contexts
    from kubegate.client.profile import Profile, save_profile

    issued, _ = issued_by_operator(gate, tmp_path, hours_ago=3)
    ca_pem = (gate.state / "ca" / "ca.pem").read_bytes()
    expires = issued.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    env = gate.env(KUBECONFIG=str(tmp_path / "config"))
    monkeypatch.setenv("KUBEGATE_HOME", env["KUBEGATE_HOME"])
    save_profile(Profile(proxy=gate.proxy, user="alice", roles=["admin"], traits={}, kind="user",
                         expires=expires, cert_pem=issued.cert_pem, key_pem=issued.key_pem, ca_pem=ca_pem))
    merge_contexts(tmp_path / "config", gate.proxy, ["sandbox"], ca_pem, current="sandbox")
    status = gate.kubegate("status")
    assert status.returncode == 1 and "[EXPIRED: run kubegate login]" in status.stdout
    result = subprocess.run([kubectl_new, "get", "pods"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"kubegate: your certificate expired at {expires}; run kubegate login" in result.stderr


def test_a_renewal_keeps_the_pinned_cluster(gate, tmp_path):
    """A certificate pinned to one cluster must not renew into one that reaches every cluster."""
    from cryptography import x509

    from certs.ca import CertificateAuthority
    from certs.identity import identity_from_certificate
    from kubegate.client.login import new_key

    ca = CertificateAuthority.load(gate.state / "ca")
    pinned = ca.issue_user_certificate("dora", ["admin"], timedelta(hours=1), cluster="sandbox")
    cert, key = tmp_path / "dora.crt", tmp_path / "dora.key"
    cert.write_bytes(pinned.cert_pem)
    key.write_bytes(pinned.key_pem)
    status, answer = call(gate, "POST", "/kubegate/auth/renew", json.dumps({"public_key": new_key()[1]}).encode(),
                          (str(cert), str(key)))
    assert status == 200, answer
    renewed = identity_from_certificate(x509.load_pem_x509_certificate(answer["certificate"].encode()))
    assert renewed.pinned_cluster == "sandbox" and renewed.user == "dora"


def test_kubectl_with_a_locked_certificate_prints_why(gate, tmp_path, kubectl):
    from certs.ca import CertificateAuthority
    from certs.kubeconfig import write_kubeconfig

    issued = CertificateAuthority.load(gate.state / "ca").issue_user_certificate("erin", ["admin"], timedelta(hours=1))
    kubeconfig = tmp_path / "erin.kubeconfig"
    write_kubeconfig(kubeconfig, gate.proxy, ["sandbox"], (gate.state / "ca" / "ca.pem").read_bytes(),
                     issued.cert_pem, issued.key_pem)
    locked = gate.kubegate("users", "lock", "erin", "-c", "kubegate.yaml", "--reason", "laptop stolen")
    assert locked.returncode == 0, locked.stderr
    result = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "get", "pods"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "erin" in result.stderr and "laptop stolen" in result.stderr, result.stderr

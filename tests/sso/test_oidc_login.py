"""A person with an account at a real OpenID Connect provider (npm oidc-provider under Node) runs
`kubegate login` (authorization code + PKCE through the loopback redirect, a scripted browser filling the
provider's login form; or the device flow), `kubegate kube ls`, `kubegate kube login sandbox`, then
plain kubectl 1.37 / 1.20 — without the operator doing anything for them. Bad tokens, replays and unknown
connectors are refused with a message and nothing is issued."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time

import pytest
import yaml
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.sso.conftest import running_gate, status_of
from tests.sso.oidc import CLIENT_ID, require_provider, running_provider, sign_in_with_browser

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    require_provider()
    with running_provider(tmp_path_factory.mktemp("oidc")) as running:
        yield running


@pytest.fixture(scope="module")
def gate(provider, module_sandbox, tmp_path_factory):
    connectors = f"""
  connectors:
  - name: example
    type: oidc
    issuer_url: {provider.issuer}
    client_id: {CLIENT_ID}
    scopes: [openid, email, groups]
    claims_to_roles:
    - {{claim: groups, value: admins, roles: [admin]}}
    - {{claim: groups, value: '^dev.*$', roles: [short]}}
    claims_to_traits: {{kubernetes_groups: groups}}
"""
    with running_gate(tmp_path_factory.mktemp("sso"), module_sandbox, connectors) as running:
        yield running


def login_process(gate, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "kubegate", "login", "--proxy", gate.proxy, "--ca-pin", gate.pin,
                             *extra], cwd=gate.directory, env=gate.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def first_url(stream) -> str:
    for line in stream:
        found = re.search(r"https?://\S+", line)
        if found:
            return found.group(0)
    raise AssertionError("kubegate login printed no URL")


def test_browser_login_then_kube_ls_kube_login_and_plain_kubectl(gate, tmp_path, kubectl_new, kubectl_old):
    before = len(gate.issued())
    proc = login_process(gate, "--no-browser")
    url = first_url(proc.stderr)
    assert url.startswith("http://127.0.0.1:") and "/auth?" in url and "redirect_uri=http%3A%2F%2F127.0.0.1" in url
    assert "code_challenge_method=S256" in url and "nonce=" in url
    page = sign_in_with_browser(url, "alice")
    assert "signed in at the provider" in page
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Logged in as: alice@example.com" in out
    assert "Roles:        admin, short" in out
    assert "kubernetes_groups=admins,devs" in out
    records = gate.issued()[before:]
    assert [(r.user, r.kind, r.roles, r.via) for r in records] == [
        ("alice@example.com", "user", ("admin", "short"), "oidc:example")]
    assert 1790 <= records[0].not_after - records[0].issued_at <= 1800  # role short: max_session_ttl 30m

    identity = next(gate.home.glob("profiles/*/identity.pem"))
    assert stat.S_IMODE(os.stat(identity).st_mode) == 0o600
    status = gate.kubegate("status")
    assert status.returncode == 0 and "alice@example.com" in status.stdout

    listed = gate.kubegate("kube", "ls", "--format", "json")
    assert listed.returncode == 0, status_of(listed)
    assert [(c["name"], c["labels"]["env"]) for c in yaml.safe_load(listed.stdout)] == [
        ("prod", "prod"), ("sandbox", "dev")]

    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "other",
        "clusters": [{"name": "other", "cluster": {"server": "https://other.example:6443"}}],
        "contexts": [{"name": "other", "context": {"cluster": "other", "user": "someone"}}],
        "users": [{"name": "someone", "user": {"token": "keep-me"}}]}))
    logged = gate.kubegate("kube", "login", "sandbox", KUBECONFIG=str(kubeconfig))
    assert logged.returncode == 0, status_of(logged)
    merged = yaml.safe_load(kubeconfig.read_text())
    assert merged["current-context"] == "127.0.0.1-sandbox"
    assert [c["name"] for c in merged["contexts"]] == ["other", "127.0.0.1-sandbox"]
    assert merged["users"][0] == {"name": "someone", "user": {"token": "keep-me"}}
    assert merged["users"][1]["user"]["exec"]["args"][-4:] == ["kube", "credentials", "--proxy", gate.proxy]

    env = {**gate.env(), "KUBECONFIG": str(kubeconfig)}
    for kubectl in (kubectl_new, kubectl_old):
        pods = subprocess.run([kubectl, "get", "pods", "-A"], env=env, capture_output=True, text=True, timeout=60)
        assert pods.returncode == 0, pods.stderr
        assert pods.stdout.split()[:2] == ["NAMESPACE", "NAME"]

    everything = tmp_path / "all"
    logged = gate.kubegate("kube", "login", "--all", KUBECONFIG=str(everything))
    assert logged.returncode == 0, status_of(logged)
    assert [c["name"] for c in yaml.safe_load(everything.read_text())["contexts"]] == [
        "127.0.0.1-prod", "127.0.0.1-sandbox"]
    unknown = gate.kubegate("kube", "login", "staging", KUBECONFIG=str(everything))
    assert unknown.returncode == 1 and "cluster 'staging' not found (yours: prod, sandbox)" in unknown.stderr

    out = gate.kubegate("logout")
    assert out.returncode == 0 and f"logged out of {gate.proxy}" in out.stdout
    assert gate.kubegate("status").returncode == 1
    pods = subprocess.run([kubectl_new, "get", "pods"], env=env, capture_output=True, text=True, timeout=60)
    assert pods.returncode != 0 and "not signed in" in pods.stderr


def test_device_flow_for_a_machine_without_a_browser(gate):
    before = len(gate.issued())
    proc = login_process(gate, "--headless")
    url = first_url(proc.stderr)
    assert "/device?user_code=" in url
    assert "Sign-in Success" in sign_in_with_browser(url, "alice")
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    assert "Logged in as: alice@example.com" in out
    assert [r.via for r in gate.issued()[before:]] == ["oidc-device:example"]


def test_a_person_no_rule_maps_to_a_role_gets_nothing(gate):
    before = len(gate.issued())
    proc = login_process(gate, "--no-browser")
    sign_in_with_browser(first_url(proc.stderr), "bob")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "bob@example.com signed in, but no claims_to_roles rule of connector 'example' gives them a role" in err
    assert len(gate.issued()) == before


def test_a_locked_person_signs_in_at_the_provider_but_gets_nothing(gate):
    locked = gate.kubegate("users", "lock", "alice@example.com", "-c", "kubegate.yaml", "--reason", "left the team")
    assert locked.returncode == 0, locked.stderr
    try:
        before = len(gate.issued())
        proc = login_process(gate, "--no-browser")
        sign_in_with_browser(first_url(proc.stderr), "alice")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "alice@example.com is locked" in err and "left the team" in err
        assert len(gate.issued()) == before
    finally:
        assert gate.kubegate("users", "unlock", "alice@example.com", "-c", "kubegate.yaml").returncode == 0


def test_sign_ins_and_refusals_are_audited(gate):
    from kubegate.client.api import AuthClient, ClientError

    proc = login_process(gate, "--no-browser")
    sign_in_with_browser(first_url(proc.stderr), "alice")
    assert proc.wait(60) == 0
    serial = gate.issued()[-1].serial
    with pytest.raises(ClientError):
        AuthClient(gate.proxy, (gate.state / "ca" / "ca.pem").read_bytes()).post(
            "login/finish", {"state": "audited-replay", "code": "x"})

    def audited() -> tuple[list[dict], list[dict]]:
        events = [json.loads(line) for line in (gate.state / "audit.log").read_text().splitlines()]
        return ([e for e in events if e.get("event") == "certificate.issued" and e.get("serial") == serial],
                [e for e in events if e.get("event") == "auth.refused" and e.get("code") == 400])

    deadline = time.monotonic() + 10
    while not all(audited()) and time.monotonic() < deadline:
        time.sleep(0.1)
    issued, refused = audited()
    assert issued and issued[0]["user"] == "alice@example.com" and issued[0]["path"] == "/kubegate/auth/login/finish"
    assert refused and refused[-1]["reason"] == "unknown or already used login state: start kubegate login again"


def test_the_provider_rotates_its_signing_key(tmp_path):
    """A token signed with a key the cached JWKS lacks makes the connector fetch the JWKS again."""
    from types import SimpleNamespace

    from kubegate.auth.oidc import OIDCConnector
    from kubegate.demo import free_port

    port = free_port()
    old = RSAKey.generate_key(2048, parameters={"kid": "old", "alg": "RS256"}, private=True)
    new = RSAKey.generate_key(2048, parameters={"kid": "new", "alg": "RS256"}, private=True)
    with running_provider(tmp_path / "a", port=port, key=old) as first:
        connector = OIDCConnector(SimpleNamespace(issuer_url=first.issuer, client_id=CLIENT_ID, client_secret=None,
                                                  scopes=("openid",)))
        assert connector.verify_id_token(minted(first), "n-1")["sub"] == "alice"
    with running_provider(tmp_path / "b", port=port, key=new) as second:  # same issuer, rotated key
        assert connector.verify_id_token(minted(second), "n-1")["sub"] == "alice"


def test_unknown_connector_and_replayed_state_are_refused(gate):
    from kubegate.client.api import AuthClient, ClientError
    from kubegate.client.login import LoopbackRedirect, new_key

    unknown = gate.kubegate("login", "--proxy", gate.proxy, "--ca-pin", gate.pin, "--auth", "okta", "--no-browser")
    assert unknown.returncode == 1 and "unknown connector 'okta' (connectors: example)" in unknown.stderr

    before = len(gate.issued())
    client = AuthClient(gate.proxy, (gate.state / "ca" / "ca.pem").read_bytes())
    with LoopbackRedirect() as loopback:
        start = client.post("login/start", {"connector": "example", "redirect_uri": loopback.redirect_uri,
                                            "public_key": new_key()[1]})
        sign_in_with_browser(start["auth_url"], "alice")
        params = loopback.wait(30)
    finish = {"state": params["state"], "code": params["code"]}
    assert client.post("login/finish", finish)["user"] == "alice@example.com"
    with pytest.raises(ClientError) as replay:
        client.post("login/finish", finish)
    assert replay.value.code == 400
    assert str(replay.value) == "unknown or already used login state: start kubegate login again"
    assert len(gate.issued()) == before + 1


@pytest.fixture(scope="module")
def connector(provider):
    from types import SimpleNamespace

    from kubegate.auth.oidc import OIDCConnector

    return OIDCConnector(SimpleNamespace(issuer_url=provider.issuer, client_id=CLIENT_ID, client_secret=None,
                                         scopes=("openid",)))


def minted(provider, key: RSAKey | None = None, **changes) -> dict:
    now = int(time.time())
    claims = {"iss": provider.issuer, "sub": "alice", "aud": CLIENT_ID, "iat": now, "exp": now + 600,
              "nonce": "n-1", "email": "alice@example.com"}
    claims.update(changes)
    signer = key or provider.key
    return {"id_token": jwt.encode({"alg": "RS256", "kid": signer.kid}, claims, signer)}


def test_the_provider_signed_token_passes(provider, connector):
    assert connector.verify_id_token(minted(provider), "n-1")["email"] == "alice@example.com"


@pytest.mark.parametrize(("change", "message"), [
    ({"aud": "someone-else"}, "aud"),
    ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "expired"),
    ({"iss": "https://evil.example"}, "iss"),
    ({"nonce": "from-an-earlier-login"}, "nonce"),
])
def test_bad_id_tokens_are_refused(provider, connector, change, message):
    from kubegate.auth.oidc import ConnectorError

    with pytest.raises(ConnectorError, match=message) as refused:
        connector.verify_id_token(minted(provider, **change), "n-1")
    assert str(refused.value).startswith("ID token rejected:")


def test_a_token_signed_by_another_key_is_refused(provider, connector):
    from kubegate.auth.oidc import ConnectorError

    forger = RSAKey.generate_key(2048, parameters={"kid": provider.key.kid}, private=True)  # same kid, other key
    with pytest.raises(ConnectorError, match="ID token rejected: .*signature"):
        connector.verify_id_token(minted(provider, forger), "n-1")
    unknown = RSAKey.generate_key(2048, parameters={"kid": "not-the-providers"}, private=True)
    with pytest.raises(ConnectorError, match="ID token rejected"):
        connector.verify_id_token(minted(provider, unknown), "n-1")


def test_kubectl_in_a_terminal_signs_in_again_when_the_certificate_expired(gate, tmp_path, kubectl_new,
                                                                          monkeypatch):
    """The exec plugin (interactiveMode IfAvailable) sees a terminal and an expired certificate: it runs the
    sign-in (the URL goes to kubectl's stderr; no browser here: BROWSER=none), then hands kubectl the new
    certificate and the command goes through."""
    import pty
    import time as clock
    from datetime import timedelta

    from certs.ca import CertificateAuthority
    from kubegate.client.kubeconfig import merge_contexts
    from kubegate.client.profile import Profile, save_profile

    past = CertificateAuthority.load(gate.state / "ca", clock=lambda: clock.time() - 3 * 3600)
    expired = past.issue_user_certificate("alice@example.com", ["admin"], timedelta(hours=1))
    ca_pem = (gate.state / "ca" / "ca.pem").read_bytes()
    env = gate.env(KUBECONFIG=str(tmp_path / "config"), BROWSER="none")
    monkeypatch.setenv("KUBEGATE_HOME", env["KUBEGATE_HOME"])
    save_profile(Profile(proxy=gate.proxy, user="alice@example.com", roles=["admin"], traits={}, kind="user",
                         expires=expired.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"), connector="example",
                         cert_pem=expired.cert_pem, key_pem=expired.key_pem, ca_pem=ca_pem))
    merge_contexts(tmp_path / "config", gate.proxy, ["sandbox"], ca_pem, current="sandbox")
    before = len(gate.issued())
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen([kubectl_new, "get", "pods", "-A"], env=env, stdin=terminal,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        url = first_url(proc.stderr)
        sign_in_with_browser(url, "alice")
        out, err = proc.communicate(timeout=90)
    finally:
        os.close(controller)
        os.close(terminal)
    assert proc.returncode == 0, err
    assert out.split()[:2] == ["NAMESPACE", "NAME"]
    assert [r.via for r in gate.issued()[before:]] == ["oidc:example"]

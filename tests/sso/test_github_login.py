"""GitHub sign-in. No GitHub runs here: a local STAND-IN for GitHub's OAuth web flow
(/login/oauth/authorize, /login/oauth/access_token — with PKCE checked) and REST API (/user, /user/teams)
answers like github.com does, and the connector is pointed at it with endpoint_url / api_endpoint_url
(the settings GitHub Enterprise uses). Team membership maps to roles with teams_to_roles."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from tests.sso.conftest import running_gate

pytestmark = pytest.mark.e2e

CLIENT_ID, CLIENT_SECRET = "Iv1.kubegate", "github-test-secret"
ACCOUNTS = {  # who "approves" at the stand-in's authorize page (chosen by the login_hint the test passes)
    "octocat": [{"slug": "platform", "organization": {"login": "acme"}}, {"slug": "web", "organization": {"login": "acme"}}],
    "outsider": [{"slug": "marketing", "organization": {"login": "acme"}}],
}


@contextmanager
def github_stand_in() -> Iterator[tuple[str, dict]]:
    """The stand-in; the dict's "who" names the account the next authorization approves."""
    state: dict = {"who": "octocat", "codes": {}, "tokens": {}}

    class Handler(BaseHTTPRequestHandler):
        def _json(self, code: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/login/oauth/authorize":
                code = secrets.token_hex(10)
                state["codes"][code] = (state["who"], query.get("code_challenge"), query["redirect_uri"])
                self.send_response(302)
                self.send_header("Location", f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            who = state["tokens"].get(self.headers.get("Authorization", "").removeprefix("Bearer "))
            if who is None:
                self._json(401, {"message": "Bad credentials"})
            elif url.path == "/api/user":
                self._json(200, {"login": who, "id": 1})
            elif url.path == "/api/user/teams":
                self._json(200, ACCOUNTS[who] if query.get("page", "1") == "1" else [])
            else:
                self._json(404, {"message": "Not Found"})

        def do_POST(self) -> None:  # noqa: N802
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode()).items()}
            if urlsplit(self.path).path != "/login/oauth/access_token":
                return self._json(404, {"message": "Not Found"})
            granted = state["codes"].pop(form.get("code", ""), None)
            if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
                return self._json(200, {"error": "incorrect_client_credentials"})  # GitHub answers errors with 200
            verifier = form.get("code_verifier", "")
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if granted is None or granted[1] != challenge or granted[2] != form.get("redirect_uri"):
                return self._json(200, {"error": "bad_verification_code",
                                        "error_description": "The code passed is incorrect or expired."})
            token = "gho_" + secrets.token_hex(16)
            state["tokens"][token] = granted[0]
            self._json(200, {"access_token": token, "token_type": "bearer", "scope": "read:org"})

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def github():
    with github_stand_in() as running:
        yield running


@pytest.fixture(scope="module")
def gate(github, module_sandbox, tmp_path_factory):
    url, _ = github
    connectors = f"""
  connectors:
  - name: github
    type: github
    client_id: {CLIENT_ID}
    client_secret: {CLIENT_SECRET}
    endpoint_url: {url}
    api_endpoint_url: {url}/api
    teams_to_roles:
    - {{organization: acme, team: platform, roles: [admin]}}
"""
    # Two worker processes: login/start and login/finish come on separate connections and may be served by
    # different workers (the pending sign-in lives in the shared store).
    with running_gate(tmp_path_factory.mktemp("github"), module_sandbox, connectors, workers=2) as running:
        yield running


def login(gate) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen([sys.executable, "-m", "kubegate", "login", "--proxy", gate.proxy, "--ca-pin", gate.pin,
                             "--auth", "github", "--no-browser"], cwd=gate.directory, env=gate.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    url = next(m.group(0) for line in proc.stderr if (m := re.search(r"https?://\S+", line)))
    assert "code_challenge_method=S256" in url and "scope=read%3Aorg" in url
    requests.get(url, timeout=30)  # the "browser": the stand-in approves and redirects to the loopback
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_team_member_signs_in_with_github(gate, github):
    github[1]["who"] = "octocat"
    before = len(gate.issued())
    result = login(gate)
    assert result.returncode == 0, result.stderr
    assert "Logged in as: octocat" in result.stdout and "Roles:        admin" in result.stdout
    assert "github_teams=acme/platform,acme/web" in result.stdout
    assert [(r.user, r.roles, r.via) for r in gate.issued()[before:]] == [("octocat", ("admin",), "github:github")]


def test_someone_in_no_mapped_team_gets_nothing(gate, github):
    github[1]["who"] = "outsider"
    before = len(gate.issued())
    result = login(gate)
    assert result.returncode == 1
    assert "outsider signed in, but no teams_to_roles rule of connector 'github' gives them a role" in result.stderr
    assert len(gate.issued()) == before

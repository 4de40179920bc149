"""The real OpenID Connect provider the sign-in tests use (npm ``oidc-provider`` under Node, see
tests/oidc/provider.mjs) and a scripted browser that signs in through its login form."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests
from joserfc.jwk import RSAKey

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_SCRIPT = ROOT / "tests" / "oidc" / "provider.mjs"
INSTALLED = ROOT / ".tools" / "oidc-provider" / "node_modules" / "oidc-provider" / "package.json"

USERS = {
    "alice": {"email": "alice@example.com", "groups": ["admins", "devs"]},
    "bob": {"email": "bob@example.com", "groups": ["contractors"]},
}
CLIENT_ID = "kubegate"


def require_provider() -> str:
    node = shutil.which("node")
    if node is None or not INSTALLED.exists():
        pytest.skip("node and oidc-provider are needed (scripts/install-oidc-provider.sh installs it)")
    return node


@dataclass
class Provider:
    issuer: str
    key: RSAKey  # the provider's signing key (the tests mint tokens with it)
    process: subprocess.Popen[str]


@contextmanager
def running_provider(workdir: Path) -> Iterator[Provider]:
    from kubegate.demo import free_port

    node = require_provider()
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    key = RSAKey.generate_key(2048, parameters={"kid": "test-key-1", "use": "sig", "alg": "RS256"}, private=True)
    settings = {
        "port": port,
        "jwks": {"keys": [key.as_dict(private=True)]},
        "users": USERS,
        "clients": [{
            "client_id": CLIENT_ID,
            "application_type": "native",
            "token_endpoint_auth_method": "none",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "grant_types": ["authorization_code", "urn:ietf:params:oauth:grant-type:device_code"],
            "response_types": ["code"],
        }],
    }
    (workdir / "provider.json").write_text(json.dumps(settings))
    log = open(workdir / "provider.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen([node, str(PROVIDER_SCRIPT), str(workdir / "provider.json")], stdout=subprocess.PIPE,
                               stderr=log, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert line.startswith("listening "), (workdir / "provider.log").read_text()
        issuer = line.split(" ", 1)[1].strip()
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(issuer + "/.well-known/openid-configuration", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the OIDC provider did not answer"
            time.sleep(0.05)
        yield Provider(issuer, key, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []
        self._current: dict | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = {"action": a.get("action", ""), "method": a.get("method", "get").lower(),
                             "id": a.get("id", ""), "fields": {}, "buttons": []}
            self.forms.append(self._current)
        elif tag in ("input", "button") and self.forms:
            form = self._current or self.forms[-1]
            if a.get("form"):  # a button attached to a form by id
                form = next((f for f in self.forms if f["id"] == a["form"]), form)
            kind = a.get("type", "submit" if tag == "button" else "text")
            if kind == "submit":
                form["buttons"].append((a.get("name", ""), a.get("value", "")))
            elif a.get("name"):
                form["fields"][a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def sign_in_with_browser(url: str, login: str, password: str = "any-password", max_steps: int = 10) -> str:
    """Follow ``url`` like a person would: fill the provider's forms (login, then confirmations) and
    follow its redirects until one lands on a page without a form (kubegate's loopback page). Returns
    that page's text."""
    session = requests.Session()
    response = session.get(url, timeout=30)
    for _ in range(max_steps):
        parser = _Forms()
        parser.feed(response.text)
        forms = [f for f in parser.forms if f["method"] == "post"]
        if not forms:
            return response.text
        form = forms[0]
        data = dict(form["fields"])
        if "login" in data:
            data.update(login=login, password=password)
        buttons = [b for b in form["buttons"] if b[0] != "abort"]
        if buttons and buttons[0][0]:
            data[buttons[0][0]] = buttons[0][1]
        response = session.post(urljoin(response.url, form["action"] or response.url), data=data, timeout=30)
    raise AssertionError(f"sign-in did not finish in {max_steps} steps; last page: {response.text[:500]}")

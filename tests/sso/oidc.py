"""The real OpenID Connect provider the sign-in tests use (npm ``oidc-provider`` under Node:
``sandbox.oidc_provider``) and a scripted browser that signs in through its login form."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin

import pytest
import requests

from sandbox.oidc_provider import CLIENT_ID, DEMO_USERS, provider_available, running_provider

__all__ = ["CLIENT_ID", "USERS", "require_provider", "running_provider", "sign_in_with_browser"]

USERS = DEMO_USERS


def require_provider() -> None:
    problem = provider_available()
    if problem:
        pytest.skip(f"the OpenID provider cannot run here: {problem} (scripts/install-oidc-provider.sh)")


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

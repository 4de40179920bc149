"""A GitHub OAuth connector: the web application flow (authorization code, with PKCE) through Authlib, then
GitHub's REST API for who the person is (``GET /user``) and which teams they are in (``GET /user/teams``,
every page). ``endpoint_url`` / ``api_endpoint_url`` point at GitHub Enterprise (or a test stand-in).

GitHub issues no ID token: the identity is what the API says for the access token, fetched right after
the exchange; the access token is then dropped (never stored, never logged).
"""

from __future__ import annotations

from typing import Any

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session

from kubegate.auth.oidc import HTTP_TIMEOUT, ConnectorError

__all__ = ["GitHubConnector", "GitHubUser"]

MAX_TEAM_PAGES = 20


class GitHubUser:
    def __init__(self, login: str, teams: list[tuple[str, str]]) -> None:
        self.login = login
        self.teams = teams  # (organization login, team slug)


class GitHubConnector:
    def __init__(self, settings: Any) -> None:
        self.settings = settings  # kubegate.config.ConnectorConfig (attributes only)
        self.web = str(settings.endpoint_url).rstrip("/")
        self.api = str(settings.api_endpoint_url).rstrip("/")

    def _session(self, redirect_uri: str) -> OAuth2Session:
        return OAuth2Session(
            client_id=self.settings.client_id,
            client_secret=self.settings.client_secret,
            scope="read:org",
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_post",
        )

    def authorization_url(self, redirect_uri: str, state: str, nonce: str, code_verifier: str) -> str:
        with self._session(redirect_uri) as session:
            url, _ = session.create_authorization_url(
                f"{self.web}/login/oauth/authorize", state=state, code_verifier=code_verifier
            )
        return str(url)

    def exchange_code(self, code: str, redirect_uri: str, code_verifier: str, nonce: str) -> GitHubUser:
        with self._session(redirect_uri) as session:
            try:
                token = session.fetch_token(f"{self.web}/login/oauth/access_token", code=code,
                                            code_verifier=code_verifier, timeout=HTTP_TIMEOUT,
                                            headers={"Accept": "application/json"})
            except OAuthError as exc:
                raise ConnectorError(f"GitHub refused the authorization code: {exc.error}: "
                                     f"{exc.description or ''}".rstrip(": ")) from None
            except requests.RequestException as exc:
                raise ConnectorError(f"cannot reach GitHub: {exc}") from None
        return self.user(str(token["access_token"]))

    def user(self, access_token: str) -> GitHubUser:
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/vnd.github+json",
                   "X-GitHub-Api-Version": "2022-11-28"}
        me = self._get(f"{self.api}/user", headers)
        if not isinstance(me, dict) or not isinstance(me.get("login"), str):
            raise ConnectorError("GitHub's /user answer has no login")
        teams: list[tuple[str, str]] = []
        for page in range(1, MAX_TEAM_PAGES + 1):
            batch = self._get(f"{self.api}/user/teams?per_page=100&page={page}", headers)
            if not isinstance(batch, list):
                raise ConnectorError("GitHub's /user/teams answer is not a list")
            for team in batch:
                org = (team.get("organization") or {}).get("login") if isinstance(team, dict) else None
                if isinstance(org, str) and isinstance(team.get("slug"), str):
                    teams.append((org, team["slug"]))
            if len(batch) < 100:
                break
        return GitHubUser(me["login"], teams)

    @staticmethod
    def _get(url: str, headers: dict[str, str]) -> Any:
        try:
            response = requests.get(url, headers=headers, timeout=HTTP_TIMEOUT)
        except requests.RequestException as exc:
            raise ConnectorError(f"cannot reach GitHub's API: {exc}") from None
        if response.status_code != 200:
            raise ConnectorError(f"GitHub's API answered {response.status_code} for {url.split('?')[0]}")
        try:
            return response.json()
        except ValueError:
            raise ConnectorError(f"GitHub's API sent no JSON for {url.split('?')[0]}") from None

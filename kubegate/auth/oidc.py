"""An OpenID Connect connector: the protocol with Authlib, the ID token checks with joserfc (Authlib's JOSE
library) — nothing hand-written.

- discovery: ``<issuer>/.well-known/openid-configuration`` (cached for the connector's life);
- authorization code + PKCE (S256): ``authorization_url`` builds the provider's URL for a redirect to the
  client's loopback address; ``exchange_code`` trades the code (with the verifier that never left the
  server) for tokens;
- device authorization grant (RFC 8628): ``start_device`` / ``poll_device``;
- ``verify_id_token``: signature against the provider's JWKS (fetched again once when a token names a key
  id the cached set lacks: providers rotate keys), algorithm from the provider's list, ``iss`` = the
  configured issuer, ``aud`` = our client id, ``exp`` / ``iat`` present and ``exp`` in the future (60 s
  leeway), ``nonce`` = the one sent (code flow), ``azp`` / ``at_hash`` as OIDC Core says (Authlib's
  ``CodeIDToken``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

__all__ = ["ConnectorError", "DevicePending", "OIDCConnector", "DeviceStart"]

HTTP_TIMEOUT = 10.0
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
LEEWAY = 60


class ConnectorError(ValueError):
    """The provider refused, or what it sent does not pass the checks; the message says which."""


class DevicePending(Exception):
    """The person has not finished the device sign-in yet (``slow_down`` when asked to poll slower)."""

    def __init__(self, slow_down: bool = False) -> None:
        super().__init__("authorization pending")
        self.slow_down = slow_down


@dataclass(frozen=True, slots=True)
class DeviceStart:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: int
    interval: int


class OIDCConnector:
    def __init__(self, settings: Any, clock: Any = time.time) -> None:
        self.settings = settings  # kubegate.config.ConnectorConfig (attributes only)
        self.issuer = str(settings.issuer_url).rstrip("/")
        self.clock = clock
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._lock = threading.Lock()

    # --- provider metadata ----------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        with self._lock:
            if self._metadata is None:
                url = self.issuer + "/.well-known/openid-configuration"
                data = self._get_json(url)
                if str(data.get("issuer", "")).rstrip("/") != self.issuer:
                    raise ConnectorError(
                        f"the provider at {url} names issuer {data.get('issuer')!r}, not {self.issuer!r}"
                    )
                self._metadata = data
            return self._metadata

    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = requests.get(url, timeout=HTTP_TIMEOUT)
            response.raise_for_status()
            data = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise ConnectorError(f"cannot read {url}: {exc}") from None
        if not isinstance(data, dict):
            raise ConnectorError(f"{url} did not answer a JSON object")
        return data

    def _key_set(self, refresh: bool = False) -> KeySet:
        with self._lock:
            if self._keys is None or refresh:
                uri = (self._metadata or {}).get("jwks_uri")
                if not uri:
                    raise ConnectorError("the provider's metadata has no jwks_uri")
                self._keys = KeySet.import_key_set(self._get_json(uri))  # type: ignore[arg-type]
            return self._keys

    def _session(self, redirect_uri: str | None = None) -> OAuth2Session:
        secret = self.settings.client_secret
        return OAuth2Session(
            client_id=self.settings.client_id,
            client_secret=secret,
            scope=" ".join(self.settings.scopes),
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic" if secret else "none",
        )

    # --- authorization code + PKCE ---------------------------------------------------------------------
    def authorization_url(self, redirect_uri: str, state: str, nonce: str, code_verifier: str) -> str:
        endpoint = self.metadata()["authorization_endpoint"]
        with self._session(redirect_uri) as session:
            url, _ = session.create_authorization_url(endpoint, state=state, code_verifier=code_verifier, nonce=nonce)
        return str(url)

    def exchange_code(self, code: str, redirect_uri: str, code_verifier: str, nonce: str) -> dict[str, Any]:
        """Tokens for ``code``, then the checked ID token claims."""
        endpoint = self.metadata()["token_endpoint"]
        with self._session(redirect_uri) as session:
            try:
                token = session.fetch_token(endpoint, code=code, code_verifier=code_verifier, timeout=HTTP_TIMEOUT)
            except OAuthError as exc:
                raise ConnectorError(f"the provider refused the authorization code: {exc.error}: "
                                     f"{exc.description or ''}".rstrip(": ")) from None
            except requests.RequestException as exc:
                raise ConnectorError(f"cannot reach the provider's token endpoint: {exc}") from None
        return self.verify_id_token(token, nonce)

    # --- device authorization grant --------------------------------------------------------------------
    def start_device(self) -> DeviceStart:
        endpoint = self.metadata().get("device_authorization_endpoint")
        if not endpoint:
            raise ConnectorError(f"the provider {self.issuer} does not offer the device authorization grant")
        with self._session() as session:
            try:
                response = session.post(
                    endpoint, data={"client_id": self.settings.client_id, "scope": " ".join(self.settings.scopes)},
                    withhold_token=True, timeout=HTTP_TIMEOUT,
                )
                data = response.json()
            except (requests.RequestException, ValueError) as exc:
                raise ConnectorError(f"device authorization request failed: {exc}") from None
        if response.status_code != 200 or "device_code" not in data:
            raise ConnectorError(f"the provider refused the device authorization request: {data.get('error')}")
        return DeviceStart(
            device_code=data["device_code"],
            user_code=data["user_code"],
            verification_uri=data["verification_uri"],
            verification_uri_complete=data.get("verification_uri_complete"),
            expires_in=int(data.get("expires_in", 600)),
            interval=int(data.get("interval", 5)),
        )

    def poll_device(self, device_code: str) -> dict[str, Any]:
        """The checked ID token claims once the person approved; ``DevicePending`` before."""
        endpoint = self.metadata()["token_endpoint"]
        with self._session() as session:
            try:
                token = session.fetch_token(endpoint, grant_type=DEVICE_GRANT, device_code=device_code,
                                            timeout=HTTP_TIMEOUT)
            except OAuthError as exc:
                if exc.error in ("authorization_pending", "slow_down"):
                    raise DevicePending(exc.error == "slow_down") from None
                raise ConnectorError(f"device sign-in failed: {exc.error}: {exc.description or ''}".rstrip(": ")) from None
            except requests.RequestException as exc:
                raise ConnectorError(f"cannot reach the provider's token endpoint: {exc}") from None
        return self.verify_id_token(token, None)

    # --- ID token ----------------------------------------------------------------------------------------
    def verify_id_token(self, token: Mapping[str, Any], nonce: str | None) -> dict[str, Any]:
        """The claims of ``token["id_token"]`` after every check (see the module docstring)."""
        raw = token.get("id_token")
        if not raw:
            raise ConnectorError("the provider returned no ID token (is the 'openid' scope allowed?)")
        metadata = self.metadata()
        registry = JWSRegistry(algorithms=metadata.get("id_token_signing_alg_values_supported") or ["RS256"],
                               strict_check_header=False)
        try:
            try:
                decoded = jwt.decode(raw, self._key_set(), registry=registry)
            except InvalidKeyIdError:  # a key we have not seen: the provider rotated its keys
                decoded = jwt.decode(raw, self._key_set(refresh=True), registry=registry)
        except (JoseError, ValueError) as exc:
            raise ConnectorError(f"ID token rejected: {_describe(exc)}") from None
        params: dict[str, Any] = {"client_id": self.settings.client_id}
        if nonce is not None:
            params["nonce"] = nonce
        if token.get("access_token"):
            params["access_token"] = token["access_token"]
        options = {"iss": {"essential": True, "value": metadata["issuer"]},
                   "aud": {"essential": True, "value": self.settings.client_id}}
        claims = CodeIDToken(decoded.claims, decoded.header, options, params)
        try:
            claims.validate(now=int(self.clock()), leeway=LEEWAY)
        except (JoseError, ValueError) as exc:
            raise ConnectorError(f"ID token rejected: {_describe(exc)}") from None
        return dict(claims)


def _describe(exc: Exception) -> str:
    error = getattr(exc, "error", None)
    description = getattr(exc, "description", None) or str(exc)
    return f"{error}: {description}" if error and error not in description else description

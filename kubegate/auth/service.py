"""The auth endpoint: ``/kubegate/auth/…`` on the proxy's own listener (same port as the clusters).

Why the proxy's listener and not a second one: clients already know that address (``--proxy
HOST:PORT``), the serving certificate and firewall rules already cover it, and the listener accepts
connections without a client certificate (or with an expired one) since the expired-certificate 401
needs that anyway. Requests to any other path without a usable certificate are still refused (401).

Every request and answer is JSON; refusals are Kubernetes ``Status`` bodies with the right code and a
message that says what was wrong, and nothing is issued. Routes::

    GET  ca               {ca, pin}: the public CA certificate and its sha256 SPKI pin (for pinning)
    GET  connectors       [{name, type, display}]
    POST login/start      {connector, redirect_uri, public_key} → {auth_url, state}   (code + PKCE)
    POST login/finish     {state, code} → certificate                                  (state is single use)
    POST device/start     {connector, public_key} → {request_id, user_code, verification_uri, …}
    POST device/poll      {request_id} → 202 {pending} | certificate
    POST renew            {public_key} with a valid client certificate → certificate
    POST join             {token, public_key} → bot certificate                        (token is single use)
    GET  clusters         [{name, labels}] the caller's roles can see (client certificate)

A "certificate" answer: ``{certificate, ca, user, roles, traits, kind, expires, serial}``.

The handlers are synchronous (file store, provider HTTP calls) and run in a thread pool off the proxy's
event loop (``handler``); the state between requests is in the ``AuthStore`` so any worker process can
serve any step.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from authlib.common.security import generate_token

from certs.access import ClusterLike
from certs.bot import bot_user
from certs.ca import CertificateAuthority, IssuedCertificate
from certs.issuance import IssueError, Issuer, ca_pin, load_public_key
from certs.store import AuthStore, StoreError
from kubegate.auth.mapping import roles_from_claims, roles_from_teams, traits_from_claims
from kubegate.auth.oidc import ConnectorError, DevicePending
from proxy.endpoints import LocalHandler, LocalRequest, LocalResponse
from proxy.timestamps import rfc3339_micro
from rbac.decision import cluster_visible
from rbac.identity import Identity
from rbac.roles import RoleSet
from rbac.status import REASONS, status_body

log = logging.getLogger("kubegate.auth")

__all__ = ["AuthService", "AuthRefused", "PENDING_TTL"]

PENDING_TTL = 600.0  # a browser sign-in must finish within 10 minutes


class AuthRefused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Person:
    """Who a connector says signed in, already mapped to kubegate roles and traits."""

    user: str
    roles: list[str]
    traits: dict[str, list[str]]


class AuthService:
    def __init__(
        self,
        *,
        ca: CertificateAuthority,
        issuer: Issuer,
        store: AuthStore,
        connectors: Mapping[str, tuple[Any, Any]],  # name → (settings, connector object)
        roles: Callable[[], RoleSet],
        clusters: Callable[[], Iterable[ClusterLike]],
        locks: Any = None,
        audit: Callable[[dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ca = ca
        self.issuer = issuer
        self.store = store
        self.connectors = dict(connectors)
        self.roles = roles
        self.clusters = clusters
        self.locks = locks
        self.audit = audit
        self.clock = clock
        self.routes: dict[tuple[str, str], Callable[[LocalRequest, dict[str, Any]], tuple[int, Any]]] = {
            ("GET", "ca"): self.get_ca,
            ("GET", "connectors"): self.get_connectors,
            ("POST", "login/start"): self.login_start,
            ("POST", "login/finish"): self.login_finish,
            ("POST", "device/start"): self.device_start,
            ("POST", "device/poll"): self.device_poll,
            ("POST", "renew"): self.renew,
            ("POST", "join"): self.join,
            ("GET", "clusters"): self.list_clusters,
        }

    # --- plumbing -----------------------------------------------------------------------------------------
    def handler(self) -> LocalHandler:
        """The async handler the proxy calls for ``/kubegate/auth/…`` (the work runs in a thread)."""

        async def handle(request: LocalRequest) -> LocalResponse:
            return await asyncio.get_running_loop().run_in_executor(None, self.handle, request)

        return handle

    def handle(self, request: LocalRequest) -> LocalResponse:
        route = self.routes.get((request.method, request.path.rstrip("/")))
        try:
            if route is None:
                if any(path == request.path.rstrip("/") for _, path in self.routes):
                    raise AuthRefused(405, f"{request.method} is not allowed on /kubegate/auth/{request.path}")
                raise AuthRefused(404, f"no such auth endpoint: /kubegate/auth/{request.path}")
            body: dict[str, Any] = {}
            if request.method == "POST":
                try:
                    body = json.loads(request.body or b"{}")
                except ValueError:
                    raise AuthRefused(400, "the request body is not JSON") from None
                if not isinstance(body, dict):
                    raise AuthRefused(400, "the request body must be a JSON object")
            code, answer = route(request, body)
            if isinstance(answer, dict) and "serial" in answer:
                self._audit(request, "certificate.issued", code, user=answer["user"], kind=answer["kind"],
                            roles=answer["roles"], serial=answer["serial"], expires=answer["expires"])
            return LocalResponse(code, json.dumps(answer).encode())
        except AuthRefused as exc:
            log.info("auth request refused", extra={"path": request.path, "code": exc.code, "problem": exc.message,
                                                     "peer": request.peer_ip})
            self._audit(request, "auth.refused", exc.code, reason=exc.message)
            return LocalResponse(exc.code, status_body(exc.code, REASONS.get(exc.code, "BadRequest"), exc.message))

    def _audit(self, request: LocalRequest, event: str, code: int, **fields: Any) -> None:
        if self.audit is None:
            return
        self.audit({"event": event, "time": rfc3339_micro(self.clock()), "path": f"/kubegate/auth/{request.path}", "code": code,
                    "client_ip": request.peer_ip,
                    "caller": request.identity.user if request.identity is not None else None, **fields})

    @staticmethod
    def _field(body: Mapping[str, Any], name: str) -> str:
        value = body.get(name)
        if not isinstance(value, str) or not value:
            raise AuthRefused(400, f"missing field {name!r}")
        return value

    def _connector(self, name: str) -> tuple[Any, Any]:
        found = self.connectors.get(name)
        if found is None:
            known = ", ".join(sorted(self.connectors)) or "none configured"
            raise AuthRefused(404, f"unknown connector {name!r} (connectors: {known})")
        return found

    def _valid_identity(self, request: LocalRequest) -> Identity:
        identity = request.identity
        if identity is None:
            raise AuthRefused(401, "this needs a client certificate from this kubegate (run kubegate login)")
        if identity.not_after is not None and identity.not_after.timestamp() <= self.clock():
            raise AuthRefused(401, f"your certificate expired at {_iso(identity.not_after.timestamp())}; "
                                   "run kubegate login")
        if self.locks is not None:
            reason = self.locks.is_locked(identity)
            if reason:
                raise AuthRefused(403, f"{identity.user} is locked: {reason}")
        return identity

    def _issue(self, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        if self.locks is not None:
            reason = self.locks.is_locked(Identity(user=kwargs["user"], roles=tuple(kwargs["roles"])))
            if reason:
                raise AuthRefused(403, f"{kwargs['user']} is locked: {reason}")
        try:
            issued = self.issuer.issue(**kwargs)
        except IssueError as exc:
            raise AuthRefused(403, str(exc)) from None
        return 200, self._certificate_answer(issued, kwargs)

    def _certificate_answer(self, issued: IssuedCertificate, request: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "certificate": issued.cert_pem.decode(),
            "ca": self.ca.cert_pem.decode(),
            "user": request["user"],
            "roles": list(request["roles"]),
            "traits": {k: list(v) for k, v in request["traits"].items()},
            "kind": request["kind"],
            "expires": _iso(issued.not_after.timestamp()),
            "serial": issued.serial,
        }

    def _put_pending(self, key: str, data: Mapping[str, Any]) -> None:
        try:
            self.store.put_pending(key, data)
        except StoreError as exc:
            raise AuthRefused(429, str(exc)) from None

    def _public_key(self, body: Mapping[str, Any]) -> Any:
        try:
            return load_public_key(self._field(body, "public_key"))
        except IssueError as exc:
            raise AuthRefused(400, str(exc)) from None

    # --- public ------------------------------------------------------------------------------------------
    def get_ca(self, request: LocalRequest, body: dict[str, Any]) -> tuple[int, Any]:
        return 200, {"ca": self.ca.cert_pem.decode(), "pin": ca_pin(self.ca.certificate)}

    def get_connectors(self, request: LocalRequest, body: dict[str, Any]) -> tuple[int, Any]:
        return 200, [{"name": name, "type": settings.type, "display": settings.display or name}
                     for name, (settings, _) in sorted(self.connectors.items())]

    # --- browser sign-in: authorization code + PKCE ----------------------------------------------------------
    def login_start(self, request: LocalRequest, body: dict[str, Any]) -> tuple[int, Any]:
        name = self._field(body, "connector")
        settings, connector = self._connector(name)
        redirect_uri = self._field(body, "redirect_uri")
        if not redirect_uri.startswith(("http://127.0.0.1:", "http://[::1]:", "http://localhost:")):
            raise AuthRefused(400, "redirect_uri must be a loopback address (http://127.0.0.1:PORT/…)")
        public_key = self._field(body, "public_key")
        self._public_key(body)
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        try:
            url = connector.authorization_url(redirect_uri, state, nonce, verifier)
        except ConnectorError as exc:
            raise AuthRefused(502, str(exc)) from None
        self._put_pending(state, {
            "connector": name, "redirect_uri": redirect_uri, "nonce": nonce, "code_verifier": verifier,
            "public_key": public_key, "expires": self.clock() + PENDING_TTL,
        })
        return 200, {"auth_url": url, "state": state}

    def login_finish(self, request: LocalRequest, body: dict[str, Any]) -> tuple[int, Any]:
        state, code = self._field(body, "state"), self._field(body, "code")
        pending = self.store.take_pending(state)
        if pending is None or "redirect_uri" not in pending:
            raise AuthRefused(400, "unknown or already used login state: start kubegate login again")
        if pending["expires"] <= self.clock():
            raise AuthRefused(400, "the sign-in took too long: start kubegate login again")
        settings, connector = self._connector(pending["connector"])
        try:
            found = connector.exchange_code(code, pending["redirect_uri"], pending["code_verifier"], pending["nonce"])
        except ConnectorError as exc:
            raise AuthRefused(401, str(exc)) from None
        person = self._person(settings, found)
        return self._issue(user=person.user, roles=person.roles, traits=person.traits, kind="user",
                           public_key=load_public_key(pending["public_key"]), via=f"{settings.type}:{settings.name}")

    def _person(self, settings: Any, found: Any) -> Person:
        if settings.type == "github":
            user, rules = found.login, "teams_to_roles"
            roles = roles_from_teams(found.teams, settings.teams_to_roles)
            traits = {"github_teams": [f"{org}/{team}" for org, team in found.teams], "logins": [found.login]}
        else:
            claims: Mapping[str, Any] = found
            user, rules = claims.get(settings.username_claim) or claims.get("sub"), "claims_to_roles"
            if not isinstance(user, str) or not user:
                raise AuthRefused(401, f"the ID token has no {settings.username_claim!r} or 'sub' claim")
            roles = roles_from_claims(claims, settings.claims_to_roles)
            traits = traits_from_claims(claims, settings.claims_to_traits)
        if not roles:
            raise AuthRefused(403, f"{user} signed in, but no {rules} rule of connector {settings.name!r} "
                                   "gives them a role")
        return Person(user, roles, traits)

    # --- headless sign-in: device authorization grant --------------------------------------------------------
    def device_start(self, request: LocalRequest, body: dict[str, Any]) -> tuple[int, Any]:
        name = self._field(body, "connector")
        settings, connector = self._connector(name)
        if settings.type != "oidc":
            raise AuthRefused(400, f"connector {name!r} ({settings.type}) has no device sign-in")
        public_key = self._field(body, "public_key")
        self._public_key(body)
        try:
            start = connector.start_device()
        except ConnectorError as exc:
            raise AuthRefused(502, str(exc)) from None
        request_id = generate_token(32)
        self._put_pending(request_id, {
            "connector": name, "device_code": start.device_code, "public_key": public_key,
            "expires": self.clock() + start.expires_in,
        })
        return 200, {"request_id": request_id, "user_code": start.user_code,
                     "verification_uri": start.verification_uri,
                     "verification_uri_complete": start.verification_uri_complete,
                     "interval": start.interval, "expires_in": start.expires_in}

    def device_poll(self, request: LocalRequest, body: dict[str, Any]) -> tuple[int, Any]:
        request_id = self._field(body, "request_id")
        pending = self.store.take_pending(request_id)
        if pending is None or "device_code" not in pending:
            raise AuthRefused(400, "unknown or finished device sign-in: start kubegate login again")
        if pending["expires"] <= self.clock():
            raise AuthRefused(400, "the device code expired: start kubegate login again")
        settings, connector = self._connector(pending["connector"])
        try:
            claims = connector.poll_device(pending["device_code"])
        except DevicePending as waiting:
            self._put_pending(request_id, pending)
            return 202, {"status": "slow_down" if waiting.slow_down else "pending"}
        except ConnectorError as exc:
            raise AuthRefused(401, str(exc)) from None
        person = self._person(settings, claims)
        return self._issue(user=person.user, roles=person.roles, traits=person.traits, kind="user",
                           public_key=load_public_key(pending["public_key"]), via=f"oidc-device:{settings.name}")

    # --- certificate holders -------------------------------------------------------------------------------------
    def renew(self, request: LocalRequest, body: dict[str, Any]) -> tuple[int, Any]:
        identity = self._valid_identity(request)
        public_key = self._public_key(body)
        if identity.kind == "bot":
            name = identity.user.removeprefix("bot-")
            bot = self.store.get_bot(name)
            if bot is None or bot_user(name) != identity.user:
                raise AuthRefused(403, f"bot {name!r} was removed: its certificates are not renewed")
            return self._issue(user=identity.user, roles=list(bot.roles), traits=dict(bot.traits), kind="bot",
                               public_key=public_key, via="renew")
        # A user's renewal rotates the key but never extends the session (signing in again does) and keeps
        # everything else, the pinned cluster included.
        return self._issue(user=identity.user, roles=list(identity.roles), traits=dict(identity.traits),
                           kind="user", public_key=public_key, via="renew", not_after=identity.not_after,
                           cluster=identity.pinned_cluster)

    def join(self, request: LocalRequest, body: dict[str, Any]) -> tuple[int, Any]:
        secret = self._field(body, "token")
        public_key = self._public_key(body)
        try:
            token = self.store.take_join_token(secret, self.clock())
        except StoreError as exc:
            raise AuthRefused(401, str(exc)) from None
        bot = self.store.get_bot(token.bot)
        if bot is None:
            raise AuthRefused(403, f"bot {token.bot!r} was removed")
        return self._issue(user=bot_user(bot.name), roles=list(bot.roles), traits=dict(bot.traits), kind="bot",
                           public_key=public_key, via="join")

    def list_clusters(self, request: LocalRequest, body: dict[str, Any]) -> tuple[int, Any]:
        identity = self._valid_identity(request)
        roles = self.roles()
        visible = [{"name": c.name, "labels": dict(c.labels)} for c in self.clusters()
                   if cluster_visible(identity, roles, dict(c.labels), c.name)]
        return 200, sorted(visible, key=lambda c: c["name"])


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

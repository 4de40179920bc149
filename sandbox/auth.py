"""Authentication and impersonation for the sandbox cluster, as kube-apiserver does them.

Authentication (first that succeeds wins, like the apiserver's union authenticator):
- a client certificate verified against the sandbox CA at the TLS layer: ``CN`` = user, each ``O`` a
  group (``user_from_certificate``);
- ``Authorization: Bearer <token>`` looked up in a static token CSV file
  (``token,user,uid,"group1,group2"``, the ``--token-auth-file`` format);
- otherwise the request is anonymous and answered ``401 Unauthorized`` (``unauthorized_body``).
Every authenticated user also gets ``system:authenticated``.

Impersonation (``impersonate``): ``Impersonate-User``, ``Impersonate-Group`` (repeated),
``Impersonate-Uid`` and ``Impersonate-Extra-<key>`` are each checked with the ``impersonate`` verb on
``users`` / ``serviceaccounts`` (namespaced, for ``system:serviceaccount:<ns>:<name>``) / ``groups`` /
``uids`` / ``userextras/<key>`` with the value as resource name. A refusal is the apiserver's 403; groups,
uid or extras without a user is the apiserver's 500 InternalError ("... without impersonating a user").
The impersonated user gets ``system:authenticated`` unless it is given ``system:authenticated`` or
``system:unauthenticated`` explicitly; a service account without groups gets its fixed groups.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from cryptography import x509
from cryptography.x509.oid import NameOID

from sandbox.authz import AUTHENTICATED, UNAUTHENTICATED, forbidden_body
from sandbox.types import Authorizer, RequestAttributes, UserInfo

AUTHN_GROUP = "authentication.k8s.io"
_SA_PREFIX = "system:serviceaccount:"


def status_body(code: int, reason: str, message: str, details: dict | None = None) -> bytes:
    status: dict = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details:
        status["details"] = details
    status["code"] = code
    return json.dumps(status, separators=(",", ":")).encode()


def unauthorized_body() -> bytes:
    """kube-apiserver's answer to an anonymous request when anonymous auth is off."""
    return status_body(401, "Unauthorized", "Unauthorized")


def _with_authenticated(groups: Sequence[str]) -> tuple[str, ...]:
    if AUTHENTICATED in groups:
        return tuple(groups)
    return (*groups, AUTHENTICATED)


def user_from_certificate(cert: x509.Certificate | bytes) -> UserInfo | None:
    """The user of a (TLS-verified) client certificate: CN = name, O = groups."""
    if isinstance(cert, bytes | bytearray | memoryview):
        cert = x509.load_der_x509_certificate(bytes(cert))
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return None
    user = str(names[0].value)
    if not user:
        return None
    groups = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return UserInfo(user, _with_authenticated(groups))


@dataclass(frozen=True, slots=True)
class TokenEntry:
    token: str
    user: str
    uid: str
    groups: tuple[str, ...]


class TokenFile:
    """A static token CSV file (``token,user,uid,"group1,group2"``), re-read when it changes on disk."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._tokens: dict[str, TokenEntry] = {}
        if self.path.exists():
            self._load()

    @staticmethod
    def parse(text: str, source: str = "<tokens>") -> dict[str, TokenEntry]:
        tokens: dict[str, TokenEntry] = {}
        for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
            if not row or (len(row) == 1 and not row[0].strip()) or row[0].startswith("#"):
                continue
            if len(row) < 3:
                raise ValueError(f'{source}:{lineno}: need token,user,uid[,"groups"], got {len(row)} fields')
            token, user, uid = (field.strip() for field in row[:3])
            if not token or not user:
                raise ValueError(f"{source}:{lineno}: empty token or user")
            groups = tuple(g.strip() for g in row[3].split(",") if g.strip()) if len(row) > 3 else ()
            tokens[token] = TokenEntry(token, user, uid, groups)
        return tokens

    def _load(self) -> None:
        stat = self.path.stat()
        self._tokens = self.parse(self.path.read_text(), str(self.path))
        self._mtime = stat.st_mtime

    def _refresh(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime != self._mtime:
            with self._lock:
                self._load()

    def add(self, token: str, user: str, uid: str = "", groups: Sequence[str] = ()) -> None:
        """Append a token line (the file is created 0600) and take it into use at once."""
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([token, user, uid, ",".join(groups)])
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, buf.getvalue().encode())
            finally:
                os.close(fd)
            self._load()

    def authenticate(self, token: str) -> UserInfo | None:
        self._refresh()
        entry = self._tokens.get(token)
        if entry is None:
            return None
        return UserInfo(entry.user, _with_authenticated(entry.groups), entry.uid)


class Authenticator:
    """Picks the request's user from the connection's certificate user and its Authorization header."""

    def __init__(self, tokens: TokenFile | None) -> None:
        self.tokens = tokens

    def authenticate(self, cert_user: UserInfo | None, authorization: bytes | None) -> UserInfo | None:
        if cert_user is not None:
            return cert_user
        if authorization and self.tokens is not None:
            scheme, _, credential = authorization.partition(b" ")
            if scheme.lower() == b"bearer" and credential.strip():
                try:
                    return self.tokens.authenticate(credential.strip().decode("ascii"))
                except UnicodeDecodeError:
                    return None
        return None


# --------------------------------------------------------------------------- impersonation


@dataclass(frozen=True, slots=True)
class ImpersonationFailure:
    status: int
    body: bytes
    message: str


def _serviceaccount(username: str) -> tuple[str, str] | None:
    if not username.startswith(_SA_PREFIX):
        return None
    parts = username[len(_SA_PREFIX) :].split(":")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1]


def has_impersonation(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    return any(key.startswith(b"impersonate-") for key, _ in headers)


def impersonate(
    requestor: UserInfo, headers: Sequence[tuple[bytes, bytes]], authorizer: Authorizer
) -> UserInfo | ImpersonationFailure | None:
    """Apply ``Impersonate-*`` headers (lower-case names). None when the request has none."""
    user_name = ""
    groups: list[str] = []
    uid = ""
    extra: dict[str, list[str]] = {}
    has_groups = False
    for key, raw in headers:
        if not key.startswith(b"impersonate-"):
            continue
        value = raw.decode("utf-8", "replace")
        if key == b"impersonate-user":
            if not user_name:
                user_name = value
        elif key == b"impersonate-group":
            has_groups = True
            groups.append(value)
        elif key == b"impersonate-uid":
            if not uid:
                uid = value
        elif key.startswith(b"impersonate-extra-"):
            extra_key = unquote(key[len(b"impersonate-extra-") :].decode("latin-1").lower())
            extra.setdefault(extra_key, []).append(value)
    if not (user_name or has_groups or uid or extra):
        return None
    requests: list[RequestAttributes] = []
    sa = _serviceaccount(user_name) if user_name else None
    if user_name:
        if sa is not None:
            requests.append(
                RequestAttributes(
                    requestor, "impersonate", True, "", "v1", "serviceaccounts", "", sa[0], sa[1]
                )
            )
        else:
            requests.append(
                RequestAttributes(requestor, "impersonate", True, "", "v1", "users", "", "", user_name)
            )
    for group in groups:
        requests.append(RequestAttributes(requestor, "impersonate", True, "", "v1", "groups", "", "", group))
    for extra_key, values in extra.items():
        for value in values:
            requests.append(
                RequestAttributes(
                    requestor, "impersonate", True, AUTHN_GROUP, "v1", "userextras", extra_key, "", value
                )
            )
    if uid:
        requests.append(
            RequestAttributes(requestor, "impersonate", True, AUTHN_GROUP, "v1", "uids", "", "", uid)
        )
    if not user_name:
        described = " ".join(f"{{{r.resource} {r.name}}}" for r in requests)
        message = f"Internal error occurred: requested [{described}] without impersonating a user"
        return ImpersonationFailure(
            500,
            status_body(
                500,
                "InternalError",
                message,
                {"causes": [{"message": message[len("Internal error occurred: ") :]}]},
            ),
            message,
        )
    for attrs in requests:
        allowed, reason = authorizer.authorize(attrs)
        if not allowed:
            body = forbidden_body(attrs, reason)
            return ImpersonationFailure(403, body, json.loads(body)["message"])
    if sa is not None and not has_groups:
        groups = ["system:serviceaccounts", f"system:serviceaccounts:{sa[0]}"]
    if AUTHENTICATED not in groups and UNAUTHENTICATED not in groups:
        groups.append(AUTHENTICATED)
    return UserInfo(user_name, tuple(groups), uid, {k: tuple(v) for k, v in extra.items()})

"""What the auth endpoint keeps between requests: bots, one-time join tokens, pending logins and the
record of every certificate issued. Behind the small ``AuthStore`` interface so that a shared backend
(issue 13: etcd) can replace the files without touching the callers.

``FileAuthStore`` keeps it under ``<state_dir>/auth/``, safe for several worker processes at once::

    issued.jsonl          one JSON line per issued certificate (serial, user, kind, roles, expiry, via),
                          appended with O_APPEND in one write (lines never interleave)
    bots/<name>.json      a bot: roles, traits, creation time
    tokens/<sha256>.json  a join token (stored by the hash of its secret, never the secret itself);
                          taking it renames it to ``<sha256>.used``: one rename wins, a second take
                          finds the tombstone and says "already used"
    pending/<sha256>.json a login in progress (state, nonce, PKCE verifier, the client's public key),
                          keyed by the hash of its ``state``; taken (renamed away) exactly once

Secrets (join tokens, login state) are stored only as SHA-256 hashes in file names, so reading the
directory does not give them away; the pending record itself holds the PKCE verifier and nonce, which
are useless without the authorization code the browser carries.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from certs.files import ensure_private_dir, write_atomic

__all__ = [
    "AuthStore",
    "BotRecord",
    "FileAuthStore",
    "IssuedRecord",
    "JoinToken",
    "StoreError",
    "new_secret",
]

MAX_PENDING = 10_000
PENDING_MAX_AGE = 900.0  # seconds: longer than any sign-in may take (device codes included)
_NAME = re.compile(r"[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?")


class StoreError(ValueError):
    """A request the store refuses (unknown, used or expired token, bad name); the message says which."""


def new_secret(nbytes: int = 24) -> str:
    """A URL-safe random secret (join tokens, login state)."""
    return secrets.token_urlsafe(nbytes)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedRecord:
    serial: str
    user: str
    kind: str
    roles: tuple[str, ...]
    not_after: float  # unix time
    issued_at: float
    via: str  # "oidc:<connector>", "github:<connector>", "renew", "join", "operator", ...

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "roles": list(self.roles)}


@dataclass(frozen=True, slots=True)
class BotRecord:
    name: str
    roles: tuple[str, ...]
    traits: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    created: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "roles": list(self.roles),
            "traits": {k: list(v) for k, v in self.traits.items()},
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BotRecord:
        return cls(
            name=str(data["name"]),
            roles=tuple(data.get("roles", ())),
            traits={str(k): tuple(v) for k, v in dict(data.get("traits", {})).items()},
            created=float(data.get("created", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class JoinToken:
    bot: str
    expires: float  # unix time
    created: float


class AuthStore(Protocol):
    def record_issued(self, record: IssuedRecord) -> None: ...
    def issued(self) -> list[IssuedRecord]: ...
    def put_bot(self, bot: BotRecord) -> None: ...
    def get_bot(self, name: str) -> BotRecord | None: ...
    def list_bots(self) -> list[BotRecord]: ...
    def remove_bot(self, name: str) -> bool: ...
    def add_join_token(self, bot: str, ttl: float, now: float) -> tuple[str, JoinToken]: ...
    def take_join_token(self, secret: str, now: float) -> JoinToken: ...
    def put_pending(self, key: str, data: Mapping[str, Any]) -> None: ...
    def take_pending(self, key: str) -> dict[str, Any] | None: ...


def check_bot_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise StoreError(
            f"bad bot name {name!r}: use lower-case letters, digits, '.', '_' or '-' (at most 63 characters)"
        )
    return name


class FileAuthStore:
    """``AuthStore`` in a directory (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    @classmethod
    def in_state_dir(cls, state_dir: str | os.PathLike[str]) -> FileAuthStore:
        return cls(Path(state_dir) / "auth")

    def _dir(self, name: str) -> Path:
        return ensure_private_dir(self.directory / name)

    # --- issued certificates ---------------------------------------------------------------------------
    @property
    def issued_file(self) -> Path:
        return self.directory / "issued.jsonl"

    def record_issued(self, record: IssuedRecord) -> None:
        ensure_private_dir(self.directory)
        line = (json.dumps(record.to_json(), separators=(",", ":"), sort_keys=True) + "\n").encode()
        fd = os.open(self.issued_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def issued(self) -> list[IssuedRecord]:
        try:
            text = self.issued_file.read_text()
        except FileNotFoundError:
            return []
        records = []
        for line in text.splitlines():
            if line.strip():
                data = json.loads(line)
                records.append(IssuedRecord(**{**data, "roles": tuple(data["roles"])}))
        return records

    # --- bots ------------------------------------------------------------------------------------------
    def put_bot(self, bot: BotRecord) -> None:
        check_bot_name(bot.name)
        write_atomic(self._dir("bots") / f"{bot.name}.json", json.dumps(bot.to_json(), indent=2), 0o600)

    def get_bot(self, name: str) -> BotRecord | None:
        if not _NAME.fullmatch(name):
            return None
        try:
            return BotRecord.from_json(json.loads((self.directory / "bots" / f"{name}.json").read_text()))
        except FileNotFoundError:
            return None

    def list_bots(self) -> list[BotRecord]:
        folder = self.directory / "bots"
        if not folder.is_dir():
            return []
        bots = []
        for path in sorted(folder.glob("*.json")):
            with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
                bots.append(BotRecord.from_json(json.loads(path.read_text())))
        return bots

    def remove_bot(self, name: str) -> bool:
        """Remove the bot and its unused join tokens; its renewals are refused from now on."""
        if not _NAME.fullmatch(name):
            return False
        try:
            (self.directory / "bots" / f"{name}.json").unlink()
        except FileNotFoundError:
            return False
        tokens = self.directory / "tokens"
        for path in tokens.glob("*.json") if tokens.is_dir() else ():
            with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
                if json.loads(path.read_text())["bot"] == name:
                    path.unlink()
        return True

    # --- join tokens -----------------------------------------------------------------------------------
    def add_join_token(self, bot: str, ttl: float, now: float) -> tuple[str, JoinToken]:
        secret = new_secret()
        token = JoinToken(bot=check_bot_name(bot), expires=now + ttl, created=now)
        write_atomic(self._dir("tokens") / f"{_hash(secret)}.json", json.dumps(asdict(token)), 0o600)
        return secret, token

    def take_join_token(self, secret: str, now: float) -> JoinToken:
        folder = self._dir("tokens")
        digest = _hash(secret)
        live, used = folder / f"{digest}.json", folder / f"{digest}.used"
        try:
            os.rename(live, used)  # atomic: exactly one taker wins
        except FileNotFoundError:
            if used.exists():
                raise StoreError("the join token was already used (tokens are single use)") from None
            raise StoreError("unknown join token") from None
        token = JoinToken(**json.loads(used.read_text()))
        if token.expires <= now:
            raise StoreError("the join token has expired")
        return token

    # --- logins in progress ----------------------------------------------------------------------------
    def put_pending(self, key: str, data: Mapping[str, Any]) -> None:
        """Keep a login in progress. Anyone may start a login, so what they leave behind is bounded: logins
        older than ``PENDING_MAX_AGE`` are swept away here, and beyond ``MAX_PENDING`` a new one is refused."""
        folder = self._dir("pending")
        path = folder / f"{_hash(key)}.json"
        if not path.exists():
            entries = list(folder.glob("*.json"))
            if len(entries) >= MAX_PENDING // 2:
                cutoff = time.time() - PENDING_MAX_AGE
                for entry in entries:
                    with contextlib.suppress(FileNotFoundError):
                        if entry.stat().st_mtime < cutoff:
                            entry.unlink()
                if len(list(folder.glob("*.json"))) >= MAX_PENDING:
                    raise StoreError("too many sign-ins in progress: try again in a few minutes")
        write_atomic(path, json.dumps(dict(data)), 0o600)

    def take_pending(self, key: str) -> dict[str, Any] | None:
        """The pending login for ``key`` (its ``state``), removed: a second take (a replay) gets None."""
        folder = self._dir("pending")
        path = folder / f"{_hash(key)}.json"
        taken = folder / f".{_hash(key)}.{new_secret(6)}.taken"
        try:
            os.rename(path, taken)
        except FileNotFoundError:
            return None
        try:
            return json.loads(taken.read_text())
        finally:
            taken.unlink()

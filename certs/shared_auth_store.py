"""``certs.store.AuthStore`` in the shared backend (``backend.type: etcd``): bots, one-time join tokens,
pending logins and issued certificate serials, seen alike by every replica.

Keys (secrets stored only as SHA-256 hashes, as in ``FileAuthStore``)::

    auth/issued/<serial>     an IssuedRecord (JSON)
    auth/bots/<name>         a BotRecord
    auth/tokens/<sha256>     a JoinToken; taking it compare-and-swaps it to {"used": true, ...}: exactly
                             one taker wins on whichever replica, a second one hears "already used"
    auth/pending/<sha256>    a login in progress, under a lease of PENDING_MAX_AGE (etcd sweeps it), at
                             most MAX_PENDING at once; taken with a delete at the revision read, so a
                             replayed callback on another replica gets nothing
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from backend.base import Backend
from certs.store import (
    MAX_PENDING,
    PENDING_MAX_AGE,
    BotRecord,
    IssuedRecord,
    JoinToken,
    StoreError,
    _hash,
    check_bot_name,
    new_secret,
)

ISSUED, BOTS, TOKENS, PENDING = "auth/issued/", "auth/bots/", "auth/tokens/", "auth/pending/"


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


class SharedAuthStore:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    # --- issued certificates ---------------------------------------------------------------------------
    def record_issued(self, record: IssuedRecord) -> None:
        self.backend.put(ISSUED + record.serial, _json(record.to_json()))

    def issued(self) -> list[IssuedRecord]:
        items, _ = self.backend.get_range(ISSUED)
        records = []
        for item in items:
            data = json.loads(item.value)
            records.append(IssuedRecord(**{**data, "roles": tuple(data["roles"])}))
        records.sort(key=lambda r: r.issued_at)
        return records

    # --- bots ------------------------------------------------------------------------------------------
    def put_bot(self, bot: BotRecord) -> None:
        self.backend.put(BOTS + check_bot_name(bot.name), _json(bot.to_json()))

    def get_bot(self, name: str) -> BotRecord | None:
        try:
            check_bot_name(name)
        except StoreError:
            return None
        item = self.backend.get(BOTS + name)
        return None if item is None else BotRecord.from_json(json.loads(item.value))

    def list_bots(self) -> list[BotRecord]:
        items, _ = self.backend.get_range(BOTS)
        return [BotRecord.from_json(json.loads(item.value)) for item in items]

    def remove_bot(self, name: str) -> bool:
        """Remove the bot and its unused join tokens; its renewals are refused from now on."""
        if self.get_bot(name) is None or not self.backend.delete(BOTS + name):
            return False
        items, _ = self.backend.get_range(TOKENS)
        for item in items:
            data = json.loads(item.value)
            if data.get("bot") == name and not data.get("used"):
                self.backend.delete(item.key, expected_revision=item.revision)
        return True

    # --- join tokens -----------------------------------------------------------------------------------
    def add_join_token(self, bot: str, ttl: float, now: float) -> tuple[str, JoinToken]:
        secret = new_secret()
        token = JoinToken(bot=check_bot_name(bot), expires=now + ttl, created=now)
        if self.backend.create(TOKENS + _hash(secret), _json(asdict(token))) is None:
            raise StoreError("a join token with this secret exists already; try again")
        return secret, token

    def take_join_token(self, secret: str, now: float) -> JoinToken:
        key = TOKENS + _hash(secret)
        item = self.backend.get(key)
        if item is None:
            raise StoreError("unknown join token")
        data = json.loads(item.value)
        if data.get("used") or self.backend.compare_and_swap(key, item.revision, _json({**data, "used": True})) is None:
            raise StoreError("the join token was already used (tokens are single use)")
        token = JoinToken(bot=data["bot"], expires=float(data["expires"]), created=float(data["created"]))
        if token.expires <= now:
            raise StoreError("the join token has expired")
        return token

    # --- logins in progress ----------------------------------------------------------------------------
    def put_pending(self, key: str, data: Mapping[str, Any]) -> None:
        """Keep a login in progress (anyone may start one: bounded by the lease and ``MAX_PENDING``)."""
        pending, _ = self.backend.get_range(PENDING)
        if len(pending) >= MAX_PENDING:
            raise StoreError("too many sign-ins in progress: try again in a few minutes")
        lease = self.backend.grant(PENDING_MAX_AGE)
        self.backend.put(PENDING + _hash(key), _json(dict(data)), lease=lease)

    def take_pending(self, key: str) -> dict[str, Any] | None:
        """The pending login for ``key``, removed: a second take (a replay, on any replica) gets None."""
        item = self.backend.get(PENDING + _hash(key))
        if item is None or not self.backend.delete(item.key, expected_revision=item.revision):
            return None
        return json.loads(item.value)

"""Lease-based leader election: one leader per name (a ``discovery_group``) across every replica.

    election = Election(backend, "discovery/prod", identity="host-a:4242", ttl=10.0)
    task = loop.create_task(election.run())
    election.is_leader            # a plain attribute read
    await election.wait_leader()  # returns once this replica leads
    await election.resign()       # on shutdown: revoke the lease, another replica takes over at once

The leader holds ``leaders/<name>`` written with ``create`` (so only while no one else holds it) under
a lease of ``ttl`` seconds, renewed every ``ttl / 3``. Followers watch the key; when it goes (the
leader resigned, or died and its lease expired — at most ``ttl`` after its last renewal), they try to
create it at once, so a dead leader is replaced within one TTL.

A leader that cannot renew steps down by itself once ``ttl * 2/3`` passed since its last successful
renewal — before its lease can have expired in the backend, so two leaders never poll at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from backend.base import Backend, BackendError
from backend.cache import WatchedPrefix

log = logging.getLogger(__name__)


class Election:
    def __init__(self, backend: Backend, name: str, *, identity: str, ttl: float = 10.0,
                 on_change: Any = None) -> None:
        self.backend = backend
        self.name = name
        self.key = f"leaders/{name}"
        self.identity = identity
        self.ttl = ttl
        self.on_change = on_change
        self.is_leader = False
        self.leader: str = ""  # who leads, as last seen
        self._lease = 0
        self._renewed = 0.0
        self._leading = asyncio.Event()
        self._wake = asyncio.Event()
        self._watch: WatchedPrefix | None = None
        self._stopped = False

    async def wait_leader(self) -> None:
        await self._leading.wait()

    def _set(self, leading: bool) -> None:
        if leading == self.is_leader:
            return
        self.is_leader = leading
        if leading:
            self._leading.set()
            log.info("leading %s", self.name, extra={"election": self.name, "identity": self.identity})
        else:
            self._leading.clear()
            log.warning("no longer leading %s", self.name, extra={"election": self.name})
        if self.on_change is not None:
            self.on_change(leading)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()

        def changed(items: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(self._wake.set)

        self._watch = WatchedPrefix(self.backend, self.key, on_change=changed)
        await asyncio.to_thread(self._watch.start)
        try:
            while not self._stopped:
                if self.is_leader:
                    await self._renew()
                    timeout = self.ttl / 3
                else:
                    await self._try_acquire()
                    timeout = self.ttl / 3  # also retried on a timer: the watch may be broken
                self._wake.clear()
                if self.is_leader:
                    await asyncio.sleep(timeout)
                else:
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout)
                    except TimeoutError:
                        pass
        finally:
            await asyncio.to_thread(self._watch.stop)

    async def _try_acquire(self) -> None:
        current = self._watch.items.get(self.key) if self._watch is not None else None
        if current is not None and self._watch is not None and self._watch.healthy:
            self.leader = current.value.decode(errors="replace")
            return  # held by someone: wait for the watch to say it is gone
        try:
            lease = await asyncio.to_thread(self.backend.grant, self.ttl)
            started = time.monotonic()
            item = await asyncio.to_thread(self.backend.create, self.key, self.identity.encode(), lease=lease)
        except BackendError as exc:
            log.debug("election %s: %s", self.name, exc)
            return
        if item is None:
            await asyncio.to_thread(self._revoke_quietly, lease)
            return
        self._lease, self._renewed, self.leader = lease, started, self.identity
        self._set(True)

    async def _renew(self) -> None:
        try:
            alive = await asyncio.to_thread(self.backend.keep_alive, self._lease)
        except BackendError as exc:
            if time.monotonic() - self._renewed >= self.ttl * 2 / 3:
                log.warning("election %s: cannot renew the lease (%s); stepping down", self.name, exc)
                self._set(False)
            return
        if alive:
            self._renewed = time.monotonic()
        else:
            self._set(False)

    def _revoke_quietly(self, lease: int) -> None:
        try:
            self.backend.revoke(lease)
        except BackendError:
            pass

    async def resign(self) -> None:
        """Stop; a leader revokes its lease so that another replica takes over without waiting a TTL."""
        self._stopped = True
        self._wake.set()
        if self.is_leader:
            self._set(False)
            await asyncio.to_thread(self._revoke_quietly, self._lease)

"""Which kubegate processes are running, across hosts: each proxy process of a replica holds
``replicas/<peer address>/<pid>`` in the shared backend under a lease of ``ttl`` seconds, renewed every
``ttl / 3``, and revoked when it stops.

    presence = Presence(backend, "10.0.0.5:3026", ttl=10.0)
    task = loop.create_task(presence.run())
    is_present(backend, "10.0.0.5:3026", 4242)   # from any host: is that process there?
    await presence.stop()

A process killed without stopping leaves its key until its lease expires: at most ``ttl`` after its
last renewal. What uses it: a live session's index record names the replica and the process holding
it (``proxy_addr``, ``proxy_pid``); on another host no PID can be looked for, so ``kubegate sessions
ls`` asks here instead, and calls a live session whose process is gone ``interrupted``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

from backend.base import Backend, BackendError

log = logging.getLogger(__name__)

PREFIX = "replicas/"


def presence_key(address: str, pid: int) -> str:
    return f"{PREFIX}{address}/{pid}"


def is_present(backend: Backend, address: str, pid: int) -> bool:
    """Whether the process ``pid`` of the replica at ``address`` holds its key (raises ``BackendError``)."""
    return backend.get(presence_key(address, pid)) is not None


class Presence:
    def __init__(self, backend: Backend, address: str, *, ttl: float = 10.0, pid: int | None = None) -> None:
        self.backend = backend
        self.key = presence_key(address, os.getpid() if pid is None else pid)
        self.ttl = ttl
        self.value = json.dumps({"started": time.time()}).encode()
        self._lease = 0
        self._stopped = False

    async def run(self) -> None:
        """Hold the key until ``stop``: written under a new lease, renewed every ``ttl / 3``; written
        again under a new lease when a renewal finds the lease gone or the backend failed meanwhile."""
        failing = False
        while not self._stopped:
            try:
                if not self._lease:
                    lease = await asyncio.to_thread(self.backend.grant, self.ttl)
                    await asyncio.to_thread(self.backend.put, self.key, self.value, lease=lease)
                    self._lease = lease
                elif not await asyncio.to_thread(self.backend.keep_alive, self._lease):
                    self._lease = 0  # expired (the backend was unreachable for a TTL): written again at once
                    continue
                if failing:
                    failing = False
                    log.info("presence %s: held again", self.key)
            except Exception as exc:  # noqa: BLE001 - a BackendError, or anything else: never let the key go
                if not failing:  # once per outage, not every ttl / 3
                    failing = True
                    log.warning("presence %s: %s; trying again every %g s", self.key, exc, self.ttl / 3,
                                exc_info=not isinstance(exc, BackendError))
                self._lease = 0
            await asyncio.sleep(self.ttl / 3)

    async def stop(self) -> None:
        """Revoke the lease: the key goes at once."""
        self._stopped = True
        lease, self._lease = self._lease, 0
        if lease:
            try:
                await asyncio.to_thread(self.backend.revoke, lease)
            except BackendError as exc:
                log.warning("presence %s: cannot revoke the lease (%s); it expires by itself", self.key, exc)

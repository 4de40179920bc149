"""The lock list in the shared backend (``backend.type: etcd``): the same JSON document as the file
``<state_dir>/locks`` (``certs.locks``), kept under the key ``locks/list``.

- Proxies read it from an in-memory copy kept by a watch (``watch=True``): ``is_locked`` is a dict
  lookup and an identity compare, no backend I/O per request; the proxy's stream sweep (every second)
  asks it again, so a lock written on any replica ends the locked user's streams on every replica
  within the watch delay plus one sweep.
- Writers (``kubegate users lock / unlock``, on any host) read, change and write back with
  compare-and-swap, retried when another writer came first: no lock is lost between two writers.
- While the backend is unreachable the last known list stays in force; after ``stale_grace`` seconds
  without the backend every identity is refused with ``StateUnavailable`` (the proxy answers 503):
  an old copy could miss a lock set meanwhile, so the proxy fails closed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from backend.base import Backend, Item
from backend.cache import WatchedPrefix
from certs.locks import LOCKS_VERSION, Lock, LockError, LockList, StateUnavailable, _parse_document
from rbac.identity import Identity

KEY = "locks/list"
ATTEMPTS = 20
_ABSENT = object()  # the generation of a list that has no key in the backend


class _Conflict(Exception):
    pass


class SharedLockList(LockList):
    def __init__(self, backend: Backend, *, watch: bool = False, stale_grace: float = 300.0,
                 clock: Any = time.time, monotonic: Any = time.monotonic) -> None:
        super().__init__(f"{backend.name}:{KEY}", clock=clock)
        self.backend = backend
        self.stale_grace = stale_grace
        self.monotonic = monotonic
        self.cache: WatchedPrefix | None = None
        self._seen: Item | None | bool = False  # the item the current list was parsed from
        if watch:
            self.cache = WatchedPrefix(backend, KEY)
            self.cache.start()

    def stop(self) -> None:
        if self.cache is not None:
            self.cache.stop()

    @property  # type: ignore[override]
    def generation(self) -> object | None:
        """The watched item itself while the watch is healthy (a new ``Item`` with each change of the
        list); None while it is broken: ``StateUnavailable`` comes with time, not with an event, so every
        caller must ask ``is_locked`` then."""
        cache = self.cache
        if cache is None or not cache.healthy:
            return None
        return cache.items.get(KEY, _ABSENT)

    def watch(self, loop: Any) -> bool:
        """Nothing to follow on ``loop``: the backend's watch (``watch=True``) keeps the copy current."""
        return self.cache is not None

    def unwatch(self) -> None:
        pass

    def _refresh(self) -> None:
        if self.cache is not None:
            # The watched copy is the last known list once the prefix was ever listed — whether or not
            # this list was asked before the backend went away (a replica that served nothing until
            # then serves it within ``stale_grace`` as the others do); never listed, there is none.
            if not self.cache.loaded:
                self.error = f"the shared lock list cannot be read: {self.cache.error or 'not listed yet'}"
                return
            item = self.cache.items.get(KEY)
        else:
            try:
                item = self.backend.get(KEY)
            except Exception as exc:  # BackendError: keep what we had, say why
                self.error = f"the shared lock list cannot be read: {exc}"
                return
        if item is self._seen:
            return
        self._seen = item
        try:
            self._locks = _parse_document(item.value if item is not None else b"", self._spath)
        except LockError as exc:
            self.error = str(exc)
            return
        self._ever_loaded, self.error = True, None

    def is_locked(self, identity: Identity) -> str | None:
        cache = self.cache
        if cache is not None and not cache.healthy:
            since = cache.unreachable_since
            if since is not None and self.monotonic() - since > self.stale_grace:
                return StateUnavailable(
                    f"kubegate's shared state ({self.backend.name}) has been unreachable for more than "
                    f"{self.stale_grace:g}s ({cache.error}); refusing requests until it is back")
        return super().is_locked(identity)

    @contextmanager
    def _exclusive(self) -> Iterator[list[Lock]]:
        item = self.backend.get(KEY)
        current = list(_parse_document(item.value if item is not None else b"", self._spath))
        yield current
        now = self._now()
        kept = [lock for lock in current if lock.active(now)]
        document = {"version": LOCKS_VERSION, "locks": [lock.to_json() for lock in kept]}
        body = (json.dumps(document, indent=2) + "\n").encode()
        if self.backend.compare_and_swap(KEY, item.revision if item is not None else 0, body) is None:
            raise _Conflict()
        self._refresh()

    def _retrying(self, fn: Any, *args: Any) -> Any:
        for _ in range(ATTEMPTS):
            try:
                return fn(*args)
            except _Conflict:
                continue
        raise LockError(f"the lock list kept changing under {ATTEMPTS} attempts; try again")

    def _add(self, kind: str, target: str, until: Any, reason: str) -> Lock:
        return self._retrying(super()._add, kind, target, until, reason)

    def _remove(self, kind: str, target: str) -> int:
        return self._retrying(super()._remove, kind, target)

"""``WatchedPrefix``: an in-memory copy of every key under a prefix, kept current by a watch.

    cache = WatchedPrefix(backend, "clusters/", on_change=lambda items: ...)
    cache.start()                  # first list done (or the backend is unreachable) when it returns
    cache.items                    # {key: Item}: a plain dict read, no backend I/O
    cache.healthy, cache.unreachable_since

List, then watch from the listed revision; when the watch ends (its etcd member died, the history was
compacted, the backend is down) the cache keeps its last state, marks itself unhealthy and, after
``retry`` seconds (doubling up to ``max_retry``), lists again — the diff against what it held becomes
one ``on_change`` call, so consumers see no flap for keys that did not change — and watches again.

``on_change(items)`` is called from the cache's own thread with the new ``{key: Item}`` mapping (a
new dict each time: readers on other threads may keep using the old one).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from backend.base import Backend, BackendError, Event, Item, Watch

log = logging.getLogger(__name__)


class WatchedPrefix:
    def __init__(
        self,
        backend: Backend,
        prefix: str,
        *,
        on_change: Callable[[dict[str, Item]], None] | None = None,
        on_health: Callable[[bool], None] | None = None,
        retry: float = 0.2,
        max_retry: float = 2.0,
    ) -> None:
        self.backend = backend
        self.prefix = prefix
        self.on_change = on_change
        self.on_health = on_health
        self.retry, self.max_retry = retry, max_retry
        self.items: dict[str, Item] = {}
        self.revision = 0
        self.healthy = False
        self.unreachable_since: float | None = time.monotonic()
        self.error = ""
        self._watch: Watch | None = None
        self._stopped = threading.Event()
        self._broken = threading.Event()
        self._mutex = threading.Lock()
        self._thread: threading.Thread | None = None
        self._listed = False
        # True once the prefix was listed: ``items`` is then the last known state, even while unhealthy
        self.loaded = False

    def start(self) -> None:
        """List once (synchronously) and start the watch thread; a backend that cannot be reached now
        leaves the cache empty and unhealthy, to be filled by the thread when it answers."""
        self._listed = self._relist()
        self._thread = threading.Thread(target=self._run, name=f"watched:{self.prefix}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._broken.set()
        watch = self._watch
        if watch is not None:
            watch.cancel()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ---- internals ----------------------------------------------------------------------------------

    def _set_health(self, healthy: bool, error: str = "") -> None:
        changed = healthy != self.healthy
        self.healthy, self.error = healthy, error
        if healthy:
            self.unreachable_since = None
        elif self.unreachable_since is None:
            self.unreachable_since = time.monotonic()
        if changed:
            (log.info if healthy else log.warning)(
                "backend watch on %r %s", self.prefix, "healthy" if healthy else f"broken: {error}")
            if self.on_health is not None:
                self.on_health(healthy)

    def _relist(self) -> bool:
        try:
            items, revision = self.backend.get_range(self.prefix)
        except BackendError as exc:
            self._set_health(False, str(exc))
            return False
        fresh = {item.key: item for item in items}
        with self._mutex:
            changed = fresh != self.items
            self.items, self.revision = fresh, revision
        self.loaded = True
        self._set_health(True)
        if changed and self.on_change is not None:
            self.on_change(fresh)
        return True

    def _on_events(self, events: Sequence[Event]) -> None:
        with self._mutex:
            items = dict(self.items)
            for event in events:
                if event.type == "put" and event.item is not None:
                    items[event.key] = event.item
                else:
                    items.pop(event.key, None)
                self.revision = max(self.revision, event.revision)
            self.items = items
        if self.on_change is not None:
            self.on_change(items)

    def _on_error(self, exc: BaseException) -> None:
        self._set_health(False, str(exc))
        self._broken.set()

    def _run(self) -> None:
        delay = self.retry
        listed = self._listed
        while not self._stopped.is_set():
            if not listed and not self._relist():
                self._stopped.wait(delay)
                delay = min(self.max_retry, delay * 2)
                continue
            listed = False  # after a break, list again
            self._broken.clear()
            try:
                self._watch = self.backend.watch(self.prefix, self.revision, self._on_events, self._on_error)
            except BackendError as exc:
                self._on_error(exc)
            else:
                delay = self.retry
            self._broken.wait()
            watch, self._watch = self._watch, None
            if watch is not None:
                watch.cancel()
            if not self._stopped.is_set():
                self._stopped.wait(delay)

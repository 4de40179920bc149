"""The cluster registry: what the proxy reads (``ClusterSource``) and what the sources feed.

- ``get(name)`` is one dict lookup (the proxy calls it on every request); ``list()`` returns a cached
  snapshot sorted by name.
- Sources feed clusters with ``upsert`` / ``remove`` / ``replace_source`` (a source is a string such as
  ``kubeconfig:/path``, ``dir:/path/file.yaml`` or ``store``). A cluster name belongs to one source at a
  time; a second source claiming it is refused with an error naming both.
- Labels are static (from the source) ∪ dynamic (``set_dynamic_labels``, dynamic wins on a clash).
- Selection: only clusters whose labels match at least one ``kubernetes_service.resources[].labels``
  selector are served (``rbac.labels.labels_match``: all labels of the selector must match; ``'*': '*'``
  matches everything). A cluster whose labels stop matching disappears from ``get``/``list`` and the
  subscribers hear ``(name, None)``, exactly as if it had been removed: the proxy then ends its
  in-flight streams.
- Subscribers are called after every change of the *served* view, outside the registry lock, with
  ``(name, cluster)`` or ``(name, None)``, on the thread that made the change (the discovery service
  reads files in worker threads: a listener owning an event loop hops onto it with
  ``call_soon_threadsafe``). A failing listener is logged and does not stop the others.

Thread-safe: mutations take a lock; readers never do (dict lookups are atomic in CPython, and
``list()`` hands out an immutable snapshot).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from discovery.errors import DiscoveryError
from discovery.model import Cluster, ClusterListener
from rbac.labels import labels_match

log = logging.getLogger(__name__)

Selector = Mapping[str, "str | Sequence[str]"]
MATCH_ALL: tuple[Selector, ...] = ({"*": "*"},)

_IGNORED_IN_COMPARISON = frozenset({"generation", "health", "health_detail"})
_COMPARED_FIELDS = tuple(f.name for f in dataclasses.fields(Cluster) if f.name not in _IGNORED_IN_COMPARISON)


def same_definition(a: Cluster, b: Cluster) -> bool:
    """Equal apart from generation and health (credential providers compare by their configuration)."""
    return all(getattr(a, name) == getattr(b, name) for name in _COMPARED_FIELDS)


@dataclass(slots=True)
class _Entry:
    base: Cluster  # as the source gave it: static labels
    source: str
    dynamic: dict[str, str] = field(default_factory=dict)
    current: Cluster | None = None  # base + dynamic labels + health + generation
    selected: bool = False


class ClusterRegistry:
    """The in-memory registry; see the module docstring."""

    def __init__(self, selectors: Sequence[Selector] | None = None) -> None:
        self._selectors: tuple[Selector, ...] = tuple(selectors) if selectors is not None else MATCH_ALL
        self._entries: dict[str, _Entry] = {}
        self._served: dict[str, Cluster] = {}
        # The clusters served, by name: a read-only live view, whose ``get`` is C code (the fast path asks it
        # per request: ``proxy.fastpath.usable``).
        self.served: Mapping[str, Cluster] = MappingProxyType(self._served)
        self._listeners: list[ClusterListener] = []
        self._lock = threading.RLock()
        self._generation = 0
        self._snapshot: list[Cluster] | None = None

    # ---- ClusterSource (what the proxy reads) -------------------------------------------------------

    def get(self, name: str) -> Cluster | None:
        return self._served.get(name)

    def list(self) -> list[Cluster]:
        snapshot = self._snapshot
        if snapshot is None:
            with self._lock:
                snapshot = self._snapshot = sorted(self._served.values(), key=lambda c: c.name)
        return list(snapshot)

    def subscribe(self, listener: ClusterListener) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    # ---- inspection ---------------------------------------------------------------------------------

    def all(self) -> list[Cluster]:
        """Every known cluster, served or not (``clusters ls``)."""
        with self._lock:
            return sorted((e.current for e in self._entries.values() if e.current), key=lambda c: c.name)

    def peek(self, name: str) -> Cluster | None:
        """The cluster ``name`` whether served or not."""
        entry = self._entries.get(name)
        return entry.current if entry else None

    def is_served(self, name: str) -> bool:
        return name in self._served

    def source_of(self, name: str) -> str | None:
        entry = self._entries.get(name)
        return entry.source if entry else None

    def names_from(self, source: str) -> set[str]:
        with self._lock:
            return {name for name, e in self._entries.items() if e.source == source}

    @property
    def selectors(self) -> tuple[Selector, ...]:
        return self._selectors

    def __len__(self) -> int:
        return len(self._served)

    # ---- feeding ------------------------------------------------------------------------------------

    def upsert(self, cluster: Cluster, source: str) -> bool:
        """Add or replace ``cluster`` (static labels) from ``source``; True when anything changed.

        Raises ``DiscoveryError`` when another source already owns the name.
        """
        with self._lock:
            entry = self._entries.get(cluster.name)
            if entry is not None and entry.source != source:
                raise DiscoveryError(
                    f"cluster {cluster.name!r} from {source} is already defined by {entry.source}; "
                    "ignoring the second definition"
                )
            if entry is not None and same_definition(entry.base, cluster):
                return False
            added = entry is None
            if entry is None:
                entry = _Entry(base=cluster, source=source)
                self._entries[cluster.name] = entry
                health, detail = cluster.health, cluster.health_detail
            else:
                old = entry.current
                endpoint_same = old is not None and (old.server, old.ca_pem) == (cluster.server, cluster.ca_pem)
                health, detail = (old.health, old.health_detail) if old and endpoint_same else ("unknown", "")
                entry.base = cluster
            events = self._refresh(entry, health=health, detail=detail)
            served = entry.selected
        log.info("cluster added" if added else "cluster updated", extra={
            "cluster": cluster.name, "source": source, "origin": cluster.origin, "served": served})
        self._emit(events)
        return True

    def remove(self, name: str, source: str | None = None) -> bool:
        """Forget ``name`` (only if it belongs to ``source``, when given); True when it existed."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or (source is not None and entry.source != source):
                return False
            del self._entries[name]
            events = []
            if entry.selected:
                self._served.pop(name, None)
                self._snapshot = None
                events.append((name, None))
        log.info("cluster removed", extra={"cluster": name, "source": entry.source})
        self._emit(events)
        return True

    def replace_source(self, source: str, clusters: Iterable[Cluster]) -> list[str]:
        """Make ``source`` define exactly ``clusters``: upsert them, remove its others.

        Returns the errors (name conflicts with other sources); the rest is applied.
        """
        errors: list[str] = []
        wanted: set[str] = set()
        for cluster in clusters:
            wanted.add(cluster.name)
            try:
                self.upsert(cluster, source)
            except DiscoveryError as exc:
                log.error("%s", exc)
                errors.append(str(exc))
        for name in self.names_from(source) - wanted:
            self.remove(name, source)
        return errors

    def set_dynamic_labels(self, name: str, labels: Mapping[str, str]) -> bool:
        """Replace the dynamic labels of ``name``; True when anything changed."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.dynamic == labels:
                return False
            entry.dynamic = dict(labels)
            current = entry.current
            events = self._refresh(
                entry,
                health=current.health if current else "unknown",
                detail=current.health_detail if current else "",
            )
        self._emit(events)
        return True

    def set_health(self, name: str, health: str, detail: str = "") -> bool:
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.current is None:
                return False
            if (entry.current.health, entry.current.health_detail) == (health, detail):
                return False
            events = self._refresh(entry, health=health, detail=detail)
        self._emit(events)
        return True

    def set_selectors(self, selectors: Sequence[Selector]) -> None:
        """Change ``kubernetes_service.resources`` at run time; re-selects every cluster."""
        with self._lock:
            self._selectors = tuple(selectors)
            events: list[tuple[str, Cluster | None]] = []
            for entry in self._entries.values():
                assert entry.current is not None
                events.extend(self._reselect(entry, entry.current, changed=False))
        self._emit(events)

    # ---- internals ----------------------------------------------------------------------------------

    def matches(self, labels: Mapping[str, str]) -> bool:
        return any(labels_match(selector, labels) for selector in self._selectors)

    def _refresh(self, entry: _Entry, *, health: str, detail: str) -> list[tuple[str, Cluster | None]]:
        self._generation += 1
        base = entry.base
        labels = {**base.labels, **entry.dynamic} if entry.dynamic else dict(base.labels)
        cluster = dataclasses.replace(
            base, labels=labels, health=health, health_detail=detail, generation=self._generation
        )
        entry.current = cluster
        return self._reselect(entry, cluster, changed=True)

    def _reselect(self, entry: _Entry, cluster: Cluster, *, changed: bool) -> list[tuple[str, Cluster | None]]:
        was = entry.selected
        now = self.matches(cluster.labels)
        entry.selected = now
        if now:
            if was and not changed:
                return []
            self._served[cluster.name] = cluster
            self._snapshot = None
            return [(cluster.name, cluster)]
        if was:
            self._served.pop(cluster.name, None)
            self._snapshot = None
            return [(cluster.name, None)]
        return []

    def _emit(self, events: list[tuple[str, Cluster | None]]) -> None:
        if not events:
            return
        listeners = list(self._listeners)
        for name, cluster in events:
            for listener in listeners:
                try:
                    listener(name, cluster)
                except Exception:
                    log.exception("cluster registry listener failed on %s", name)

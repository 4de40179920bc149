"""The cluster store in the shared backend (``backend.type: etcd``): ``clusters/<name>`` → the same JSON
record ``discovery.store.ClusterStore`` keeps in a file.

The proxy never reads the backend per request: a ``WatchedPrefix`` keeps every record in memory and
calls back on each change (the discovery service then rebuilds the registry at once, so a cluster added
on one replica is served by all of them within the watch's delay, with no polling).

Writers:
- the CLI (``kubegate clusters add / rm``): ``put`` / ``delete``, as with the file store;
- cloud discovery: ``apply(plan)`` with compare-and-swap against the revisions the watch last saw, so a
  record another replica changed meanwhile is neither overwritten nor deleted (it is reported and
  reconciled again on the next run), and ``create`` never replaces a record of another origin or group.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from backend.base import Backend, Item
from backend.cache import WatchedPrefix
from discovery.errors import DiscoveryError
from discovery.store import ClusterRecord, validate_cluster_name

log = logging.getLogger(__name__)

PREFIX = "clusters/"
HEALTH_PREFIX = "health/"


def _encode(record: ClusterRecord) -> bytes:
    return json.dumps(record.to_json(), sort_keys=True).encode()


class SharedClusterStore:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.cache: WatchedPrefix | None = None

    # the file store's vocabulary, for the CLI and the discovery service
    @property
    def directory(self) -> str:
        return f"{self.backend.name}:{PREFIX}"

    def ensure(self) -> None:
        pass

    def sweep_temporaries(self) -> int:
        return 0

    def path_for(self, name: str) -> str:
        return f"{self.backend.name}:{PREFIX}{validate_cluster_name(name)}"

    def put(self, record: ClusterRecord) -> None:
        self.backend.put(PREFIX + validate_cluster_name(record.name), _encode(record))

    def put_many(self, records: list[ClusterRecord]) -> None:
        for record in records:
            self.put(record)

    def delete(self, name: str) -> bool:
        return self.backend.delete(PREFIX + validate_cluster_name(name))

    def delete_many(self, names: list[str]) -> None:
        for name in names:
            self.delete(name)

    def get(self, name: str) -> ClusterRecord | None:
        item = self.backend.get(PREFIX + validate_cluster_name(name))
        return None if item is None else self._parse(item)

    def load_all(self) -> tuple[dict[str, ClusterRecord], list[str]]:
        items, _ = self.backend.get_range(PREFIX)
        return self._records(items)

    def _parse(self, item: Item) -> ClusterRecord:
        where = f"{self.backend.name}:{item.key}"
        try:
            data = json.loads(item.value)
        except ValueError as exc:
            raise DiscoveryError(f"{where}: not valid JSON: {exc}") from None
        record = ClusterRecord.from_json(data, where)
        if item.key != PREFIX + record.name:
            raise DiscoveryError(f"{where}: holds cluster {record.name!r}; the key must match")
        return record

    def _records(self, items: Any) -> tuple[dict[str, ClusterRecord], list[str]]:
        records: dict[str, ClusterRecord] = {}
        errors: list[str] = []
        for item in items:
            try:
                record = self._parse(item)
            except DiscoveryError as exc:
                errors.append(str(exc))
                continue
            records[record.name] = record
        return records, errors

    # ---- cluster health: each replica's last round, newest check wins --------------------------------

    def put_health(self, replica: str, state: dict[str, Any], ttl: float) -> None:
        """This replica's view after a health round, under a lease of ``ttl`` seconds (a replica that
        is gone stops counting once its lease ends)."""
        lease = self.backend.grant(ttl)
        self.backend.put(HEALTH_PREFIX + replica, json.dumps(state, sort_keys=True).encode(), lease=lease)

    def read_health(self) -> dict[str, dict[str, Any]]:
        """Per cluster, the newest check of any replica (with ``replica`` naming who checked)."""
        items, _ = self.backend.get_range(HEALTH_PREFIX)
        newest: dict[str, dict[str, Any]] = {}
        for item in items:
            try:
                state = json.loads(item.value)
            except ValueError:
                continue
            for cluster, entry in state.items() if isinstance(state, dict) else ():
                if not isinstance(entry, dict):
                    continue
                if float(entry.get("checked_at", 0)) >= float(newest.get(cluster, {}).get("checked_at", -1)):
                    newest[cluster] = {**entry, "replica": item.key[len(HEALTH_PREFIX):]}
        return newest

    # ---- the watched copy (proxies) -----------------------------------------------------------------

    def watch(self, on_change: Callable[[], None], on_health: Callable[[bool], None] | None = None) -> None:
        """Start the in-memory copy; ``on_change()`` runs on the cache's thread after each change."""
        self.cache = WatchedPrefix(self.backend, PREFIX, on_change=lambda _items: on_change(),
                                   on_health=on_health)
        self.cache.start()

    def stop(self) -> None:
        if self.cache is not None:
            self.cache.stop()

    def snapshot(self) -> tuple[dict[str, Item], dict[str, ClusterRecord], list[str]]:
        """The watched items, their records and one error per unreadable record (no backend I/O)."""
        assert self.cache is not None, "watch() first"
        items = self.cache.items
        records, errors = self._records(items.values())
        return items, records, errors

    def apply(self, create: list[ClusterRecord], update: list[ClusterRecord], delete: list[str],
              seen: dict[str, Item]) -> list[str]:
        """Write a reconcile plan with compare-and-swap against ``seen`` (the items the plan was made
        from). Returns one message per write refused because another writer changed the record first."""
        refused = []
        for record in create:
            if self.backend.create(PREFIX + record.name, _encode(record)) is None:
                refused.append(f"cluster {record.name!r} was created by another writer meanwhile; not replaced")
        for record in update:
            item = seen.get(PREFIX + record.name)
            if item is None or self.backend.compare_and_swap(item.key, item.revision, _encode(record)) is None:
                refused.append(f"cluster {record.name!r} changed meanwhile; not updated (next run retries)")
        for name in delete:
            item = seen.get(PREFIX + name)
            if item is None or not self.backend.delete(item.key, expected_revision=item.revision):
                refused.append(f"cluster {name!r} changed meanwhile; not deleted (next run retries)")
        for message in refused:
            log.warning("%s", message)
        return refused

"""The sandbox's in-memory object store.

Objects are kept per (group, resource) keyed by (namespace, name). Every write assigns the next
cluster-wide ``resourceVersion`` and serializes the object once: reads hand out the stored dict and
its cached JSON bytes (callers must treat both as read-only), so a list of 500 pods is a join of
cached byte strings, not 500 ``json.dumps`` calls.

Watches: every write appends an event to a bounded per-resource history ring and is fanned out to
the resource's watchers. A watch may resume from any resourceVersion still covered by the ring;
older ones raise ``Gone`` (the API answers 410 Expired). Writes may come from any thread (tests poke
``sb.store`` from the test thread): a lock guards the maps and watchers are woken through their own
event loop.

Pod logs are lines kept per pod and container (``append_log``); followers are woken the same way.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from sandbox.resources import CATALOG, Catalog, ResourceType

GR = tuple[str, str]  # (group, resource)

HISTORY_PER_RESOURCE = 2000
LOG_LINES_PER_CONTAINER = 5000
WATCH_QUEUE_LIMIT = 20000


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StoreError(Exception):
    pass


class NotFound(StoreError):
    def __init__(self, resource: str, name: str) -> None:
        super().__init__(f'{resource} "{name}" not found')
        self.resource = resource
        self.name = name


class AlreadyExists(StoreError):
    def __init__(self, resource: str, name: str) -> None:
        super().__init__(f'{resource} "{name}" already exists')
        self.resource = resource
        self.name = name


class Conflict(StoreError):
    def __init__(self, resource: str, name: str) -> None:
        super().__init__(
            f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again"
        )
        self.resource = resource
        self.name = name


class Gone(StoreError):
    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


class Entry:
    """One stored object version and its cached JSON serialization."""

    __slots__ = ("obj", "raw", "rv", "_partial")

    def __init__(self, obj: dict[str, Any], rv: int) -> None:
        self.obj = obj
        self.raw = dumps(obj)
        self.rv = rv
        self._partial: bytes | None = None

    @property
    def partial_raw(self) -> bytes:
        """The object as a serialized ``meta.k8s.io/v1 PartialObjectMetadata`` (Table rows), cached."""
        if self._partial is None:
            self._partial = (b'{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":'
                             + dumps(self.obj.get("metadata") or {}) + b"}")
        return self._partial


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # ADDED MODIFIED DELETED
    entry: Entry
    prev: Entry | None = None  # the version before this event (MODIFIED, DELETED)

    @property
    def rv(self) -> int:
        return self.entry.rv

    @property
    def obj(self) -> dict[str, Any]:
        return self.entry.obj


class _Waker:
    """Delivers items into an asyncio.Queue from any thread."""

    __slots__ = ("queue", "loop", "thread", "overflowed")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.thread = threading.get_ident()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.overflowed = False

    def push(self, item: Any) -> None:
        if self.queue.qsize() >= WATCH_QUEUE_LIMIT:
            self.overflowed = True
            return
        if threading.get_ident() == self.thread:
            self.queue.put_nowait(item)
        else:
            try:
                self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
            except RuntimeError:  # loop closed: the watcher is gone
                pass

    async def get(self, timeout: float | None) -> Any:
        """The next item, or None when ``timeout`` passes first."""
        try:
            if timeout is None:
                return await self.queue.get()
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None


class Watcher:
    """A subscription to one resource's events, created by ``Store.watch``."""

    def __init__(self, store: Store, gr: GR, backlog: list[Event]) -> None:
        self._store = store
        self._gr = gr
        self._waker = _Waker()
        self.backlog = backlog
        self.closed = False

    def _push(self, event: Event) -> None:
        self._waker.push(event)

    @property
    def overflowed(self) -> bool:
        return self._waker.overflowed

    async def next(self, timeout: float | None = None) -> Event | None:
        """The next live event, or None when ``timeout`` passes first."""
        return await self._waker.get(timeout)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._store._remove_watcher(self._gr, self)


class LogFollower:
    def __init__(self, store: Store, key: tuple[str, str]) -> None:
        self._store = store
        self._key = key
        self._waker = _Waker()
        self.closed = False

    def _push(self, item: tuple[str, str, str]) -> None:
        self._waker.push(item)

    async def next(self, timeout: float | None = None) -> tuple[str, str, str] | None:
        """(container, timestamp, line) of the next appended line, or None on timeout."""
        return await self._waker.get(timeout)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._store._remove_log_follower(self._key, self)


class Store:
    def __init__(self, catalog: Catalog = CATALOG, history: int = HISTORY_PER_RESOURCE) -> None:
        self.catalog = catalog
        self._lock = threading.RLock()
        self._rv = 1000
        self._history_size = history
        self._data: dict[GR, dict[tuple[str, str], Entry]] = {}
        self._sorted: dict[GR, list[tuple[str, str]] | None] = {}
        self._history: dict[GR, deque[Event]] = {}
        self._floor: dict[GR, int] = {}
        self._last_rv: dict[GR, int] = {}
        self._watchers: dict[GR, set[Watcher]] = {}
        self._logs: dict[tuple[str, str], dict[str, deque[tuple[str, str]]]] = {}
        self._log_followers: dict[tuple[str, str], set[LogFollower]] = {}
        self._namespaced: dict[GR, bool] = {}
        self._generation: dict[GR, bool] = {}
        for rt in catalog.stored():
            self.add_resource_type(rt)

    def add_resource_type(self, rt: ResourceType) -> None:
        """Make room for objects of ``rt`` (a custom resource once its CRD is stored); idempotent."""
        gr = (rt.group, rt.plural)
        with self._lock:
            if gr in self._data:
                return
            self._data[gr] = {}
            self._sorted[gr] = []
            self._history[gr] = deque()
            self._floor[gr] = 0
            self._watchers[gr] = set()
            self._namespaced[gr] = rt.namespaced
            self._generation[gr] = rt.tracks_generation

    # ------------------------------------------------------------------ reads

    @property
    def resource_version(self) -> int:
        return self._rv

    def _bucket(self, group: str, resource: str) -> dict[tuple[str, str], Entry]:
        try:
            return self._data[(group, resource)]
        except KeyError:
            raise KeyError(f"unknown resource {resource!r} in group {group!r}") from None

    def get_entry(self, group: str, resource: str, namespace: str | None, name: str) -> Entry | None:
        return self._bucket(group, resource).get((namespace or "", name))

    def get_object(self, group: str, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object (shared: do not mutate it) or None."""
        entry = self.get_entry(group, resource, namespace, name)
        return entry.obj if entry else None

    def list_entries(self, group: str, resource: str, namespace: str | None = None) -> tuple[list[Entry], int]:
        """A sorted snapshot of the entries (optionally of one namespace) and the store's revision."""
        gr = (group, resource)
        with self._lock:
            bucket = self._bucket(group, resource)
            keys = self._sorted.get(gr)
            if keys is None:
                keys = sorted(bucket)
                self._sorted[gr] = keys
            if namespace:
                entries = [bucket[k] for k in keys if k[0] == namespace]
            else:
                entries = [bucket[k] for k in keys]
            return entries, self._rv

    def list_objects(self, group: str, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """A snapshot of the stored objects (shared dicts: do not mutate them)."""
        return [e.obj for e in self.list_entries(group, resource, namespace)[0]]

    def is_namespaced(self, group: str, resource: str) -> bool:
        return self._namespaced[(group, resource)]

    # ------------------------------------------------------------------ writes

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def resource_revision(self, group: str, resource: str) -> int:
        """The resourceVersion of the latest write to one resource (0 if none): a cheap cache key for
        consumers of a single resource (e.g. RBAC objects)."""
        return self._last_rv.get((group, resource), 0)

    def _record(self, gr: GR, event: Event) -> None:
        self._last_rv[gr] = event.rv
        history = self._history[gr]
        history.append(event)
        while len(history) > self._history_size:
            self._floor[gr] = history.popleft().rv
        for watcher in list(self._watchers[gr]):
            watcher._push(event)

    def _key(self, gr: GR, obj: dict[str, Any]) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace", "") if self._namespaced[gr] else ""
        return (ns or "", meta.get("name", ""))

    def _store(self, gr: GR, obj: dict[str, Any], previous: Entry | None) -> Entry:
        """Assign bookkeeping metadata to ``obj`` (owned by the store from now on) and save it."""
        meta = obj.setdefault("metadata", {})
        rv = self._next_rv()
        tracks = self._generation[gr]
        if previous is None:
            meta["uid"] = meta.get("uid") or str(uuid.uuid4())
            meta["creationTimestamp"] = meta.get("creationTimestamp") or now_rfc3339()
            if tracks:
                meta["generation"] = 1
            else:
                meta.pop("generation", None)
        else:
            old_meta = previous.obj["metadata"]
            meta["uid"] = old_meta.get("uid")
            meta["creationTimestamp"] = old_meta.get("creationTimestamp")
            if tracks:
                generation = old_meta.get("generation", 0) or 0
                if obj.get("spec") != previous.obj.get("spec") or not generation:
                    generation += 1
                meta["generation"] = generation
            else:
                meta.pop("generation", None)
        if not self._namespaced[gr]:
            meta.pop("namespace", None)
        meta["resourceVersion"] = str(rv)
        entry = Entry(obj, rv)
        key = self._key(gr, obj)
        bucket = self._data[gr]
        if key not in bucket:
            self._sorted[gr] = None
        bucket[key] = entry
        self._record(gr, Event("MODIFIED" if previous else "ADDED", entry, previous))
        return entry

    def put_object(self, group: str, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace (no resourceVersion precondition); returns the stored object."""
        gr = (group, resource)
        obj = copy.deepcopy(obj)
        with self._lock:
            self._bucket(group, resource)
            previous = self._data[gr].get(self._key(gr, obj))
            return self._store(gr, obj, previous).obj

    def create(self, group: str, resource: str, obj: dict[str, Any]) -> Entry:
        """Store a new object (``obj`` is taken over, not copied). Raises AlreadyExists."""
        gr = (group, resource)
        with self._lock:
            self._bucket(group, resource)
            key = self._key(gr, obj)
            if key in self._data[gr]:
                raise AlreadyExists(resource if not group else f"{resource}.{group}", key[1])
            obj.get("metadata", {}).pop("resourceVersion", None)
            return self._store(gr, obj, None)

    def update(self, group: str, resource: str, obj: dict[str, Any], precondition_rv: str | None = None) -> Entry:
        """Replace an existing object (``obj`` is taken over). Raises NotFound / Conflict."""
        gr = (group, resource)
        with self._lock:
            self._bucket(group, resource)
            key = self._key(gr, obj)
            previous = self._data[gr].get(key)
            label = resource if not group else f"{resource}.{group}"
            if previous is None:
                raise NotFound(label, key[1])
            if precondition_rv and precondition_rv != previous.obj["metadata"].get("resourceVersion"):
                raise Conflict(label, key[1])
            return self._store(gr, obj, previous)

    def delete(self, group: str, resource: str, namespace: str | None, name: str,
               precondition_uid: str | None = None, precondition_rv: str | None = None) -> Entry:
        """Remove an object; deleting a namespace removes everything in it first."""
        gr = (group, resource)
        label = resource if not group else f"{resource}.{group}"
        with self._lock:
            bucket = self._bucket(group, resource)
            key = (namespace or "", name) if self._namespaced[gr] else ("", name)
            previous = bucket.get(key)
            if previous is None:
                raise NotFound(label, name)
            meta = previous.obj["metadata"]
            if precondition_uid and precondition_uid != meta.get("uid"):
                raise Conflict(label, name)
            if precondition_rv and precondition_rv != meta.get("resourceVersion"):
                raise Conflict(label, name)
            if gr == ("", "namespaces"):
                self._delete_namespace_contents(name)
            if gr == ("", "pods"):
                self._logs.pop(key, None)
            del bucket[key]
            self._sorted[gr] = None
            obj = dict(previous.obj)
            obj["metadata"] = dict(meta, resourceVersion=str(self._next_rv()))
            if gr == ("", "namespaces"):
                obj["status"] = {"phase": "Terminating"}
            entry = Entry(obj, self._rv)
            self._record(gr, Event("DELETED", entry, previous))
            return entry

    def _delete_namespace_contents(self, namespace: str) -> None:
        for gr, bucket in self._data.items():
            if not self._namespaced[gr]:
                continue
            for key in [k for k in bucket if k[0] == namespace]:
                self.delete(gr[0], gr[1], namespace, key[1])

    # ------------------------------------------------------------------ watch

    def watch(self, group: str, resource: str, since: int | None) -> Watcher:
        """Subscribe to a resource. With ``since``, the watcher's ``backlog`` holds the recorded events
        newer than it; raises Gone when the history no longer reaches back that far. Must be called
        from inside a running event loop (the watcher is woken through it)."""
        gr = (group, resource)
        with self._lock:
            self._bucket(group, resource)
            backlog: list[Event] = []
            if since is not None:
                floor = self._floor[gr]
                if since < floor:
                    raise Gone(since, floor + 1)
                backlog = [e for e in self._history[gr] if e.rv > since]
            watcher = Watcher(self, gr, backlog)
            self._watchers[gr].add(watcher)
            return watcher

    def _remove_watcher(self, gr: GR, watcher: Watcher) -> None:
        with self._lock:
            self._watchers[gr].discard(watcher)

    def watcher_count(self, group: str, resource: str) -> int:
        return len(self._watchers[(group, resource)])

    # ------------------------------------------------------------------ logs

    def append_log(self, namespace: str, pod: str, line: str, container: str | None = None) -> None:
        """Append one log line (without newline) to a pod's container (default: its first)."""
        key = (namespace, pod)
        with self._lock:
            if container is None:
                container = self._default_container(namespace, pod)
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            containers = self._logs.setdefault(key, {})
            lines = containers.get(container)
            if lines is None:
                lines = containers[container] = deque(maxlen=LOG_LINES_PER_CONTAINER)
            line = line.rstrip("\n")
            lines.append((stamp, line))
            for follower in list(self._log_followers.get(key, ())):
                follower._push((container, stamp, line))

    def _default_container(self, namespace: str, pod: str) -> str:
        obj = self.get_object("", "pods", namespace, pod)
        if obj:
            annotations = obj.get("metadata", {}).get("annotations") or {}
            default = annotations.get("kubectl.kubernetes.io/default-container")
            if default:
                return default
            containers = obj.get("spec", {}).get("containers") or []
            if containers and isinstance(containers[0], dict):
                return str(containers[0].get("name", ""))
        return ""

    def read_logs(self, namespace: str, pod: str, container: str) -> list[tuple[str, str]]:
        """(timestamp, line) pairs logged so far by one container."""
        with self._lock:
            return list(self._logs.get((namespace, pod), {}).get(container, ()))

    def follow_logs(self, namespace: str, pod: str) -> LogFollower:
        key = (namespace, pod)
        follower = LogFollower(self, key)
        with self._lock:
            self._log_followers.setdefault(key, set()).add(follower)
        return follower

    def _remove_log_follower(self, key: tuple[str, str], follower: LogFollower) -> None:
        with self._lock:
            followers = self._log_followers.get(key)
            if followers:
                followers.discard(follower)
                if not followers:
                    del self._log_followers[key]

    # ------------------------------------------------------------------ loading

    def resource_for(self, obj: dict[str, Any]) -> ResourceType:
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        rt = self.catalog.by_kind(str(api_version), str(kind)) if api_version and kind else None
        if rt is None or rt.virtual:
            raise ValueError(f"no resource for apiVersion {api_version!r} kind {kind!r}")
        return rt

    def load_objects(self, objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        stored = []
        for obj in objects:
            rt = self.resource_for(obj)
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            if not meta.get("name"):
                raise ValueError(f"{rt.kind} without metadata.name")
            if rt.namespaced:
                meta.setdefault("namespace", "default")
            stored.append(self.put_object(rt.group, rt.plural, obj))
        return stored

    def load_yaml_files(self, paths: Iterable[str | Path]) -> list[dict[str, Any]]:
        """Load objects (multi-document YAML, ``kind: List`` expanded). Errors name the file."""
        loaded: list[dict[str, Any]] = []
        for path in paths:
            try:
                docs = list(yaml.safe_load_all(Path(path).read_text()))
                objects: list[dict[str, Any]] = []
                for doc in docs:
                    if doc is None:
                        continue
                    if not isinstance(doc, dict):
                        raise ValueError("a document is not a mapping")
                    if str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
                        objects.extend(doc["items"])
                    else:
                        objects.append(doc)
                loaded.extend(self.load_objects(objects))
            except (OSError, yaml.YAMLError, ValueError) as exc:
                raise ValueError(f"{path}: {exc}") from exc
        return loaded

    @classmethod
    def with_seed_data(cls) -> Store:
        from sandbox.seed import seed_logs, seed_objects

        store = cls()
        store.load_objects(seed_objects())
        for namespace, pod, lines in seed_logs():
            for line in lines:
                store.append_log(namespace, pod, line)
        return store


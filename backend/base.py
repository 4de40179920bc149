"""The backend interface: a small revisioned key-value store shared by every kubegate replica.

Keys are ``/``-separated strings below the backend's own prefix (``clusters/prod``, ``locks``); values
are bytes. Every write returns the key's new *revision*; a revision only grows, so "the item I read is
still the current one" is ``compare_and_swap(key, item.revision, new)``. ``0`` as an expected revision
means "the key does not exist" (that is ``create``).

Leases: ``grant(ttl)`` → a lease id; keys written with it vanish when it is neither kept alive
(``keep_alive``) nor revoked within ``ttl`` seconds. Discovery leadership is built on that.

Watch: ``watch(prefix, start_revision, on_events, on_error)`` delivers, in revision order and from a
thread of the backend's own, every change under ``prefix`` after ``start_revision`` (normally the
revision ``get_range`` returned). ``on_error`` is called once when the watch ends on its own (the
backend became unreachable, or the history from ``start_revision`` was compacted): the caller lists and
watches again (``backend.cache.WatchedPrefix`` does exactly that).

Every method is blocking and thread-safe; asyncio callers use ``asyncio.to_thread``. A backend that
cannot be reached raises ``BackendUnavailable`` (never hangs longer than its timeout).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Item", "Event", "Backend", "Watch", "BackendError", "BackendUnavailable", "Compacted",
           "prefix_end"]


class BackendError(Exception):
    """The backend refused an operation (bad key, bad configuration)."""


class BackendUnavailable(BackendError):
    """The backend cannot be reached or did not answer in time."""


class Compacted(BackendError):
    """A watch asked for history the backend no longer keeps; list again, then watch."""

    def __init__(self, message: str, compact_revision: int) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


@dataclass(frozen=True, slots=True)
class Item:
    key: str
    value: bytes
    revision: int  # the revision of the write that produced this value (etcd's mod_revision)
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    type: Literal["put", "delete"]
    key: str
    revision: int
    item: Item | None  # the new value of a put; None for a delete


class Watch(abc.ABC):
    @abc.abstractmethod
    def cancel(self) -> None:
        """Stop delivering events (idempotent; ``on_error`` is not called for a cancelled watch)."""


def prefix_end(prefix: str) -> str:
    """The first key after every key starting with ``prefix`` (etcd's range_end for a prefix)."""
    raw = prefix.encode()
    for i in range(len(raw) - 1, -1, -1):
        if raw[i] < 0xFF:
            return (raw[:i] + bytes([raw[i] + 1])).decode("latin-1")
    return "\0"


class Backend(abc.ABC):
    """See the module docstring. ``name`` says which implementation (``local``, ``etcd``)."""

    name: str = ""

    @abc.abstractmethod
    def get(self, key: str) -> Item | None: ...

    @abc.abstractmethod
    def get_range(self, prefix: str) -> tuple[list[Item], int]:
        """Every item whose key starts with ``prefix`` (sorted by key) and the store's revision at the
        read: a watch from that revision misses nothing."""

    @abc.abstractmethod
    def put(self, key: str, value: bytes, *, lease: int = 0) -> Item: ...

    @abc.abstractmethod
    def compare_and_swap(self, key: str, expected_revision: int, value: bytes, *, lease: int = 0) -> Item | None:
        """Write ``value`` only if the key's current revision is ``expected_revision`` (0: only if the key
        does not exist). The new item, or None when the key had changed."""

    def create(self, key: str, value: bytes, *, lease: int = 0) -> Item | None:
        """Write ``value`` only if ``key`` does not exist; None when it does."""
        return self.compare_and_swap(key, 0, value, lease=lease)

    @abc.abstractmethod
    def delete(self, key: str, expected_revision: int | None = None) -> bool:
        """Delete ``key`` (only if its revision is ``expected_revision``, when given); True if deleted."""

    @abc.abstractmethod
    def grant(self, ttl: float) -> int:
        """A new lease of ``ttl`` seconds (rounded up to whole seconds by etcd); returns its id."""

    @abc.abstractmethod
    def keep_alive(self, lease: int) -> bool:
        """Renew ``lease`` for its full TTL; False when it has already expired (its keys are gone)."""

    @abc.abstractmethod
    def revoke(self, lease: int) -> None:
        """End ``lease`` now: its keys are deleted."""

    @abc.abstractmethod
    def watch(
        self,
        prefix: str,
        start_revision: int,
        on_events: Callable[[Sequence[Event]], None],
        on_error: Callable[[BaseException], None],
    ) -> Watch: ...

    def ping(self) -> None:
        """Raise ``BackendUnavailable`` when the backend cannot be reached (used by ``/readyz``)."""
        self.get("health/ping")

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections (this thread's; each thread's go with it)."""

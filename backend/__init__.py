"""Shared state for kubegate replicas: a small revisioned key-value interface (``backend.base``) with a
``local`` implementation (one host, a directory) and an ``etcd`` one (many hosts), an in-memory
watched copy of a prefix (``backend.cache``) and the things built on it (``backend.election``).

    backend = open_backend(cfg)          # from kubegate.yaml's ``backend:`` section
    item = backend.get("locks")
"""

from backend.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    Compacted,
    Event,
    Item,
    Watch,
    prefix_end,
)

__all__ = ["Backend", "BackendError", "BackendUnavailable", "Compacted", "Event", "Item", "Watch",
           "prefix_end"]

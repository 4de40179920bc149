"""Which store each piece of state uses, from ``backend.type`` (one place for the CLI and the proxy).

``local`` (default): the state directory as it always was — ``<state_dir>/clusters/*.json``, the
``locks`` file, ``auth.roles_dir`` — each file written atomically (crash-safe), read by polling.
``etcd``: the shared backend (``backend.etcd.EtcdBackend``): clusters, locks and roles under the key
prefix, followed by watches; every replica serves the same state.
"""

from __future__ import annotations

from typing import Any

from kubegate.config import Config


def open_backend(cfg: Config) -> Any:
    """The configured shared backend, or None for ``local`` (state-directory files)."""
    if cfg.backend.type != "etcd":
        return None
    from backend.etcd import EtcdBackend

    b = cfg.backend
    return EtcdBackend(list(b.endpoints), prefix=b.prefix, ca_file=b.tls.ca_file, cert_file=b.tls.cert_file,
                       key_file=b.tls.key_file, timeout=b.timeout)


def cluster_store(cfg: Config, backend: Any = None) -> Any:
    """Where ``kubegate clusters add / rm`` and cloud discovery keep cluster records."""
    backend = backend if backend is not None else open_backend(cfg)
    if backend is None:
        from discovery.store import ClusterStore

        return ClusterStore(cfg.registry_dir)
    from discovery.shared_store import SharedClusterStore

    return SharedClusterStore(backend)


def lock_list(cfg: Config, backend: Any = None, *, watch: bool = False) -> Any:
    """The lock list: the ``locks`` file, or the shared one (``watch=True`` in proxies: kept in memory)."""
    backend = backend if backend is not None else open_backend(cfg)
    if backend is None:
        from certs.locks import LockList

        return LockList(cfg.locks_file)
    from certs.shared_locks import SharedLockList

    return SharedLockList(backend, watch=watch, stale_grace=cfg.backend.stale_grace)

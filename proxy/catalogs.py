"""Per-cluster resource catalogs for request parsing, built from the upstream's discovery documents.

Fetched through the cluster's pool with kubegate's own credentials (no impersonation): ``/api/v1``,
``/apis``, then every served group version. Cached per cluster; refreshed when older than
``max_age`` (in the background: requests keep using the old one) and on a catalog miss, at most once per
``miss_interval``. If discovery fails the built-in Kubernetes catalog is used (and retried later).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from discovery.model import Cluster
from proxy.upstream.base import UpstreamError

log = logging.getLogger("kubegate.proxy.catalogs")


def _catalog_class() -> Any:
    from rbac.catalog import ResourceCatalog

    return ResourceCatalog


class CatalogCache:
    def __init__(self, max_age: float = 300.0, miss_interval: float = 10.0, fetch_timeout: float = 10.0) -> None:
        self.max_age = max_age
        self.miss_interval = miss_interval
        self.fetch_timeout = fetch_timeout
        # name -> (generation, fetched_at (monotonic), catalog). An entry is replaced by ``put``, never changed:
        # the fast path (``proxy.fastpath.usable``) holds on to the one its plan was made with and compares.
        self.entries: dict[str, tuple[int, float, Any]] = {}
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._refreshing: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    def cached(self, cluster: Cluster, pool: Any = None) -> Any:
        """The cached catalog or None; a stale one is returned while a refresh runs in the background."""
        entry = self.entries.get(cluster.name)
        if entry is None or entry[0] != cluster.generation:
            return None
        if pool is not None and time.monotonic() - entry[1] > self.max_age and cluster.name not in self._refreshing:
            self._refreshing.add(cluster.name)
            task = asyncio.get_running_loop().create_task(self.fetch(cluster, pool, force=True))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return entry[2]

    def entry_holding(self, cluster: Cluster, catalog: Any) -> tuple[int, float, Any] | None:
        """The entry that holds ``catalog`` for ``cluster`` as it is now (``Plan.catalog_entry``), or None
        when the cache holds another (a plan without one asks ``cached`` each time)."""
        entry = self.entries.get(cluster.name)
        return entry if entry is not None and entry[2] is catalog and entry[0] == cluster.generation else None

    def may_refresh(self, cluster: Cluster) -> bool:
        entry = self.entries.get(cluster.name)
        return entry is None or time.monotonic() - entry[1] >= self.miss_interval

    def put(self, cluster: Cluster, catalog: Any) -> None:
        self.entries[cluster.name] = (cluster.generation, time.monotonic(), catalog)

    async def fetch(self, cluster: Cluster, pool: Any, force: bool = False) -> Any:
        if not force:
            cached = self.cached(cluster)
            if cached is not None:
                return cached
        inflight = self._inflight.get(cluster.name)
        if inflight is not None:
            return await asyncio.shield(inflight)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[cluster.name] = fut
        try:
            catalog = await self._load(cluster, pool)
            fut.set_result(catalog)
            return catalog
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()
            raise
        finally:
            self._inflight.pop(cluster.name, None)
            self._refreshing.discard(cluster.name)

    async def _load(self, cluster: Cluster, pool: Any) -> Any:
        cls = _catalog_class()
        try:
            docs = await asyncio.wait_for(self._documents(pool), self.fetch_timeout)
        except (UpstreamError, TimeoutError, ValueError) as exc:
            log.warning("discovery of cluster %s failed; using the built-in catalog", cluster.name, extra={"problem": str(exc)})
            catalog = cls.builtin()
            # Remember it only briefly: retry on the next miss interval.
            self.entries[cluster.name] = (cluster.generation, time.monotonic() - self.max_age + self.miss_interval, catalog)
            return catalog
        catalog = cls.from_discovery(docs).merged(cls.builtin()) if hasattr(cls, "merged") else cls.from_discovery(docs)
        self.put(cluster, catalog)
        return catalog

    async def _documents(self, pool: Any) -> list[dict[str, Any]]:
        docs = [await _get_json(pool, "/api/v1")]
        groups = await _get_json(pool, "/apis")
        paths: list[str] = []
        for group in groups.get("groups") or []:
            for version in group.get("versions") or []:
                gv = version.get("groupVersion")
                if isinstance(gv, str):
                    paths.append("/apis/" + gv)
        results = await asyncio.gather(*(_get_json(pool, p, missing_ok=True) for p in paths))
        docs.extend(r for r in results if r)
        return docs


async def _get_json(pool: Any, path: str, missing_ok: bool = False) -> dict[str, Any]:
    await pool.ensure_credentials()
    headers = [(b"host", pool.authority.encode()), (b"accept", b"application/json"), (b"user-agent", b"kubegate")]
    if pool.bearer_token:
        headers.append((b"authorization", b"Bearer " + pool.bearer_token.encode()))
    base = _base(pool.cluster.server)
    stream = await pool.open("GET", base + path, headers, body=b"", streaming_body=False)
    try:
        status, _ = await stream.response_head()
        chunks = []
        while chunk := await stream.read():
            chunks.append(chunk)
            stream.consumed(len(chunk))
    finally:
        stream.release()
    if status != 200:
        if missing_ok:
            return {}
        raise ValueError(f"GET {path} answered {status}")
    return json.loads(b"".join(chunks))


def _base(server: str) -> str:
    _, _, rest = server.partition("://")
    _, slash, path = rest.partition("/")
    return ("/" + path).rstrip("/") if slash else ""

"""The discovery service: keeps a ``ClusterRegistry`` in step with every source, without restarts.

Sources and how they are watched (all on the running event loop; blocking work goes to threads):

- ``kubernetes_service.kubeconfig_files``: each context → a cluster; files polled by mtime.
- ``kubernetes_service.clusters_dir``: ``kube_cluster`` files (``ClustersDirScanner``), polled by mtime;
  one registry source per file (``dir:<path>``).
- the store ``<state_dir>/clusters/`` (``ClusterStore``): the CLI's clusters and the cloud-discovered
  ones, polled by mtime; a record is rebuilt into a cluster only when it changed (token caches survive).
- or, with a shared backend (``backend.type: etcd``), the ``SharedClusterStore``: an in-memory copy kept
  by a watch; each change it reports rebuilds the registry at once (no polling).
- cloud pollers (``discovery_service.enabled``): EKS and AKS fetchers every ``poll_interval`` ± 10 %
  jitter; a failed or partial run retries after 10 s, 20 s, 40 s … (capped at the poll interval) and
  deletes nothing. Each run reconciles (``discovery.reconcile``) against the store records of its own
  origin and discovery group, writes the store, and re-reads it. With a shared backend the pollers run
  only while this replica leads its ``discovery_group`` (``backend.election.Election``), and the writes
  are compare-and-swaps against the revisions the plan was made from.
- dynamic labels of kube_cluster resources (``DynamicLabelRunner``) → ``registry.set_dynamic_labels``;
  the values are also written to ``<state_dir>/clusters/dynamic_labels.state`` when they change, for the
  CLI (``clusters ls``, ``kubeconfig``).
- health checks (``HealthChecker``) → ``registry.set_health``; after each round the health of every
  cluster is written to ``<state_dir>/clusters/health.state`` for ``kubegate clusters ls``.

Wiring (see ``from_config``)::

    registry = ClusterRegistry(selectors)                     # what the proxy reads
    service = DiscoveryService.from_config(cfg, registry, cloud=worker_index == 0)
    await service.start()      # first sync done when this returns; loops keep running
    ...
    await service.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from discovery import metrics
from discovery.dynamic_labels import DEFAULT_TIMEOUT, DynamicLabelRunner, DynamicLabelSpec
from discovery.errors import DiscoveryError
from discovery.health import HealthChecker
from discovery.kube_cluster import ORIGIN as KUBE_CLUSTER
from discovery.kube_cluster import ClustersDirScanner, KubeClusterResource
from discovery.kubeconfig import (
    CONTEXT_LABEL,
    KubeconfigFile,
    as_kubeconfig_file,
    collision_message,
    kubeconfig_clusters_with_errors,
)
from discovery.model import Cluster
from discovery.reconcile import Plan, reconcile
from discovery.registry import ClusterRegistry
from discovery.shared_store import SharedClusterStore
from discovery.store import DYNAMIC_LABELS_FILE, HEALTH_FILE, ClusterRecord, ClusterStore, atomic_write

if TYPE_CHECKING:  # boto3 / azure are imported only when a cloud matcher or record needs them
    from discovery.aks import ArmClient
    from discovery.eks import AwsSessions

log = logging.getLogger(__name__)

STORE_SOURCE = "store"
AWS, AZURE = "aws", "azure"  # the origins of discovery.eks / discovery.aks
RETRY_FIRST = 10.0
DIR_MTIME_SLACK = 2.0  # seconds: a directory mtime this old cannot hide a later change
JITTER = 0.1


@dataclass
class _Fetcher:
    origin: str
    fetch: Callable[[], Any]  # -> FetchResult (eks or aks)
    failures: int = 0


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class DiscoveryService:
    def __init__(
        self,
        registry: ClusterRegistry,
        *,
        store_dir: str | os.PathLike[str],
        kubeconfig_files: Sequence[str | KubeconfigFile] = (),
        clusters_dir: str | None = None,
        discovery_group: str = "",
        poll_interval: float = 300.0,
        aws_matchers: Sequence[Any] = (),
        azure_matchers: Sequence[Any] = (),
        cloud: bool = True,
        health: bool = True,
        watch_interval: float = 1.0,
        health_interval: float = 30.0,
        health_timeout: float = 5.0,
        dynamic_label_timeout: float = DEFAULT_TIMEOUT,
        aws_sessions: AwsSessions | None = None,
        azure_credential: Any = None,
        arm_client: ArmClient | None = None,
        rng: random.Random | None = None,
        store: SharedClusterStore | None = None,
        leader: Any = None,
    ) -> None:
        self.registry = registry
        self.store: Any = store if store is not None else ClusterStore(store_dir)
        # this replica's own files (health.state, dynamic_labels.state), whichever store holds the records
        self.local_dir = ClusterStore(store_dir)
        self.shared = store is not None
        self.leader = leader  # None: always poll; else poll only while leader.is_leader
        self._store_items: dict[str, Any] = {}
        self._store_sync: asyncio.Task[None] | None = None
        self._store_dirty = False
        self.kubeconfig_files = [as_kubeconfig_file(entry) for entry in kubeconfig_files]
        self.dir_scanner = ClustersDirScanner(os.path.expanduser(clusters_dir)) if clusters_dir else None
        self.group = discovery_group
        self.poll_interval = poll_interval
        self.watch_interval = watch_interval
        self._aws_sessions = aws_sessions
        self.external_ids = {m.assume_role_arn: m.external_id for m in aws_matchers
                             if getattr(m, "assume_role_arn", None) and getattr(m, "external_id", None)}
        self.azure_credential = azure_credential
        self.fetchers: list[_Fetcher] = []
        if cloud and aws_matchers:
            from discovery import eks

            fetcher = eks.EksFetcher(aws_matchers, group=discovery_group, sessions=self.aws_sessions)
            self.fetchers.append(_Fetcher(eks.ORIGIN, fetcher.fetch))
        if cloud and azure_matchers:
            from discovery import aks

            if arm_client is None and azure_credential is not None:
                arm_client = aks.ArmClient(azure_credential)
            az = aks.AksFetcher(azure_matchers, group=discovery_group, arm=arm_client)
            self.fetchers.append(_Fetcher(aks.ORIGIN, az.fetch))
        self.labels = DynamicLabelRunner(self._on_dynamic_labels, timeout=dynamic_label_timeout)
        self.health = (
            HealthChecker(registry, interval=health_interval, timeout=health_timeout, on_round=self._after_health)
            if health else None
        )
        self.rng = rng or random.Random()
        self.errors: dict[str, list[str]] = {}  # source → current definition errors
        self._kubeconfig_stamps: dict[str, Any] = {}
        self._dir_conflicts: dict[str, list[str]] = {}
        self._store_stamps: dict[str, tuple[int, int, int] | None] = {}
        self._store_dir_stamp: tuple[int, int, int] | None = None
        self._store_scanned_at = 0.0
        self._store_records: dict[str, ClusterRecord] = {}
        self._store_read_errors: dict[str, str] = {}
        self._store_built: dict[str, tuple[ClusterRecord, Cluster | None, tuple[DynamicLabelSpec, ...], str]] = {}
        self._dynamic: dict[str, tuple[DynamicLabelSpec, ...]] = {}
        self._dynamic_values: dict[str, dict[str, str]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._gauges_set = False
        self._lock = asyncio.Lock()

    @property
    def aws_sessions(self) -> AwsSessions:
        if self._aws_sessions is None:
            from discovery.eks import AwsSessions

            self._aws_sessions = AwsSessions()
        return self._aws_sessions

    @classmethod
    def from_config(cls, cfg: Any, registry: ClusterRegistry, **overrides: Any) -> DiscoveryService:
        """Build from a ``kubegate.config.Config``; ``overrides`` win (e.g. ``cloud=False`` in workers > 0)."""
        ks, ds = cfg.kubernetes_service, cfg.discovery_service
        kwargs: dict[str, Any] = {
            "store_dir": os.path.join(cfg.state_dir, "clusters"),
            "kubeconfig_files": list(ks.kubeconfig_files),
            "clusters_dir": ks.clusters_dir,
            "discovery_group": ds.discovery_group,
            "poll_interval": ds.poll_interval,
            "health_interval": ks.health_interval,
            "health_timeout": ks.health_timeout,
            "aws_matchers": list(ds.aws) if ds.enabled else [],
            "azure_matchers": list(ds.azure) if ds.enabled else [],
        }
        kwargs.update(overrides)
        return cls(registry, **kwargs)

    # ---- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.shared:
            await asyncio.to_thread(self.store.watch, lambda: loop.call_soon_threadsafe(self._store_changed))
        else:
            self.store.ensure()
            swept = await asyncio.to_thread(self.store.sweep_temporaries)
            if swept:
                log.warning("removed %d temporary file(s) a crashed writer left in %s", swept,
                            self.store.directory)
        await self.sync_local()
        self._tasks.append(loop.create_task(self._watch_loop(), name="discovery:watch"))
        for fetcher in self.fetchers:
            self._tasks.append(loop.create_task(self._cloud_loop(fetcher), name=f"discovery:{fetcher.origin}"))
        if self.health is not None:
            self._tasks.append(loop.create_task(self.health.run(), name="discovery:health"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self.labels.stop_all()
        if self._store_sync is not None:
            self._store_sync.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._store_sync
        if self.shared:
            await asyncio.to_thread(self.store.stop)

    def _store_changed(self) -> None:
        """On the loop: the shared store's watch saw a change; sync now rather than at the next tick
        (changes arriving while a sync runs are coalesced into one more sync)."""
        self._store_dirty = True
        if self._store_sync is None or self._store_sync.done():
            self._store_sync = asyncio.get_running_loop().create_task(self._sync_store_changes(),
                                                                      name="discovery:store-change")

    async def _sync_store_changes(self) -> None:
        while self._store_dirty:
            self._store_dirty = False
            try:
                await self.sync_local()
            except Exception:
                log.exception("cluster store sync failed")

    # ---- local sources ------------------------------------------------------------------------------

    async def sync_local(self) -> bool:
        """One pass over the kubeconfig files, the clusters directory and the store; True on change."""
        async with self._lock:
            changed = await asyncio.to_thread(self._sync_files)
            changed = await asyncio.to_thread(self._refresh_store) or changed
            if changed or not self._gauges_set:
                self._sync_dynamic_labels()
                metrics.update_cluster_gauges(self.registry.all(), len(self.registry))
                self._gauges_set = True
            metrics.DEFINITION_ERRORS.labels("local").set(sum(len(v) for v in self.errors.values()))
        if changed and self.health is not None:
            self.health.check_soon()
        return changed

    def _sync_files(self) -> bool:
        changed = False
        for entry in self.kubeconfig_files:
            path = entry.path
            stamp = _stamp(path)
            if self._kubeconfig_stamps.get(path, "never") == stamp:
                continue
            self._kubeconfig_stamps[path] = stamp
            source = f"kubeconfig:{path}"
            try:
                clusters, errors = kubeconfig_clusters_with_errors(entry)
            except DiscoveryError as exc:
                log.error("%s", exc)
                self.errors[source] = [str(exc)]
                continue  # an unreadable file keeps its last good clusters
            clusters, collisions = self._kubeconfig_collisions(source, clusters)
            self.errors[source] = errors + collisions + self.registry.replace_source(source, clusters)
            changed = True
        if self.dir_scanner is not None:
            scanner = self.dir_scanner
            before = set(scanner.by_file)
            if scanner.scan():
                changed = True
                for path in before - set(scanner.by_file):
                    self.registry.replace_source(f"dir:{path}", [])
                    self._dir_conflicts.pop(path, None)
                for path, loaded in scanner.by_file.items():
                    self._dir_conflicts[path] = self.registry.replace_source(
                        f"dir:{path}", [lc.cluster for lc in loaded])
            for key in [k for k in self.errors if k.startswith("dir:")]:
                del self.errors[key]
            for path in set(scanner.by_file) | set(scanner.errors):
                errors = scanner.errors.get(path, []) + self._dir_conflicts.get(path, [])
                if errors:
                    self.errors[f"dir:{path}"] = errors
        return changed

    def _kubeconfig_collisions(self, source: str, clusters: list[Cluster]) -> tuple[list[Cluster], list[str]]:
        """Drop the clusters whose name another kubeconfig file already serves, with a message naming both
        contexts and both files (the registry would refuse them naming the sources only)."""
        kept, errors = [], []
        for cluster in clusters:
            owner = self.registry.source_of(cluster.name)
            current = self.registry.peek(cluster.name)
            if owner is not None and owner != source and owner.startswith("kubeconfig:") and current is not None:
                message = collision_message(
                    cluster.name,
                    (current.labels.get(CONTEXT_LABEL, cluster.name), owner.removeprefix("kubeconfig:")),
                    (cluster.labels.get(CONTEXT_LABEL, cluster.name), source.removeprefix("kubeconfig:")),
                )
                log.error("%s", message)
                errors.append(message)
                continue
            kept.append(cluster)
        return kept, errors

    def _refresh_store(self) -> bool:
        """Blocking (run in a thread: building clusters may read files): re-read the store, feed the
        registry; True when anything changed."""
        if not self._scan_store():
            return False
        self._apply_store()
        return True

    def _scan_store(self) -> bool:
        """Re-read changed store files (by mtime); True when any record changed.

        Every store write is a rename into the directory, which updates the directory's mtime: when the
        directory is unchanged since a scan that happened well after its last modification (so that a
        second change within the same timestamp tick cannot hide), the per-file stats are skipped.
        A shared store is read from its watched in-memory copy instead.
        """
        if self.shared:
            items, records, errors = self.store.snapshot()
            self._store_items = items
            self.errors[STORE_SOURCE] = errors
            if records == self._store_records:
                return False
            self._store_records = records
            return True
        dir_stamp = _stamp(str(self.store.directory))
        now = time.time()
        if (
            dir_stamp is not None
            and dir_stamp == self._store_dir_stamp
            and self._store_scanned_at - dir_stamp[0] / 1e9 > DIR_MTIME_SLACK
        ):
            return False
        self._store_dir_stamp, self._store_scanned_at = dir_stamp, now
        current = {str(p): _stamp(str(p)) for p in self.store.files()}
        if current == self._store_stamps:
            return False
        records = dict(self._store_records)
        for path in set(self._store_stamps) - set(current):
            records.pop(Path(path).stem, None)
            self._store_read_errors.pop(path, None)
        for path, stamp in current.items():
            if self._store_stamps.get(path) == stamp:
                continue
            try:
                record = self.store.get(Path(path).stem)
            except DiscoveryError as exc:
                self._store_read_errors[path] = str(exc)
                log.error("%s", exc)
                continue
            self._store_read_errors.pop(path, None)
            if record is None:
                records.pop(Path(path).stem, None)
            else:
                records[record.name] = record
        self._store_stamps = current
        self.errors[STORE_SOURCE] = list(self._store_read_errors.values())
        if records == self._store_records:
            return False
        self._store_records = records
        return True

    def _apply_store(self) -> None:
        built = {}
        clusters = []
        build_errors = []
        for name, record in self._store_records.items():
            previous = self._store_built.get(name)
            if previous is not None and previous[0] == record:
                entry = previous
            else:
                entry = (record, *self._build(record))
            built[name] = entry
            if entry[1] is not None:
                clusters.append(entry[1])
            if entry[3]:
                build_errors.append(entry[3])
        self._store_built = built
        conflicts = self.registry.replace_source(STORE_SOURCE, clusters)
        self.errors[STORE_SOURCE] = list(self._store_read_errors.values()) + build_errors + conflicts

    def _build(self, record: ClusterRecord) -> tuple[Cluster | None, tuple[DynamicLabelSpec, ...], str]:
        where = str(self.store.path_for(record.name))
        try:
            if record.origin == KUBE_CLUSTER:
                resource = KubeClusterResource.from_record(record, where)
                return resource.to_cluster(where), resource.dynamic_labels, ""
            if record.origin == AWS:
                from discovery import eks

                return eks.cluster_from_record(record, sessions=self.aws_sessions,
                                               external_ids=self.external_ids), (), ""
            if record.origin == AZURE:
                from discovery import aks

                return aks.cluster_from_record(record, credential=self.azure_credential), (), ""
            raise DiscoveryError(f"{where}: unknown origin {record.origin!r}")
        except DiscoveryError as exc:
            log.error("%s", exc)
            return None, (), str(exc)

    # ---- dynamic labels -----------------------------------------------------------------------------

    def _sync_dynamic_labels(self) -> None:
        wanted: dict[str, tuple[DynamicLabelSpec, ...]] = {}
        if self.dir_scanner is not None:
            for loaded in self.dir_scanner.by_file.values():
                for lc in loaded:
                    if lc.dynamic_labels and self.registry.source_of(lc.cluster.name) is not None:
                        wanted[lc.cluster.name] = lc.dynamic_labels
        for name, (_, cluster, specs, _error) in self._store_built.items():
            if cluster is not None and specs and self.registry.source_of(name) == STORE_SOURCE:
                wanted[name] = specs
        gone = [name for name in self._dynamic if name not in wanted]
        for name in gone:
            self.registry.set_dynamic_labels(name, {})
            self._dynamic_values.pop(name, None)
        self._dynamic = wanted
        self.labels.sync(wanted)
        if gone:
            self._write_dynamic_labels()

    def _on_dynamic_labels(self, cluster: str, labels: dict[str, str]) -> None:
        keys = {s.key for s in self._dynamic.get(cluster, ())}
        failures = [k for k in keys if (cluster, k) in self.labels.errors]
        if failures:
            metrics.DYNAMIC_LABEL_FAILURES.inc(len(failures))
        values = {k: v for k, v in labels.items() if k in keys}
        self.registry.set_dynamic_labels(cluster, values)
        if self._dynamic_values.get(cluster) != values:
            self._dynamic_values[cluster] = values
            self._write_dynamic_labels()

    def _write_dynamic_labels(self) -> None:
        """``<state_dir>/clusters/dynamic_labels.state``: the current values, for the CLI (``clusters ls``,
        ``kubeconfig``), which cannot run the commands itself. Written only when a value changed."""
        try:
            self.local_dir.ensure()
            atomic_write(self.local_dir.directory / DYNAMIC_LABELS_FILE,
                         json.dumps(self._dynamic_values, sort_keys=True).encode(), sync_dir=False)
        except OSError as exc:
            log.warning("cannot write %s: %s", DYNAMIC_LABELS_FILE, exc)

    # ---- cloud --------------------------------------------------------------------------------------

    async def run_discovery_once(self, fetcher: _Fetcher) -> Plan | None:
        """Fetch, reconcile against the store (own origin + group only), apply; None when the fetch failed."""
        started = time.monotonic()
        try:
            result = await asyncio.to_thread(fetcher.fetch)
        except Exception as exc:  # a fetcher bug or an unexpected SDK error: never delete on it
            log.exception("%s discovery failed", fetcher.origin)
            metrics.DISCOVERY_RUNS.labels(fetcher.origin, "error").inc()
            self.errors[f"cloud:{fetcher.origin}"] = [str(exc)]
            return None
        async with self._lock:
            # the current records: the watcher's cache, refreshed now (stat only when nothing changed)
            await asyncio.to_thread(self._refresh_store)
            unreadable = bool(self._store_read_errors)
            plan = reconcile(result.records, self._store_records, origin=fetcher.origin, group=self.group,
                             complete=result.complete and not unreadable)
            refused = await asyncio.to_thread(self._apply_plan, plan)
        for conflict in plan.conflicts:
            log.warning("%s", conflict)
        self.errors[f"cloud:{fetcher.origin}"] = list(result.errors) + list(plan.conflicts) + refused
        metrics.DISCOVERY_RUNS.labels(fetcher.origin, "ok" if result.complete else "partial").inc()
        metrics.DISCOVERY_RUN_SECONDS.labels(fetcher.origin).observe(time.monotonic() - started)
        for action, items in (("create", plan.create), ("update", plan.update), ("delete", plan.delete)):
            if items:
                metrics.DISCOVERY_CHANGES.labels(fetcher.origin, action).inc(len(items))
        log.info("%s discovery run: %d created, %d updated, %d deleted%s", fetcher.origin, len(plan.create),
                 len(plan.update), len(plan.delete), "" if result.complete else " (partial: nothing deleted)")
        if not plan.empty:
            await self.sync_local()
        fetcher.failures = 0 if result.complete else fetcher.failures + 1
        return plan

    def _apply_plan(self, plan: Plan) -> list[str]:
        """Write the plan; returns the writes refused because another replica changed a record first."""
        if self.shared:
            return self.store.apply(list(plan.create), list(plan.update), list(plan.delete), self._store_items)
        self.store.put_many([*plan.create, *plan.update])
        self.store.delete_many(list(plan.delete))
        return []

    def next_delay(self, fetcher: _Fetcher) -> float:
        if fetcher.failures:
            return min(self.poll_interval, RETRY_FIRST * 2 ** (fetcher.failures - 1))
        return self.poll_interval * (1 + self.rng.uniform(-JITTER, JITTER))

    async def _cloud_loop(self, fetcher: _Fetcher) -> None:
        await asyncio.sleep(self.rng.uniform(0, min(5.0, self.poll_interval * JITTER)))
        while True:
            if self.leader is not None and not self.leader.is_leader:
                await self.leader.wait_leader()  # another replica polls this group meanwhile
                continue
            plan = await self.run_discovery_once(fetcher)
            if plan is None:
                fetcher.failures += 1
            await asyncio.sleep(self.next_delay(fetcher))

    # ---- loops --------------------------------------------------------------------------------------

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.watch_interval)
            try:
                await self.sync_local()
            except Exception:
                log.exception("cluster source sync failed")

    def _after_health(self) -> None:
        metrics.update_cluster_gauges(self.registry.all(), len(self.registry))
        state = {c.name: {"health": c.health, "detail": c.health_detail, "checked_at": time.time()}
                 for c in self.registry.all()}
        if self.shared:  # every replica checks; `clusters ls` shows the newest check of any replica
            replica = f"{socket.gethostname()}:{os.getpid()}"
            ttl = 3 * (self.health.interval if self.health is not None else 30.0)
            future = asyncio.get_running_loop().run_in_executor(None, self.store.put_health, replica, state, ttl)
            future.add_done_callback(_log_health_failure)
        try:  # this replica's own view, for kubegate_cluster_healthy and (local backend) `clusters ls`
            self.local_dir.ensure()
            atomic_write(self.local_dir.directory / HEALTH_FILE, json.dumps(state, sort_keys=True).encode())
        except OSError as exc:
            log.warning("cannot write %s: %s", HEALTH_FILE, exc)


def _log_health_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("cannot publish cluster health to the shared backend: %s", future.exception())


def all_errors(service: DiscoveryService) -> Iterable[str]:
    for errors in service.errors.values():
        yield from errors

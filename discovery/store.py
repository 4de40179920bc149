"""The persisted part of the registry: ``<state_dir>/clusters/<name>.json``, one record per cluster.

It holds the clusters the CLI added (``kubegate clusters add -f``) and the ones cloud discovery found, so
that a restarted proxy serves them at once and a CLI process can change what a running proxy serves (the
proxy polls this directory).

Crash safety: every write goes to a temporary file in the same directory, is fsync'd, then renamed over
the final name (atomic on POSIX), and the directory is fsync'd. A ``kill -9`` at any instant leaves either
the old or the new record, never half of one; leftover ``*.tmp`` files are ignored and swept.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from discovery.errors import DiscoveryError
from discovery.model import Cluster, CredentialsProvider

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")
RECORD_SUFFIX = ".json"
HEALTH_FILE = "health.state"  # not *.json: never mistaken for a record
DYNAMIC_LABELS_FILE = "dynamic_labels.state"  # {cluster: {label: value}} as the running proxy last ran them
_counter = itertools.count()


def validate_cluster_name(name: object, where: str = "") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        suffix = f" in {where}" if where else ""
        raise DiscoveryError(
            f"invalid cluster name {name!r}{suffix}: use letters, digits, '.', '_' and '-' (max 253)"
        )
    return name


@dataclass(frozen=True, slots=True)
class ClusterRecord:
    """One persisted cluster definition.

    ``spec`` depends on ``origin``: ``kube_cluster`` → the resource's spec (``kubeconfig`` base64,
    ``dynamic_labels``); ``aws`` → see ``discovery.eks``; ``azure`` → see ``discovery.aks``.
    """

    name: str
    origin: str
    labels: dict[str, str]
    spec: dict[str, Any]
    discovery_group: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "origin": self.origin,
            "discovery_group": self.discovery_group,
            "labels": dict(self.labels),
            "spec": self.spec,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: object, where: str) -> ClusterRecord:
        if not isinstance(data, dict):
            raise DiscoveryError(f"{where}: a record must be a JSON object")
        name = validate_cluster_name(data.get("name"), where)
        labels = data.get("labels") or {}
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise DiscoveryError(f"{where}: labels of cluster {name!r} must map strings to strings")
        spec = data.get("spec") or {}
        if not isinstance(spec, dict):
            raise DiscoveryError(f"{where}: spec of cluster {name!r} must be an object")
        return cls(
            name=name,
            origin=str(data.get("origin") or "kube_cluster"),
            labels=dict(labels),
            spec=spec,
            discovery_group=str(data.get("discovery_group") or ""),
            extra=dict(data.get("extra") or {}),
        )


def cloud_cluster(
    record: ClusterRecord, origin: str, credentials: Callable[[str], CredentialsProvider]
) -> Cluster:
    """The ``Cluster`` of a record a cloud fetcher (``origin`` ``aws`` or ``azure``) wrote: spec
    ``endpoint`` (an https URL) and ``ca_data`` (base64 PEM). ``credentials(where)`` builds its provider
    once those are known good (``where`` names the cluster and the cloud, for error messages)."""
    spec = record.spec
    where = f"cluster {record.name!r} ({origin})"
    try:
        ca_pem = base64.b64decode(spec.get("ca_data") or "", validate=True) or None
    except ValueError:
        raise DiscoveryError(f"{where}: certificate authority data is not base64") from None
    endpoint = spec.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith("https://"):
        raise DiscoveryError(f"{where}: endpoint must be https, got {endpoint!r}")
    return Cluster(
        name=record.name,
        labels=dict(record.labels),
        server=endpoint.rstrip("/"),
        ca_pem=ca_pem,
        credentials=credentials(where),
        origin=origin,
        discovery_group=record.discovery_group,
    )


def atomic_write(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new content.

    ``sync_dir=False`` skips the directory fsync (the caller does one for a batch): the file itself is
    always complete; only the rename's durability across a power loss waits for the batch's fsync.
    """
    tmp = _temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if sync_dir:
        _fsync_dir(path.parent)


def _temp_name(path: Path) -> str:
    return str(path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.{next(_counter)}.tmp")


def _fsync_dir(directory: Path) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


class ClusterStore:
    """Records in a directory, one JSON file per cluster."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def ensure(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path_for(self, name: str) -> Path:
        return self.directory / f"{validate_cluster_name(name)}{RECORD_SUFFIX}"

    def put(self, record: ClusterRecord) -> None:
        self.ensure()
        body = json.dumps(record.to_json(), indent=2, sort_keys=True).encode() + b"\n"
        atomic_write(self.path_for(record.name), body)

    def put_many(self, records: list[ClusterRecord], batch: int = 256) -> None:
        """Several records, each atomically: per batch, write every temporary file, fsync them all, rename
        them all, then fsync the directory once (far fewer journal commits than one ``put`` each)."""
        if not records:
            return
        self.ensure()
        for start in range(0, len(records), batch):
            pending: list[tuple[int, str, Path]] = []
            try:
                for record in records[start:start + batch]:
                    path = self.path_for(record.name)
                    body = json.dumps(record.to_json(), indent=2, sort_keys=True).encode() + b"\n"
                    tmp = _temp_name(path)
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                    pending.append((fd, tmp, path))
                    view = memoryview(body)
                    while view:
                        view = view[os.write(fd, view):]
                for fd, _, _ in pending:
                    os.fsync(fd)
                for fd, tmp, path in pending:
                    os.close(fd)
                    os.replace(tmp, path)
                pending.clear()
            finally:
                for fd, tmp, _ in pending:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                    try:
                        os.unlink(tmp)
                    except FileNotFoundError:
                        pass
            _fsync_dir(self.directory)

    def delete_many(self, names: list[str]) -> None:
        for name in names:
            try:
                self.path_for(name).unlink()
            except FileNotFoundError:
                pass
        if names:
            _fsync_dir(self.directory)

    def delete(self, name: str) -> bool:
        try:
            self.path_for(name).unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(self.directory)
        return True

    def get(self, name: str) -> ClusterRecord | None:
        path = self.path_for(name)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        return self._parse(path, raw)

    def files(self) -> Iterator[Path]:
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.endswith(RECORD_SUFFIX) and not entry.name.startswith(".") and entry.is_file():
                yield Path(entry.path)

    def load_all(self) -> tuple[dict[str, ClusterRecord], list[str]]:
        """All readable records and one error message per unreadable file (naming it)."""
        records: dict[str, ClusterRecord] = {}
        errors: list[str] = []
        for path in sorted(self.files()):
            try:
                record = self._parse(path, path.read_bytes())
            except FileNotFoundError:
                continue
            except DiscoveryError as exc:
                errors.append(str(exc))
                continue
            records[record.name] = record
        return records, errors

    def sweep_temporaries(self) -> int:
        """Remove ``*.tmp`` files a crashed writer left behind; returns how many."""
        removed = 0
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                try:
                    os.unlink(entry.path)
                    removed += 1
                except FileNotFoundError:
                    pass
        return removed

    @staticmethod
    def _parse(path: Path, raw: bytes) -> ClusterRecord:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise DiscoveryError(f"{path}: not valid JSON: {exc}") from None
        record = ClusterRecord.from_json(data, str(path))
        if path.name != f"{record.name}{RECORD_SUFFIX}":
            raise DiscoveryError(f"{path}: holds cluster {record.name!r}; the file name must match")
        return record


def read_health(store_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The health a running proxy last recorded per cluster (``{}`` when none or unreadable)."""
    try:
        data = json.loads((Path(store_dir) / HEALTH_FILE).read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_dynamic_labels(store_dir: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """The dynamic label values a running proxy last recorded per cluster (``{}`` when none or unreadable)."""
    try:
        data = json.loads((Path(store_dir) / DYNAMIC_LABELS_FILE).read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        name: {k: v for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)}
        for name, labels in data.items()
        if isinstance(name, str) and isinstance(labels, dict)
    }

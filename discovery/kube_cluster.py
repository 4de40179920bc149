"""Teleport ``kube_cluster`` resources (``kind: kube_cluster``, ``version: v3``).

```yaml
kind: kube_cluster
version: v3
metadata:
  name: prod-east
  labels: {env: prod}
spec:
  kubeconfig: <base64 kubeconfig>      # the current-context (or the only context) is used
  dynamic_labels:
    arch: {command: [uname, -m], period: 1h}
```

A file may hold several resources (YAML documents separated by ``---``). They come from a watched
directory (``kubernetes_service.clusters_dir``, polled by mtime) or from ``kubegate clusters add -f``
(persisted in ``<state_dir>/clusters/``). Every error names the file and, when known, the cluster.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from discovery.dynamic_labels import DynamicLabelSpec
from discovery.errors import DiscoveryError
from discovery.kubeconfig import cluster_from_context, parse_kubeconfig
from discovery.model import Cluster
from discovery.store import ClusterRecord, validate_cluster_name

log = logging.getLogger(__name__)

KIND = "kube_cluster"
VERSION = "v3"
ORIGIN = "kube_cluster"
FILE_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True)
class KubeClusterResource:
    name: str
    labels: dict[str, str]
    kubeconfig: bytes
    dynamic_labels: tuple[DynamicLabelSpec, ...] = ()

    # ---- resource <-> record -----------------------------------------------------------------------

    def to_resource(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kubeconfig": base64.b64encode(self.kubeconfig).decode()}
        if self.dynamic_labels:
            spec["dynamic_labels"] = {s.key: s.to_json() for s in self.dynamic_labels}
        return {"kind": KIND, "version": VERSION, "metadata": {"name": self.name, "labels": dict(self.labels)},
                "spec": spec}

    def to_record(self) -> ClusterRecord:
        resource = self.to_resource()
        return ClusterRecord(name=self.name, origin=ORIGIN, labels=dict(self.labels), spec=resource["spec"])

    @classmethod
    def from_record(cls, record: ClusterRecord, where: str) -> KubeClusterResource:
        return parse_resource(
            {"kind": KIND, "version": VERSION, "metadata": {"name": record.name, "labels": record.labels},
             "spec": record.spec},
            where,
        )

    # ---- resource -> cluster -----------------------------------------------------------------------

    def to_cluster(self, where: str, *, exec_timeout: float = 30.0) -> Cluster:
        w = f"{where}: kube_cluster {self.name!r}"
        doc = parse_kubeconfig(self.kubeconfig, f"{w}: spec.kubeconfig")
        context = doc.get("current-context")
        contexts = [c.get("name") for c in doc.get("contexts") or [] if isinstance(c, dict)]
        if not context:
            if len(contexts) != 1:
                raise DiscoveryError(
                    f"{w}: spec.kubeconfig has {len(contexts)} contexts and no current-context"
                )
            context = contexts[0]
        cluster = cluster_from_context(
            doc, str(context), name=self.name, base_dir=None, where=where, origin=ORIGIN,
            exec_timeout=exec_timeout,
        )
        return dataclasses.replace(cluster, labels={**cluster.labels, **self.labels})


def parse_resource(doc: object, where: str) -> KubeClusterResource:
    if not isinstance(doc, dict):
        raise DiscoveryError(f"{where}: a kube_cluster resource must be a mapping")
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    w = f"{where}: kube_cluster {name!r}" if isinstance(name, str) else where
    if doc.get("kind") != KIND:
        raise DiscoveryError(f"{w}: kind must be {KIND!r}, got {doc.get('kind')!r}")
    if doc.get("version", VERSION) != VERSION:
        raise DiscoveryError(f"{w}: version must be {VERSION!r}, got {doc.get('version')!r}")
    if not isinstance(meta, dict):
        raise DiscoveryError(f"{w}: metadata is missing")
    validate_cluster_name(name, where)
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) for k in labels):
        raise DiscoveryError(f"{w}: metadata.labels must be a map of strings")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise DiscoveryError(f"{w}: spec is missing")
    raw = spec.get("kubeconfig")
    if not isinstance(raw, str) or not raw.strip():
        raise DiscoveryError(f"{w}: spec.kubeconfig (base64) is missing")
    try:
        kubeconfig = base64.b64decode("".join(raw.split()), validate=True)
    except (binascii.Error, ValueError):
        raise DiscoveryError(f"{w}: spec.kubeconfig is not valid base64") from None
    dynamic = DynamicLabelSpec.parse_map(spec.get("dynamic_labels"), w)
    return KubeClusterResource(
        name=name, labels={k: str(v) for k, v in labels.items()}, kubeconfig=kubeconfig, dynamic_labels=dynamic
    )


def parse_resources(text: str | bytes, where: str) -> list[KubeClusterResource]:
    """All resources of a YAML (or JSON) file; raises on the first bad one, naming it."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise DiscoveryError(f"{where}: not valid YAML: {exc}") from None
    resources = [parse_resource(doc, where) for doc in docs]
    names = [r.name for r in resources]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise DiscoveryError(f"{where}: kube_cluster {sorted(dupes)[0]!r} is defined twice")
    return resources


def load_resource_file(path: str | os.PathLike[str]) -> list[KubeClusterResource]:
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise DiscoveryError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_resources(text, str(path))


@dataclass(frozen=True, slots=True)
class LoadedCluster:
    """A usable cluster plus what the service needs to keep it up to date."""

    cluster: Cluster
    dynamic_labels: tuple[DynamicLabelSpec, ...] = ()


def load_clusters_from_file(path: str | os.PathLike[str]) -> tuple[list[LoadedCluster], list[str]]:
    """Resources of one file → clusters. A broken file → ``([], [error])``; a resource whose kubeconfig
    cannot be used is skipped with an error naming it, the other resources of the file still load."""
    try:
        resources = load_resource_file(path)
    except DiscoveryError as exc:
        return [], [str(exc)]
    loaded, errors = [], []
    for resource in resources:
        try:
            loaded.append(LoadedCluster(resource.to_cluster(str(path)), resource.dynamic_labels))
        except DiscoveryError as exc:
            errors.append(str(exc))
    return loaded, errors


class ClustersDirScanner:
    """Polls a directory of kube_cluster files by (mtime, size, inode); re-parses only changed files.

    ``scan()`` returns True when the set of clusters changed. A file that turns bad keeps its last good
    clusters (and reports the error); a deleted file drops its clusters.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._stamps: dict[str, tuple[int, int, int]] = {}
        self.by_file: dict[str, list[LoadedCluster]] = {}
        self.errors: dict[str, list[str]] = {}

    def files(self) -> dict[str, tuple[int, int, int]]:
        out: dict[str, tuple[int, int, int]] = {}
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return out
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(FILE_SUFFIXES):
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            if entry.is_file():
                out[entry.path] = (st.st_mtime_ns, st.st_size, st.st_ino)
        return out

    def scan(self) -> bool:
        current = self.files()
        changed = False
        for path in list(self._stamps):
            if path not in current:
                del self._stamps[path]
                self.errors.pop(path, None)
                if self.by_file.pop(path, None):
                    changed = True
        for path, stamp in current.items():
            if self._stamps.get(path) == stamp:
                continue
            self._stamps[path] = stamp
            loaded, errors = load_clusters_from_file(path)
            for error in errors:
                log.error("%s", error)
            if errors:
                self.errors[path] = errors
            else:
                self.errors.pop(path, None)
            if not loaded and errors and path in self.by_file:
                continue  # the whole file is broken: keep its last good clusters
            if [(lc.cluster, lc.dynamic_labels) for lc in self.by_file.get(path, [])] != [
                (lc.cluster, lc.dynamic_labels) for lc in loaded
            ]:
                changed = True
            self.by_file[path] = loaded
        return changed

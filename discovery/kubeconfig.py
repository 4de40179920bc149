"""Kubeconfig files → clusters.

Each context becomes a cluster. Its name (``KubeconfigFile``, from a ``kubernetes_service.kubeconfig_files``
entry): the context's name (``name_from: context``, the default) or its cluster entry's name
(``name_from: cluster``), shortened when a tool gave it a known shape — an EKS ARN → the EKS cluster's name,
``gke_PROJECT_LOCATION_NAME`` → ``NAME``, ``user@cluster`` → ``cluster`` — and made valid otherwise
(``cluster_name_from``); or an explicit name per context, or one ``name`` for a single-context file. The
original context name is kept as label ``kubegate.dev/context``. Two contexts that map to one name: the
first is served, the second is refused with a message naming both contexts and files. Supported per
context:

- cluster: ``server`` (https), ``certificate-authority-data`` / ``certificate-authority`` (a path,
  relative to the kubeconfig's directory), ``tls-server-name``, ``insecure-skip-tls-verify`` (allowed,
  logged as a warning naming the cluster);
- user: ``client-certificate-data``/``client-key-data`` or ``client-certificate``/``client-key`` files,
  ``token``, ``tokenFile`` (re-read when it changes), and ``exec`` plugins.
- labels: a context extension named ``kubegate.dev/labels`` whose ``extension`` is a map of labels
  (kubeconfig ``NamedExtension``), plus any labels the caller passes for the whole file.

Exec plugins (decision): kubegate RUNS them, as kubectl would — ``client.authentication.k8s.io/v1`` or
``v1beta1`` only, without a shell, non-interactively (``interactiveMode: Always`` is refused, stdin is
closed), with a timeout, the ``ExecCredential`` cached until its ``expirationTimestamp``. A plugin we
cannot run — unsupported ``apiVersion``, a command that is not found or not executable, an interactive
plugin — is refused when the kubeconfig is loaded, with an error naming the cluster and the file; the
other contexts of the file still load. Also refused with a clear error: ``auth-provider``,
``username``/``password``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from discovery.credentials import EXEC_API_VERSIONS, ExecCredentials, FileCredentials
from discovery.errors import DiscoveryError
from discovery.model import Cluster, CredentialsProvider, StaticCredentials, UpstreamCredentials
from discovery.store import NAME_RE, validate_cluster_name

log = logging.getLogger(__name__)

LABELS_EXTENSION = "kubegate.dev/labels"
CONTEXT_LABEL = "kubegate.dev/context"  # the original context name of a kubeconfig cluster
ORIGIN_LABEL = "kubegate.dev/origin"


def parse_kubeconfig(text: str | bytes, where: str) -> dict[str, Any]:
    """Parse kubeconfig YAML; raises ``DiscoveryError`` naming ``where`` on bad YAML or shape."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DiscoveryError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise DiscoveryError(f"{where}: a kubeconfig must be a YAML mapping")
    for key in ("clusters", "contexts", "users"):
        value = doc.get(key) or []
        if not isinstance(value, list):
            raise DiscoveryError(f"{where}: '{key}' must be a list")
    return doc


def load_kubeconfig_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise DiscoveryError(f"{path}: cannot read kubeconfig: {exc.strerror or exc}") from None
    return parse_kubeconfig(text, str(path))


@dataclass(frozen=True, slots=True)
class ContextEntry:
    """Per-context settings of a kubeconfig file entry: an explicit cluster name and extra labels."""

    context: str
    name: str | None = None
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KubeconfigFile:
    """One ``kubernetes_service.kubeconfig_files`` entry (a plain path string means all defaults).

    ``name_from``: ``context`` (default) names each cluster after its context, ``cluster`` after the
    context's cluster entry; either way the name is derived (``cluster_name_from``) when the raw one has a
    known tool's shape or is not a valid cluster name. ``name``: a fixed name, for a file with exactly one
    context. ``labels``: on every cluster of the file. ``contexts``: per-context ``name`` / ``labels``.
    """

    path: str
    name_from: str = "context"
    name: str | None = None
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    contexts: tuple[ContextEntry, ...] = ()


def as_kubeconfig_file(entry: object) -> KubeconfigFile:
    """A ``KubeconfigFile`` from a path string, a ``KubeconfigFile`` or any object with its attributes
    (the validated config's entries); ``~`` in the path is expanded."""
    if isinstance(entry, str | os.PathLike):
        return KubeconfigFile(path=os.path.expanduser(os.fspath(entry)))
    contexts = tuple(
        ContextEntry(context=str(c.context), name=getattr(c, "name", None), labels=dict(getattr(c, "labels", {}) or {}))
        for c in getattr(entry, "contexts", ()) or ()
    )
    return KubeconfigFile(
        path=os.path.expanduser(str(entry.path)),  # type: ignore[attr-defined]
        name_from=getattr(entry, "name_from", "context") or "context",
        name=getattr(entry, "name", None),
        labels=dict(getattr(entry, "labels", {}) or {}),
        contexts=contexts,
    )


# Names real tools give contexts and clusters: the part that names the cluster itself.
_EKS_ARN = re.compile(r"^arn:aws[a-z-]*:eks:[^:]*:[^:]*:cluster/(?P<name>[^/]+)$")  # aws eks update-kubeconfig
_GKE = re.compile(r"^gke_[^_]+_[^_]+_(?P<name>.+)$")  # gcloud container clusters get-credentials
_INVALID_RUN = re.compile(r"[^A-Za-z0-9._-]+")


def cluster_name_from(raw: str) -> str:
    """A valid kubegate cluster name for a context (or kubeconfig cluster) name as tools write them.

    ``arn:aws:eks:REGION:ACCOUNT:cluster/NAME`` (EKS) → ``NAME``; ``gke_PROJECT_LOCATION_NAME`` (GKE) →
    ``NAME``; ``USER@CLUSTER`` (kubeadm's ``kubernetes-admin@kubernetes``, minikube, kind…) → ``CLUSTER``;
    any other name is kept when valid, else every run of characters outside ``[A-Za-z0-9._-]`` becomes
    ``-``. Raises ``DiscoveryError`` when nothing usable is left.
    """
    for shape in (_EKS_ARN, _GKE):
        match = shape.match(raw)
        if match and NAME_RE.match(match.group("name")):
            return match.group("name")
    if "@" in raw:
        tail = raw.rsplit("@", 1)[1]
        if tail:
            return cluster_name_from(tail)
    if NAME_RE.match(raw):
        return raw
    cleaned = _INVALID_RUN.sub("-", raw).strip("-._")[:253].rstrip("-._")
    return validate_cluster_name(cleaned, f"the name derived from {raw!r}")


def _context_names(doc: Mapping[str, Any], where: str) -> list[tuple[str, str | None]]:
    """(context name, its cluster entry name) of every named context, in file order."""
    out = []
    for ctx in doc.get("contexts") or []:
        name = ctx.get("name") if isinstance(ctx, dict) else None
        if not isinstance(name, str) or not name:
            raise DiscoveryError(f"{where}: a context without a name")
        body = ctx.get("context")
        cluster = body.get("cluster") if isinstance(body, dict) else None
        out.append((name, cluster if isinstance(cluster, str) else None))
    return out


def collision_message(name: str, first: tuple[str, str], second: tuple[str, str]) -> str:
    """Two contexts (context, file) that would both be cluster ``name``: the first is kept."""
    return (
        f"cluster name {name!r} collides: context {second[0]!r} in {second[1]} and context {first[0]!r} in "
        f"{first[1]} both map to it; serving the one from context {first[0]!r} (give one of them an explicit "
        "name: kubernetes_service.kubeconfig_files[].contexts[].name)"
    )


def kubeconfig_clusters_with_errors(
    path: str | os.PathLike[str] | KubeconfigFile,
    *,
    origin: str = "kubeconfig",
    labels: Mapping[str, str] | None = None,
) -> tuple[list[Cluster], list[str]]:
    """All usable contexts of a kubeconfig file, and one error message per unusable one (and per name
    collision inside the file). Each cluster carries its original context name as label
    ``kubegate.dev/context``."""
    entry = as_kubeconfig_file(path)
    where = entry.path
    doc = load_kubeconfig_file(where)
    base_dir = Path(where).resolve().parent
    overrides = {c.context: c for c in entry.contexts}
    clusters: list[Cluster] = []
    errors: list[str] = []
    try:
        contexts = _context_names(doc, where)
    except DiscoveryError as exc:
        return [], [str(exc)]
    if entry.name is not None and len(contexts) != 1:
        message = (f"{where}: name {entry.name!r} needs a file with exactly one context, this one has "
                   f"{len(contexts)} (name each context under contexts: instead)")
        log.error("%s", message)
        return [], [message]
    for missing in sorted(set(overrides) - {c for c, _ in contexts}):
        errors.append(f"{where}: contexts: no context named {missing!r} in the file")
    taken: dict[str, str] = {}
    for context_name, cluster_entry in contexts:
        override = overrides.get(context_name)
        try:
            if override is not None and override.name:
                name = validate_cluster_name(override.name, f"{where}: context {context_name!r}")
            elif entry.name is not None:
                name = validate_cluster_name(entry.name, where)
            elif entry.name_from == "cluster":
                if cluster_entry is None:
                    raise DiscoveryError(f"{where}: context {context_name!r} names no cluster")
                name = cluster_name_from(cluster_entry)
            else:
                name = cluster_name_from(context_name)
            if name in taken:
                raise DiscoveryError(collision_message(name, (taken[name], where), (context_name, where)))
            cluster = cluster_from_context(
                doc, context_name, name=name, base_dir=base_dir, where=where, origin=origin
            )
        except DiscoveryError as exc:
            log.error("%s", exc)
            errors.append(str(exc))
            continue
        taken[name] = context_name
        extra = {**(labels or {}), **entry.labels, **cluster.labels, **(override.labels if override else {}),
                 CONTEXT_LABEL: context_name}
        clusters.append(_with_labels(cluster, extra))
    return clusters, errors


def kubeconfig_files_collisions(loaded: list[tuple[str, list[Cluster]]]) -> tuple[list[tuple[str, list[Cluster]]], list[str]]:
    """Across files (in order): drop each cluster whose name an earlier file already gave, with a message
    naming both contexts and both files."""
    owner: dict[str, tuple[str, str]] = {}
    kept: list[tuple[str, list[Cluster]]] = []
    errors: list[str] = []
    for path, clusters in loaded:
        mine = []
        for cluster in clusters:
            context = cluster.labels.get(CONTEXT_LABEL, cluster.name)
            if cluster.name in owner:
                errors.append(collision_message(cluster.name, owner[cluster.name], (context, path)))
                continue
            owner[cluster.name] = (context, path)
            mine.append(cluster)
        kept.append((path, mine))
    return kept, errors


def clusters_from_kubeconfig(
    path: str | os.PathLike[str] | KubeconfigFile,
    *,
    origin: str = "kubeconfig",
    labels: Mapping[str, str] | None = None,
) -> list[Cluster]:
    """Each usable context of the file → a cluster (unusable contexts are logged and skipped)."""
    return kubeconfig_clusters_with_errors(path, origin=origin, labels=labels)[0]


def _with_labels(cluster: Cluster, labels: dict[str, str]) -> Cluster:
    return dataclasses.replace(cluster, labels=labels)


def _named(doc: Mapping[str, Any], key: str, name: str, what: str, where: str) -> dict[str, Any]:
    for item in doc.get(key) or []:
        if isinstance(item, dict) and item.get("name") == name:
            body = item.get(what)
            if not isinstance(body, dict):
                raise DiscoveryError(f"{where}: {what} {name!r} has no '{what}' mapping")
            return body
    raise DiscoveryError(f"{where}: {what} {name!r} not found")


def _b64(value: object, field_name: str, where: str) -> bytes:
    if not isinstance(value, str):
        raise DiscoveryError(f"{where}: {field_name} must be a base64 string")
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise DiscoveryError(f"{where}: {field_name} is not valid base64") from None


def _read_file(path: object, base_dir: Path | None, field_name: str, where: str) -> tuple[str, bytes]:
    if not isinstance(path, str) or not path:
        raise DiscoveryError(f"{where}: {field_name} must be a file path")
    full = Path(os.path.expanduser(path))
    if not full.is_absolute():
        if base_dir is None:
            raise DiscoveryError(f"{where}: {field_name} {path!r} must be an absolute path here")
        full = base_dir / full
    try:
        return str(full), full.read_bytes()
    except OSError as exc:
        raise DiscoveryError(f"{where}: cannot read {field_name} {str(full)!r}: {exc.strerror}") from None


def cluster_from_context(
    doc: Mapping[str, Any],
    context_name: str,
    *,
    name: str,
    base_dir: Path | None,
    where: str,
    origin: str,
    static_labels: Mapping[str, str] | None = None,
    discovery_group: str = "",
    exec_timeout: float = 30.0,
) -> Cluster:
    """Build the cluster ``name`` from one context of a parsed kubeconfig."""
    validate_cluster_name(name, where)
    where = f"{where}: cluster {name!r}"
    context = _named(doc, "contexts", context_name, "context", where)
    cluster_name, user_name = context.get("cluster"), context.get("user")
    if not isinstance(cluster_name, str):
        raise DiscoveryError(f"{where}: context {context_name!r} names no cluster")
    kc = _named(doc, "clusters", cluster_name, "cluster", where)
    server = kc.get("server")
    if not isinstance(server, str) or not server.startswith("https://"):
        raise DiscoveryError(f"{where}: server must be an https:// URL, got {server!r}")
    ca_pem: bytes | None = None
    if kc.get("certificate-authority-data"):
        ca_pem = _b64(kc["certificate-authority-data"], "certificate-authority-data", where)
    elif kc.get("certificate-authority"):
        ca_pem = _read_file(kc["certificate-authority"], base_dir, "certificate-authority", where)[1]
    if ca_pem is not None and b"-----BEGIN CERTIFICATE-----" not in ca_pem:
        raise DiscoveryError(f"{where}: the certificate authority is not PEM")
    insecure = bool(kc.get("insecure-skip-tls-verify"))
    if insecure:
        log.warning("%s: insecure-skip-tls-verify is set: the API server's certificate is NOT verified", where)
    if kc.get("proxy-url"):
        log.warning("%s: proxy-url is not supported; connecting directly", where)
    user: dict[str, Any] = _named(doc, "users", user_name, "user", where) if isinstance(user_name, str) else {}
    credentials = _credentials(user, name, base_dir, where, server, ca_pem, exec_timeout)
    labels: dict[str, str] = {}
    for ext in context.get("extensions") or []:
        if isinstance(ext, dict) and ext.get("name") == LABELS_EXTENSION:
            value = ext.get("extension")
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise DiscoveryError(f"{where}: extension {LABELS_EXTENSION} must be a map of labels")
            labels.update({k: str(v) for k, v in value.items()})
    if static_labels:
        labels = {**labels, **static_labels}
    tls_server_name = kc.get("tls-server-name")
    return Cluster(
        name=name,
        labels=labels,
        server=server.rstrip("/"),
        ca_pem=ca_pem,
        tls_server_name=tls_server_name if isinstance(tls_server_name, str) and tls_server_name else None,
        insecure_skip_tls_verify=insecure,
        credentials=credentials,
        origin=origin,
        discovery_group=discovery_group,
    )


def _credentials(
    user: Mapping[str, Any],
    name: str,
    base_dir: Path | None,
    where: str,
    server: str,
    ca_pem: bytes | None,
    exec_timeout: float,
) -> CredentialsProvider:
    if user.get("auth-provider"):
        raise DiscoveryError(f"{where}: auth-provider plugins are not supported (use exec or a token)")
    if user.get("username") or user.get("password"):
        raise DiscoveryError(f"{where}: basic authentication (username/password) is not supported")
    cert = key = None
    cert_file = key_file = None
    if user.get("client-certificate-data"):
        cert = _b64(user["client-certificate-data"], "client-certificate-data", where)
    elif user.get("client-certificate"):
        cert_file, cert = _read_file(user["client-certificate"], base_dir, "client-certificate", where)
    if user.get("client-key-data"):
        key = _b64(user["client-key-data"], "client-key-data", where)
    elif user.get("client-key"):
        key_file, key = _read_file(user["client-key"], base_dir, "client-key", where)
    if (cert is None) != (key is None):
        raise DiscoveryError(f"{where}: a client certificate needs both the certificate and the key")
    if user.get("exec"):
        return _exec_credentials(user["exec"], name, where, server, ca_pem, cert, key, exec_timeout)
    token = str(user["token"]) if user.get("token") else None
    token_file = None
    if user.get("tokenFile"):
        token_file = _read_file(user["tokenFile"], base_dir, "tokenFile", where)[0]
    if token_file or cert_file or key_file:
        provider = FileCredentials(
            token_file=token_file, cert_file=cert_file, key_file=key_file, cluster=name, static_token=token,
            static_cert_pem=None if cert_file else cert, static_key_pem=None if key_file else key,
        )
        provider.current()  # fail now, naming the cluster, if unreadable
        return provider
    return StaticCredentials(UpstreamCredentials(client_cert_pem=cert, client_key_pem=key, bearer_token=token))


def _exec_credentials(
    spec: object,
    name: str,
    where: str,
    server: str,
    ca_pem: bytes | None,
    cert: bytes | None,
    key: bytes | None,
    timeout: float,
) -> ExecCredentials:
    if not isinstance(spec, dict):
        raise DiscoveryError(f"{where}: exec must be a mapping")
    api_version = spec.get("apiVersion")
    if api_version not in EXEC_API_VERSIONS:
        raise DiscoveryError(
            f"{where}: exec plugin apiVersion {api_version!r} cannot be run "
            f"(supported: {', '.join(EXEC_API_VERSIONS)})"
        )
    command = spec.get("command")
    if not isinstance(command, str) or not command:
        raise DiscoveryError(f"{where}: exec plugin has no command")
    if spec.get("interactiveMode") == "Always":
        raise DiscoveryError(f"{where}: exec plugin {command!r} needs an interactive terminal (interactiveMode: Always)")
    resolved = shutil.which(command)
    if resolved is None:
        raise DiscoveryError(f"{where}: exec plugin command {command!r} not found or not executable")
    args = spec.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise DiscoveryError(f"{where}: exec plugin args must be a list of strings")
    env_items: list[tuple[str, str]] = []
    for item in spec.get("env") or []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise DiscoveryError(f"{where}: exec plugin env entries need a name and a value")
        env_items.append((item["name"], str(item.get("value", ""))))
    cluster_info = None
    if spec.get("provideClusterInfo"):
        cluster_info = {"server": server}
        if ca_pem:
            cluster_info["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    return ExecCredentials(
        command=resolved,
        args=tuple(args),
        env=tuple(env_items),
        api_version=api_version,
        cluster=name,
        cluster_info=cluster_info,
        timeout=timeout,
        static_cert_pem=cert,
        static_key_pem=key,
    )

"""Writing the kubeconfig files kubegate hands to people and bots (DESIGN §4).

Shape (names are the cluster names, so ``kubectl --context <cluster>`` works)::

    apiVersion: v1
    kind: Config
    clusters:   one per cluster:  name: <cluster>, cluster.server: https://<public_addr>/k8s/clusters/<cluster>,
                                  certificate-authority-data: <kubegate CA>  (or certificate-authority: <file>)
    contexts:   one per cluster:  name: <cluster>, context: {cluster: <cluster>, user: <user entry>}
    users:      ONE entry shared by every context: the client certificate (embedded data, file paths, or an
                exec plugin printing an ExecCredential); or, with per-cluster credentials (certificates
                pinned to one cluster each), one entry per context named <user>@<cluster>
    current-context: the requested cluster, else the first cluster in name order

Files are written atomically with mode 0600 (they hold a private key or point at one).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from certs.files import write_atomic

__all__ = [
    "CLUSTER_PATH_PREFIX",
    "EXEC_API_VERSION",
    "EmbeddedCredentials",
    "FileCredentials",
    "ExecCredentials",
    "UserCredentials",
    "proxy_base_url",
    "cluster_server_url",
    "context_name",
    "build_kubeconfig",
    "write_kubeconfig",
    "write_kubeconfig_document",
]

CLUSTER_PATH_PREFIX = "/k8s/clusters/"
EXEC_API_VERSION = "client.authentication.k8s.io/v1"


@dataclass(frozen=True, slots=True)
class EmbeddedCredentials:
    """``client-certificate-data`` / ``client-key-data`` in the file (a person's kubeconfig)."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True, slots=True)
class FileCredentials:
    """``client-certificate`` / ``client-key`` file paths (a bot's kubeconfig: the files get renewed)."""

    cert_file: str
    key_file: str


@dataclass(frozen=True, slots=True)
class ExecCredentials:
    """An exec plugin printing an ``ExecCredential`` (``kubegate bot credentials --dest DIR``)."""

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    install_hint: str = "kubegate is needed to read the bot's certificate: install kubegate"


UserCredentials = EmbeddedCredentials | FileCredentials | ExecCredentials


def proxy_base_url(public_addr: str) -> str:
    """``kubegate.example.com:3026`` → ``https://kubegate.example.com:3026`` (an https URL is kept)."""
    text = public_addr.strip().rstrip("/")
    if not text:
        raise ValueError("the proxy's public address is empty")
    if text.startswith("https://"):
        return text
    if "://" in text:
        raise ValueError(f"the proxy is reached over https only, got {public_addr!r}")
    return f"https://{text}"


def cluster_server_url(base_url: str, cluster: str) -> str:
    """``https://<public_addr>/k8s/clusters/<cluster>`` (the name percent-encoded if it needs to be)."""
    return proxy_base_url(base_url) + CLUSTER_PATH_PREFIX + quote(cluster, safe="")


def context_name(cluster: str) -> str:
    """The kubeconfig context (and cluster entry) name for a kubegate cluster: the cluster name itself."""
    return cluster


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _user_entry(credentials: UserCredentials) -> dict[str, Any]:
    if isinstance(credentials, EmbeddedCredentials):
        return {
            "client-certificate-data": _b64(credentials.cert_pem),
            "client-key-data": _b64(credentials.key_pem),
        }
    if isinstance(credentials, FileCredentials):
        return {"client-certificate": credentials.cert_file, "client-key": credentials.key_file}
    exec_entry: dict[str, Any] = {
        "apiVersion": EXEC_API_VERSION,
        "command": credentials.command,
        "args": list(credentials.args),
        "interactiveMode": "Never",
        "provideClusterInfo": False,
        "installHint": credentials.install_hint,
    }
    if credentials.env:
        exec_entry["env"] = [{"name": k, "value": v} for k, v in credentials.env.items()]
    return {"exec": exec_entry}


def build_kubeconfig(
    server_url: str,
    clusters: Sequence[str],
    credentials: UserCredentials | Mapping[str, UserCredentials],
    *,
    ca_pem: bytes | None = None,
    ca_file: str | None = None,
    user_name: str = "kubegate",
    current: str | None = None,
) -> dict[str, Any]:
    """The kubeconfig document (a dict ready for YAML). Exactly one of ``ca_pem`` / ``ca_file``.

    ``credentials``: one for every context (one ``users`` entry named ``user_name``), or one per cluster
    (pinned certificates, ``kubegate kubeconfig --pin``: a ``users`` entry ``<user_name>@<cluster>`` each).
    """
    if (ca_pem is None) == (ca_file is None):
        raise ValueError("give exactly one of ca_pem (embedded) or ca_file (path)")
    names = sorted(dict.fromkeys(clusters))
    if any(not name for name in names):
        raise ValueError("cluster names must be non-empty")
    if current is not None and current not in names:
        raise ValueError(
            f"current context {current!r} is not one of the clusters: {', '.join(names) or 'none'}"
        )
    ca_entry = (
        {"certificate-authority-data": _b64(ca_pem)}
        if ca_pem is not None
        else {"certificate-authority": ca_file}
    )
    cluster_entries = [
        {"name": context_name(name), "cluster": {"server": cluster_server_url(server_url, name), **ca_entry}}
        for name in names
    ]
    per_cluster = isinstance(credentials, Mapping)
    if per_cluster and set(credentials) != set(names):  # type: ignore[arg-type]
        raise ValueError("per-cluster credentials must name exactly the clusters")

    def user_of(name: str) -> str:
        return f"{user_name}@{name}" if per_cluster else user_name

    contexts = [
        {"name": context_name(name), "context": {"cluster": context_name(name), "user": user_of(name)}}
        for name in names
    ]
    if isinstance(credentials, Mapping):
        users = [{"name": user_of(name), "user": _user_entry(credentials[name])} for name in names]
    else:
        users = [{"name": user_name, "user": _user_entry(credentials)}]
    chosen = current if current is not None else (names[0] if names else "")
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": cluster_entries,
        "contexts": contexts,
        "current-context": context_name(chosen) if chosen else "",
        "users": users,
    }


def write_kubeconfig_document(path: str | os.PathLike[str], document: Mapping[str, Any]) -> Path:
    """Write a kubeconfig document atomically, mode 0600."""
    text = yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=False)
    return write_atomic(path, text, 0o600)


def write_kubeconfig(
    path: str | os.PathLike[str],
    server_url: str,
    clusters: Sequence[str],
    ca_pem: bytes,
    cert_pem: bytes,
    key_pem: bytes,
    current: str | None = None,
    *,
    user_name: str = "kubegate",
) -> Path:
    """A kubeconfig with embedded CA, certificate and key: one context per cluster, all sharing one user."""
    document = build_kubeconfig(
        server_url,
        clusters,
        EmbeddedCredentials(cert_pem, key_pem),
        ca_pem=ca_pem,
        user_name=user_name,
        current=current,
    )
    return write_kubeconfig_document(path, document)

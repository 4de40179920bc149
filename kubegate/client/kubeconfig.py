"""``kubegate kube login``: add or update kubegate's entries in the person's kubeconfig, never touching
anyone else's. The file is ``$KUBECONFIG`` (its first path) or ``~/.kube/config``.

Per cluster: a cluster entry and a context named ``<proxy host>-<cluster>``; one user entry per proxy,
``kubegate-<proxy host>``, an exec credential plugin (``kubegate kube credentials --proxy HOST:PORT``)
that hands kubectl the certificate from ``~/.kubegate`` — so a new ``kubegate login`` takes effect
without rewriting the kubeconfig. ``interactiveMode: IfAvailable``: when the certificate has expired and
kubectl runs in a terminal, the plugin signs in again.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from certs.files import write_atomic
from certs.kubeconfig import cluster_server_url
from kubegate.client.api import split_proxy
from kubegate.client.profile import HOME_ENV

# v1beta1: kubectl before 1.22 (e.g. 1.20) knows no other; newer ones still accept it. The plugin answers
# in whatever version kubectl announces (KUBERNETES_EXEC_INFO).
EXEC_API_VERSION = "client.authentication.k8s.io/v1beta1"

__all__ = ["kubeconfig_path", "merge_contexts", "context_for", "user_entry_name", "exec_command"]


def kubeconfig_path() -> Path:
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), None)
    return Path(first) if first else Path.home() / ".kube" / "config"


def context_for(proxy: str, cluster: str) -> str:
    return f"{split_proxy(proxy)[0]}-{cluster}"


def user_entry_name(proxy: str) -> str:
    return f"kubegate-{split_proxy(proxy)[0]}"


def exec_command() -> tuple[str, list[str]]:
    script = Path(sys.executable).parent / "kubegate"
    if script.is_file() and os.access(script, os.X_OK):
        return str(script), []
    return sys.executable, ["-m", "kubegate"]


def _replace(entries: list[dict[str, Any]], entry: dict[str, Any]) -> None:
    for i, existing in enumerate(entries):
        if isinstance(existing, dict) and existing.get("name") == entry["name"]:
            entries[i] = entry
            return
    entries.append(entry)


def merge_contexts(path: Path, proxy: str, clusters: Sequence[str], ca_pem: bytes | None,
                   current: str | None) -> list[str]:
    """Add/update the contexts for ``clusters`` in ``path``; returns the context names. ``ca_pem`` None:
    kubectl verifies the proxy with the system's CAs."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        document = {}
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not a kubeconfig (not a YAML mapping)")
    document.setdefault("apiVersion", "v1")
    document.setdefault("kind", "Config")
    for key in ("clusters", "contexts", "users"):
        if not isinstance(document.get(key), list):
            document[key] = []
    command, prefix = exec_command()
    user = user_entry_name(proxy)
    exec_entry: dict[str, Any] = {
        "apiVersion": EXEC_API_VERSION,
        "command": command,
        "args": [*prefix, "kube", "credentials", "--proxy", proxy],
        "interactiveMode": "IfAvailable",
        "provideClusterInfo": False,
        "installHint": "kubectl needs kubegate to sign you in: install kubegate and run kubegate login",
    }
    if os.environ.get(HOME_ENV):
        exec_entry["env"] = [{"name": HOME_ENV, "value": os.environ[HOME_ENV]}]
    _replace(document["users"], {"name": user, "user": {"exec": exec_entry}})
    names = []
    for cluster in clusters:
        name = context_for(proxy, cluster)
        names.append(name)
        entry: dict[str, Any] = {"server": cluster_server_url(proxy, cluster)}
        if ca_pem is not None:
            entry["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
        _replace(document["clusters"], {"name": name, "cluster": entry})
        _replace(document["contexts"], {"name": name, "context": {"cluster": name, "user": user}})
    if current is not None:
        document["current-context"] = context_for(proxy, current)
    write_atomic(path, yaml.safe_dump(document, sort_keys=False, default_flow_style=False), 0o600)
    return names

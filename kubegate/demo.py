"""The embedded default: everything ``kubegate demo`` (and the benchmarks) set up around a sandbox.

``prepare_demo_state(state_dir, upstream_kubeconfig, ...)`` writes, inside ``state_dir``:

    ca/                    the kubegate CA (created on first use) and the proxy's serving certificate
    roles/demo-admin.yaml  everything, as kubernetes group system:masters
    roles/viewer.yaml      get/list/watch everything except secrets, as group kubegate:viewers
                           (bound to the cluster's ``view`` ClusterRole by ``viewer_binding()``)
    clusters.kubeconfig    the upstream credentials: one context named ``cluster_name``
    kubegate.yaml          the config ``kubegate start -c`` reads (loopback ports, this state dir)
    demo.kubeconfig        the demo user's kubeconfig: the cluster behind the proxy, embedded cert
    demo.pem / demo-key.pem  the same client certificate as files (for the benchmark clients)

Everything is plain files, so a worker process (or ``kubegate start``) reads it like a real deployment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import yaml

DEMO_ROLES = {
    "demo-admin.yaml": """\
kind: role
version: v8
metadata:
  name: demo-admin
spec:
  options:
    max_session_ttl: 8h
  allow:
    kubernetes_labels:
      '*': '*'
    kubernetes_resources:
      - {kind: '*', api_group: '*', namespace: '*', name: '*', verbs: ['*']}
    kubernetes_groups: [system:masters]
""",
    "viewer.yaml": """\
kind: role
version: v8
metadata:
  name: viewer
spec:
  allow:
    kubernetes_labels:
      '*': '*'
    kubernetes_resources:
      - {kind: '*', api_group: '*', namespace: '*', name: '*', verbs: [get, list, watch]}
    kubernetes_groups: ['kubegate:viewers']
  deny:
    kubernetes_resources:
      - {kind: secrets, api_group: '', namespace: '*', name: '*', verbs: ['*']}
""",
}


VIEWERS_GROUP = "kubegate:viewers"


def viewer_binding() -> dict:
    """A ClusterRoleBinding of the cluster's built-in ``view`` ClusterRole to the group the ``viewer``
    role impersonates (the demo puts it into the sandbox so the cluster's own RBAC agrees)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "kubegate-viewers"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": VIEWERS_GROUP}],
    }


@dataclass(frozen=True)
class DemoState:
    state_dir: Path
    config_path: Path
    kubeconfig_path: Path
    roles_dir: Path
    ca_file: Path
    cert_file: Path
    key_file: Path
    cluster_name: str
    proxy_port: int
    metrics_port: int

    @property
    def proxy_url(self) -> str:
        return f"https://127.0.0.1:{self.proxy_port}"


def single_context_kubeconfig(upstream_kubeconfig: str | os.PathLike[str], name: str) -> dict:
    """The upstream kubeconfig with its current context renamed to ``name`` (only that context kept)."""
    doc = yaml.safe_load(Path(upstream_kubeconfig).read_text())
    current = doc.get("current-context") or doc["contexts"][0]["name"]
    ctx = next(c for c in doc["contexts"] if c["name"] == current)
    cluster = next(c for c in doc["clusters"] if c["name"] == ctx["context"]["cluster"])
    user = next(u for u in doc["users"] if u["name"] == ctx["context"]["user"])
    base = Path(upstream_kubeconfig).resolve().parent
    for entry, keys in ((cluster["cluster"], ("certificate-authority",)),
                        (user["user"], ("client-certificate", "client-key", "tokenFile"))):
        for key in keys:
            if key in entry and not os.path.isabs(entry[key]):
                entry[key] = str(base / entry[key])
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster["cluster"]}],
        "users": [{"name": name, "user": user["user"]}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }


def prepare_demo_state(
    state_dir: str | os.PathLike[str],
    upstream_kubeconfig: str | os.PathLike[str],
    *,
    proxy_port: int,
    metrics_port: int,
    cluster_name: str = "sandbox",
    user: str = "demo",
    roles: tuple[str, ...] = ("demo-admin",),
    workers: int = 1,
    log_level: str = "info",
    ttl: timedelta = timedelta(hours=8),
    extra_config: dict | None = None,
) -> DemoState:
    from certs.ca import CertificateAuthority, server_hosts
    from certs.files import write_atomic
    from certs.kubeconfig import write_kubeconfig

    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    roles_dir = state / "roles"
    roles_dir.mkdir(exist_ok=True)
    for name, text in DEMO_ROLES.items():
        (roles_dir / name).write_text(text)

    upstream = state / "clusters.kubeconfig"
    write_atomic(upstream, yaml.safe_dump(single_context_kubeconfig(upstream_kubeconfig, cluster_name)), 0o600)

    public = f"127.0.0.1:{proxy_port}"
    config: dict = {
        "version": "v1",
        "state_dir": str(state),
        "proxy": {"listen": public, "public_addr": public, "workers": workers,
                  "limits": {"shutdown_grace": "5s"}},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        "auth": {"roles_dir": str(roles_dir)},
        "kubernetes_service": {"kubeconfig_files": [str(upstream)]},
        "audit": {"log_file": str(state / "audit.log")},
        "log": {"level": log_level, "format": "json"},
    }
    config = deep_merge(config, extra_config or {})
    config_path = state / "kubegate.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    ca, _ = CertificateAuthority.load_or_create(state / "ca")
    ca.ensure_server_certificate(server_hosts([public]))
    issued = ca.issue_user_certificate(user, list(roles), ttl)
    assert issued.key_pem is not None
    cert_file = write_atomic(state / f"{user}.pem", issued.cert_pem, 0o644)
    key_file = write_atomic(state / f"{user}-key.pem", issued.key_pem, 0o600)
    kubeconfig = write_kubeconfig(state / f"{user}.kubeconfig", f"https://{public}", [cluster_name],
                                  ca.cert_pem, issued.cert_pem, issued.key_pem, current=cluster_name)
    return DemoState(
        state_dir=state, config_path=config_path, kubeconfig_path=Path(kubeconfig), roles_dir=roles_dir,
        ca_file=Path(ca.cert_path), cert_file=Path(cert_file), key_file=Path(key_file),
        cluster_name=cluster_name, proxy_port=proxy_port, metrics_port=metrics_port,
    )


def deep_merge(base: dict, over: dict) -> dict:
    """``base`` with ``over`` laid on top, mappings merged key by key (``over`` wins)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# Keys of a user's config that ``kubegate demo -c`` does not take: the demo owns them.
DEMO_OWNED = {"state_dir": None, "proxy": {"listen": None, "public_addr": None, "workers": None},
              "metrics": {"listen": None}, "auth": None, "kubernetes_service": None, "version": None}


def without_owned(doc: dict, owned: dict = DEMO_OWNED) -> dict:
    """``doc`` minus the keys the demo sets itself (``owned``: None = the whole key)."""
    out = {}
    for key, value in doc.items():
        if key in owned and owned[key] is None:
            continue
        if key in owned and isinstance(value, dict):
            value = without_owned(value, owned[key])
        out[key] = value
    return out


_HANDED_OUT: set[int] = set()  # ports free_port gave in this process (not given twice)
_BELOW_EPHEMERAL = 10_000  # free_port's ports are drawn from here up to the kernel's ephemeral range


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for config files that must name a port before binding).

    Drawn at random below the kernel's ephemeral range (``net.ipv4.ip_local_port_range``), where neither
    another process's outgoing connection nor its ``bind(0)`` takes it between this check and the bind
    that follows, and never the same twice in this process; a port from ``bind(0)`` when none is found."""
    import random
    import socket

    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(64 if low - _BELOW_EPHEMERAL > 1000 else 0):
        port = random.randrange(_BELOW_EPHEMERAL, low)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    _HANDED_OUT.add(port)
    return port

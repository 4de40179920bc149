"""The files under examples/ load: the config validates, the roles parse, the kube_cluster parses."""

from __future__ import annotations

from pathlib import Path

from discovery.kube_cluster import load_clusters_from_file
from kubegate.config import load_config
from rbac.roles import load_roles_dir

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_example_config_is_valid():
    cfg = load_config(str(EXAMPLES / "kubegate.yaml"))
    assert cfg.proxy.workers == 2
    assert cfg.auth.roles_dir == str(EXAMPLES / "roles")
    assert cfg.kubernetes_service.clusters_dir == str(EXAMPLES / "clusters")
    assert cfg.proxy.limits.write_high_water == 1024 * 1024
    assert [(c.name, c.type) for c in cfg.auth.connectors] == [("corp", "oidc"), ("github", "github")]


def test_example_roles_load():
    roles = load_roles_dir(EXAMPLES / "roles")
    assert sorted(roles.names()) == ["admin", "dev-access", "viewer"]
    assert roles.get("admin").max_session_ttl == 8 * 3600


def test_example_kube_cluster_loads():
    loaded, errors = load_clusters_from_file(EXAMPLES / "clusters" / "staging.yaml")
    assert errors == []
    [entry] = loaded
    assert entry.cluster.name == "staging"
    assert entry.cluster.labels["env"] == "staging"

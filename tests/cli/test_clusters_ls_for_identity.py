"""`kubegate clusters ls --user U --roles R` lists exactly the served clusters U's roles can see (issue 4)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from kubegate.cli import main as kubegate

KUBECONFIG = yaml.safe_dump({
    "apiVersion": "v1", "kind": "Config",
    "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.1:6443"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    "current-context": "c",
})


def kube_cluster(name: str, labels: dict[str, str]) -> dict:
    return {"kind": "kube_cluster", "version": "v3", "metadata": {"name": name, "labels": labels},
            "spec": {"kubeconfig": base64.b64encode(KUBECONFIG.encode()).decode()}}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    clusters = tmp_path / "clusters.d"
    clusters.mkdir()
    for name, labels in {"dev-1": {"env": "dev"}, "prod-1": {"env": "prod"},
                         "lab-1": {"env": "lab"}}.items():
        (clusters / f"{name}.yaml").write_text(yaml.safe_dump(kube_cluster(name, labels)))
    roles = tmp_path / "roles"
    roles.mkdir()
    (roles / "dev.yaml").write_text(yaml.safe_dump({
        "kind": "role", "version": "v8", "metadata": {"name": "dev"},
        "spec": {"allow": {"kubernetes_labels": {"env": ["dev", "lab"]}}}}))
    (roles / "ops.yaml").write_text(yaml.safe_dump({
        "kind": "role", "version": "v8", "metadata": {"name": "ops"},
        "spec": {"allow": {"kubernetes_labels": {"env": "{{external.envs}}"}}}}))
    cfg = tmp_path / "kubegate.yaml"
    cfg.write_text(yaml.safe_dump({
        "version": "v1", "state_dir": str(tmp_path / "state"), "auth": {"roles_dir": str(roles)},
        "kubernetes_service": {"clusters_dir": str(clusters),
                               "resources": [{"labels": {"env": ["dev", "prod"]}}]}}))
    return cfg


def listed(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    capsys.readouterr()
    assert kubegate(["clusters", "ls", "-o", "json", *args]) == 0
    return [row["name"] for row in json.loads(capsys.readouterr().out)["clusters"]]


def test_without_an_identity_every_cluster_is_listed(config: Path, capsys) -> None:
    assert listed(capsys, "-c", str(config)) == ["dev-1", "lab-1", "prod-1"]


def test_a_user_sees_only_served_clusters_their_roles_allow(config: Path, capsys) -> None:
    # lab-1 matches the dev role but this proxy does not serve it (resources select dev and prod only).
    assert listed(capsys, "-c", str(config), "--user", "alice", "--roles", "dev") == ["dev-1"]


def test_trait_templates_in_labels_are_expanded_from_the_given_traits(config: Path, capsys) -> None:
    assert listed(capsys, "-c", str(config), "--user", "bob", "--roles", "ops", "--traits", "envs=prod") == ["prod-1"]


def test_a_user_without_roles_is_refused_with_a_reason(config: Path, capsys) -> None:
    assert kubegate(["clusters", "ls", "-c", str(config), "--user", "alice"]) == 1
    assert "--roles" in capsys.readouterr().err

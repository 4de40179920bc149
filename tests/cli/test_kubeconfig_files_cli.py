"""Kubeconfig files as real tools write them, through the real CLI (`.venv/bin/kubegate`, a subprocess).

Context names from kubeadm (`kubernetes-admin@kubernetes`), `aws eks update-kubeconfig`
(`arn:aws:eks:REGION:ACCOUNT:cluster/NAME`) and gcloud (`gke_PROJECT_LOCATION_NAME`) are all served,
under a derived cluster name, with the original kept as label `kubegate.dev/context`; per-file and
per-context names and labels come from kubegate.yaml; collisions are reported naming both contexts and
both files, by `config check` and by `clusters ls`. No API server is contacted by these commands, so the
servers are unreachable placeholder addresses.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBEGATE = str(ROOT / ".venv" / "bin" / "kubegate")
EKS_PROD = "arn:aws:eks:us-east-1:111122223333:cluster/prod"
EKS_EU_PROD = "arn:aws:eks:eu-west-1:111122223333:cluster/prod"
KUBEADM = "kubernetes-admin@kubernetes"
GKE = "gke_my-project_us-central1-a_web"


def kubeconfig(contexts: dict[str, str]) -> str:
    """A kubeconfig whose contexts (name → kubeconfig cluster entry name) each have their own cluster
    entry and token user, as the tools write them."""
    doc: dict = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []}
    for i, (context, cluster) in enumerate(contexts.items()):
        doc["clusters"].append({"name": cluster, "cluster": {"server": f"https://192.0.2.{i + 1}:6443"}})
        doc["users"].append({"name": f"user-{i}", "user": {"token": f"token-{i}"}})
        doc["contexts"].append({"name": context, "context": {"cluster": cluster, "user": f"user-{i}"}})
    doc["current-context"] = next(iter(contexts))
    return yaml.safe_dump(doc)


def kubegate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KUBEGATE, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def write_config(tmp_path: Path, files: list) -> Path:
    config = tmp_path / "kubegate.yaml"
    config.write_text(yaml.safe_dump({
        "version": "v1", "state_dir": "./state", "auth": {"roles_dir": str(ROOT / "examples" / "roles")},
        "kubernetes_service": {"kubeconfig_files": files},
    }))
    return config


def init_ca(tmp_path: Path) -> None:
    init = kubegate("ca", "init", "-c", "kubegate.yaml", cwd=tmp_path)
    assert init.returncode == 0, init.stderr


def clusters_ls(tmp_path: Path) -> dict:
    listed = kubegate("clusters", "ls", "-c", "kubegate.yaml", "-o", "json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


def test_contexts_named_by_kubeadm_eks_and_gcloud_are_all_served_with_labels_from_kubegate_yaml(tmp_path):
    (tmp_path / "admin.conf").write_text(kubeconfig({KUBEADM: "kubernetes"}))
    (tmp_path / "cloud.yaml").write_text(kubeconfig({EKS_PROD: EKS_PROD, GKE: GKE}))
    write_config(tmp_path, [
        "./admin.conf",  # a plain string entry keeps working
        {"path": "./cloud.yaml", "labels": {"env": "dev"},
         "contexts": [{"context": GKE, "labels": {"team": "web"}}]},
    ])
    check = kubegate("config", "check", "--skip-ports", "-c", "kubegate.yaml", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    printed = yaml.safe_load(check.stdout)["kubernetes_service"]["kubeconfig_files"]
    assert printed[1]["labels"] == {"env": "dev"} and printed[1]["contexts"][0]["context"] == GKE

    rows = {row["name"]: row for row in clusters_ls(tmp_path)["clusters"]}
    assert sorted(rows) == ["kubernetes", "prod", "web"]
    assert rows["kubernetes"]["labels"] == {"kubegate.dev/context": KUBEADM}
    assert rows["prod"]["labels"] == {"env": "dev", "kubegate.dev/context": EKS_PROD}
    assert rows["web"]["labels"] == {"env": "dev", "kubegate.dev/context": GKE, "team": "web"}

    # dev-access sees clusters labelled env=dev: the two cloud ones, by their derived names
    init_ca(tmp_path)
    made = kubegate("kubeconfig", "-c", "kubegate.yaml", "--user", "alice", "--roles", "dev-access",
                    "--out", "alice.kubeconfig", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    document = yaml.safe_load((tmp_path / "alice.kubeconfig").read_text())
    assert [c["name"] for c in document["contexts"]] == ["prod", "web"]
    servers = [c["cluster"]["server"] for c in document["clusters"]]
    assert all(s.endswith(("/k8s/clusters/prod", "/k8s/clusters/web")) for s in servers)


def test_a_file_whose_only_context_is_user_at_cluster_gives_a_kubeconfig(tmp_path):
    (tmp_path / "admin.conf").write_text(kubeconfig({KUBEADM: "kubernetes"}))
    write_config(tmp_path, ["./admin.conf"])
    init_ca(tmp_path)
    made = kubegate("kubeconfig", "-c", "kubegate.yaml", "--user", "bob", "--roles", "viewer", "--out", "-",
                    cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert [c["name"] for c in yaml.safe_load(made.stdout)["contexts"]] == ["kubernetes"]


def test_explicit_names_and_name_from_cluster(tmp_path):
    (tmp_path / "one.conf").write_text(kubeconfig({KUBEADM: "kubernetes"}))
    (tmp_path / "two.conf").write_text(kubeconfig({"ctx-a": "cluster-a", "ctx-b": EKS_EU_PROD}))
    (tmp_path / "three.conf").write_text(kubeconfig({EKS_PROD: EKS_PROD, "x@y": "y"}))
    write_config(tmp_path, [
        {"path": "./one.conf", "name": "lab"},
        {"path": "./two.conf", "name_from": "cluster"},
        {"path": "./three.conf", "contexts": [{"context": EKS_PROD, "name": "us-prod"},
                                              {"context": "x@y", "name": "why", "labels": {"env": "dev"}}]},
    ])
    rows = {row["name"]: row["labels"] for row in clusters_ls(tmp_path)["clusters"]}
    assert rows == {
        "lab": {"kubegate.dev/context": KUBEADM},
        "cluster-a": {"kubegate.dev/context": "ctx-a"},
        "prod": {"kubegate.dev/context": "ctx-b"},
        "us-prod": {"kubegate.dev/context": EKS_PROD},
        "why": {"env": "dev", "kubegate.dev/context": "x@y"},
    }


def test_collisions_name_both_contexts_and_both_files(tmp_path):
    (tmp_path / "us.yaml").write_text(kubeconfig({EKS_PROD: EKS_PROD}))
    (tmp_path / "eu.yaml").write_text(kubeconfig({EKS_EU_PROD: EKS_EU_PROD, "gke_p_europe-west1_prod": "g"}))
    write_config(tmp_path, ["./us.yaml", "./eu.yaml"])
    check = kubegate("config", "check", "--skip-ports", "-c", "kubegate.yaml", cwd=tmp_path)
    assert check.returncode == 1
    problems = check.stderr.strip().splitlines()
    assert len(problems) == 2, check.stderr
    inside = next(p for p in problems if "gke_p_europe-west1_prod" in p)
    across = next(p for p in problems if "gke_p" not in p)
    # inside eu.yaml: the GKE context collides with the EKS one before it
    assert f"context {EKS_EU_PROD!r} in {tmp_path / 'eu.yaml'}" in inside
    # across files: eu.yaml's EKS context collides with us.yaml's (the first file wins)
    assert f"context {EKS_EU_PROD!r} in {tmp_path / 'eu.yaml'}" in across
    assert f"context {EKS_PROD!r} in {tmp_path / 'us.yaml'}" in across
    assert "cluster name 'prod' collides" in across and "contexts[].name" in across

    listed = clusters_ls(tmp_path)
    assert [row["labels"]["kubegate.dev/context"] for row in listed["clusters"]] == [EKS_PROD]
    assert len(listed["errors"]) == 2


def test_bad_entries_are_config_errors_naming_the_key(tmp_path):
    (tmp_path / "two.conf").write_text(kubeconfig({"a": "a", "b": "b"}))
    write_config(tmp_path, [{"path": "./two.conf", "name": "bad name!"}, {"labels": {"env": "dev"}}])
    check = kubegate("config", "check", "--skip-ports", "-c", "kubegate.yaml", cwd=tmp_path)
    assert check.returncode == 1
    assert 'kubernetes_service.kubeconfig_files[0].name: "bad name!" is not a valid cluster name' in check.stderr
    assert "kubernetes_service.kubeconfig_files[1].path: must be set" in check.stderr

    write_config(tmp_path, [{"path": "./two.conf", "name_from": "region"}, 7])
    check = kubegate("config", "check", "--skip-ports", "-c", "kubegate.yaml", cwd=tmp_path)
    assert check.returncode == 1
    assert 'kubernetes_service.kubeconfig_files[0].name_from: "region" is not one of: context, cluster' in check.stderr
    assert "kubernetes_service.kubeconfig_files[1]: 7 is not a path (string) or a mapping" in check.stderr

    write_config(tmp_path, [{"path": "./two.conf", "name": "only-one"}])
    check = kubegate("config", "check", "--skip-ports", "-c", "kubegate.yaml", cwd=tmp_path)
    assert check.returncode == 1
    assert "name 'only-one' needs a file with exactly one context, this one has 2" in check.stderr

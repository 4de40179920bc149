"""Kubeconfig files kubegate writes, checked with the real kubectl and the kubernetes Python client."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from certs.ca import CertificateAuthority
from certs.kubeconfig import (
    ExecCredentials,
    FileCredentials,
    build_kubeconfig,
    cluster_server_url,
    proxy_base_url,
    write_kubeconfig,
    write_kubeconfig_document,
)


def run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_server_urls() -> None:
    assert proxy_base_url("kubegate.example.com:3026") == "https://kubegate.example.com:3026"
    assert proxy_base_url("https://kubegate.example.com:3026/") == "https://kubegate.example.com:3026"
    assert (
        cluster_server_url("kubegate.example.com:3026", "prod")
        == "https://kubegate.example.com:3026/k8s/clusters/prod"
    )
    assert cluster_server_url("h:1", "a/b c") == "https://h:1/k8s/clusters/a%2Fb%20c"
    with pytest.raises(ValueError, match="https only"):
        proxy_base_url("http://h:1")


def test_embedded_kubeconfig_loads_in_kubectl(
    ca: CertificateAuthority, tmp_path: Path, kubectl_new: str
) -> None:
    issued = ca.issue_user_certificate("alice", ["viewer"], timedelta(hours=1))
    path = write_kubeconfig(
        tmp_path / "kc" / "alice.yaml",
        "kubegate.example.com:3026",
        ["prod", "dev", "staging"],
        ca.cert_pem,
        issued.cert_pem,
        issued.key_pem or b"",
        current="staging",
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    view = json.loads(run(kubectl_new, "config", "view", "--raw", "-o", "json", "--kubeconfig", str(path)))
    assert view["current-context"] == "staging"
    servers = {c["name"]: c["cluster"]["server"] for c in view["clusters"]}
    assert servers == {
        name: f"https://kubegate.example.com:3026/k8s/clusters/{name}" for name in ("dev", "prod", "staging")
    }
    assert {c["context"]["user"] for c in view["contexts"]} == {"kubegate"}  # one shared certificate
    assert len(view["users"]) == 1
    user = view["users"][0]["user"]
    assert base64.b64decode(user["client-certificate-data"]) == issued.cert_pem
    assert base64.b64decode(view["clusters"][0]["cluster"]["certificate-authority-data"]) == ca.cert_pem
    contexts = run(kubectl_new, "config", "get-contexts", "-o", "name", "--kubeconfig", str(path)).split()
    assert contexts == ["dev", "prod", "staging"]
    assert run(kubectl_new, "config", "current-context", "--kubeconfig", str(path)).strip() == "staging"


def test_current_context_defaults_to_first_cluster_and_must_exist(ca: CertificateAuthority) -> None:
    issued = ca.issue_user_certificate("alice", ["viewer"], timedelta(hours=1))
    from certs.kubeconfig import EmbeddedCredentials

    creds = EmbeddedCredentials(issued.cert_pem, issued.key_pem or b"")
    doc = build_kubeconfig("h:1", ["b", "a", "b"], creds, ca_pem=ca.cert_pem)
    assert doc["current-context"] == "a"
    assert [c["name"] for c in doc["contexts"]] == ["a", "b"]
    with pytest.raises(ValueError, match="not one of the clusters"):
        build_kubeconfig("h:1", ["a"], creds, ca_pem=ca.cert_pem, current="zzz")
    assert build_kubeconfig("h:1", [], creds, ca_pem=ca.cert_pem)["current-context"] == ""


def test_kubectl_reaches_an_mtls_server_with_the_written_kubeconfig(
    ca: CertificateAuthority, tmp_path: Path, kubectl_new: str, mtls_server
) -> None:
    issued = ca.issue_user_certificate(
        "alice", ["viewer"], timedelta(hours=1), traits={"kubernetes_groups": ["g"]}
    )
    path = write_kubeconfig(
        tmp_path / "alice.yaml",
        f"127.0.0.1:{mtls_server.port}",
        ["dev", "prod"],
        ca.cert_pem,
        issued.cert_pem,
        issued.key_pem or b"",
    )
    out = run(kubectl_new, "--kubeconfig", str(path), "--context", "prod", "get", "--raw", "/version")
    assert json.loads(out)["gitVersion"] == "v1.37.0-kubegate-test"
    assert mtls_server.paths == ["/k8s/clusters/prod/version"]
    assert mtls_server.identities[0].user == "alice"
    assert mtls_server.identities[0].traits == {"kubernetes_groups": ("g",)}


def test_kubernetes_python_client_loads_and_uses_it(
    ca: CertificateAuthority, tmp_path: Path, mtls_server
) -> None:
    issued = ca.issue_user_certificate("alice", ["viewer"], timedelta(hours=1))
    path = write_kubeconfig(
        tmp_path / "alice.yaml",
        f"127.0.0.1:{mtls_server.port}",
        ["dev"],
        ca.cert_pem,
        issued.cert_pem,
        issued.key_pem or b"",
    )
    configuration = k8s_client.Configuration()
    k8s_config.load_kube_config(config_file=str(path), context="dev", client_configuration=configuration)
    assert configuration.host == f"https://127.0.0.1:{mtls_server.port}/k8s/clusters/dev"
    assert Path(configuration.cert_file).read_bytes() == issued.cert_pem
    with k8s_client.ApiClient(configuration) as api:
        version = k8s_client.VersionApi(api).get_code()
    assert version.git_version == "v1.37.0-kubegate-test"
    assert mtls_server.identities[-1].user == "alice"


def test_file_and_exec_variants_are_valid_for_kubectl(
    ca: CertificateAuthority, tmp_path: Path, kubectl_new: str
) -> None:
    files = build_kubeconfig(
        "h:1", ["c"], FileCredentials("/d/tls.crt", "/d/tls.key"), ca_file="/d/ca.crt", user_name="bot-ci"
    )
    write_kubeconfig_document(tmp_path / "files.yaml", files)
    view = json.loads(
        run(kubectl_new, "config", "view", "-o", "json", "--kubeconfig", str(tmp_path / "files.yaml"))
    )
    assert view["users"][0]["user"] == {"client-certificate": "/d/tls.crt", "client-key": "/d/tls.key"}
    assert view["clusters"][0]["cluster"]["certificate-authority"] == "/d/ca.crt"

    exec_doc = build_kubeconfig(
        "h:1",
        ["c"],
        ExecCredentials("/usr/bin/kubegate", ("bot", "credentials", "--dest", "/d")),
        ca_pem=ca.cert_pem,
    )
    write_kubeconfig_document(tmp_path / "exec.yaml", exec_doc)
    view = json.loads(
        run(kubectl_new, "config", "view", "-o", "json", "--kubeconfig", str(tmp_path / "exec.yaml"))
    )
    exec_entry = view["users"][0]["user"]["exec"]
    assert exec_entry["apiVersion"] == "client.authentication.k8s.io/v1"
    assert exec_entry["interactiveMode"] == "Never"
    assert exec_entry["args"] == ["bot", "credentials", "--dest", "/d"]
    assert yaml.safe_load((tmp_path / "exec.yaml").read_text())["kind"] == "Config"

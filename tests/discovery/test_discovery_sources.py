"""Cluster sources: kubeconfig files, kube_cluster resources (files and directory) and dynamic labels.

Bad input always yields an error naming the file and/or the cluster, and never stops the other clusters.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sys
import time
from pathlib import Path

import pytest
import yaml

from discovery.credentials import ExecCredentials, FileCredentials
from discovery.dynamic_labels import DynamicLabelRunner, DynamicLabelSpec, parse_duration, run_label_command
from discovery.errors import DiscoveryError
from discovery.kube_cluster import (
    ClustersDirScanner,
    KubeClusterResource,
    load_clusters_from_file,
    parse_resources,
)
from discovery.kubeconfig import cluster_name_from, kubeconfig_clusters_with_errors

CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
CA_DATA = base64.b64encode(CA_PEM).decode()


def kubeconfig(contexts: dict[str, dict], current: str | None = None) -> dict:
    """contexts: name -> {"server":..., "cluster": {...extra}, "user": {...}, "labels": {...}}"""
    doc = {"apiVersion": "v1", "kind": "Config", "clusters": [], "contexts": [], "users": []}
    for name, c in contexts.items():
        doc["clusters"].append({"name": f"{name}-c", "cluster": {
            "server": c.get("server", f"https://{name}.example:6443"), "certificate-authority-data": CA_DATA,
            **c.get("cluster", {})}})
        doc["users"].append({"name": f"{name}-u", "user": c.get("user", {"token": f"tok-{name}"})})
        ctx = {"cluster": f"{name}-c", "user": f"{name}-u"}
        if "labels" in c:
            ctx["extensions"] = [{"name": "kubegate.dev/labels", "extension": c["labels"]}]
        doc["contexts"].append({"name": name, "context": ctx})
    if current:
        doc["current-context"] = current
    return doc


def write_yaml(path: Path, doc: object) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def creds(cluster):
    return asyncio.run(cluster.credentials.get())


# ---- kubeconfig files ------------------------------------------------------------------------------


def test_each_context_becomes_a_cluster_named_after_it_with_labels_from_the_context(tmp_path):
    path = write_yaml(tmp_path / "kc", kubeconfig({
        "prod": {"labels": {"env": "prod"}},
        "dev": {"cluster": {"tls-server-name": "api.dev"}, "user": {
            "client-certificate-data": base64.b64encode(b"CERT").decode(),
            "client-key-data": base64.b64encode(b"KEY").decode()}},
    }))
    clusters, errors = kubeconfig_clusters_with_errors(path)
    assert errors == []
    by_name = {c.name: c for c in clusters}
    assert by_name["prod"].labels == {"env": "prod", "kubegate.dev/context": "prod"}
    assert by_name["prod"].server == "https://prod.example:6443"
    assert by_name["prod"].ca_pem == CA_PEM
    assert by_name["prod"].origin == "kubeconfig"
    assert creds(by_name["prod"]).bearer_token == "tok-prod"
    assert by_name["dev"].tls_server_name == "api.dev"
    assert (creds(by_name["dev"]).client_cert_pem, creds(by_name["dev"]).client_key_pem) == (b"CERT", b"KEY")


def test_files_relative_to_the_kubeconfig_and_token_file_reread_on_change(tmp_path):
    (tmp_path / "ca.pem").write_bytes(CA_PEM)
    (tmp_path / "token").write_text("first\n")
    path = write_yaml(tmp_path / "kc", kubeconfig({"a": {
        "cluster": {"certificate-authority-data": None, "certificate-authority": "ca.pem"},
        "user": {"tokenFile": "token"}}}))
    [cluster] = kubeconfig_clusters_with_errors(path)[0]
    assert cluster.ca_pem == CA_PEM
    provider = cluster.credentials
    assert isinstance(provider, FileCredentials)
    provider.recheck_interval = 0
    assert provider.current().bearer_token == "first"
    (tmp_path / "token").write_text("second-longer\n")
    assert provider.current().bearer_token == "second-longer"


def test_insecure_skip_tls_verify_is_allowed_with_a_warning_naming_the_cluster(tmp_path, caplog):
    path = write_yaml(tmp_path / "kc", kubeconfig({"lab": {"cluster": {"insecure-skip-tls-verify": True}}}))
    with caplog.at_level(logging.WARNING):
        [cluster] = kubeconfig_clusters_with_errors(path)[0]
    assert cluster.insecure_skip_tls_verify
    assert "'lab'" in caplog.text and "insecure-skip-tls-verify" in caplog.text


EXEC_PLUGIN = """#!{python}
import json, os, sys
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
assert info["spec"]["interactive"] is False
count = os.path.join(os.path.dirname(sys.argv[0]), "runs")
with open(count, "a") as f:
    f.write("x")
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {{"token": "exec-" + os.environ["WHO"] + "-" + sys.argv[1],
                             "expirationTimestamp": "2999-01-01T00:00:00Z"}}}}))
"""


def test_an_exec_plugin_is_run_without_a_shell_and_its_credential_cached(tmp_path):
    plugin = tmp_path / "plugin"
    plugin.write_text(EXEC_PLUGIN.format(python=sys.executable))
    plugin.chmod(0o755)
    path = write_yaml(tmp_path / "kc", kubeconfig({"eks": {"user": {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin), "args": ["arg1"],
        "env": [{"name": "WHO", "value": "me"}], "interactiveMode": "Never"}}}}))
    [cluster] = kubeconfig_clusters_with_errors(path)[0]
    assert isinstance(cluster.credentials, ExecCredentials)
    first = creds(cluster)
    assert first.bearer_token == "exec-me-arg1"
    assert first.expires_at > time.time()
    assert creds(cluster) is first
    assert (tmp_path / "runs").read_text() == "x"  # ran once


@pytest.mark.parametrize(
    ("exec_spec", "message"),
    [
        ({"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "true"}, "apiVersion"),
        ({"apiVersion": "client.authentication.k8s.io/v1", "command": "no-such-plugin-kubegate"}, "not found"),
        ({"apiVersion": "client.authentication.k8s.io/v1", "command": "true", "interactiveMode": "Always"},
         "interactive"),
    ],
    ids=["old-api", "missing-command", "interactive"],
)
def test_an_exec_plugin_we_cannot_run_is_a_clear_error_and_other_contexts_load(tmp_path, exec_spec, message):
    path = write_yaml(tmp_path / "kc", kubeconfig({"broken": {"user": {"exec": exec_spec}}, "fine": {}}))
    clusters, errors = kubeconfig_clusters_with_errors(path)
    assert [c.name for c in clusters] == ["fine"]
    assert len(errors) == 1 and "'broken'" in errors[0] and str(path) in errors[0] and message in errors[0]


def test_a_failing_exec_plugin_names_the_cluster_when_credentials_are_asked_for(tmp_path):
    path = write_yaml(tmp_path / "kc", kubeconfig({"x": {"user": {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": "false"}}}}))
    [cluster] = kubeconfig_clusters_with_errors(path)[0]
    with pytest.raises(DiscoveryError, match=r"cluster 'x'.*exited with status 1"):
        creds(cluster)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"server": "http://plain:80"}, "https"),
        ({"user": {"auth-provider": {"name": "gcp"}}}, "auth-provider"),
        ({"user": {"username": "a", "password": "b"}}, "basic"),
        ({"cluster": {"certificate-authority-data": "%%%"}}, "base64"),
        ({"user": {"client-certificate-data": base64.b64encode(b"C").decode()}}, "both"),
    ],
)
def test_unusable_contexts_are_reported_by_name(tmp_path, change, message):
    path = write_yaml(tmp_path / "kc", kubeconfig({"bad": change, "good": {}}))
    clusters, errors = kubeconfig_clusters_with_errors(path)
    assert [c.name for c in clusters] == ["good"]
    assert "'bad'" in errors[0] and message in errors[0]


def test_a_kubeconfig_that_is_not_yaml_names_the_file(tmp_path):
    path = tmp_path / "kc"
    path.write_text("clusters: [\n")
    with pytest.raises(DiscoveryError, match=f"{path}: not valid YAML"):
        kubeconfig_clusters_with_errors(path)


# ---- kube_cluster resources ------------------------------------------------------------------------


def resource(name: str, labels: dict | None = None, dynamic: dict | None = None, kubeconfig_b64: str | None = None,
             context: str = "ctx") -> dict:
    kc = kubeconfig({context: {}}, current=context)
    spec = {"kubeconfig": kubeconfig_b64 if kubeconfig_b64 is not None
            else base64.b64encode(yaml.safe_dump(kc).encode()).decode()}
    if dynamic:
        spec["dynamic_labels"] = dynamic
    return {"kind": "kube_cluster", "version": "v3", "metadata": {"name": name, "labels": labels or {}},
            "spec": spec}


def test_a_kube_cluster_resource_becomes_a_cluster_with_its_name_and_labels(tmp_path):
    text = yaml.safe_dump_all([resource("east", {"env": "prod"},
                                        {"arch": {"command": ["uname", "-m"], "period": "1h30m"}}),
                               resource("west")])
    [east, west] = parse_resources(text, "f.yaml")
    assert east.dynamic_labels == (DynamicLabelSpec("arch", ("uname", "-m"), 5400.0),)
    cluster = east.to_cluster("f.yaml")
    assert (cluster.name, cluster.labels, cluster.origin) == ("east", {"env": "prod"}, "kube_cluster")
    assert cluster.server == "https://ctx.example:6443"
    assert creds(cluster).bearer_token == "tok-ctx"
    # a record round-trips to the same resource
    assert KubeClusterResource.from_record(east.to_record(), "x") == east


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("kind: kube_cluster\nmetadata: {name: [\n", "not valid YAML"),
        (yaml.safe_dump(resource("c1", kubeconfig_b64="not base64 at all!")), "'c1': spec.kubeconfig is not valid base64"),
        (yaml.safe_dump({**resource("c2"), "kind": "node"}), "kind must be 'kube_cluster'"),
        (yaml.safe_dump(resource("bad name!")), "invalid cluster name"),
        (yaml.safe_dump(resource("c3", dynamic={"x": {"command": "uname -m"}})), "no shell"),
        (yaml.safe_dump_all([resource("d"), resource("d")]), "defined twice"),
    ],
    ids=["broken-yaml", "non-base64", "wrong-kind", "bad-name", "shell-string", "duplicate"],
)
def test_bad_kube_cluster_files_are_clear_errors_naming_file_and_cluster(tmp_path, doc, message):
    path = tmp_path / "bad.yaml"
    path.write_text(doc)
    loaded, errors = load_clusters_from_file(path)
    assert loaded == []
    assert str(path) in errors[0] and message in errors[0]


def test_a_resource_whose_kubeconfig_has_an_exec_plugin_we_cannot_run(tmp_path):
    kc = kubeconfig({"ctx": {"user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                                                "command": "/nonexistent/aws-iam-authenticator"}}}}, current="ctx")
    bad = resource("eks-prod", kubeconfig_b64=base64.b64encode(yaml.safe_dump(kc).encode()).decode())
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump_all([bad, resource("ok")]))
    loaded, errors = load_clusters_from_file(path)
    assert [lc.cluster.name for lc in loaded] == ["ok"]
    assert "cluster 'eks-prod'" in errors[0] and "not found" in errors[0] and str(path) in errors[0]


def test_the_directory_scanner_follows_files_and_keeps_the_last_good_definition(tmp_path):
    scanner = ClustersDirScanner(tmp_path)
    assert scanner.scan() is False
    write_yaml(tmp_path / "a.yaml", resource("a", {"v": "1"}))
    (tmp_path / "broken.yaml").write_text("::: not yaml [")
    (tmp_path / "notes.txt").write_text("ignored")
    assert scanner.scan() is True
    names = lambda: sorted(lc.cluster.name for loaded in scanner.by_file.values() for lc in loaded)  # noqa: E731
    assert names() == ["a"]
    assert "broken.yaml" in scanner.errors[str(tmp_path / "broken.yaml")][0]
    assert scanner.scan() is False  # nothing changed: nothing re-parsed
    (tmp_path / "a.yaml").write_text("{{{")  # turns bad: keeps the last good clusters
    assert scanner.scan() is False and names() == ["a"]
    write_yaml(tmp_path / "a.yaml", resource("a", {"v": "2"}))
    assert scanner.scan() is True
    [[lc]] = [v for v in scanner.by_file.values() if v]
    assert lc.cluster.labels == {"v": "2"}
    os.unlink(tmp_path / "a.yaml")
    assert scanner.scan() is True and names() == []


# ---- dynamic labels --------------------------------------------------------------------------------


def test_parse_duration():
    assert parse_duration("1h") == 3600 and parse_duration("1m30s") == 90 and parse_duration(5) == 5
    with pytest.raises(DiscoveryError):
        parse_duration("soon")


def test_a_label_command_runs_without_a_shell_and_its_trimmed_stdout_is_the_value():
    value, error = asyncio.run(run_label_command(("echo", "  x86_64 $HOME  "), 5))
    assert (value, error) == ("x86_64 $HOME", None)  # no shell: $HOME stays literal


def test_a_failing_label_command_gets_the_documented_error_value():
    value, error = asyncio.run(run_label_command((sys.executable, "-c", "print('partial'); raise SystemExit(3)"), 5))
    assert error == "exit status 3" and value == "exit status 3 output: partial"
    value, error = asyncio.run(run_label_command(("/no/such/command",), 5))
    assert value.startswith("cannot start '/no/such/command'") and value.endswith(" output: ")


def test_a_hanging_label_command_is_killed_at_the_timeout_and_other_labels_keep_updating(tmp_path, caplog):
    updates: dict[str, dict[str, str]] = {}
    done = {}

    async def main():
        got_both = asyncio.Event()

        def on_update(cluster, labels):
            updates[cluster] = labels
            if "hang" in updates and "quick" in updates:
                got_both.set()

        runner = DynamicLabelRunner(on_update, timeout=0.3)
        runner.set("hang", (DynamicLabelSpec("slow", ("sleep", "30"), 3600),))
        runner.set("quick", (DynamicLabelSpec("arch", ("echo", "arm64"), 3600),))
        started = time.monotonic()
        await asyncio.wait_for(got_both.wait(), 10)
        done["elapsed"] = time.monotonic() - started
        done["errors"] = dict(runner.errors)
        runner.stop_all()

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert updates["quick"] == {"arch": "arm64"}
    assert updates["hang"] == {"slow": "timed out after 0.3s output: "}
    assert done["errors"] == {("hang", "slow"): "timed out after 0.3s"}
    assert done["elapsed"] < 10
    assert "'hang'" in caplog.text and "sleep" in caplog.text


def test_exec_info_env_is_json(tmp_path):
    # the ExecCredential request passed to plugins is valid JSON with interactive false
    out = tmp_path / "info"
    plugin = tmp_path / "p"
    plugin.write_text(f"#!{sys.executable}\nimport os\nopen({str(out)!r}, 'w').write(os.environ['KUBERNETES_EXEC_INFO'])\n"
                      "print('{\"apiVersion\": \"client.authentication.k8s.io/v1beta1\", \"kind\": \"ExecCredential\","
                      " \"status\": {\"token\": \"t\"}}')\n")
    plugin.chmod(0o755)
    provider = ExecCredentials(command=str(plugin), api_version="client.authentication.k8s.io/v1beta1",
                               cluster_info={"server": "https://x"})
    assert provider.current().bearer_token == "t" and provider.current().expires_at is None
    info = json.loads(out.read_text())
    assert info["kind"] == "ExecCredential" and info["spec"] == {"interactive": False, "cluster": {"server": "https://x"}}


def test_token_file_beats_an_inline_token_and_inline_cert_data_still_applies(tmp_path):
    (tmp_path / "token").write_text("from-file")
    path = write_yaml(tmp_path / "kc", kubeconfig({"a": {"user": {
        "token": "inline", "tokenFile": "token",
        "client-certificate-data": base64.b64encode(b"CERT").decode(),
        "client-key-data": base64.b64encode(b"KEY").decode()}}}))
    [cluster] = kubeconfig_clusters_with_errors(path)[0]
    got = creds(cluster)
    assert (got.bearer_token, got.client_cert_pem, got.client_key_pem) == ("from-file", b"CERT", b"KEY")


def test_a_running_service_reports_a_name_collision_across_files_naming_both_contexts_and_files(tmp_path, caplog):
    from discovery.kubeconfig import KubeconfigFile
    from discovery.registry import ClusterRegistry
    from discovery.service import DiscoveryService

    us = write_yaml(tmp_path / "us.yaml", kubeconfig({"arn:aws:eks:us-east-1:1:cluster/prod": {}}))
    eu = write_yaml(tmp_path / "eu.yaml", kubeconfig({"arn:aws:eks:eu-west-1:1:cluster/prod": {}}))
    registry = ClusterRegistry([{"*": "*"}])
    service = DiscoveryService(registry, store_dir=tmp_path / "store", health=False,
                               kubeconfig_files=[str(us), KubeconfigFile(path=str(eu), labels={"env": "eu"})])
    with caplog.at_level(logging.ERROR):
        asyncio.run(service.sync_local())
    [cluster] = registry.all()
    assert (cluster.name, cluster.labels) == ("prod", {"kubegate.dev/context": "arn:aws:eks:us-east-1:1:cluster/prod"})
    [message] = service.errors[f"kubeconfig:{eu}"]
    assert f"context 'arn:aws:eks:eu-west-1:1:cluster/prod' in {eu}" in message
    assert f"context 'arn:aws:eks:us-east-1:1:cluster/prod' in {us}" in message
    assert message in caplog.text


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("prod", "prod"),
        ("kubernetes-admin@kubernetes", "kubernetes"),  # kubeadm
        ("arn:aws:eks:us-east-1:111122223333:cluster/prod", "prod"),  # aws eks update-kubeconfig
        ("arn:aws-cn:eks:cn-north-1:111122223333:cluster/cn-prod", "cn-prod"),
        ("gke_my-project_us-central1-a_web", "web"),  # gcloud container clusters get-credentials
        ("kind-kind", "kind-kind"),
        ("default/api-crc-testing:6443/kube:admin", "default-api-crc-testing-6443-kube-admin"),  # oc login
        ("ops@arn:aws:eks:eu-west-1:1:cluster/eu", "eu"),
    ],
)
def test_cluster_names_derived_from_context_names_real_tools_write(raw, name):
    assert cluster_name_from(raw) == name


def test_a_context_name_with_nothing_usable_is_refused():
    with pytest.raises(DiscoveryError, match="invalid cluster name"):
        cluster_name_from("@@@")

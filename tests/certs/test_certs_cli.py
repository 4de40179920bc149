"""The certificate commands end to end: `kubegate ca init`, `users issue|lock|unlock|locks ls`,
`kubegate kubeconfig`, `kubegate bot start|credentials` — with real kubectl where a kubeconfig comes out."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from certs.ca import CertificateAuthority
from certs.identity import from_pem
from certs.locks import LockList
from kubegate.cli import main
from rbac.identity import Identity

ROLES = """\
kind: role
version: v8
metadata: {name: dev-access}
spec:
  options: {max_session_ttl: 2h}
  allow:
    kubernetes_labels: {env: dev}
    kubernetes_resources:
      - {kind: pods, api_group: '', namespace: dev, name: '*', verbs: [get, list]}
---
kind: role
version: v8
metadata: {name: viewer}
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources:
      - {kind: '*', api_group: '*', namespace: '*', name: '*', verbs: [get, list, watch]}
  deny:
    kubernetes_labels: {env: secret}
---
kind: role
version: v8
metadata: {name: deployer}
spec:
  allow:
    kubernetes_labels: {team: ci}
    kubernetes_resources:
      - {kind: deployments, api_group: apps, namespace: '*', name: '*', verbs: ['*']}
"""


def kube_cluster(name: str, labels: dict[str, str]) -> dict:
    upstream = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.1:6443"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
        "users": [{"name": "u", "user": {"token": "abc"}}],
    }
    encoded = base64.b64encode(yaml.safe_dump(upstream).encode()).decode()
    return {
        "kind": "kube_cluster",
        "version": "v3",
        "metadata": {"name": name, "labels": labels},
        "spec": {"kubeconfig": encoded},
    }


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A kubegate config with roles and three clusters (dev, prod, ci) in a clusters_dir."""
    (tmp_path / "roles").mkdir()
    (tmp_path / "roles" / "roles.yaml").write_text(ROLES)
    (tmp_path / "clusters").mkdir()
    docs = [
        kube_cluster("dev-1", {"env": "dev"}),
        kube_cluster("prod-1", {"env": "prod"}),
        kube_cluster("ci-1", {"env": "prod", "team": "ci"}),
        kube_cluster("vault", {"env": "secret"}),
    ]
    (tmp_path / "clusters" / "all.yaml").write_text(yaml.safe_dump_all(docs))
    write_config(tmp_path, "gate.example.com:3026")
    return tmp_path


def write_config(site: Path, public_addr: str) -> Path:
    config = {
        "version": "v1",
        "state_dir": "./state",
        "proxy": {"listen": "0.0.0.0:3026", "public_addr": public_addr},
        "auth": {"roles_dir": "./roles"},
        "kubernetes_service": {"clusters_dir": "./clusters", "resources": [{"labels": {"*": "*"}}]},
    }
    path = site / "kubegate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def init(site: Path, capsys) -> CertificateAuthority:
    code, out, _ = run_cli(capsys, "ca", "init", "-c", str(site / "kubegate.yaml"))
    assert code == 0, out
    return CertificateAuthority.load(site / "state" / "ca")


def test_ca_init_is_idempotent_and_prints_paths_and_fingerprint(site: Path, capsys) -> None:
    config = str(site / "kubegate.yaml")
    code, first, _ = run_cli(capsys, "ca", "init", "-c", config)
    assert code == 0
    ca = CertificateAuthority.load(site / "state" / "ca")
    assert ca.fingerprint_sha256 in first and "(created)" in first
    assert stat.S_IMODE((site / "state" / "ca" / "ca-key.pem").stat().st_mode) == 0o600
    server = x509.load_pem_x509_certificate((site / "state" / "ca" / "server.pem").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert "gate.example.com" in names and "localhost" in names
    code, second, _ = run_cli(capsys, "ca", "init", "-c", config)
    assert code == 0 and "already present" in second and "up to date" in second
    assert CertificateAuthority.load(site / "state" / "ca").certificate == ca.certificate
    # a new public address re-issues the serving certificate only
    write_config(site, "kubegate.internal:443")
    code, third, _ = run_cli(capsys, "ca", "init", "-c", config)
    assert code == 0 and "(issued;" in third and "kubegate.internal" in third
    assert CertificateAuthority.load(site / "state" / "ca").certificate == ca.certificate


def test_users_issue_caps_ttl_by_role(site: Path, capsys) -> None:
    ca = init(site, capsys)
    code, out, err = run_cli(
        capsys,
        "users",
        "issue",
        "-c",
        str(site / "kubegate.yaml"),
        "--user",
        "alice",
        "--roles",
        "dev-access,viewer",
        "--ttl",
        "8h",
        "--traits",
        "kubernetes_groups=a,b",
        "--cluster",
        "dev-1",
        "--out",
        str(site / "out"),
    )
    assert code == 0, err
    assert "ttl lowered from 8h to 2h by role 'dev-access'" in err
    cert = x509.load_pem_x509_certificate((site / "out" / "alice.crt").read_bytes())
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == timedelta(hours=2, minutes=1)  # + the one-minute back-dating
    identity = from_pem((site / "out" / "alice.crt").read_bytes())
    assert identity.roles == ("dev-access", "viewer")
    assert identity.traits == {"kubernetes_groups": ("a", "b")}
    assert identity.pinned_cluster == "dev-1"
    assert identity.serial in out
    assert stat.S_IMODE((site / "out" / "alice.key").stat().st_mode) == 0o600
    assert (site / "out" / "ca.pem").read_bytes() == ca.cert_pem


def test_users_issue_without_cap_keeps_requested_ttl(site: Path, capsys) -> None:
    init(site, capsys)
    code, _, err = run_cli(
        capsys,
        "users",
        "issue",
        "-c",
        str(site / "kubegate.yaml"),
        "--user",
        "v",
        "--roles",
        "viewer",
        "--ttl",
        "30m",
        "--out",
        str(site / "out"),
    )
    assert code == 0 and "lowered" not in err
    cert = x509.load_pem_x509_certificate((site / "out" / "v.crt").read_bytes())
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(minutes=31)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--roles", "nope"], "unknown role(s): nope"),
        (["--roles", "viewer", "--traits", "novalue"], "expected NAME=VALUE"),
    ],
)
def test_users_issue_refuses_bad_input(site: Path, capsys, args: list[str], message: str) -> None:
    init(site, capsys)
    code, _, err = run_cli(
        capsys, "users", "issue", "-c", str(site / "kubegate.yaml"), "--user", "bob", *args
    )
    assert code == 1 and message in err


def test_commands_need_an_initialized_ca(site: Path, capsys) -> None:
    code, _, err = run_cli(
        capsys, "users", "issue", "-c", str(site / "kubegate.yaml"), "--user", "a", "--roles", "viewer"
    )
    assert code == 1 and "kubegate ca init" in err


def test_lock_unlock_and_list(site: Path, capsys) -> None:
    config = str(site / "kubegate.yaml")
    alice = Identity(user="alice", roles=("viewer",), serial="abcd")
    locks = LockList(site / "state" / "locks")  # what a running proxy holds
    assert (
        run_cli(capsys, "users", "lock", "-c", config, "alice", "--for", "1h", "--reason", "offboarding")[0]
        == 0
    )
    assert "offboarding" in (locks.is_locked(alice) or "")
    assert (
        run_cli(
            capsys, "users", "lock", "-c", config, "--serial", "AB:CD", "--until", "2099-01-01T00:00:00Z"
        )[0]
        == 0
    )
    code, out, _ = run_cli(capsys, "users", "locks", "ls", "-c", config)
    assert code == 0 and "alice" in out and "abcd" in out and "2099-01-01T00:00:00Z" in out
    code, out, _ = run_cli(capsys, "users", "locks", "ls", "-c", config, "-o", "json")
    assert {entry.get("user") or entry.get("serial") for entry in json.loads(out)} == {"alice", "abcd"}
    assert run_cli(capsys, "users", "unlock", "-c", config, "alice")[0] == 0
    assert locks.is_locked(alice) == "certificate serial abcd is locked until 2099-01-01T00:00:00Z"
    assert run_cli(capsys, "users", "unlock", "-c", config, "--serial", "abcd")[0] == 0
    assert locks.is_locked(alice) is None
    code, _, err = run_cli(capsys, "users", "unlock", "-c", config, "alice")
    assert code == 1 and "not locked" in err
    code, _, err = run_cli(capsys, "users", "lock", "-c", config, "alice", "--until", "2001-01-01T00:00:00Z")
    assert code == 1 and "not in the future" in err


def contexts_of(kubectl: str, path: Path) -> list[str]:
    done = subprocess.run(
        [kubectl, "config", "get-contexts", "-o", "name", "--kubeconfig", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_kubeconfig_lists_only_visible_clusters(site: Path, capsys, kubectl_new: str) -> None:
    init(site, capsys)
    config = str(site / "kubegate.yaml")
    out = site / "alice.kubeconfig"
    code, _, err = run_cli(
        capsys, "kubeconfig", "-c", config, "--user", "alice", "--roles", "dev-access", "--out", str(out)
    )
    assert code == 0, err
    assert contexts_of(kubectl_new, out) == ["dev-1"]
    # viewer sees everything but the denied env=secret cluster
    code, _, err = run_cli(
        capsys,
        "kubeconfig",
        "-c",
        config,
        "--user",
        "v",
        "--roles",
        "viewer",
        "--out",
        str(out),
        "--context",
        "prod-1",
    )
    assert code == 0, err
    assert contexts_of(kubectl_new, out) == ["ci-1", "dev-1", "prod-1"]
    document = yaml.safe_load(out.read_text())
    assert document["current-context"] == "prod-1"
    assert document["clusters"][0]["cluster"]["server"] == "https://gate.example.com:3026/k8s/clusters/ci-1"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    # a pinned certificate sees only its cluster
    code, _, err = run_cli(
        capsys,
        "kubeconfig",
        "-c",
        config,
        "--user",
        "p",
        "--roles",
        "viewer",
        "--cluster",
        "dev-1",
        "--out",
        str(out),
    )
    assert code == 0, err
    assert contexts_of(kubectl_new, out) == ["dev-1"]


def test_kubeconfig_for_an_existing_certificate(site: Path, capsys, kubectl_new: str) -> None:
    init(site, capsys)
    config = str(site / "kubegate.yaml")
    assert (
        run_cli(
            capsys,
            "users",
            "issue",
            "-c",
            config,
            "--user",
            "ci",
            "--roles",
            "deployer",
            "--out",
            str(site / "o"),
        )[0]
        == 0
    )
    out = site / "ci.kubeconfig"
    code, _, err = run_cli(
        capsys,
        "kubeconfig",
        "-c",
        config,
        "--cert",
        str(site / "o" / "ci.crt"),
        "--key",
        str(site / "o" / "ci.key"),
        "--out",
        str(out),
    )
    assert code == 0, err
    assert contexts_of(kubectl_new, out) == ["ci-1"]
    user = yaml.safe_load(out.read_text())["users"][0]["user"]
    assert base64.b64decode(user["client-certificate-data"]) == (site / "o" / "ci.crt").read_bytes()
    # a key that does not belong to the certificate is refused
    assert (
        run_cli(
            capsys,
            "users",
            "issue",
            "-c",
            config,
            "--user",
            "x",
            "--roles",
            "viewer",
            "--out",
            str(site / "o"),
        )[0]
        == 0
    )
    code, _, err = run_cli(
        capsys,
        "kubeconfig",
        "-c",
        config,
        "--cert",
        str(site / "o" / "ci.crt"),
        "--key",
        str(site / "o" / "x.key"),
        "--out",
        str(out),
    )
    assert code == 1 and "is not the private key" in err


def test_kubeconfig_with_no_visible_cluster_is_an_error(site: Path, capsys) -> None:
    init(site, capsys)
    (site / "clusters" / "all.yaml").write_text(yaml.safe_dump(kube_cluster("prod-1", {"env": "prod"})))
    code, _, err = run_cli(
        capsys,
        "kubeconfig",
        "-c",
        str(site / "kubegate.yaml"),
        "--user",
        "a",
        "--roles",
        "dev-access",
        "--out",
        str(site / "k"),
    )
    assert code == 1 and "no cluster is visible" in err


@pytest.fixture
def site_ca_server(site: Path, capsys, request):
    ca = init(site, capsys)
    mtls = request.getfixturevalue("mtls_server_for")(ca)
    write_config(site, f"127.0.0.1:{mtls.port}")
    return mtls


def test_bot_exec_kubeconfig_works_with_kubectl(site: Path, capsys, kubectl_new: str, site_ca_server) -> None:
    config = str(site / "kubegate.yaml")
    dest = site / "bot"
    code, out, err = run_cli(
        capsys,
        "bot",
        "start",
        "-c",
        config,
        "--name",
        "ci",
        "--roles",
        "deployer",
        "--dest",
        str(dest),
        "--once",
    )
    assert code == 0, err
    assert "certificate issued" in out
    kubeconfig_exec = dest / "kubeconfig-exec"
    assert contexts_of(kubectl_new, kubeconfig_exec) == ["ci-1"]
    view = subprocess.run(
        [kubectl_new, "config", "view", "--raw", "-o", "json", "--kubeconfig", str(kubeconfig_exec)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (
        view.returncode == 0
        and json.loads(view.stdout)["users"][0]["user"]["exec"]["interactiveMode"] == "Never"
    )
    for path in (kubeconfig_exec, dest / "kubeconfig"):
        done = subprocess.run(
            [kubectl_new, "--kubeconfig", str(path), "get", "--raw", "/version"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    assert [i.user for i in site_ca_server.identities] == ["bot-ci", "bot-ci"]
    assert {i.kind for i in site_ca_server.identities} == {"bot"}
    assert site_ca_server.paths == ["/k8s/clusters/ci-1/version"] * 2
    # a second --once keeps the certificate (not due yet)
    code, out, _ = run_cli(
        capsys,
        "bot",
        "start",
        "-c",
        config,
        "--name",
        "ci",
        "--roles",
        "deployer",
        "--dest",
        str(dest),
        "--once",
    )
    assert code == 0 and "certificate kept" in out
    # `bot credentials` as kubectl runs it, in its own process
    done = subprocess.run(
        [sys.executable, "-m", "kubegate", "bot", "credentials", "--dest", str(dest)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    credential = json.loads(done.stdout)
    assert credential["kind"] == "ExecCredential"
    assert (
        from_pem(credential["status"]["clientCertificateData"].encode()).serial
        == site_ca_server.identities[0].serial
    )


def test_bot_credentials_without_certificate_fails_clearly(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "bot", "credentials", "--dest", str(tmp_path / "none"))
    assert code == 1 and "no bot certificate" in err


def test_bot_start_runs_until_sigterm_and_a_restart_keeps_the_certificate(site: Path, capsys) -> None:
    import signal

    init(site, capsys)
    command = [
        sys.executable,
        "-m",
        "kubegate",
        "bot",
        "start",
        "-c",
        str(site / "kubegate.yaml"),
        "--name",
        "ci",
        "--roles",
        "deployer",
        "--dest",
        str(site / "bot"),
        "--ttl",
        "1h",
        "--renew",
        "20m",
    ]
    serials = []
    for expected in ("certificate issued", "certificate kept"):
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert process.stdout is not None
            line = process.stdout.readline()  # printed after the directory is fresh
            assert expected in line, (line, process.stderr.read() if process.poll() is not None else "")
            serials.append(line.split("serial ")[1].split(",")[0])
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert serials[0] == serials[1]
    assert from_pem((site / "bot" / "tls.crt").read_bytes()).serial == serials[0]


def test_ca_init_leaves_a_configured_serving_certificate_alone(site: Path, capsys) -> None:
    config = yaml.safe_load((site / "kubegate.yaml").read_text())
    config["proxy"]["tls"] = {"cert_file": str(site / "own.pem"), "key_file": str(site / "own.key")}
    (site / "kubegate.yaml").write_text(yaml.safe_dump(config))
    code, out, _ = run_cli(capsys, "ca", "init", "-c", str(site / "kubegate.yaml"))
    assert code == 0 and "not managed by kubegate" in out
    assert not (site / "state" / "ca" / "server.pem").exists()
    assert (site / "state" / "ca" / "ca.pem").exists()


def test_missing_roles_directory_is_a_clear_error(site: Path, capsys) -> None:
    init(site, capsys)
    (site / "roles" / "roles.yaml").unlink()
    (site / "roles").rmdir()
    code, _, err = run_cli(
        capsys, "users", "issue", "-c", str(site / "kubegate.yaml"), "--user", "a", "--roles", "viewer"
    )
    assert code == 1 and "auth.roles_dir" in err and "does not exist" in err


def test_invalid_config_is_reported_not_raised(tmp_path: Path, capsys) -> None:
    (tmp_path / "bad.yaml").write_text("version: v1\nstate_dirr: x\n")
    code, _, err = run_cli(capsys, "ca", "init", "-c", str(tmp_path / "bad.yaml"))
    assert code == 1 and "state_dirr" in err


def test_bot_start_reports_unusable_destination_and_busy_directory(site: Path, capsys) -> None:
    import fcntl
    import os

    init(site, capsys)
    config = str(site / "kubegate.yaml")
    (site / "a-file").write_text("x")
    code, _, err = run_cli(
        capsys,
        "bot",
        "start",
        "-c",
        config,
        "--name",
        "ci",
        "--roles",
        "deployer",
        "--dest",
        str(site / "a-file"),
        "--once",
    )
    assert code == 1 and "bot ci:" in err
    (site / "busy").mkdir()
    fd = os.open(site / "busy" / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a running `bot start` holds it
        code, _, err = run_cli(
            capsys,
            "bot",
            "start",
            "-c",
            config,
            "--name",
            "ci",
            "--roles",
            "deployer",
            "--dest",
            str(site / "busy"),
            "--once",
        )
    finally:
        os.close(fd)
    assert code == 1 and "another bot is already running" in err
    code, _, err = run_cli(
        capsys,
        "bot",
        "start",
        "-c",
        config,
        "--name",
        "ci",
        "--roles",
        "deployer",
        "--ttl",
        "10m",
        "--renew",
        "10m",
        "--once",
    )
    assert code == 1 and "must be shorter than the certificate ttl" in err

"""kubegate.config: units, ranges, unknown keys, paths, printing; `kubegate config check` as a process."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from kubegate.config import (
    Address,
    ConfigError,
    GiB,
    KiB,
    MiB,
    config_from_mapping,
    config_to_yaml,
    load_config,
)

ROOT = Path(__file__).resolve().parents[2]


def _load(doc: dict, name: str = "kubegate.yaml", base: str = "/etc/kubegate"):
    return config_from_mapping(doc, source_name=name, base_dir=base)


# ---------------------------------------------------------------------------------------------- units

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512B", 512),
        ("1KiB", KiB),
        ("64KiB", 64 * KiB),
        ("64k", 64 * KiB),
        ("1MiB", MiB),
        ("2GiB", 2 * GiB),
        ("10KB", 10_000),
        ("1.5MiB", 3 * MiB // 2),
        (" 4 KiB ", 4 * KiB),
    ],
)
def test_sizes_parse_with_units(text, expected):
    cfg = _load({"proxy": {"limits": {"max_body_bytes": text}}})
    assert cfg.proxy.limits.max_body_bytes == expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("10s", 10.0), ("5m", 300.0), ("8h", 28800.0), ("1d", 86400.0), ("1h30m", 5400.0),
     ("1.5s", 1.5)],
)
def test_durations_parse_with_units(text, seconds):
    cfg = _load({"proxy": {"limits": {"upstream_response_timeout": text}}})
    assert cfg.proxy.limits.upstream_response_timeout == pytest.approx(seconds)


# ------------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"proxy": {"limits": {"header_timeout": "10 parsecs"}}},
         'kubegate.yaml: proxy.limits.header_timeout: "10 parsecs" is not a duration'),
        ({"proxy": {"limits": {"header_timeout": 10}}},
         "kubegate.yaml: proxy.limits.header_timeout: 10 is not a duration: give a unit"),
        ({"proxy": {"limits": {"max_header_bytes": "lots"}}},
         'kubegate.yaml: proxy.limits.max_header_bytes: "lots" is not a size'),
        ({"proxy": {"limits": {"max_header_bytes": 65536}}},
         "kubegate.yaml: proxy.limits.max_header_bytes: 65536 is not a size: give a unit"),
        ({"proxy": {"limits": {"max_header_bytes": "100B"}}},
         "kubegate.yaml: proxy.limits.max_header_bytes: 100B is below the minimum 1KiB"),
        ({"proxy": {"limits": {"idle_timeout": "2d"}}},
         "kubegate.yaml: proxy.limits.idle_timeout: 2d is above the maximum 1d"),
        ({"proxy": {"workers": 0}}, "kubegate.yaml: proxy.workers: 0 is below the minimum 1"),
        ({"proxy": {"workers": "two"}}, 'kubegate.yaml: proxy.workers: "two" is not a whole number'),
        ({"proxy": {"workers": True}}, "kubegate.yaml: proxy.workers: True is not a whole number"),
        ({"proxy": {"listen": "localhost"}}, 'kubegate.yaml: proxy.listen: "localhost" is not an address'),
        ({"proxy": {"listen": "localhost:99999"}}, "kubegate.yaml: proxy.listen: \"localhost:99999\": port"),
        ({"proxy": {"limitz": {}}}, "kubegate.yaml: proxy.limitz: unknown key"),
        ({"proxy": {"limits": {"max_header_byte": "1KiB"}}},
         "kubegate.yaml: proxy.limits.max_header_byte: unknown key"),
        ({"colour": "blue"}, "kubegate.yaml: colour: unknown key"),
        ({"version": "v2"}, 'kubegate.yaml: version: "v2" is not one of: v1'),
        ({"log": {"level": "loud"}}, 'kubegate.yaml: log.level: "loud" is not one of'),
        ({"metrics": {"enabled": "yes please"}}, "kubegate.yaml: metrics.enabled: \"yes please\" is not true"),
        ({"proxy": "fast"}, 'kubegate.yaml: proxy: must be a mapping, not "fast"'),
        ({"proxy": {"tls": {"cert_file": "a.pem"}}},
         "kubegate.yaml: proxy.tls: cert_file and key_file go together"),
        ({"kubernetes_service": {"resources": [{"labels": {"env": 3}}]}},
         "kubegate.yaml: kubernetes_service.resources[0].labels: label env: 3 is not a string"),
        ({"kubernetes_service": {"kubeconfig_files": [1]}},
         "kubegate.yaml: kubernetes_service.kubeconfig_files[0]: 1 is not a path (string) or a mapping"),
        ({"discovery_service": {"aws": [{"types": ["gke"]}]}},
         'kubegate.yaml: discovery_service.aws[0].types: "gke" is not one of: eks'),
        ({"discovery_service": {"azure": [{"regionz": ["*"]}]}},
         "kubegate.yaml: discovery_service.azure[0].regionz: unknown key"),
        ({"discovery_service": {"enabled": True, "aws": [{}]}},
         "kubegate.yaml: discovery_service.discovery_group: must be set"),
        ({"discovery_service": {"poll_interval": "0s"}},
         "kubegate.yaml: discovery_service.poll_interval: 0s is below the minimum 1s"),
        ({"metrics": {"listen": "127.0.0.1:3026"}}, "kubegate.yaml: metrics.listen: port 3026 is also"),
    ],
)
def test_bad_values_are_errors_naming_file_and_key(doc, message):
    with pytest.raises(ConfigError) as info:
        _load(doc)
    assert any(p.startswith(message) for p in info.value.problems), info.value.problems


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        _load({"proxy": {"workers": -1, "limits": {"header_timeout": "soon"}}, "extra": 1})
    assert len(info.value.problems) == 3


# ------------------------------------------------------------------------------------ good configs

def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None)
    assert cfg.version == "v1"
    assert cfg.state_dir == str(tmp_path / "state")
    assert cfg.proxy.listen == Address("0.0.0.0", 3026)
    assert cfg.proxy.public_address == "localhost:3026"
    assert cfg.metrics.listen == Address("127.0.0.1", 3081)
    assert cfg.proxy.limits.max_header_bytes == 64 * KiB
    assert cfg.proxy.limits.header_timeout == 10.0
    assert cfg.proxy.limits.idle_timeout == 90.0
    assert cfg.proxy.limits.max_connections == 20000
    assert cfg.kubernetes_service.resources[0].labels == {"*": "*"}
    assert cfg.discovery_service.enabled is False
    assert cfg.audit_log_file == str(tmp_path / "state" / "audit.log")
    assert cfg.ca_dir == str(tmp_path / "state" / "ca")


def test_design_example_loads_and_relative_paths_follow_the_file(tmp_path):
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    path = conf_dir / "kubegate.yaml"
    path.write_text(textwrap.dedent("""
        version: v1
        state_dir: ./state
        proxy:
          listen: 0.0.0.0:3026
          public_addr: kubegate.example.com:3026
          workers: 2
          tls: {cert_file: tls/cert.pem, key_file: /abs/key.pem}
          limits: {max_header_bytes: 64KiB, header_timeout: 10s, idle_timeout: 90s, max_connections: 20000}
        metrics: {listen: 127.0.0.1:3081}
        auth: {roles_dir: ./roles}
        kubernetes_service:
          kubeconfig_files: [~/.kube/config, kc/prod.yaml]
          clusters_dir: ./clusters
          resources: [{labels: {'*': '*'}}, {labels: {env: [dev, staging]}}]
        discovery_service:
          enabled: true
          discovery_group: prod
          poll_interval: 5m
          aws: [{types: [eks], regions: ['*'], tags: {env: prod}, assume_role_arn: 'arn:aws:iam::1:role/x',
                 external_id: hush}]
          azure: [{types: [aks], subscriptions: ['*'], resource_groups: ['*'], regions: ['*'], tags: {env: prod}}]
        audit: {log_file: ./state/audit.log}
        log: {level: DEBUG, format: text}
    """))
    cfg = load_config(str(path))
    assert cfg.source == str(path)
    assert cfg.state_dir == str(conf_dir / "state")
    assert cfg.auth.roles_dir == str(conf_dir / "roles")
    assert cfg.proxy.tls.cert_file == str(conf_dir / "tls" / "cert.pem")
    assert cfg.proxy.tls.key_file == "/abs/key.pem"
    assert [entry.path for entry in cfg.kubernetes_service.kubeconfig_files] == [
        os.path.expanduser("~/.kube/config"), str(conf_dir / "kc" / "prod.yaml")]
    assert cfg.kubernetes_service.resources[1].labels == {"env": ["dev", "staging"]}
    assert cfg.proxy.workers == 2
    assert cfg.proxy.public_address == "kubegate.example.com:3026"
    assert cfg.discovery_service.poll_interval == 300.0
    assert cfg.discovery_service.aws[0].tags == {"env": "prod"}
    assert cfg.discovery_service.azure[0].types == ("aks",)
    assert cfg.log.level == "debug"
    printed = yaml.safe_load(config_to_yaml(cfg))
    assert printed["discovery_service"]["aws"][0]["external_id"] == "<redacted>"
    assert "hush" not in config_to_yaml(cfg)
    assert printed["proxy"]["limits"]["max_header_bytes"] == "64KiB"
    assert printed["discovery_service"]["poll_interval"] == "5m"


def test_printed_config_loads_back_to_the_same_config(tmp_path):
    cfg = _load({"proxy": {"limits": {"header_timeout": "1500ms", "write_high_water": "256KiB"}},
                 "metrics": {"listen": "[::1]:9000"}}, base=str(tmp_path))
    again = config_from_mapping(yaml.safe_load(config_to_yaml(cfg)), base_dir=str(tmp_path))
    # audit.log_file is printed as the effective path (<state_dir>/audit.log), which loads to the same
    assert dataclasses.replace(again, audit=cfg.audit) == cfg and again.audit_log_file == cfg.audit_log_file
    assert again.metrics.listen == Address("::1", 9000)


def test_empty_file_means_defaults(tmp_path):
    path = tmp_path / "kubegate.yaml"
    path.write_text("")
    assert load_config(str(path)).proxy.workers == 1


def test_missing_file_and_bad_yaml_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("proxy: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML \(line"):
        load_config(str(bad))


# ------------------------------------------------------------------------------- the CLI command

def _kubegate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubegate", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_config_check_prints_effective_config(tmp_path):
    path = tmp_path / "kubegate.yaml"
    path.write_text("proxy:\n  listen: 127.0.0.1:0\n  workers: 3\n  limits: {header_timeout: 1m}\n"
                    "metrics: {listen: 127.0.0.1:0}\n")
    (tmp_path / "roles").mkdir()
    result = _kubegate("config", "check", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["proxy"]["workers"] == 3
    assert printed["proxy"]["limits"]["header_timeout"] == "1m"
    assert printed["state_dir"] == str(tmp_path / "state")
    assert printed["audit"]["log_file"] == str(tmp_path / "state" / "audit.log")  # the path, not null


def test_config_check_reports_errors_and_exits_1(tmp_path):
    path = tmp_path / "kubegate.yaml"
    path.write_text('proxy:\n  limits:\n    header_timeout: "10 parsecs"\n')
    result = _kubegate("config", "check", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert f'{path}: proxy.limits.header_timeout: "10 parsecs" is not a duration' in result.stderr
    assert result.stdout == ""


def test_start_refuses_without_a_roles_directory(tmp_path):
    path = tmp_path / "kubegate.yaml"
    path.write_text("proxy: {listen: '127.0.0.1:0'}\nmetrics: {enabled: false}\nauth: {roles_dir: ./no-roles}\n")
    result = _kubegate("start", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert f"auth.roles_dir: {tmp_path / 'no-roles'} does not exist" in result.stderr


def test_start_with_an_invalid_config_prints_the_errors(tmp_path):
    path = tmp_path / "kubegate.yaml"
    path.write_text("proxy: {workers: many}\n")
    result = _kubegate("start", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert f'{path}: proxy.workers: "many" is not a whole number' in result.stderr


def test_start_with_workers_refuses_a_broken_roles_directory_before_starting_workers(tmp_path):
    roles = tmp_path / "roles"
    roles.mkdir()
    (roles / "bad.yaml").write_text("kind: role\nversion: v8\nmetadata: {name: x}\nspec: {allow: {verbs: 1}}\n")
    path = tmp_path / "kubegate.yaml"
    path.write_text("proxy: {listen: '127.0.0.1:0', workers: 2}\nmetrics: {enabled: false}\n")
    result = _kubegate("start", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot start:" in result.stderr and "auth.roles_dir: role file refused" in result.stderr
    assert "bad.yaml" in result.stderr and not (tmp_path / "state").exists()


def test_the_peer_address_names_this_replica_where_the_public_address_names_them_all():
    """Behind a load balancer every replica has the same ``public_addr``; ``peer_addr`` (where the other
    replicas reach this one: joins of the sessions it holds) defaults to the listen address, a wildcard
    host replaced by this host's name."""
    import socket

    shared = {"version": "v1", "proxy": {"listen": "0.0.0.0:3026", "public_addr": "kubegate.example.com:443"}}
    assert _load(shared).proxy.peer_address == f"{socket.gethostname()}:3026"
    assert _load({**shared, "proxy": {**shared["proxy"], "listen": "10.0.0.5:3026"}}).proxy.peer_address == \
        "10.0.0.5:3026"
    named = _load({**shared, "proxy": {**shared["proxy"], "peer_addr": "kg-2.internal:3026"}})
    assert (named.proxy.peer_address, named.proxy.public_address) == ("kg-2.internal:3026", "kubegate.example.com:443")


def test_the_serving_certificate_names_the_peer_address_too(tmp_path):
    """The other replicas verify this one's serving certificate against the address they reach it at."""
    from cryptography import x509

    from kubegate.app import prepare

    cfg = _load({"version": "v1", "state_dir": str(tmp_path / "state"),
                 "proxy": {"listen": "0.0.0.0:3026", "public_addr": "kubegate.example.com:443",
                           "peer_addr": "kg-2.internal:3026"}})
    tls = prepare(cfg)
    certificate = x509.load_pem_x509_certificate(Path(tls.cert_file).read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"kubegate.example.com", "kg-2.internal"} <= set(names.get_values_for_type(x509.DNSName))

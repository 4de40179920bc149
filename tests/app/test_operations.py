"""Day-one operations, driven through the real `kubegate` CLI and kubectl: config problems reported in one
pass before anything is created, role files refused one by one, messages that say what happened, and the
metrics, logs and audit lines an operator reads (with the shipped Grafana dashboard and alert rules
checked against a live /metrics, and the rules against `promtool`)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from kubegate.demo import free_port, single_context_kubeconfig, viewer_binding

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_ROLES = ROOT / "examples" / "roles"
DASHBOARD = ROOT / "deploy" / "grafana" / "kubegate-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "kubegate-alerts.yaml"
PROMTOOL = ROOT / ".tools" / "bin" / "promtool"
BAD_ROLE = """kind: role
version: v8
metadata: {name: broken}
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources: [{kind: pods, namespace: '*', name: '*', verbs: [get, everything]}]
"""


def _kubegate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "kubegate", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def _wait(predicate, what: str, timeout: float = 30.0):  # noqa: ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


# ------------------------------------------------------------------------------ config and start

def _broken_config(tmp_path: Path, busy_port: int, state_dir: str = "./state", tls: str = "{}") -> Path:
    path = tmp_path / "kubegate.yaml"
    path.write_text(f"""
state_dir: {state_dir}
proxy: {{listen: '127.0.0.1:{busy_port}', tls: {tls}}}
metrics: {{listen: '127.0.0.1:0'}}
auth: {{roles_dir: ./no-such-roles}}
kubernetes_service:
  kubeconfig_files: [./no-such.kubeconfig]
""")
    return path


@contextlib.contextmanager
def _busy_port() -> Iterator[int]:
    """A loopback port some other server listens on for the duration."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        yield busy.getsockname()[1]


def test_config_check_reports_every_path_and_port_problem_in_one_pass(tmp_path):
    (tmp_path / "a-file").write_text("")
    with _busy_port() as port:
        path = _broken_config(tmp_path, port, state_dir="./a-file/state",
                              tls="{cert_file: ./no.crt, key_file: ./no.key}")
        result = _kubegate("config", "check", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert f"{path}: state_dir: {tmp_path / 'a-file' / 'state'} cannot be created: {tmp_path / 'a-file'} is not a directory" in result.stderr
    assert f"{path}: proxy.tls.cert_file: {tmp_path / 'no.crt'} does not exist" in result.stderr
    assert f"{path}: proxy.tls.key_file: {tmp_path / 'no.key'} does not exist" in result.stderr
    assert f"{path}: auth.roles_dir: {tmp_path / 'no-such-roles'} does not exist" in result.stderr
    assert (f"{path}: kubernetes_service.kubeconfig_files[0]: {tmp_path / 'no-such.kubeconfig'} does not exist"
            in result.stderr)
    assert f"{path}: proxy.listen: cannot listen on 127.0.0.1:{port}: the address is already in use" in result.stderr
    assert not (tmp_path / "state").exists()


def test_start_creates_nothing_until_the_config_is_valid(tmp_path):
    with _busy_port() as port:
        path = _broken_config(tmp_path, port)
        result = _kubegate("start", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 1
    for problem in ("auth.roles_dir:", "kubernetes_service.kubeconfig_files[0]:",
                    f"proxy.listen: cannot listen on 127.0.0.1:{port}"):
        assert problem in result.stderr, result.stderr
    assert not (tmp_path / "state").exists(), "start created state (a CA) before the config was valid"


def test_config_check_prints_the_audit_log_path_not_null(tmp_path):
    (tmp_path / "roles").mkdir()
    path = tmp_path / "kubegate.yaml"
    path.write_text("proxy: {listen: '127.0.0.1:0'}\nmetrics: {listen: '127.0.0.1:0'}\n")
    result = _kubegate("config", "check", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["audit"]["log_file"] == str(tmp_path / "state" / "audit.log")


# -------------------------------------------------------------------------------- role commands

def test_role_commands_use_the_good_role_files_and_name_the_bad_one(tmp_path):
    shutil.copytree(EXAMPLE_ROLES, tmp_path / "roles")
    (tmp_path / "roles" / "broken.yaml").write_text(BAD_ROLE)
    assert _kubegate("ca", "init", cwd=tmp_path).returncode == 0
    issued = _kubegate("users", "issue", "--user", "alice", "--roles", "viewer", "--out", "out", cwd=tmp_path)
    assert issued.returncode == 0, issued.stderr
    assert (tmp_path / "out" / "alice.crt").exists()
    assert "role file refused" in issued.stderr and "broken.yaml" in issued.stderr
    assert "spec.allow.kubernetes_resources[0].verbs" in issued.stderr and "'everything'" in issued.stderr
    refused = _kubegate("users", "issue", "--user", "bob", "--roles", "broken", "--out", "out", cwd=tmp_path)
    assert refused.returncode == 1 and "unknown role(s): broken" in refused.stderr
    assert f"broken is in refused file {tmp_path / 'roles' / 'broken.yaml'}" in refused.stderr
    check = _kubegate("config", "check", cwd=tmp_path)  # the defaults: ./roles, ./state
    assert check.returncode == 1 and "auth.roles_dir: role file refused: file" in check.stderr


def test_a_negative_ttl_is_named_as_such(tmp_path):
    result = _kubegate("users", "issue", "--user", "alice", "--roles", "viewer", "--ttl", "-5m", cwd=tmp_path)
    assert result.returncode == 2
    assert "argument --ttl: '-5m': must be a positive duration" in result.stderr
    assert "expected one argument" not in result.stderr


def test_clusters_help_shows_no_rst_markup(tmp_path):
    result = _kubegate("clusters", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "`add`" in result.stdout and "``" not in result.stdout


# ------------------------------------------------------------------------ a running proxy, end to end

def _metric_names(expression_text: str) -> set[str]:
    return set(re.findall(r"\b((?:kubegate|process)_[a-z0-9_]+)\b", expression_text))


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def _alert_expressions() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def _exposed_names(metrics: str) -> tuple[set[str], set[str]]:
    """(metric families announced by # TYPE, sample names with a value)."""
    families = {line.split()[2] for line in metrics.splitlines() if line.startswith("# TYPE ")}
    samples = {re.split(r"[{ ]", line, maxsplit=1)[0] for line in metrics.splitlines()
               if line and not line.startswith("#")}
    return families, samples


def _exists(name: str, families: set[str], samples: set[str]) -> bool:
    if name in samples or name in families:
        return True
    return any(name == f + suffix for f in families for suffix in ("_total", "_bucket", "_sum", "_count"))


def test_alert_rules_parse_with_promtool():
    assert PROMTOOL.exists(), "promtool missing: run scripts/install-tools.sh"
    result = subprocess.run([str(PROMTOOL), "check", "rules", str(ALERTS)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.e2e
def test_a_running_proxy_logs_counts_and_audits_what_operators_need(tmp_path, sandbox_cluster, kubectl_new):
    sandbox_cluster.store.put_object("rbac.authorization.k8s.io", "clusterrolebindings", viewer_binding())
    (tmp_path / "clusters.kubeconfig").write_text(
        yaml.safe_dump(single_context_kubeconfig(sandbox_cluster.admin_kubeconfig, "prod")))
    shutil.copytree(EXAMPLE_ROLES, tmp_path / "roles")
    port, metrics_port = free_port(), free_port()
    (tmp_path / "kubegate.yaml").write_text(f"""
state_dir: ./state
proxy: {{listen: '127.0.0.1:{port}', public_addr: '127.0.0.1:{port}', limits: {{shutdown_grace: 5s}}}}
metrics: {{listen: '127.0.0.1:{metrics_port}'}}
auth: {{roles_dir: ./roles}}
kubernetes_service: {{kubeconfig_files: [./clusters.kubeconfig]}}
""")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = tmp_path / "kubegate.log"
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "kubegate", "start", "-c", "kubegate.yaml"], cwd=tmp_path,
                                env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        def log_lines() -> list[dict]:
            return [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]

        _wait(lambda: proc.poll() is not None or any(r["msg"] == "kubegate serving" for r in log_lines()),
              "the proxy to serve")
        assert proc.poll() is None, log_path.read_text()
        made = _kubegate("kubeconfig", "-c", "kubegate.yaml", "--user", "alice", "--roles", "viewer",
                         "--out", "alice.kubeconfig", cwd=tmp_path)
        assert made.returncode == 0, made.stderr

        def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([kubectl_new, "--kubeconfig", str(tmp_path / "alice.kubeconfig"), *args],
                                  capture_output=True, text=True, timeout=60)

        assert kubectl("get", "pods", "-A").returncode == 0
        # a denial, and the Impersonate-Extra-<key> header named as the client sent it
        assert "forbidden" in kubectl("get", "secrets", "-A").stderr.lower()
        extra = kubectl("get", "pods", "-A", "--as", "alice", "--as-user-extra", "scopes=view")
        assert "(Impersonate-Extra-scopes)" in extra.stderr and "extra-extra" not in extra.stderr.lower()
        # a client speaking plain HTTP to the TLS port: a TLS handshake failure
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                raw.recv(100)
            except OSError:
                pass

        # cluster health as a metric with the cluster's name; no *_created series
        upstream = 'kubegate_upstream_connections{cluster="prod",protocol="http1",state="idle"}'
        metrics = _wait(lambda: (m := _get(metrics_url)) and 'kubegate_cluster_healthy{cluster="prod"} 1.0' in m
                        and upstream in m and m, "kubegate_cluster_healthy and the upstream gauges for prod")
        assert "_created" not in metrics
        assert "process_cpu_seconds_total" in metrics and "process_resident_memory_bytes" in metrics
        assert 'kubegate_upstream_streams{cluster="prod"}' in metrics
        assert "kubegate_role_files_refused 0.0" in metrics and "kubegate_roles_loaded 3.0" in metrics

        # every metric the dashboard and the alert rules name is exposed by this live proxy
        families, samples = _exposed_names(metrics)
        named = _metric_names("\n".join(_dashboard_expressions() + _alert_expressions()))
        assert {"kubegate_requests_total", "kubegate_request_duration_seconds_bucket", "kubegate_open_streams",
                "kubegate_authorization_denials_total", "kubegate_tls_handshake_failures_total",
                "kubegate_cluster_healthy", "kubegate_certificate_expiry_timestamp_seconds"} <= named
        missing = sorted(n for n in named if not _exists(n, families, samples))
        assert not missing, f"named in deploy/ but not in a live /metrics: {missing}"
        metrics = _wait(lambda: (m := _get(metrics_url)) and "kubegate_tls_handshake_failures_total{" in m and m,
                        "the handshake failure to be counted")
        families, samples = _exposed_names(metrics)
        for with_samples in ("kubegate_requests_total", "kubegate_authorization_denials_total",
                             "kubegate_tls_handshake_failures_total", "kubegate_request_duration_seconds_bucket"):
            assert with_samples in samples, with_samples

        # one bad role file: refused at load (logged with file and key, counted); the others still serve
        (tmp_path / "roles" / "broken.yaml").write_text(BAD_ROLE)
        refused = _wait(lambda: [r for r in log_lines() if r["msg"].startswith("role file refused")],
                        "the refusal to be logged")
        assert refused[0]["file"] == str(tmp_path / "roles" / "broken.yaml")
        assert refused[0]["field"] == "spec.allow.kubernetes_resources[0].verbs" and refused[0]["role"] == "broken"
        assert "kubegate_role_files_refused 1.0" in _get(metrics_url)
        assert kubectl("get", "pods", "-A").returncode == 0

        # adding and removing a cluster writes a log line each
        added = _kubegate("clusters", "add", "-c", "kubegate.yaml", "-f", str(ROOT / "examples/clusters/staging.yaml"),
                          cwd=tmp_path)
        assert added.returncode == 0, added.stderr
        _wait(lambda: any(r["msg"] == "cluster added" and r.get("cluster") == "staging" for r in log_lines()),
              "the 'cluster added' log line")
        assert _kubegate("clusters", "rm", "-c", "kubegate.yaml", "staging", cwd=tmp_path).returncode == 0
        _wait(lambda: any(r["msg"] == "cluster removed" and r.get("cluster") == "staging" for r in log_lines()),
              "the 'cluster removed' log line")

        # a locked user is told once, not twice
        assert _kubegate("users", "lock", "-c", "kubegate.yaml", "alice", "--reason", "left the team",
                         cwd=tmp_path).returncode == 0
        locked = _wait(lambda: (r := kubectl("get", "pods", "-A")).returncode != 0 and r.stderr, "the lock")
        assert 'user "alice" is locked: left the team' in locked
        # each message says it once (kubectl may show it twice: as a Warning header and as the error)
        assert all(line.count("locked") <= 1 for line in locked.splitlines()), locked
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, log_path.read_text()
    events = [json.loads(line) for line in (tmp_path / "state" / "audit.log").read_text().splitlines()]
    assert events
    for event in events:  # RFC 3339 with microseconds, UTC, as Kubernetes audit writes its timestamps
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", event["time"]), event["time"]
    first = datetime.fromisoformat(events[0]["time"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - first).total_seconds()) < 600

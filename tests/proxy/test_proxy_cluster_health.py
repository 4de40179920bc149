"""A cluster the health checker marked ``unhealthy`` is answered at once with a 503 Status naming the
cluster and the problem: no upstream connection is tried, nothing hangs. ``unknown`` (not checked yet)
and ``healthy`` clusters are forwarded as usual, and a cluster that recovers works again at once."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

pytestmark = pytest.mark.e2e


def kubectl_env(wire: str) -> dict[str, str]:
    """kubectl's environment for a wire: h2 (its default) or HTTP/1.1 (DISABLE_HTTP2=1)."""
    return dict(os.environ, **({"DISABLE_HTTP2": "1"} if wire == "http1" else {}))


def _unhealthy_count(cluster: str) -> float:
    return REGISTRY.get_sample_value("kubegate_upstream_errors_total", {"cluster": cluster, "kind": "unhealthy"}) or 0.0


def _raw_get(
    px, cert: Path, key: Path, target: str, timeout: float = 30.0, extra: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 GET through the proxy with a client certificate; (status, headers, body)."""
    ctx = ssl.create_default_context(cafile=str(px.ca_pem_path))
    ctx.load_cert_chain(str(cert), str(key))
    ctx.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", px.port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra or 'Connection: close'}\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _sick_cluster(sandbox, px, name: str):
    """A second registry entry for the session's sandbox, so its health can change without touching the
    ``sandbox`` cluster the other tests use."""
    from proxy.testing import cluster_for_sandbox

    registry = px.proxy.clusters
    registry.upsert(cluster_for_sandbox(sandbox, name=name), "test-health")
    return registry


def test_kubectl_gets_a_quick_503_naming_an_unhealthy_cluster_and_works_again_once_healthy(
    sandbox, px, kubectl_new, wire
):
    name = f"sickbay-{wire}"
    registry = _sick_cluster(sandbox, px, name)
    kubeconfig = px.kubeconfig("alice", ["admin"], [name])
    before = _unhealthy_count(name)
    try:
        registry.set_health(name, "unhealthy", "unreachable: connection refused")
        started = time.monotonic()
        result = subprocess.run(
            [kubectl_new, "--kubeconfig", str(kubeconfig), "get", "pods", "-n", "dev", "--request-timeout=20s"],
            capture_output=True, timeout=60, env=kubectl_env(wire),
        )
        elapsed = time.monotonic() - started
        err = result.stderr.decode(errors="replace")
        assert result.returncode != 0
        # The Status is the body; kubectl's discovery reads no Status from an error response, so the message
        # also rides in a Warning header, which kubectl prints.
        assert f'Warning: cluster "{name}" is unhealthy: unreachable: connection refused' in err, err
        assert "ServiceUnavailable" in err, err
        # "quickly": well below kubectl's own 20 s request timeout (it takes ~0.1 s; kubectl retries
        # discovery a few times). The structural proof that nothing was tried upstream is the pool check.
        assert elapsed < 15, elapsed
        assert _unhealthy_count(name) > before
        assert name not in px.stats()["pools"]  # no upstream connection was ever attempted

        registry.set_health(name, "unknown")  # not checked yet: forwarded
        assert "web-1" in _ok(subprocess.run(
            [kubectl_new, "--kubeconfig", str(kubeconfig), "get", "pods", "-n", "dev"],
            capture_output=True, timeout=60, env=kubectl_env(wire),
        ))

        registry.set_health(name, "unhealthy", "tls: certificate expired")
        again = subprocess.run(
            [kubectl_new, "--kubeconfig", str(kubeconfig), "get", "pods", "-n", "dev", "--request-timeout=20s"],
            capture_output=True, timeout=60, env=kubectl_env(wire),
        )
        assert again.returncode != 0 and b"tls: certificate expired" in again.stderr, again.stderr

        registry.set_health(name, "healthy")
        assert "web-1" in _ok(subprocess.run(
            [kubectl_new, "--kubeconfig", str(kubeconfig), "get", "pods", "-n", "dev"],
            capture_output=True, timeout=60, env=kubectl_env(wire),
        ))
    finally:
        registry.remove(name, "test-health")


def _ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode()


def test_an_unhealthy_cluster_that_would_hang_is_answered_at_once_with_a_status(tmp_path, px):
    """The upstream accepts TCP connections and never answers (a hung API server): marked unhealthy, the
    proxy must not even try it. The Status names the cluster and the detail; the request id header is
    there; the refusal is audited with code 503."""
    from discovery.model import Cluster

    silent = socket.create_server(("127.0.0.1", 0))
    name = "hung-cluster"
    registry = px.proxy.clusters
    registry.upsert(
        Cluster(name=name, labels={"env": "test"}, server=f"https://127.0.0.1:{silent.getsockname()[1]}"), "test-health"
    )
    try:
        registry.set_health(name, "unhealthy", "unreachable: timed out after 5s")
        cert, key = px.issue_user("alice", ["admin"])
        started = time.monotonic()
        status, headers, body = _raw_get(px, cert, key, f"/k8s/clusters/{name}/api/v1/namespaces/dev/pods")
        # Without the health check this would wait for the pool's 10 s connect timeout; it takes ms.
        assert time.monotonic() - started < 9
        assert status == 503
        doc = json.loads(body)
        assert doc["kind"] == "Status" and doc["code"] == 503 and doc["reason"] == "ServiceUnavailable"
        assert doc["message"] == f'cluster "{name}" is unhealthy: unreachable: timed out after 5s'
        assert doc["details"]["name"] == name
        request_id = headers["x-kubegate-request-id"]
        deadline = time.monotonic() + 10
        while not [e for e in px.audit_events if e.get("request_id") == request_id] and time.monotonic() < deadline:
            time.sleep(0.02)
        (event,) = [e for e in px.audit_events if e.get("request_id") == request_id]
        assert event["code"] == 503 and event["cluster"] == name
        assert name not in px.stats()["pools"]

        # An exec (WebSocket upgrade, as kubectl 1.37 starts it) gets the same answer, not a hang.
        started = time.monotonic()
        status, _, body = _raw_get(
            px, cert, key, f"/k8s/clusters/{name}/api/v1/namespaces/dev/pods/web-1/exec?command=true&stdout=true",
            extra="Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io",
        )
        assert time.monotonic() - started < 9
        assert status == 503 and json.loads(body)["message"].startswith(f'cluster "{name}" is unhealthy'), body
        assert name not in px.stats()["pools"]
        silent.setblocking(False)
        with pytest.raises(BlockingIOError):  # the hung API server never saw a connection
            silent.accept()
    finally:
        registry.remove(name, "test-health")
        silent.close()


def test_an_unhealthy_cluster_stays_hidden_from_callers_who_cannot_see_it(tmp_path, px):
    """Health does not reveal existence: a caller whose roles do not see the cluster gets the 404."""
    from discovery.model import Cluster

    name = "hidden-sick"
    registry = px.proxy.clusters
    registry.upsert(Cluster(name=name, labels={"env": "test"}, server="https://127.0.0.1:9"), "test-health")
    try:
        registry.set_health(name, "unhealthy", "unreachable: connection refused")
        cert, key = px.issue_user("nobody", ["no-such-role"])
        status, _, body = _raw_get(px, cert, key, f"/k8s/clusters/{name}/api/v1/pods")
        assert status == 404, body
        assert b"unhealthy" not in body
    finally:
        registry.remove(name, "test-health")


def test_a_cluster_with_bad_ca_data_gets_a_503_naming_the_problem_and_others_are_unaffected(sandbox, px):
    """A discovered cluster whose CA data is not PEM (here binary DER bytes): before any health round its
    requests got a 500 "unknown" with a traceback in the log (building the TLS context raised). Now: a 503
    Status saying what is wrong with the cluster, before and after the health checker has seen it; the
    other clusters answer as usual."""
    from discovery.health import HealthChecker
    from proxy.testing import cluster_for_sandbox

    name = "bad-ca-data"
    registry = px.proxy.clusters
    sandbox_health = (registry.peek("sandbox").health, registry.peek("sandbox").health_detail)
    broken = cluster_for_sandbox(sandbox, name=name)
    registry.upsert(type(broken)(name=name, labels=broken.labels, server=broken.server,
                                 ca_pem=b"\x30\x82\x03\x1a\x30\x82\x02\x02\xa0\x03", credentials=broken.credentials,
                                 origin="discovery"), "test-health")
    cert, key = px.issue_user("alice", ["admin"])
    try:
        status, _, body = _raw_get(px, cert, key, f"/k8s/clusters/{name}/api/v1/namespaces/dev/pods")
        doc = json.loads(body)
        assert status == 503 and doc["kind"] == "Status" and doc["code"] == 503, body
        assert doc["message"] == (f"cluster {name} cannot be used: certificate-authority data is not PEM text "
                                  "(it holds non-ASCII bytes)")

        # Only these two are checked: the session's registry holds other tests' clusters.
        checker = HealthChecker(registry, timeout=5)

        async def check_both() -> None:
            await asyncio.gather(checker.check_one(registry.peek(name)), checker.check_one(registry.peek("sandbox")))

        px.call(check_both, timeout=60)
        assert registry.peek(name).health == "unhealthy"
        assert registry.peek("sandbox").health == "healthy"
        status, _, body = _raw_get(px, cert, key, f"/k8s/clusters/{name}/api/v1/namespaces/dev/pods")
        assert status == 503 and json.loads(body)["message"] == (
            f'cluster "{name}" is unhealthy: tls: certificate-authority data is not PEM text (it holds non-ASCII bytes)')

        status, _, body = _raw_get(px, cert, key, "/k8s/clusters/sandbox/api/v1/namespaces/dev/pods")
        assert status == 200 and b"web-1" in body
    finally:
        registry.remove(name, "test-health")
        registry.set_health("sandbox", *sandbox_health)

"""Health checks against small local HTTPS API-server stand-ins: the ``/readyz`` fallback when the
SelfSubjectAccessReview API is not served, 401s, partial impersonation rights, and a server that never
answers (the check ends at its timeout instead of hanging). The sandbox-backed cases (healthy, cannot
impersonate, TLS, unreachable) are in test_discovery_service.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from discovery.health import check_cluster
from discovery.model import Cluster, StaticCredentials, UpstreamCredentials


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "api")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "api.pem", tmp / "api.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class ApiStandIn:
    def __init__(self, tmp: Path, answer) -> None:
        self.cert, key = self_signed(tmp)
        self.seen: list[tuple[str, str, str]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                resource = body["spec"]["resourceAttributes"]["resource"]
                stand_in.seen.append(("POST", self.path, self.headers.get("Authorization", "")))
                self.reply(*answer("POST", self.path, resource))

            def do_GET(self) -> None:
                stand_in.seen.append(("GET", self.path, self.headers.get("Authorization", "")))
                self.reply(*answer("GET", self.path, None))

            def reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def cluster(self, prefix: str = "") -> Cluster:
        return Cluster(name="c", labels={}, server=f"https://127.0.0.1:{self.server.server_address[1]}{prefix}",
                       ca_pem=self.cert.read_bytes(),
                       credentials=StaticCredentials(UpstreamCredentials(bearer_token="upstream-token")))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in(tmp_path):
    made = []

    def make(answer):
        made.append(ApiStandIn(tmp_path, answer))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_readyz_fallback_when_reviews_are_not_served(stand_in):
    api = stand_in(lambda method, path, res: (200, {"status": "ok"}) if path.endswith("/readyz") else (404, {}))
    result = asyncio.run(check_cluster(api.cluster("/base"), timeout=2))
    assert (result.health, result.detail) == ("healthy", "readyz")
    assert [s[1] for s in api.seen][-1] == "/base/readyz"  # the server's path prefix is kept
    assert all(s[2] == "Bearer upstream-token" for s in api.seen)


def test_partial_impersonation_rights_are_named(stand_in):
    api = stand_in(lambda method, path, res: (201, {"status": {"allowed": res != "serviceaccounts"}}))
    result = asyncio.run(check_cluster(api.cluster(), timeout=2))
    assert result.health == "unhealthy"
    assert result.detail.startswith("impersonation not permitted: cannot impersonate serviceaccounts (see `kubegate")


def test_rejected_credentials_are_unauthorized(stand_in):
    api = stand_in(lambda method, path, res: (401, {"kind": "Status", "code": 401}))
    result = asyncio.run(check_cluster(api.cluster(), timeout=2))
    assert result.health == "unhealthy" and result.detail.startswith("unauthorized")


def test_a_server_that_never_answers_is_unhealthy_at_the_timeout():
    with socket.socket() as silent:  # accepts TCP, never speaks TLS
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        cluster = Cluster(name="mute", labels={}, server=f"https://127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()
        result = asyncio.run(check_cluster(cluster, timeout=0.5))
        assert result.health == "unhealthy" and "unreachable" in result.detail
        assert time.monotonic() - started < 5


def test_failing_credentials_make_the_cluster_unhealthy():
    class Broken:
        async def get(self):
            raise RuntimeError("token endpoint down")

    result = asyncio.run(check_cluster(Cluster(name="x", labels={}, server="https://127.0.0.1:1",
                                               credentials=Broken()), timeout=1))
    assert (result.health, result.detail) == ("unhealthy", "credentials: token endpoint down")


def test_each_round_reuses_the_tls_context_built_for_the_same_trust_and_credentials(stand_in, tmp_path):
    from discovery.health import client_context

    api = stand_in(lambda method, path, res: (200, {"status": {"allowed": True}}))
    cluster = api.cluster()
    creds = UpstreamCredentials(bearer_token="upstream-token")
    first = client_context(cluster, creds)
    assert client_context(cluster, creds) is first  # no CA bundle or key loaded again per round
    for _ in range(2):
        assert asyncio.run(check_cluster(cluster, timeout=2)).health == "healthy"
    other_cert, other_key = self_signed(tmp_path / "..")
    renewed = UpstreamCredentials(client_cert_pem=other_cert.read_bytes(), client_key_pem=other_key.read_bytes())
    assert client_context(cluster, renewed) is not first  # renewed credentials: a context of their own
    assert client_context(cluster, renewed) is client_context(cluster, renewed)


BAD_CA = {
    "binary (DER, not PEM)": b"\x30\x82\x03\x1a\x30\x82\x02\x02\xa0\x03\x02\x01\x02",
    "non-ASCII text": "-----BEGIN CERTIFICATE-----\nMIIé\n-----END CERTIFICATE-----\n".encode(),
    "PEM markers around garbage": b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
}


@pytest.mark.parametrize("bad_ca", list(BAD_CA.values()), ids=list(BAD_CA))
def test_one_cluster_with_bad_ca_data_is_unhealthy_and_the_round_checks_every_other(stand_in, bad_ca):
    """Discovered clusters come with CA data kubegate does not control. One that cannot be loaded was a
    TypeError that ended the whole round (asyncio.gather without isolation): now it is that cluster's
    result, named, and the others are checked as usual."""
    from discovery.health import HealthChecker
    from discovery.registry import ClusterRegistry

    api = stand_in(lambda method, path, res: (201, {"status": {"allowed": True}}))
    registry = ClusterRegistry()
    good = api.cluster()
    registry.upsert(Cluster(name="good-1", labels={}, server=good.server, ca_pem=good.ca_pem,
                            credentials=good.credentials), "test")
    registry.upsert(Cluster(name="bad-ca", labels={}, server=good.server, ca_pem=bad_ca,
                            credentials=good.credentials), "test")
    registry.upsert(Cluster(name="good-2", labels={}, server=good.server, ca_pem=good.ca_pem,
                            credentials=good.credentials), "test")
    rounds: list[int] = []
    checker = HealthChecker(registry, timeout=2, on_round=lambda: rounds.append(1))
    asyncio.run(checker.run_round())
    assert rounds == [1] and checker.rounds == 1
    health = {c.name: (c.health, c.health_detail) for c in registry.all()}
    assert health["good-1"] == ("healthy", "") and health["good-2"] == ("healthy", "")
    state, detail = health["bad-ca"]
    assert state == "unhealthy" and detail.startswith("tls: certificate-authority data "), detail


def test_a_check_that_fails_unexpectedly_is_recorded_for_that_cluster_only(stand_in, monkeypatch):
    from discovery import health
    from discovery.registry import ClusterRegistry

    api = stand_in(lambda method, path, res: (201, {"status": {"allowed": True}}))
    registry = ClusterRegistry()
    good = api.cluster()
    for name in ("fine", "cursed"):
        registry.upsert(Cluster(name=name, labels={}, server=good.server, ca_pem=good.ca_pem,
                                credentials=good.credentials), "test")
    real = health.check_cluster

    async def flaky(cluster, timeout=5.0):
        if cluster.name == "cursed":
            raise KeyError("surprise")  # any bug in a check, not only TLS
        return await real(cluster, timeout)

    monkeypatch.setattr(health, "check_cluster", flaky)
    asyncio.run(health.HealthChecker(registry, timeout=2).run_round())
    assert (registry.peek("fine").health, registry.peek("cursed").health) == ("healthy", "unhealthy")
    assert registry.peek("cursed").health_detail == "health check failed: KeyError: 'surprise'"

"""AKS discovery with the real azure-identity and azure-core clients.

No Azure emulator exists, so this test runs a small local HTTPS stand-in (below, ~80 lines) for the two
Azure endpoints discovery talks to: the AAD token endpoint (OpenID configuration + OAuth2 token, what
``ClientSecretCredential`` uses with ``authority=`` the stand-in) and Azure Resource Manager
(subscriptions, managed clusters, ``listClusterUserCredential``). Its certificate is issued by a test CA
handed to the clients with ``connection_verify``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from azure.identity import ClientSecretCredential
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from discovery.aks import (
    AKS_SCOPE,
    AadTokenProvider,
    AksFetcher,
    ArmClient,
    AzureMatcher,
    cluster_from_record,
)

TENANT = "00000000-0000-0000-0000-00000000aaaa"
SUB1, SUB2 = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
CA_DATA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()


def make_tls(tmp: Path) -> tuple[Path, Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(key.public_key())
          .serial_number(1).not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    skey = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
              .issuer_name(ca_name).public_key(skey.public_key()).serial_number(2)
              .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
              .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                          x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                             critical=False)
              .sign(key, hashes.SHA256()))
    ca_path, cert_path, key_path = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(skey.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return ca_path, cert_path, key_path


def user_kubeconfig(name: str, *, static: bool) -> str:
    user = ({"client-certificate-data": base64.b64encode(b"CERT").decode(),
             "client-key-data": base64.b64encode(b"KEY").decode(), "token": "local-token"}
            if static else {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "kubelogin"}})
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": name,
           "clusters": [{"name": name, "cluster": {"server": f"https://{name}.hcp.westeurope.azmk8s.io:443",
                                                   "certificate-authority-data": CA_DATA}}],
           "contexts": [{"name": name, "context": {"cluster": name, "user": "u"}}],
           "users": [{"name": "u", "user": user}]}
    return base64.b64encode(yaml.safe_dump(doc).encode()).decode()


def managed_cluster(sub: str, rg: str, name: str, location: str, tags: dict, aad: bool) -> dict:
    props = {"fqdn": f"{name}.hcp.azmk8s.io"}
    if aad:
        props["aadProfile"] = {"managed": True}
    return {"id": f"/subscriptions/{sub}/resourcegroups/{rg}/providers/Microsoft.ContainerService/managedClusters/{name}",
            "name": name, "location": location, "tags": tags, "properties": props}


class StandIn:
    """The Azure stand-in: AAD token endpoint + ARM."""

    def __init__(self, ca_cert: Path, cert: Path, key: Path) -> None:
        self.clusters = {
            SUB1: [managed_cluster(SUB1, "rg-a", "aks-prod", "westeurope", {"env": "prod"}, aad=True),
                   managed_cluster(SUB1, "rg-b", "aks-local", "westeurope", {"env": "prod"}, aad=False)],
            SUB2: [managed_cluster(SUB2, "rg-a", "aks-us", "eastus", {"env": "prod"}, aad=True),
                   managed_cluster(SUB2, "rg-a", "aks-dev", "westeurope", {"env": "dev"}, aad=True)],
        }
        self.tokens_issued: list[str] = []  # scopes
        self.arm_auth: list[str] = []
        self.fail_arm = False
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                stand_in.handle(self, "GET")

            def do_POST(self) -> None:
                stand_in.handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://localhost:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        path = url.path
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0)) if method == "POST" else b""
        # --- AAD ---
        if path == f"/{TENANT}/v2.0/.well-known/openid-configuration":
            return h.reply(200, {"token_endpoint": f"{self.url}/{TENANT}/oauth2/v2.0/token",
                                 "authorization_endpoint": f"{self.url}/{TENANT}/oauth2/v2.0/authorize",
                                 "issuer": f"{self.url}/{TENANT}/v2.0"})
        if path == f"/{TENANT}/oauth2/v2.0/token":
            form = parse_qs(body.decode())
            if form.get("client_secret") != ["s3cret"]:
                return h.reply(401, {"error": "invalid_client", "error_description": "bad secret"})
            scope = form["scope"][0]
            self.tokens_issued.append(scope)
            return h.reply(200, {"token_type": "Bearer", "expires_in": 3600,
                                 "access_token": f"aad-token-{len(self.tokens_issued)}-for-{scope.split('/')[0]}"})
        # --- ARM ---
        self.arm_auth.append(h.headers.get("Authorization", ""))
        if not h.headers.get("Authorization", "").startswith("Bearer aad-token-"):
            return h.reply(401, {"error": {"code": "AuthenticationFailed"}})
        if self.fail_arm:
            return h.reply(500, {"error": {"code": "InternalServerError", "message": "boom"}})
        parts = path.strip("/").split("/")
        if path == "/subscriptions":
            return h.reply(200, {"value": [{"subscriptionId": s} for s in self.clusters]})
        if parts[-1] == "managedClusters" and parts[0] == "subscriptions":
            items = self.clusters.get(parts[1], [])
            if "resourceGroups" in parts:
                rg = parts[parts.index("resourceGroups") + 1]
                items = [c for c in items if f"/resourcegroups/{rg}/" in c["id"]]
            if "page" not in url.query and len(items) > 1:  # exercise nextLink
                return h.reply(200, {"value": items[:1],
                                     "nextLink": f"{self.url}{path}?api-version=2023-08-01&page=2"})
            if "page" in url.query:
                items = items[1:]
            return h.reply(200, {"value": items})
        if parts[-1] == "listClusterUserCredential" and method == "POST":
            name = parts[-2]
            for items in self.clusters.values():
                for c in items:
                    if c["name"] == name:
                        static = "aadProfile" not in c["properties"]
                        return h.reply(200, {"kubeconfigs": [{"name": "clusterUser",
                                                              "value": user_kubeconfig(name, static=static)}]})
        return h.reply(404, {"error": {"code": "NotFound", "message": path}})


@pytest.fixture
def azure(tmp_path):
    ca, cert, key = make_tls(tmp_path)
    stand_in = StandIn(ca, cert, key)
    stand_in.thread.start()
    credential = ClientSecretCredential(TENANT, "client-id", "s3cret", authority=stand_in.url,
                                        disable_instance_discovery=True, connection_verify=str(ca))
    arm = ArmClient(credential, endpoint=stand_in.url, scope=f"{stand_in.url}/.default",
                    connection_verify=str(ca), retries=0)
    try:
        yield stand_in, credential, arm
    finally:
        stand_in.server.shutdown()
        stand_in.server.server_close()
        credential.close()


def test_lists_managed_clusters_of_all_subscriptions_and_filters_regions_and_tags(azure):
    stand_in, credential, arm = azure
    fetcher = AksFetcher([AzureMatcher(regions=("westeurope",), tags={"env": "prod"})], group="az", arm=arm)
    result = fetcher.fetch()
    assert result.complete, result.errors
    by_name = {r.name: r for r in result.records}
    assert sorted(by_name) == ["aks-local", "aks-prod"]
    prod = by_name["aks-prod"]
    assert prod.labels["kubegate.dev/origin"] == "azure"
    assert prod.labels["kubegate.dev/subscription-id"] == SUB1
    assert prod.labels["kubegate.dev/resource-group"] == "rg-a"
    assert prod.labels["kubegate.dev/region"] == "westeurope"
    assert prod.labels["kubegate.dev/discovery-group"] == "az"
    assert prod.labels["env"] == "prod"
    assert prod.spec["endpoint"] == "https://aks-prod.hcp.westeurope.azmk8s.io:443"
    assert prod.spec["auth"] == "aad"
    assert by_name["aks-local"].spec["auth"] == "static"
    # ARM was called with an AAD bearer token obtained by the real azure-identity client
    assert all(a.startswith("Bearer aad-token-") for a in stand_in.arm_auth)


def test_subscription_and_resource_group_filters(azure):
    _, _, arm = azure
    fetcher = AksFetcher([AzureMatcher(subscriptions=(SUB2,), resource_groups=("rg-a",))], group="", arm=arm)
    assert sorted(r.name for r in fetcher.fetch().records) == ["aks-dev", "aks-us"]


def test_arm_errors_make_the_run_incomplete(azure):
    stand_in, _, arm = azure
    stand_in.fail_arm = True
    result = AksFetcher([AzureMatcher()], group="", arm=arm).fetch()
    assert not result.complete and "HTTP 500" in result.errors[0]


def test_aad_clusters_authenticate_with_an_aks_scoped_token_local_accounts_with_static_credentials(azure):
    stand_in, credential, arm = azure
    records = {r.name: r for r in AksFetcher([AzureMatcher()], group="", arm=arm).fetch().records}
    aad = cluster_from_record(records["aks-prod"], credential=credential)
    assert isinstance(aad.credentials, AadTokenProvider)
    assert aad.ca_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    creds = asyncio.run(aad.credentials.get())
    assert creds.bearer_token.endswith(f"-for-{AKS_SCOPE.split('/')[0]}")
    assert AKS_SCOPE in stand_in.tokens_issued
    assert asyncio.run(aad.credentials.get()) is creds  # cached until close to expiry
    local = cluster_from_record(records["aks-local"], credential=credential)
    static = asyncio.run(local.credentials.get())
    assert (static.client_cert_pem, static.client_key_pem, static.bearer_token) == (b"CERT", b"KEY", "local-token")


def test_aad_token_is_renewed_before_expiry(azure):
    _, credential, _ = azure
    calls = []

    class Counting:  # the real credential, counting how often the provider asks it
        def get_token(self, *scopes, **kwargs):
            calls.append(scopes)
            return credential.get_token(*scopes, **kwargs)

    now = [0.0]
    provider = AadTokenProvider(Counting(), clock=lambda: now[0])
    first = asyncio.run(provider.get())
    now[0] = first.expires_at - 301  # just outside the 5-minute margin: cached
    assert asyncio.run(provider.get()) is first and len(calls) == 1
    now[0] = first.expires_at - 299  # inside it: asks again
    assert asyncio.run(provider.get()) is not first and len(calls) == 2

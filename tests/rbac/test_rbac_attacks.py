"""A restricted user attacks kubegate in front of the sandbox cluster (issue 8, "Authorization").

Every test is a real request over TLS with a client certificate from the proxy's CA, to a running proxy
in front of a running sandbox API server (which, like the apiserver, decodes the whole path before
splitting it and reads the first value of a repeated query parameter). Each asserts that what the role
denies never comes back: not through path tricks (percent-encoded ``/`` and ``.``, ``..``, ``//``,
``;`` parameters, case changes), not through list / watch / Table / protobuf / gzip responses of a
denied or partly-visible kind, not through repeated or oddly spelled query parameters.
"""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import time
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.e2e


def role(name: str, allow: str, deny: str = "") -> str:
    return (
        f"kind: role\nversion: v8\nmetadata: {{name: {name}}}\nspec:\n  allow:\n    kubernetes_labels: {{'*': '*'}}\n"
        f"    kubernetes_resources: {allow}\n    kubernetes_groups: ['system:masters']\n"
        + (f"  deny:\n    kubernetes_resources: {deny}\n" if deny else "")
    )


ROLES = {
    # everything but secrets
    "no-secrets": role(
        "no-secrets",
        "[{kind: '*', api_group: '*', namespace: '*', name: '*', verbs: ['*']}]",
        "[{kind: secrets, api_group: '', namespace: '*', name: '*', verbs: ['*']}]",
    ),
    # pods named web-* only (db-0 in dev is the partly-visible kind's hidden item)
    "web-only": role("web-only", "[{kind: pods, api_group: '', namespace: '*', name: 'web-*', verbs: [get, list, watch]}]"),
    # reading dev's pods, no exec
    "dev-reader": role("dev-reader", "[{kind: pods, api_group: '', namespace: dev, name: '*', verbs: [get, list, watch]}]"),
}
SECRET_DATA = b"ZGV2LXMzY3JldA"  # base64 of the dev secret's password ("dev-s3cret")
HIDDEN_POD = (b'"db-0"', b"postgres", b"10.244.0.13")  # dev/db-0's name (as a JSON string), image, IP


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from proxy.testing import cluster_for_sandbox, running_proxy
    from rbac import RoleWatcher
    from sandbox.testing import running_sandbox

    base = tmp_path_factory.mktemp("rbac-attacks")
    roles_dir = base / "roles"
    roles_dir.mkdir()
    for name, text in ROLES.items():
        (roles_dir / f"{name}.yaml").write_text(text)
    with running_sandbox(base / "sandbox") as sb:
        with running_proxy(base / "proxy", clusters=[cluster_for_sandbox(sb)],
                           roles=RoleWatcher(str(roles_dir), time.monotonic)) as px:
            contexts = {}
            for user, name in (("mallory", "no-secrets"), ("wes", "web-only"), ("dora", "dev-reader")):
                cert, key = px.issue_user(user, [name])
                ctx = ssl.create_default_context(cafile=str(px.ca_pem_path))
                ctx.load_cert_chain(str(cert), str(key))
                ctx.set_alpn_protocols(["http/1.1"])
                contexts[name] = ctx
            yield {"sb": sb, "px": px, "ctx": contexts}


def request(env: dict, role_name: str, target: str, headers: dict[str, str] | None = None,
            method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP/1.1 request (the target is sent byte for byte) → (status, headers, de-chunked body)."""
    px = env["px"]
    ctx = env["ctx"][role_name]
    lines = [f"{method} /k8s/clusters/sandbox{target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", px.port), timeout=30), server_hostname="127.0.0.1") as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        fields[key.strip().lower().decode()] = value.strip().decode("latin-1")
    if fields.get("transfer-encoding") == "chunked":
        body, pos = b"", 0
        while True:
            end = rest.index(b"\r\n", pos)
            size = int(rest[pos:end].split(b";")[0], 16)
            if size == 0:
                break
            body += rest[end + 2 : end + 2 + size]
            pos = end + 2 + size + 2
        rest = body
    if fields.get("content-encoding") == "gzip":
        rest = gzip.decompress(rest)
    return status, fields, rest


def refused(status: int, body: bytes) -> bool:
    """A refusal by kubegate or the cluster: 400/403/404 with a Status body."""
    return status in (400, 403, 404) and json.loads(body).get("kind") == "Status"


# --- path tricks -------------------------------------------------------------------------------------

SECRET_PATHS = [
    "/api/v1/namespaces/dev/secrets",  # the plain request, for reference
    "/api/v1/namespaces/dev/secrets/db-credentials",
    "/api/v1/namespaces/dev%2Fsecrets",  # %2F: a namespace object "dev/secrets"? the apiserver splits it
    "/api/v1/namespaces/dev%2fsecrets%2fdb-credentials",
    "/api/v1/namespaces%2Fdev%2Fsecrets",
    "/api/v1/watch/namespaces/dev%2Fsecrets",
    "/api/v1/namespaces/dev/%73ecrets",  # an encoded letter
    "/api/v1/namespaces/dev/configmaps/..%2F..%2Fsecrets",
    "/api/v1/namespaces/dev/configmaps/%2E%2E/%2E%2E/secrets",
    "/api/v1/namespaces/dev/configmaps/%2e%2e%2f%2e%2e%2fsecrets",
    "/api/v1/namespaces/dev/configmaps/../secrets",
    "/api/v1/namespaces/dev/./secrets",
    "/api/v1/namespaces/dev//secrets",
    "//api/v1/namespaces/dev/secrets",
    "/api/v1/namespaces/dev/secrets;x=1",
    "/api/v1/namespaces/dev/secrets;/db-credentials",
    "/api/v1/namespaces/dev/secrets%3B",
    "/api/v1/namespaces/dev/secrets%252F",  # double encoding
    "/api/v1/namespaces/dev/secrets%5Cdb-credentials",
    "/api/v1/namespaces/dev/Secrets",
    "/api/v1/namespaces/dev/SECRETS/db-credentials",
    "/api/v1/NAMESPACES/dev/secrets",
    "/API/v1/namespaces/dev/secrets",
    "/api/V1/namespaces/dev/secrets",
    "/api/v1/secrets",
    "/api/v1/secrets%3FfieldSelector=metadata.namespace%3Ddev",
]


@pytest.mark.parametrize("path", SECRET_PATHS)
def test_path_tricks_never_reach_a_denied_resource(env, path):
    status, _, body = request(env, "no-secrets", path)
    assert refused(status, body), (status, body[:300])
    assert SECRET_DATA not in body


def test_the_same_user_still_reads_what_the_role_allows(env):
    status, _, body = request(env, "no-secrets", "/api/v1/namespaces/dev/configmaps/app-config")
    assert status == 200 and b"LOG_LEVEL" in body
    status, _, body = request(env, "no-secrets", "/api/v1/namespaces/dev%2Fconfigmaps")  # decoded like upstream
    assert status == 200 and b"app-config" in body


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/namespaces/dev/pods/web-1%2F..%2Fdb-0",
        "/api/v1/namespaces/dev/pods/web-1/%2E%2E/db-0",
        "/api/v1/namespaces/dev/pods/web-%2A",
        "/api/v1/namespaces/dev/pods/db-0;web-1",
        "/api/v1/namespaces/dev/pods/web-1%2F%2Fdb-0",
        "/api/v1/namespaces/dev/pods/DB-0",
    ],
)
def test_name_tricks_never_reach_a_hidden_object(env, path):
    status, _, body = request(env, "web-only", path)
    assert refused(status, body), (status, body[:300])
    assert b"postgres" not in body and b"10.244.0.13" not in body


def test_exec_hidden_in_an_encoded_name_is_decided_as_exec(env):
    # "web-1%2Fexec" is pods/web-1/exec for the apiserver: a role that may only read pods must not exec
    status, _, body = request(env, "dev-reader", "/api/v1/namespaces/dev/pods/web-1%2Fexec?command=id&stdout=true")
    assert status == 403, body
    assert 'do not allow "exec"' in json.loads(body)["message"]


# --- lists, watches, Tables, protobuf of a denied or partly-visible kind --------------------------------

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
PROTOBUF = "application/vnd.kubernetes.protobuf"
ACCEPTS = {
    "json": "application/json",
    "table": f"{TABLE}, application/json",
    "protobuf": f"{PROTOBUF}, application/json",
    "protobuf-only": PROTOBUF,
    "protobuf-table": f"{PROTOBUF};as=Table;v=v1;g=meta.k8s.io, {TABLE}",
    "yaml": "application/yaml",
    "metadata": "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io, application/json",
    "protobuf-stream": f"{PROTOBUF};stream=watch",
}
WATCH_QUERIES = [
    "?watch=1&timeoutSeconds=1",
    "?watch=yes&timeoutSeconds=1",  # any value but false/0 is a watch: filtered as one, not as a list
]
LIST_QUERIES = [
    "",
    "?limit=1",
    "?watch=false&watch=true",  # the first value counts
    "?includeObject=None",  # Table rows without their objects cannot be filtered: kubegate keeps them
    "?fieldSelector=metadata.namespace%3Ddev&fieldSelector=metadata.name%3Dweb-1",  # only the first counts
    "?fieldSelector=metadata.name%3Ddb-0",
    "?labelSelector=app%3Ddb",
    "?resourceVersion=0",
]


@pytest.mark.parametrize(
    ("accept", "query"),
    [(a, "") for a in ACCEPTS]
    + [(a, q) for a in ("json", "table", "protobuf-only") for q in LIST_QUERIES[1:] + WATCH_QUERIES]
    + [("protobuf-stream", q) for q in WATCH_QUERIES],
)
def test_lists_and_watches_of_a_partly_visible_kind_never_show_a_hidden_item(env, accept, query):
    for path in ("/api/v1/namespaces/dev/pods", "/api/v1/pods"):
        status, _, body = request(env, "web-only", path + query, {"Accept": ACCEPTS[accept], "Accept-Encoding": "gzip"})
        if status == 200:
            assert not any(mark in body for mark in HIDDEN_POD), body[:500]
        else:  # a denial names what was asked, nothing else
            assert refused(status, body) and not any(mark in body for mark in HIDDEN_POD[1:]), (status, body[:300])


def test_a_partly_visible_list_still_shows_the_visible_items(env):
    status, _, body = request(env, "web-only", "/api/v1/namespaces/dev/pods", {"Accept": ACCEPTS["table"]})
    assert status == 200
    table = json.loads(body)
    assert table["kind"] == "Table"
    assert sorted(r["cells"][0] for r in table["rows"]) == ["web-1", "web-2"]
    status, _, body = request(env, "web-only", "/api/v1/namespaces/dev/pods?watch=1&timeoutSeconds=1")
    names = [json.loads(line)["object"]["metadata"]["name"] for line in body.splitlines() if line.strip()]
    assert status == 200 and sorted(names) == ["web-1", "web-2"]


@pytest.mark.parametrize("query", LIST_QUERIES + WATCH_QUERIES)
@pytest.mark.parametrize("accept", ["json", "table", "protobuf-only"])
def test_lists_and_watches_of_a_denied_kind_are_refused(env, accept, query):
    for path in ("/api/v1/namespaces/dev/secrets", "/api/v1/secrets", "/api/v1/watch/secrets"):
        status, _, body = request(env, "no-secrets", path + query, {"Accept": ACCEPTS[accept]})
        assert status == 403 and json.loads(body)["kind"] == "Status", (status, body[:300])
        assert SECRET_DATA not in body


# --- the proxy verb (Teleport v19), against a recording upstream -------------------------------------

PROXY_ROLES = {
    "getter": role("getter", "[{kind: pods, api_group: '', namespace: dev, name: '*', verbs: [get, list, create]}]"),
    "proxier": role("proxier", "[{kind: pods, api_group: '', namespace: dev, name: '*', verbs: [proxy]}]"),
    "star": role("star", "[{kind: '*', api_group: '*', namespace: '*', name: '*', verbs: ['*']}]"),
}


@pytest.fixture(scope="module")
def echo_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A proxy in front of ``EchoUpstream`` (the sandbox serves no proxy subresource; the echo records
    what reaches it, and kubegate's built-in catalog knows pods/proxy)."""
    from proxy.testing import running_echo_upstream, running_proxy
    from rbac import RoleWatcher

    base = tmp_path_factory.mktemp("proxy-verb")
    roles_dir = base / "roles"
    roles_dir.mkdir()
    for name, text in PROXY_ROLES.items():
        (roles_dir / f"{name}.yaml").write_text(text)
    with running_echo_upstream(base / "echo", h2=False) as echo:
        with running_proxy(base / "proxy", clusters=[echo.cluster("sandbox")],
                           roles=RoleWatcher(str(roles_dir), time.monotonic)) as px:
            contexts = {}
            for name in PROXY_ROLES:
                cert, key = px.issue_user(f"user-{name}", [name])
                ctx = ssl.create_default_context(cafile=str(px.ca_pem_path))
                ctx.load_cert_chain(str(cert), str(key))
                ctx.set_alpn_protocols(["http/1.1"])
                contexts[name] = ctx
            yield {"px": px, "ctx": contexts, "echo": echo}


PROXY_PATHS = ["/api/v1/namespaces/dev/pods/web-1/proxy/", "/api/v1/namespaces/dev/pods/web-1:80/proxy/metrics",
               "/api/v1/namespaces/dev/pods/web-1%2Fproxy%2Fmetrics"]  # fmt: skip


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("path", PROXY_PATHS)
def test_a_role_that_may_get_pods_may_not_proxy_to_them(echo_env, method, path):
    sent_before = len(echo_env["echo"].requests)
    status, _, body = request(echo_env, "getter", path, method=method)
    assert status == 403, body
    assert 'do not allow "proxy"' in json.loads(body)["message"]
    assert not [r for r in echo_env["echo"].requests[sent_before:] if "/pods/" in r["target"]]


@pytest.mark.parametrize("role_name", ["proxier", "star"])
@pytest.mark.parametrize("path", PROXY_PATHS)
def test_the_proxy_verb_or_star_grants_proxying(echo_env, role_name, path):
    status, _, body = request(echo_env, role_name, path)
    assert status == 200, body
    assert json.loads(body)["target"] == path
    status, _, body = request(echo_env, "proxier", "/api/v1/namespaces/dev/pods/web-1")
    assert status == 403  # proxy is not get

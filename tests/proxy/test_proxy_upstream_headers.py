"""What the upstream API server receives: exactly kubegate's impersonation headers, kubegate's own
credentials, X-Forwarded-For, no hop-by-hop headers, and never the client's Authorization or
Impersonate-* headers — over an HTTP/2 and an HTTP/1.1 upstream, from HTTP/1.1 and h2 clients."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import pytest

pytestmark = pytest.mark.e2e

ROLE = """
kind: role
version: v8
metadata: {name: ops}
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources: [{kind: '*', api_group: '*', namespace: '*', name: '*', verbs: ['*']}]
    kubernetes_groups: [ops-team, viewers]
"""


@pytest.fixture(scope="module", params=["h2-upstream", "http1-upstream"])
def setup(request, tmp_path_factory) -> Iterator[tuple]:
    from proxy.testing import running_echo_upstream, running_proxy
    from proxy.upstream import PoolSettings
    from rbac import RoleWatcher

    base = tmp_path_factory.mktemp("echo")
    roles = base / "roles"
    roles.mkdir()
    (roles / "ops.yaml").write_text(ROLE)
    with running_echo_upstream(base / "echo", h2=request.param == "h2-upstream") as echo:
        clusters = [echo.cluster("echo"), echo.cluster("echo-token", token="kubegate-secret-token")]
        # With an h2 upstream every exchange rides h2 here (by default only long-lived ones do).
        pool = PoolSettings(h2_for="all" if request.param == "h2-upstream" else "streams")
        with running_proxy(base / "proxy", clusters=clusters, roles=RoleWatcher(str(roles), time.time),
                           pool_settings=pool) as px:
            cert, key = px.issue_user("alice", ["ops"])
            ctx = ssl.create_default_context(cafile=str(px.ca_pem_path))
            ctx.load_cert_chain(str(cert), str(key))
            yield echo, px, ctx, request.param


def h1_request(px, ctx, path: str, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    ctx.set_alpn_protocols(["http/1.1"])
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", px.port), timeout=10), server_hostname="127.0.0.1") as sock:
        head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        sock.sendall(head.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def h2_response(sock, conn, sid: int) -> tuple[int, bytes]:
    """Send what ``conn`` has queued, then read stream ``sid``'s answer: (status, body) once the stream
    ends, is reset, or the connection goes away."""
    sock.sendall(conn.data_to_send())
    status, body, done = 0, b"", False
    while not done:
        data = sock.recv(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = int(dict(event.headers)[":status"])
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, sid)
            elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset | h2.events.ConnectionTerminated):
                done = True
        pending = conn.data_to_send()
        if pending and not done:
            sock.sendall(pending)
    return status, body


def h2_request(px, ctx, path: str, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    ctx.set_alpn_protocols(["h2"])
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", px.port), timeout=10), server_hostname="127.0.0.1") as sock:
        assert sock.selected_alpn_protocol() == "h2"
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(
            sid,
            [(":method", "GET"), (":path", path), (":scheme", "https"), (":authority", "127.0.0.1"), *headers],
            end_stream=True,
        )
        status, body = h2_response(sock, conn, sid)
    return status, body


CLIENTS = {"http1-client": h1_request, "h2-client": h2_request}


def upstream_headers(body: bytes) -> list[tuple[str, str]]:
    return [(k, v) for k, v in json.loads(body)["headers"]]


@pytest.mark.parametrize("client", CLIENTS)
def test_upstream_gets_kubegates_impersonation_and_never_the_clients(setup, client):
    echo, px, ctx, _ = setup
    status, body = CLIENTS[client](px, ctx, "/k8s/clusters/echo/api/v1/namespaces/dev/pods?limit=5", [
        ("authorization", "Bearer client-token"),
        ("x-forwarded-for", "203.0.113.9"),
        ("accept", "application/json"),
        ("x-custom", "kept"),
    ])
    assert status == 200
    record = json.loads(body)
    assert record["target"] == "/api/v1/namespaces/dev/pods?limit=5"
    headers = upstream_headers(body)
    names = [k for k, _ in headers]
    assert [v for k, v in headers if k == "impersonate-user"] == ["alice"]
    assert sorted(v for k, v in headers if k == "impersonate-group") == ["ops-team", "system:authenticated", "viewers"]
    assert not [k for k in names if k.startswith("impersonate-") and k not in ("impersonate-user", "impersonate-group")]
    assert "authorization" not in names
    assert [v for k, v in headers if k == "x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert ("x-custom", "kept") in headers
    assert not {"connection", "keep-alive", "transfer-encoding", "te", "upgrade"} & set(names)


def test_upstream_credentials_replace_the_clients(setup):
    echo, px, ctx, _ = setup
    status, body = h1_request(px, ctx, "/k8s/clusters/echo-token/version", [("authorization", "Bearer client-token")])
    assert status == 200
    assert [v for k, v in upstream_headers(body) if k == "authorization"] == ["Bearer kubegate-secret-token"]


def test_upstream_authority_is_the_clusters(setup):
    echo, px, ctx, mode = setup
    _, body = h1_request(px, ctx, "/k8s/clusters/echo/version", [])
    record = json.loads(body)
    authority = f"127.0.0.1:{echo.port}"
    if mode == "h2-upstream":
        assert record["http_version"] == "2" and record["authority"] == authority
    else:
        assert [v for k, v in upstream_headers(body) if k == "host"] == [authority]


@pytest.mark.parametrize("client", CLIENTS)
def test_a_client_impersonating_outside_its_roles_is_refused_and_nothing_is_sent(setup, client):
    echo, px, ctx, _ = setup
    sent_before = len(echo.requests)
    status, body = CLIENTS[client](px, ctx, "/k8s/clusters/echo/api/v1/namespaces/dev/pods", [("impersonate-user", "root")])
    assert status == 403
    assert json.loads(body)["kind"] == "Status"
    assert not any(r["target"].startswith("/api/v1/namespaces/dev/pods") for r in echo.requests[sent_before:])


def test_a_client_choosing_one_of_its_groups_gets_exactly_that(setup):
    echo, px, ctx, _ = setup
    status, body = h1_request(px, ctx, "/k8s/clusters/echo/api/v1/pods", [("impersonate-group", "viewers")])
    assert status == 200
    groups = sorted(v for k, v in upstream_headers(body) if k == "impersonate-group")
    assert "ops-team" not in groups and "viewers" in groups


def h1_post_chunked(px, ctx, path: str, body: bytes, chunk: int = 65536) -> tuple[int, bytes]:
    ctx.set_alpn_protocols(["http/1.1"])
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", px.port), timeout=30), server_hostname="127.0.0.1") as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        for i in range(0, len(body), chunk):
            part = body[i : i + chunk]
            sock.sendall(b"%x\r\n%b\r\n" % (len(part), part))
        sock.sendall(b"0\r\n\r\n")
        data = b""
        while piece := sock.recv(65536):
            data += piece
    head, rest = data.split(b"\r\n\r\n", 1)
    if b"transfer-encoding: chunked" in head.lower():
        out, pos = b"", 0
        while True:
            end = rest.index(b"\r\n", pos)
            size = int(rest[pos:end], 16)
            if size == 0:
                break
            out += rest[end + 2 : end + 2 + size]
            pos = end + 2 + size + 2
        rest = out
    return int(head.split(b" ", 2)[1]), rest


def test_a_large_streamed_request_body_arrives_whole(setup):
    echo, px, ctx, _ = setup
    payload = b'{"data":"' + b"x" * (3 * 1024 * 1024) + b'"}'
    status, body = h1_post_chunked(px, ctx, "/k8s/clusters/echo/api/v1/namespaces/dev/configmaps", payload)
    assert status == 200
    record = json.loads(body)
    assert record["body"].encode("latin-1") == payload
    assert record["method"] == "POST" and record["target"] == "/api/v1/namespaces/dev/configmaps"


# --- identity headers in every spelling, place and shape (issue 8) ---------------------------------

# Headers that would claim an identity upstream: Impersonate-* (kubegate decides those), Authorization,
# and the apiserver's request-header authentication (X-Remote-User / -Group / -Extra-*), which names the
# user outright to an apiserver that trusts kubegate's client certificate as a front proxy.
SMUGGLED = [
    ("X-Remote-User", "admin"),
    ("x-remote-group", "system:masters"),
    ("X-REMOTE-EXTRA-Scopes", "all"),
    ("X-Remote-User", "second-admin"),  # duplicated
    ("X_Remote_User", "admin"),  # '_' for '-': folded by some servers and proxies in front of apiservers
    ("Impersonate_User", "root"),
    ("impersonate_group", "system:masters"),
    ("AUTHORIZATION", "Bearer client-token"),
    ("Authorization", "Basic YWRtaW46YWRtaW4="),  # duplicated
]


def identity_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The upstream headers that name an identity (any spelling)."""
    claim = ("impersonate-", "x-remote-", "authorization")
    return [(k, v) for k, v in headers if k.lower().replace("_", "-").startswith(claim)]


def assert_only_kubegates_identity(headers: list[tuple[str, str]]) -> None:
    assert sorted(identity_headers(headers)) == [
        ("impersonate-group", "ops-team"),
        ("impersonate-group", "system:authenticated"),
        ("impersonate-group", "viewers"),
        ("impersonate-user", "alice"),
    ]


def test_identity_headers_in_any_spelling_and_duplicated_never_reach_the_upstream(setup):
    echo, px, ctx, _ = setup
    status, body = h1_request(px, ctx, "/k8s/clusters/echo/api/v1/namespaces/dev/pods", SMUGGLED)
    assert status == 200, body
    assert_only_kubegates_identity(upstream_headers(body))


def test_identity_headers_over_h2_never_reach_the_upstream(setup):
    echo, px, ctx, _ = setup
    lower = [(k.lower(), v) for k, v in SMUGGLED]  # h2 header names are lower case by the protocol
    status, body = h2_request(px, ctx, "/k8s/clusters/echo/api/v1/namespaces/dev/pods", lower)
    assert status == 200, body
    assert_only_kubegates_identity(upstream_headers(body))


@pytest.mark.parametrize(
    "headers",
    [
        [("IMPERSONATE-USER", "root")],
        [("Impersonate-User", "alice"), ("impersonate-user", "root")],  # duplicated: which one counts?
        [("Impersonate-User", "root"), ("Impersonate-User", "alice")],
        [("impersonate-Extra-Scopes", "all")],
        [("Impersonate-Uid", "0")],
    ],
    ids=["upper-case", "dup-user-last", "dup-user-first", "extra", "uid"],
)
def test_impersonation_in_any_case_or_duplicated_is_decided_and_refused(setup, headers):
    echo, px, ctx, _ = setup
    # the cluster's resource catalog is fetched on its first request: have it fetched before counting,
    # so that this test means the same whichever test of the module runs first
    status, body = h1_request(px, ctx, "/k8s/clusters/echo/api/v1/namespaces/dev/configmaps", [])
    assert status == 200, body
    sent_before = len(echo.requests)
    status, body = h1_request(px, ctx, "/k8s/clusters/echo/api/v1/namespaces/dev/configmaps", headers)
    assert status == 403 and json.loads(body)["reason"] == "Forbidden", body
    assert not echo.requests[sent_before:]


def test_http1_chunked_trailers_never_reach_the_upstream_nor_change_the_decision(setup):
    echo, px, ctx, _ = setup
    ctx.set_alpn_protocols(["http/1.1"])
    request = (
        b"POST /k8s/clusters/echo/api/v1/namespaces/dev/configmaps HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\n{}\r\n0\r\nImpersonate-User: root\r\nX-Remote-User: admin\r\nAuthorization: Bearer t\r\n"
        b"X-Trailer-Marker: 1\r\n\r\n"
    )  # all in one write: the trailers are parsed before the request is decided
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", px.port), timeout=10), server_hostname="127.0.0.1") as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data
    record = json.loads(rest[rest.index(b"{") : rest.rindex(b"}") + 1])
    headers = [(k, v) for k, v in record["headers"]]
    assert_only_kubegates_identity(headers)
    assert "x-trailer-marker" not in [k for k, _ in headers]
    assert record["body"] == "{}"


def test_h2_trailers_never_reach_the_upstream(setup):
    echo, px, ctx, _ = setup
    ctx.set_alpn_protocols(["h2"])
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", px.port), timeout=10), server_hostname="127.0.0.1") as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "POST"), (":path", "/k8s/clusters/echo/api/v1/namespaces/dev/configmaps"),
                                (":scheme", "https"), (":authority", "127.0.0.1"), ("content-type", "application/json")])
        conn.send_data(sid, b"{}")
        conn.send_headers(sid, [("impersonate-user", "root"), ("x-remote-user", "admin"),
                                ("authorization", "Bearer t"), ("x-trailer-marker", "1")], end_stream=True)
        status, body = h2_response(sock, conn, sid)
    assert status == 200, body
    headers = upstream_headers(body)
    assert_only_kubegates_identity(headers)
    assert "x-trailer-marker" not in [k for k, _ in headers]


UPGRADES = {
    "websocket-exec": ("GET", [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
                               ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                               ("Sec-WebSocket-Protocol", "v5.channel.k8s.io")]),
    "spdy-exec": ("POST", [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
                           ("X-Stream-Protocol-Version", "v4.channel.k8s.io")]),
}
EXEC = "/k8s/clusters/echo/api/v1/namespaces/dev/pods/web-1/exec?command=id&stdout=true"


def upgrade_request(px, ctx, method: str, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    ctx.set_alpn_protocols(["http/1.1"])
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", px.port), timeout=10), server_hostname="127.0.0.1") as sock:
        head = f"{method} {EXEC} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        sock.sendall(head.encode() + b"\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    return int(head_bytes.split(b" ", 2)[1]), rest


@pytest.mark.parametrize("kind", UPGRADES)
def test_identity_headers_on_upgrade_requests_never_reach_the_upstream(setup, kind):
    echo, px, ctx, _ = setup
    method, headers = UPGRADES[kind]
    status, body = upgrade_request(px, ctx, method, headers + SMUGGLED)
    assert status == 200, body  # the echo upstream answers an upgrade with what it received
    record = json.loads(body)
    assert record["target"].startswith("/api/v1/namespaces/dev/pods/web-1/exec")
    assert_only_kubegates_identity([(k, v) for k, v in record["headers"]])


@pytest.mark.parametrize("kind", UPGRADES)
def test_impersonation_on_upgrade_requests_is_decided_and_refused(setup, kind):
    echo, px, ctx, _ = setup
    method, headers = UPGRADES[kind]
    sent_before = len(echo.requests)
    status, body = upgrade_request(px, ctx, method, [*headers, ("IMPERSONATE-USER", "root")])
    assert status == 403, body
    # The exec request never went out (the proxy's own discovery of the cluster, /api and /apis, may
    # happen meanwhile when this is the worker's first test: it is not the request).
    assert not [r for r in echo.requests[sent_before:] if "/exec" in r["target"]]


def test_upper_case_identity_header_names_over_h2_are_refused(setup):
    # h2 forbids upper-case field names; a client that sends them anyway never reaches the upstream
    echo, px, ctx, _ = setup
    sent_before = len(echo.requests)
    ctx.set_alpn_protocols(["h2"])
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", px.port), timeout=10), server_hostname="127.0.0.1") as sock:
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8", validate_outbound_headers=False,
                                           normalize_outbound_headers=False)
        conn = h2.connection.H2Connection(config)
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "GET"), (":path", "/k8s/clusters/echo/api/v1/namespaces/dev/pods"),
                              (":scheme", "https"), (":authority", "127.0.0.1"), ("Impersonate-User", "root"),
                              ("X-Remote-User", "admin")], end_stream=True)
        status, _ = h2_response(sock, conn, 1)
    assert status != 200
    assert not [r for r in echo.requests[sent_before:] if "/pods" in r["target"]]


@pytest.mark.parametrize(
    "raw",
    [b"Impersonate-User : root\r\n", b"X-Foo: a\r\n Impersonate-User: root\r\n", b"X-Remote-User\x00: admin\r\n",
     b"Impersonate-User\x0b: root\r\n"],
    ids=["space-before-colon", "obs-fold", "nul-in-name", "vt-in-name"],
)  # fmt: skip
def test_malformed_identity_header_lines_are_400_and_never_reach_the_upstream(setup, raw):
    echo, px, ctx, _ = setup
    sent_before = len(echo.requests)
    ctx.set_alpn_protocols(["http/1.1"])
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", px.port), timeout=10), server_hostname="127.0.0.1") as sock:
        sock.sendall(b"GET /k8s/clusters/echo/api/v1/namespaces/dev/pods HTTP/1.1\r\nHost: x\r\n" + raw + b"\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400"), data
    assert not [r for r in echo.requests[sent_before:] if "/pods" in r["target"]]

"""Watch events relayed by callbacks (issue 9): while the watcher keeps up, each event goes from the
upstream protocol straight to the client's codec; when the watcher falls behind, the relay holds the
upstream's credit, so the server is slowed at its own flow control and kubegate buffers at most one
stream window; once the watcher reads again every event arrives, in order, and the relay is back to
callbacks. Real parts: the sandbox API server (over h2), kubegate, a TLS client with a small receive
buffer that stops reading."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.testing import wait_for
from proxy.upstream.http2 import _STREAM_WINDOW

NAMESPACE = "watch-relay"
EVENT_DATA = 250_000  # bytes of data per configmap: each event is ~250 KB
EVENTS = 40  # ~10 MB in all: far beyond what socket buffers, kubegate's buffers and one window hold


@pytest.fixture(scope="module")
def rp(sandbox, tmp_path_factory) -> Iterator:
    """A proxy of its own (its stats are this module's) in front of the session's sandbox."""
    from proxy.testing import cluster_for_sandbox, running_proxy
    from rbac import RoleWatcher

    from .conftest import write_roles

    base = tmp_path_factory.mktemp("watch-relay")
    roles = RoleWatcher(str(write_roles(base / "roles")), time.time)
    with running_proxy(base / "proxy", clusters=[cluster_for_sandbox(sandbox)], roles=roles) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def creds(rp) -> tuple[Path, Path]:
    return rp.issue_user("alice", ["admin"])


def connect(rp, creds: tuple[Path, Path], rcvbuf: int | None = None) -> http.client.HTTPSConnection:
    ctx = ssl.create_default_context(cafile=str(rp.ca_pem_path))
    ctx.load_cert_chain(str(creds[0]), str(creds[1]))
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: no autotuning
    raw.settimeout(60)
    raw.connect(("127.0.0.1", rp.port))
    conn = http.client.HTTPSConnection("127.0.0.1", rp.port, timeout=60)
    conn.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    return conn


def call(conn: http.client.HTTPSConnection, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, "/k8s/clusters/sandbox" + path, body=data, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read() or b"{}")


def create_configmaps(conn: http.client.HTTPSConnection, names: list[str], size: int) -> None:
    for name in names:
        status, answer = call(conn, "POST", f"/api/v1/namespaces/{NAMESPACE}/configmaps",
                              {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                               "data": {"blob": "x" * size}})  # fmt: skip
        assert status == 201, answer


def configmaps_namespace(api: http.client.HTTPSConnection) -> dict:
    """The test namespace (created if it is not there yet) and a list of its configmaps (for its
    resourceVersion: the watch starts there)."""
    status, _ = call(api, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                         "metadata": {"name": NAMESPACE}})  # fmt: skip
    assert status in (201, 409)
    status, listed = call(api, "GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps?limit=1")
    assert status == 200
    return listed


def read_events(resp: http.client.HTTPResponse, n: int) -> list[str]:
    names = []
    while len(names) < n:
        line = resp.readline()
        assert line, f"the watch ended after {names}"
        event = json.loads(line)
        assert event["type"] == "ADDED", event
        names.append(event["object"]["metadata"]["name"])
    return names


def test_a_watcher_that_stops_reading_holds_the_server_back_then_gets_every_event_in_order(rp, creds):
    api = connect(rp, creds)
    listed = configmaps_namespace(api)
    watcher = connect(rp, creds, rcvbuf=32 * 1024)
    watcher.request("GET", f"/k8s/clusters/sandbox/api/v1/namespaces/{NAMESPACE}/configmaps?watch=true"
                           f"&resourceVersion={listed['metadata']['resourceVersion']}")
    resp = watcher.getresponse()  # the head comes before any event
    assert resp.status == 200
    try:
        # The watcher reads nothing while ~10 MB of events are made (through the same upstream
        # connection: the watch holding its stream's window does not stop the other streams).
        create_configmaps(api, [f"big-{i}" for i in range(EVENTS)], EVENT_DATA)
        wait_for(lambda: rp.stats()["from_upstreams_bytes"] > 0, 60, rp.stats)  # the client fell behind
        time.sleep(1.0)  # the server has sent what the window allows
        stats = rp.stats()
        assert stats["exchanges"] == 1 and stats["streams"] == ["watch"], stats
        assert 0 < stats["from_upstreams_bytes"] <= _STREAM_WINDOW, stats  # at most one window held
        assert stats["to_clients_bytes"] <= 2 * 1024 * 1024, stats

        # Reading again: every event, once, in order; then the relay is back to callbacks (small
        # events made now arrive at once).
        assert read_events(resp, EVENTS) == [f"big-{i}" for i in range(EVENTS)]
        wait_for(lambda: rp.stats()["from_upstreams_bytes"] == 0, 30, rp.stats)
        create_configmaps(api, [f"small-{i}" for i in range(3)], 10)
        assert read_events(resp, 3) == [f"small-{i}" for i in range(3)]
    finally:
        watcher.close()
        api.close()
    wait_for(lambda: rp.stats()["exchanges"] == 0, 30, rp.stats)


def test_an_h2_watcher_with_its_window_shut_holds_the_server_back_then_gets_every_event_in_order(rp, creds):
    """The same over h2 (kubectl's protocol for watches): the watcher's stream window (16 KiB) is used up
    and not reopened, so the relay stops at the client's flow control instead of the socket's; the
    ``h2`` library is the client."""
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    api = connect(rp, creds)
    listed = configmaps_namespace(api)
    ctx = ssl.create_default_context(cafile=str(rp.ca_pem_path))
    ctx.load_cert_chain(str(creds[0]), str(creds[1]))
    ctx.set_alpn_protocols(["h2"])
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", rp.port), timeout=60), server_hostname="127.0.0.1")
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.local_settings = h2.settings.Settings(client=True, initial_values={
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16384})  # fmt: skip
    client.initiate_connection()
    sid = client.get_next_available_stream_id()
    path = (f"/k8s/clusters/sandbox/api/v1/namespaces/{NAMESPACE}/configmaps?watch=true"
            f"&resourceVersion={listed['metadata']['resourceVersion']}")
    client.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"127.0.0.1"),
                              (b":path", path.encode())], end_stream=True)  # fmt: skip
    sock.sendall(client.data_to_send())
    body = bytearray()
    statuses: list[bytes] = []

    def pump(reading: bool) -> None:
        """One read from the socket; with ``reading``, the data received is credited back at once."""
        for event in client.receive_data(sock.recv(1 << 20)):
            if isinstance(event, h2.events.ResponseReceived):
                statuses.append(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived) and event.stream_id == sid:
                body.extend(event.data)
                if reading:
                    client.acknowledge_received_data(event.flow_controlled_length, sid)
            elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset | h2.events.ConnectionTerminated):
                raise AssertionError(f"the watch ended: {event}")
        sock.sendall(client.data_to_send())

    try:
        while not statuses:
            pump(reading=False)
        assert statuses == [b"200"]
        create_configmaps(api, [f"h2big-{i}" for i in range(12)], EVENT_DATA)  # ~3 MB
        sock.settimeout(0.5)
        deadline = time.monotonic() + 60
        while rp.stats()["from_upstreams_bytes"] == 0 and time.monotonic() < deadline:
            try:
                pump(reading=False)  # take what the window allows (SETTINGS acks, PINGs), credit nothing
            except TimeoutError:
                pass
        time.sleep(1.0)
        stats = rp.stats()
        assert 0 < stats["from_upstreams_bytes"] <= _STREAM_WINDOW, stats  # one window held, no more
        assert len(body) <= 16384, len(body)  # not a byte beyond the client's window
        client.increment_flow_control_window(1 << 24, sid)
        client.increment_flow_control_window(1 << 24)
        sock.sendall(client.data_to_send())
        sock.settimeout(60)
        while body.count(b"\n") < 12:
            pump(reading=True)
        names = [json.loads(line)["object"]["metadata"]["name"] for line in bytes(body).splitlines()]
        assert names == [f"h2big-{i}" for i in range(12)]
    finally:
        sock.close()
        api.close()
    wait_for(lambda: rp.stats()["exchanges"] == 0, 30, rp.stats)


def test_a_watcher_that_keeps_up_gets_more_than_a_stream_window_of_small_events(rp, creds):
    """While the watcher keeps up, the relay credits the upstream in batches (``live.CREDIT_BATCH``), not
    per event: more than one stream window of small events (which the server may send only once credit
    for the earlier ones came back) all arrive, and nothing stays held in kubegate."""
    from proxy.relay.live import CREDIT_BATCH

    size = 8000  # ~8 KB per event: ~150 events make more than the 1 MiB window, each below a batch
    count = _STREAM_WINDOW // size + 20
    assert size < CREDIT_BATCH < _STREAM_WINDOW // 4
    api = connect(rp, creds)
    listed = configmaps_namespace(api)
    watcher = connect(rp, creds)
    watcher.request("GET", f"/k8s/clusters/sandbox/api/v1/namespaces/{NAMESPACE}/configmaps?watch=true"
                           f"&resourceVersion={listed['metadata']['resourceVersion']}")
    resp = watcher.getresponse()
    assert resp.status == 200
    names = [f"many-{i}" for i in range(count)]
    try:
        create_configmaps(api, names, size)
        assert read_events(resp, count) == names
        wait_for(lambda: rp.stats()["from_upstreams_bytes"] == 0, 30, rp.stats)
    finally:
        watcher.close()
        api.close()
    wait_for(lambda: rp.stats()["exchanges"] == 0, 30, rp.stats)

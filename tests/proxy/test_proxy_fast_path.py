"""The HTTP/1.1 fast path (``proxy.fastpath``): on one keep-alive connection, a GET sent again with the
same bytes is answered from what the full pipeline made of it the first time, and is still refused,
counted, audited and relayed exactly as the full pipeline would.

A real kubegate proxy (its own, so locks, roles and clusters can change under it without touching the
session's) in front of its own sandbox API server; the clients are raw TLS sockets sending the same
request bytes on one connection (what kubectl's polling, informer relists and client libraries do) and
the ``kubernetes`` Python client (urllib3 keep-alive). Which requests took the fast path is observed by
counting the ``FastExchange`` objects made (each starts as it is made) in the test (a wrapper set with monkeypatch: no product code for
it) and by the plans the proxy's client connection holds. The tests taking ``wire_client`` run for
HTTP/2 clients too (``[h2]``: ``fast_gate.H2Client``, ``CodecFastExchange``); what only HTTP/2 has is in
``test_proxy_fast_path_h2.py``.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from proxy.connection import ClientConnection
from proxy.fastpath import CodecFastExchange, FastExchange
from proxy.testing import wait_for
from tests.proxy.fast_gate import (
    BULK_ITEMS,
    BULK_LIST,
    BULK_NAMESPACE,
    CLUSTER,
    EDGE_BLANK,
    EDGE_EMPTY,
    EDGE_POD,
    LONG_ITEMS,
    LONG_NAMESPACE,
    OTHER_POD,
    POD,
    READER_ROLE,
    SEND_TIMEOUT,
    Client,
    Gate,
    H2Client,
    Response,
    comparable,
    connections_made_as,
    get,
    opened_clients,
    record_starts,
    running_edge,
    running_gate,
    same_fields,
)

pytestmark = pytest.mark.e2e

@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    with running_gate(tmp_path_factory.mktemp("fastpath"), long_list=True) as gate:
        yield gate


@pytest.fixture
def fast_starts(monkeypatch: pytest.MonkeyPatch, gate: Gate) -> list[FastExchange]:
    """Every ``FastExchange`` started while the test runs (the fast path taken), in order."""
    return record_starts(monkeypatch, gate, FastExchange)


@pytest.fixture
def client(gate: Gate) -> Iterator[Callable[..., Client]]:
    """``client(user, roles, **kw)`` → a ``Client`` (HTTP/1.1) closed at teardown."""
    with opened_clients(gate, Client) as make:
        yield make


@pytest.fixture
def wire_client(gate: Gate, wire: str) -> Iterator[Callable[..., Client | H2Client]]:
    """``wire_client(user, roles)`` → a client of the protocol under test (``wire``: h2 or http1)."""
    with opened_clients(gate, H2Client if wire == "h2" else Client) as make:
        yield make


@pytest.fixture
def wire_fast_starts(monkeypatch: pytest.MonkeyPatch, gate: Gate) -> list[FastExchange]:
    """Every fast exchange (HTTP/1.1 or HTTP/2) started while the test runs, in order."""
    return record_starts(monkeypatch, gate, FastExchange, CodecFastExchange)


# --- 1. the same answers, ids, audit lines and metrics -------------------------------------------------


def test_repeated_get_is_answered_by_the_fast_path_like_the_full_pipeline(gate, client, fast_starts):
    before = gate.requests_counted("get", 200)
    c = client("alice")
    first = c.ask(get(POD))
    assert first.status == 200 and first.json["metadata"]["name"] == "web-1"
    assert gate.plans(c).keys() == {get(POD)}  # the full pipeline left a plan for these bytes
    assert fast_starts == []
    repeats = [c.ask(get(POD)) for _ in range(4)]
    assert len(fast_starts) == 4  # each repeat took the fast path

    for answer in repeats:
        assert answer.status == 200 and answer.body == first.body
        assert same_fields(answer) == same_fields(first)
    ids = [r.header("x-kubegate-request-id") for r in [first, *repeats]]
    assert all(ids) and len(set(ids)) == 5
    assert [fx.request_id for fx in fast_starts] == ids[1:]

    # One audit line per request; the fast path's have the full pipeline's fields and values.
    events = [gate.audit(request_id) for request_id in ids]
    assert events[0]["code"] == 200 and events[0]["user"] == "alice" and events[0]["verb"] == "get"
    assert events[0]["impersonated_user"] == "alice" and events[0]["bytes_out"] == len(first.body)
    for event in events[1:]:
        assert event.keys() == events[0].keys()
        assert comparable(event) == comparable(events[0])
    assert gate.requests_counted("get", 200) == before + 5


def test_the_kubernetes_python_client_repeating_a_get_is_served_by_the_fast_path(gate, fast_starts):
    """urllib3 keeps the connection alive and sends the same bytes for the same call."""
    import kubernetes

    cert, key = gate.px.issue_user("carol", ["admin"])
    config = kubernetes.client.Configuration()
    config.host = gate.px.cluster_url(CLUSTER)
    config.ssl_ca_cert = str(gate.px.ca_pem_path)
    config.cert_file, config.key_file = str(cert), str(key)
    with kubernetes.client.ApiClient(config) as api_client:
        api = kubernetes.client.CoreV1Api(api_client)
        names = [api.read_namespaced_pod("web-1", "dev").metadata.name for _ in range(5)]
        listed = [len(api.list_namespaced_pod("dev").items) for _ in range(3)]
    assert names == ["web-1"] * 5 and listed == [3, 3, 3]
    assert len(fast_starts) == 4 + 2


def test_kubectl_over_http1_getting_the_same_pod_twice_in_one_run_is_served_by_the_fast_path(gate, kubectl, fast_starts):
    """kubectl (each version) with HTTP/2 off keeps one HTTP/1.1 keep-alive connection for a run: asked for
    the same pod twice, it sends the same bytes twice, and the second rides the first's plan."""
    import os
    import subprocess

    kubeconfig = gate.px.kubeconfig("pat", ["admin"], ["fast"])
    run = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "get", "pods", "web-1", "web-1", "-n", "dev",
                          "-o", "json"], capture_output=True, timeout=60, env=dict(os.environ, DISABLE_HTTP2="1"))  # fmt: skip
    assert run.returncode == 0, run.stderr.decode()
    listed = json.loads(run.stdout)
    assert [item["metadata"]["name"] for item in listed["items"]] == ["web-1", "web-1"]
    assert len(fast_starts) == 1


# --- 2. locks and certificate expiry ---------------------------------------------------------------


def test_a_lock_added_between_two_identical_requests_refuses_the_second(gate, wire_client, wire_fast_starts):
    c = wire_client("mallory")
    assert c.get(POD).status == 200
    assert c.get(POD).status == 200 and len(wire_fast_starts) == 1
    gate.locks.lock_user("mallory", reason="left the team")
    try:
        refused = c.get(POD)
        assert refused.status == 403, refused
        assert refused.json["kind"] == "Status" and "left the team" in refused.json["message"]
        assert len(wire_fast_starts) == 1
        assert gate.audit(refused.header("x-kubegate-request-id"))["code"] == 403
    finally:
        gate.locks.unlock_user("mallory")
    assert c.get(POD).status == 200  # unlocked: served again


def test_an_expired_certificate_is_refused_on_a_connection_that_was_served_fast(gate, client, fast_starts):
    """A certificate valid for 3 s (the CA backdates its start, so it is usable at once): the connection
    opened with it is served, fast, until it expires, then every request gets a 401 Status."""
    from cryptography import x509

    c = client("dave", ttl=timedelta(seconds=3))
    not_after = x509.load_pem_x509_certificate(c.cert.read_bytes()).not_valid_after_utc.timestamp()
    assert c.ask(get(POD)).status == 200
    assert c.ask(get(POD)).status == 200
    assert time.time() < not_after, "the machine was too slow to send two requests within 3 s"
    assert len(fast_starts) == 1
    time.sleep(max(0.0, not_after - time.time()) + 0.3)
    refused = c.ask(get(POD))
    assert refused.status == 401, refused
    assert refused.json["kind"] == "Status" and "expired" in refused.json["message"]
    assert len(fast_starts) == 1


# --- 3. roles, clusters, health ------------------------------------------------------------------


def test_a_role_change_refuses_the_next_identical_request(gate, wire_client, wire_fast_starts):
    c = wire_client("erin", ["reader"])
    role_file = gate.roles_dir / "reader.yaml"
    assert c.get(POD).status == 200
    assert c.get(POD).status == 200 and len(wire_fast_starts) == 1
    old = gate.role_set()
    role_file.write_text(READER_ROLE.replace("NAMESPACE", "prod"))  # no longer dev
    try:
        wait_for(lambda: gate.role_set() is not old, timeout=10)
        refused = c.get(POD)
        assert refused.status == 403, refused
        assert refused.json["kind"] == "Status" and refused.json["reason"] == "Forbidden"
        assert len(wire_fast_starts) == 1
        assert gate.audit(refused.header("x-kubegate-request-id"))["code"] == 403
    finally:
        changed = gate.role_set()
        role_file.write_text(READER_ROLE.replace("NAMESPACE", "dev"))
        wait_for(lambda: gate.role_set() is not changed, timeout=10)
    assert c.get(POD).status == 200


def test_a_removed_cluster_is_not_found_on_the_next_identical_request(gate, wire_client, wire_fast_starts):
    gate.add_cluster("gone")
    path = "/k8s/clusters/gone/api/v1/namespaces/dev/pods/web-1"
    c = wire_client("frank")
    try:
        assert c.get(path).status == 200
        assert c.get(path).status == 200 and len(wire_fast_starts) == 1
    finally:
        gate.registry.remove("gone", "test-fast")
    missing = c.get(path)
    assert missing.status == 404, missing
    assert missing.json["kind"] == "Status" and "gone" in missing.json["message"]
    assert len(wire_fast_starts) == 1


def test_an_unhealthy_cluster_answers_503_on_the_next_identical_request(gate, wire_client, wire_fast_starts):
    gate.add_cluster("sick")
    path = "/k8s/clusters/sick/api/v1/namespaces/dev/pods/web-1"
    c = wire_client("grace")
    try:
        assert c.get(path).status == 200
        assert c.get(path).status == 200 and len(wire_fast_starts) == 1
        gate.registry.set_health("sick", "unhealthy", "unreachable: connection refused")
        refused = c.get(path)
        assert refused.status == 503, refused
        assert refused.json["kind"] == "Status" and "sick" in refused.json["message"]
        assert "unhealthy" in refused.json["message"]
        assert len(wire_fast_starts) == 1
        gate.registry.set_health("sick", "healthy")
        assert c.get(path).status == 200  # recovered: the full pipeline, which plans again
        assert c.get(path).status == 200 and len(wire_fast_starts) == 2
    finally:
        gate.registry.remove("sick", "test-fast")


LABELLED_ROLE = """
kind: role
version: v8
metadata: {name: test-clusters}
spec:
  allow:
    kubernetes_labels: {env: test}
    kubernetes_resources:
      - {kind: pods, api_group: '', namespace: dev, name: '*', verbs: [get]}
    kubernetes_groups: ['system:masters']
"""


def test_a_cluster_relabelled_out_of_the_roles_reach_refuses_the_next_identical_request(
    gate, wire_client, wire_fast_starts
):
    """Same name, same address and credentials (the pool stays), other labels: the role that matched
    ``env: test`` no longer gives access to the cluster."""
    from proxy.testing import cluster_for_sandbox

    role_file = gate.roles_dir / "test-clusters.yaml"
    old_roles = gate.role_set()
    role_file.write_text(LABELLED_ROLE)
    gate.registry.upsert(cluster_for_sandbox(gate.sandbox, name="moving", labels={"env": "test"}), "test-fast")
    path = "/k8s/clusters/moving/api/v1/namespaces/dev/pods/web-1"
    try:
        wait_for(lambda: gate.role_set() is not old_roles, timeout=10)
        c = wire_client("ursula", ["test-clusters"])
        assert c.get(path).status == 200
        assert c.get(path).status == 200 and len(wire_fast_starts) == 1
        gate.registry.upsert(cluster_for_sandbox(gate.sandbox, name="moving", labels={"env": "prod"}), "test-fast")
        refused = c.get(path)
        assert refused.status in (403, 404), refused
        assert refused.json["kind"] == "Status" and "moving" in refused.json["message"]
        assert len(wire_fast_starts) == 1
    finally:
        gate.registry.remove("moving", "test-fast")
        changed = gate.role_set()
        role_file.unlink()
        wait_for(lambda: gate.role_set() is not changed, timeout=10)


# --- 4. the upstream closing its keep-alive connection ---------------------------------------------


def test_an_idle_upstream_connection_closed_by_the_server_between_requests(gate, wire_client, wire_fast_starts):
    c = wire_client("heidi")
    first = c.get(POD)
    assert c.get(POD).body == first.body and len(wire_fast_starts) == 1

    async def close() -> None:
        gate.close_upstream_connections()

    gate.sandbox.call(close)
    wait_for(lambda: gate.sandbox.counts()[0] == 0, timeout=10)
    again = c.get(POD)
    assert again.status == 200 and again.body == first.body
    assert gate.audit(again.header("x-kubegate-request-id"))["code"] == 200


def test_a_request_the_server_closes_on_unanswered_is_replayed_through_the_full_pipeline(gate, client, fast_starts):
    """The keep-alive race: the fast path writes the request to a pooled connection that the server closes
    at that moment without reading it (its idle timeout fired). Made deterministic by holding the sandbox's
    event loop while the request is written, then closing the connection with the request unread. A
    request pipelined behind it is answered after it."""
    c = client("ivan")
    first, other = c.ask(get(POD)), c.ask(get(OTHER_POD))
    assert c.ask(get(POD)).body == first.body and len(fast_starts) == 1
    lines_before = len([e for e in gate.px.audit_events if e.get("user") == "ivan"])

    with gate.sandbox_held(then=gate.close_upstream_connections):
        c.send(get(POD))
        wait_for(lambda: len(fast_starts) == 2, timeout=10)  # written to the pooled connection
        c.send(get(OTHER_POD))
        time.sleep(0.2)
    again, behind = c.response(), c.response()
    assert again.status == 200 and again.body == first.body
    assert behind.status == 200 and behind.body == other.body
    # Served once: one audit line each, by the full pipeline (the fast exchange handed it over uncounted).
    request_id = again.header("x-kubegate-request-id")
    assert gate.audit(request_id)["code"] == 200 and gate.audit(behind.header("x-kubegate-request-id"))["code"] == 200
    assert len([e for e in gate.px.audit_events if e.get("user") == "ivan"]) == lines_before + 2
    assert request_id != fast_starts[1].request_id
    assert c.ask(get(POD)).body == first.body  # and the connection goes on


def test_a_cluster_removed_while_a_fast_request_waits_for_its_answer_gets_a_404_status(
    gate, wire_client, wire_fast_starts
):
    gate.add_cluster("leaving")
    path = "/k8s/clusters/leaving/api/v1/namespaces/dev/pods/web-1"
    c = wire_client("nina")
    try:
        assert c.get(path).status == 200
        with gate.sandbox_held():
            sent = c.begin(path)
            wait_for(lambda: len(wire_fast_starts) == 1, timeout=10)
            gate.registry.remove("leaving", "test-fast")
            ended = c.answer(sent)
        assert ended.status == 404, ended
        assert ended.json["kind"] == "Status" and "leaving was removed" in ended.json["message"]
        assert gate.audit(ended.header("x-kubegate-request-id"))["code"] == 404
    finally:
        gate.registry.remove("leaving", "test-fast")
    assert c.get(POD).status == 200  # the connection goes on


def test_a_fast_request_whose_upstream_does_not_answer_in_time_gets_a_504_status(
    gate, wire_client, wire_fast_starts, monkeypatch
):
    import dataclasses

    fwd = gate.px.proxy.fwd
    monkeypatch.setattr(fwd, "settings", dataclasses.replace(fwd.settings, response_head_timeout=1.0))
    c = wire_client("oscar")
    first = c.get(POD)
    with gate.sandbox_held():
        started = time.monotonic()
        late = c.get(POD)
        waited = time.monotonic() - started
    assert len(wire_fast_starts) == 1
    assert late.status == 504, late
    assert late.json["kind"] == "Status" and "did not answer in time" in late.json["message"]
    assert 1.0 <= waited < 20
    assert gate.audit(late.header("x-kubegate-request-id"))["code"] == 504
    assert c.get(POD).body == first.body  # the connection goes on (a new upstream connection)


def _read_until_closed(c: Client) -> bytes:
    """What the client gets until the proxy closes the connection (it must close it)."""
    c.sock.settimeout(20)
    out = b""
    try:
        while data := c.sock.recv(65536):
            out += data
    except (ConnectionResetError, ssl.SSLError):
        pass
    return out


def test_a_cluster_removed_mid_answer_ends_the_connection_with_a_short_body(gate, client, fast_starts):
    gate.add_cluster("dropped")
    request = get(f"/k8s/clusters/dropped/api/v1/namespaces/{BULK_NAMESPACE}/configmaps")
    c = client("tess", rcvbuf=16384)
    try:
        total = len(c.ask(request).body)
        gate.shrink_send_buffer(c)
        c.send(request)
        assert c.sock.recv(16384)  # the answer has begun
        wait_for(lambda: len(fast_starts) == 1, timeout=10)
        gate.registry.remove("dropped", "test-fast")
        rest = _read_until_closed(c)  # HTTP/1.1 can only say so by closing: the client sees a short body
        assert len(rest) < total
        event = gate.audit(fast_starts[0].request_id)
        assert event["stopped"] == "kubegate ended this stream: cluster dropped was removed"
        assert event["bytes_out"] < total
        wait_for(lambda: gate.px.stats()["exchanges"] == 0, timeout=10)
        assert "dropped" not in gate.px.stats()["pools"]
    finally:
        gate.registry.remove("dropped", "test-fast")
    assert client("tess").ask(get(POD)).status == 200


def test_an_upstream_that_fails_mid_answer_ends_the_connection_with_a_short_body(gate, client, fast_starts):
    def resets() -> float:
        return REGISTRY.get_sample_value("kubegate_upstream_errors_total", {"cluster": CLUSTER, "kind": "reset"}) or 0.0

    before = resets()
    c = client("uma", rcvbuf=16384)
    total = len(c.ask(get(BULK_LIST)).body)
    gate.shrink_send_buffer(c)
    gate.shrink_upstream_send_buffers()
    c.send(get(BULK_LIST))
    assert c.sock.recv(16384)
    wait_for(lambda: len(fast_starts) == 1, timeout=10)

    async def reset_all() -> None:  # the API server's connections end abruptly (a crash, a RST)
        for conn in list(gate.sandbox.server._connections):
            conn.transport.abort()

    gate.sandbox.call(reset_all)
    rest = _read_until_closed(c)
    assert len(rest) < total
    event = gate.audit(fast_starts[0].request_id)
    assert event["code"] == 200 and event["bytes_out"] < total
    assert resets() == before + 1
    wait_for(lambda: gate.px.stats()["exchanges"] == 0, timeout=10)
    assert client("uma").ask(get(POD)).status == 200


def test_a_client_that_goes_away_mid_answer_leaves_nothing_busy(gate, client, fast_starts):
    c = client("pia", rcvbuf=16384)
    total = len(c.ask(get(BULK_LIST)).body)
    gate.shrink_send_buffer(c)
    c.send(get(BULK_LIST))
    assert c.sock.recv(16384)
    wait_for(lambda: len(fast_starts) == 1, timeout=10)
    c.close()
    event = gate.audit(fast_starts[0].request_id)
    assert event["code"] == 200 and 0 < event["bytes_out"] < total
    wait_for(lambda: gate.px.stats()["exchanges"] == 0, timeout=10)
    wait_for(lambda: all(p["http1_busy"] == 0 for p in gate.px.stats()["pools"].values()), timeout=10)
    assert client("pia").ask(get(POD)).status == 200


# --- 5. large answers: slow readers and readers that stop ----------------------------------------------


def test_a_large_list_reaches_a_slow_reader_whole_through_the_fast_path(gate, client, fast_starts, monkeypatch):
    paused: list[int] = []

    class Observed(ClientConnection):
        def when_writable(self, hook: Any) -> None:
            paused.append(1)
            super().when_writable(hook)

    connections_made_as(monkeypatch, Observed)
    c = client("judy", rcvbuf=16384)
    first = c.ask(get(BULK_LIST))
    gate.shrink_send_buffer(c)
    assert first.status == 200 and len(first.body) > 1_100_000
    names = [item["metadata"]["name"] for item in first.json["items"]]
    assert names == [f"cm-{n:04d}" for n in range(BULK_ITEMS)]
    c.send(get(BULK_LIST))
    slow = c.response(pause=0.02, chunk=16384)
    assert len(fast_starts) == 1
    assert slow.status == 200 and slow.body == first.body
    assert paused, "the client's socket never filled: backpressure was not exercised"
    assert gate.audit(slow.header("x-kubegate-request-id"))["bytes_out"] == len(first.body)


def test_a_client_that_stops_reading_a_fast_answer_is_cut_after_the_send_timeout(gate, client, fast_starts):
    def cut_count() -> float:
        return REGISTRY.get_sample_value(
            "kubegate_client_connections_rejected_total", {"reason": "client_send_timeout"}) or 0.0

    before = cut_count()
    c = client("ken", rcvbuf=8192)
    assert c.ask(get(BULK_LIST)).status == 200
    gate.shrink_send_buffer(c)
    conn = gate.proxy_connection(c)
    c.send(get(BULK_LIST))  # and read nothing more
    started = time.monotonic()
    wait_for(lambda: len(fast_starts) == 1, timeout=10)
    wait_for(lambda: conn.closed, timeout=SEND_TIMEOUT + 20)
    assert time.monotonic() - started >= SEND_TIMEOUT - 0.1
    assert cut_count() == before + 1
    event = gate.audit(fast_starts[0].request_id)
    assert event["code"] == 200 and 0 < event["bytes_out"] < 1_100_000
    wait_for(lambda: gate.px.stats()["exchanges"] == 0, timeout=10)


def test_a_client_that_stops_reading_an_answer_served_at_once_is_cut_and_its_upstream_paused(
    gate, client, monkeypatch
):
    """The direct path (a request with no plan yet, its decision at hand) relays through the codec: a
    client that reads nothing holds up the upstream once the socket's buffers are full (the API server's
    answer does not pile up in kubegate) and is cut after ``client_send_timeout``, like the full pipeline."""
    from proxy.fastpath import CodecFastExchange

    direct = record_starts(monkeypatch, gate, CodecFastExchange, planned=False)  # the direct path's too

    def cut_count() -> float:
        return REGISTRY.get_sample_value(
            "kubegate_client_connections_rejected_total", {"reason": "client_send_timeout"}) or 0.0

    total = len(client("kim").ask(get(BULK_LIST)).body)  # the decision is at hand from now on
    before = cut_count()
    c = client("kim", rcvbuf=8192)
    assert c.ask(get(POD)).status == 200
    gate.shrink_send_buffer(c)
    conn = gate.proxy_connection(c)
    served = len(direct)
    c.send(get(BULK_LIST + "?limit=0"))  # bytes with no plan: served at once, and read no more
    started = time.monotonic()
    wait_for(lambda: len(direct) == served + 1, timeout=10)
    exchange = direct[-1]
    wait_for(lambda: conn.closed, timeout=SEND_TIMEOUT + 20)
    assert time.monotonic() - started >= SEND_TIMEOUT - 0.1
    assert cut_count() == before + 1
    event = gate.audit(exchange.request_id)
    assert event["code"] == 200 and 0 < event["bytes_out"] < total // 2  # the upstream was held up
    wait_for(lambda: gate.px.stats()["exchanges"] == 0, timeout=10)


# --- 6. pipelining -------------------------------------------------------------------------------


def test_two_gets_in_one_write_are_answered_in_order(gate, client, fast_starts):
    c = client("leo")
    one, two = c.ask(get(POD)), c.ask(get(OTHER_POD))
    c.send(get(POD) + get(OTHER_POD))
    first, second = c.response(), c.response()
    assert (first.body, second.body) == (one.body, two.body)
    c.send(get(POD) + get(OTHER_POD) + get(POD))
    assert [c.response().body for _ in range(3)] == [one.body, two.body, one.body]
    assert c.ask(get(OTHER_POD)).body == two.body


def test_a_get_sent_while_a_fast_answer_is_in_flight_is_answered_after_it(gate, client, fast_starts):
    c = client("mia")
    big = c.ask(get(BULK_LIST))
    small = c.ask(get(POD))
    c.send(get(BULK_LIST))
    wait_for(lambda: len(fast_starts) == 1, timeout=10)
    c.send(get(POD))  # the ~850 KB answer is still being written: this one waits for it
    c.send(get(BULK_LIST))
    assert [c.response().body for _ in range(3)] == [big.body, small.body, big.body]
    wait_for(lambda: len([e for e in gate.px.audit_events if e.get("user") == "mia"]) == 5, timeout=10)
    assert [e["code"] for e in gate.px.audit_events if e.get("user") == "mia"] == [200] * 5


def test_pipelined_big_and_small_answers_served_at_once_keep_their_order(gate, client, monkeypatch):
    """A large answer and small ones pipelined in one write, each served at once through the codec (the
    direct path: decisions at hand, idle upstream connections): the small answers come back from the API
    server first and wait for the large one, each byte in its place; a slow reader changes nothing."""
    from proxy.fastpath import CodecFastExchange

    direct = record_starts(monkeypatch, gate, CodecFastExchange, planned=False)  # the direct path's too
    c = client("rob", rcvbuf=16384)
    big, small, other = c.ask(get(BULK_LIST)), c.ask(get(POD)), c.ask(get(OTHER_POD))
    gate.shrink_send_buffer(c)
    for _ in range(3):  # three upstream connections idle for what follows
        c.send(get(BULK_LIST) + get(POD) + get(OTHER_POD))
        answers = [c.response(pause=0.002, chunk=16384) for _ in range(3)]
        assert [a.body for a in answers] == [big.body, small.body, other.body]
        ids = [a.header("x-kubegate-request-id") for a in answers]
        assert [gate.audit(i)["path"] for i in ids] == [BULK_LIST, POD, OTHER_POD]
    assert direct, "the direct path was not taken"
    assert c.ask(get(POD)).body == small.body


# --- 7. chunked, 304 and 204 answers ---------------------------------------------------------------

@pytest.fixture(scope="module")
def edge(gate: Gate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[bytes]:
    """Cluster ``edge`` (nginx before the sandbox: ``fast_gate.running_edge``); yields the pod file nginx
    serves."""
    with running_edge(gate, tmp_path_factory.mktemp("edge")) as pod:
        yield pod


def test_a_chunked_answer_is_relayed_through_the_fast_path(gate, edge, client, fast_starts):
    import gzip

    request = get(f"/k8s/clusters/edge{EDGE_POD}", "Accept-Encoding: gzip\r\n")
    c = client("pat")
    answers = [c.ask(request) for _ in range(3)]
    assert len(fast_starts) == 2
    for answer in answers:
        assert answer.status == 200, answer
        assert answer.header("transfer-encoding") == "chunked" and answer.header("content-length") is None
        assert answer.header("content-encoding") == "gzip"
        assert gzip.decompress(answer.body) == edge
    event = gate.audit(answers[-1].header("x-kubegate-request-id"))
    assert event["code"] == 200 and event["bytes_out"] == len(answers[-1].body)
    plain = c.ask(get(f"/k8s/clusters/edge{EDGE_POD}"))  # the connection goes on after the last chunk
    assert plain.body == edge and plain.header("content-length") == str(len(edge))


def test_304_and_204_answers_have_no_body_on_the_fast_path(gate, edge, client, fast_starts):
    c = client("quinn")
    etag = c.ask(get(f"/k8s/clusters/edge{EDGE_POD}")).header("etag")
    assert etag
    not_modified = get(f"/k8s/clusters/edge{EDGE_POD}", f"If-None-Match: {etag}\r\n")
    empty = get(f"/k8s/clusters/edge{EDGE_EMPTY}")
    answers = [c.ask(not_modified), c.ask(not_modified), c.ask(empty), c.ask(empty), c.ask(not_modified)]
    assert [(a.status, a.body) for a in answers] == [(304, b""), (304, b""), (204, b""), (204, b""), (304, b"")]
    assert len(fast_starts) == 3
    for answer in answers:
        assert answer.header("transfer-encoding") is None and answer.header("x-kubegate-request-id")
    assert c.ask(get(f"/k8s/clusters/edge{EDGE_POD}")).body == edge  # nothing stray on the connection
    codes = [gate.audit(a.header("x-kubegate-request-id"))["code"] for a in answers]
    assert codes == [304, 304, 204, 204, 304]
    # A 200 whose body is empty (Content-Length: 0): its head is all there is, on the fast path too.
    blank = [c.ask(get(f"/k8s/clusters/edge{EDGE_BLANK}")) for _ in range(3)]
    assert [(a.status, a.body, a.header("content-length")) for a in blank] == [(200, b"", "0")] * 3
    assert len(fast_starts) == 3 + 1 + 2  # the 304s and 204, the pod again, the blank 200 twice
    assert c.ask(get(f"/k8s/clusters/edge{EDGE_POD}")).body == edge


def test_answers_relayed_fast_carry_the_same_fields_as_the_full_pipelines(gate, edge, client, fast_starts):
    """Whatever the upstream frames its answer with (nginx's ``Connection: keep-alive``, a content-length,
    chunks), a repeated request gets the fields the first got (the full pipeline's, or the direct path's
    when its decision was at hand): hop-by-hop ones dropped, one request id of kubegate's. The full
    pipeline's own answer (an HTTP/1.0 request, which only it serves) has the same fields and body, save
    the framing HTTP/1.0 gets."""

    def framed_alike(answer: Response) -> list[tuple[str, str]]:
        return [f for f in same_fields(answer) if f[0] not in ("connection", "keep-alive", "content-length")]

    for path in (f"/k8s/clusters/edge{EDGE_POD}", f"/k8s/clusters/edge/api/v1/namespaces/{BULK_NAMESPACE}/configmaps/cm-0001",
                 "/k8s/clusters/edge/api/v1/namespaces/dev/pods/nobody", POD):  # fmt: skip
        full = client("sam").ask(get(path).replace(b"HTTP/1.1", b"HTTP/1.0"))
        c = client("sam")
        answers = [c.ask(get(path)) for _ in range(2)]
        for answer in answers:
            assert (answer.status, answer.body) == (full.status, full.body)
            assert framed_alike(answer) == framed_alike(full)
    fast_starts.clear()

    c = client("sam")
    requests = [
        get(f"/k8s/clusters/edge{EDGE_POD}"),  # nginx, content-length
        get(f"/k8s/clusters/edge{EDGE_POD}", "Accept-Encoding: gzip\r\n"),  # nginx, chunked
        get(f"/k8s/clusters/edge/api/v1/namespaces/{BULK_NAMESPACE}/configmaps/cm-0001"),  # nginx proxying
        get("/k8s/clusters/edge/api/v1/namespaces/dev/pods/nobody"),  # the sandbox's 404 through nginx
        get(POD), get("/k8s/clusters/fast/api/v1/namespaces/dev/pods/nobody"),  # the sandbox itself
    ]
    for n, request in enumerate(requests):
        first = c.ask(request)
        assert first.status in (200, 404) and first.header("connection") is None, first.headers
        for _ in range(2):
            again = c.ask(request)
            assert (again.status, again.body) == (first.status, first.body)
            assert same_fields(again) == same_fields(first)
        assert len(fast_starts) == 2 * (n + 1), request
    assert [c.ask(r).status for r in requests] == [200, 200, 200, 404, 200, 404]


def test_a_slow_reader_of_a_long_chunked_answer_is_not_cut_while_it_reads(gate, edge, client, fast_starts):
    """A gzipped LIST comes in many chunks, several to one read from the upstream: a client that keeps
    reading (~400 KB/s: each time the proxy pauses writing, what it holds is taken well within
    ``client_send_timeout``), for longer than that timeout in all, gets the whole answer."""
    import gzip

    request = get(f"/k8s/clusters/edge/api/v1/namespaces/{LONG_NAMESPACE}/configmaps", "Accept-Encoding: gzip\r\n")
    c = client("rita", rcvbuf=16384)
    first = c.ask(request)
    assert first.status == 200 and first.header("transfer-encoding") == "chunked"
    items = json.loads(gzip.decompress(first.body))["items"]
    assert len(items) == LONG_ITEMS and len(first.body) > 1_600_000
    gate.shrink_send_buffer(c)
    c.send(request)
    started = time.monotonic()
    slow = c.response(pause=0.04, chunk=16384)
    assert time.monotonic() - started > 1.5 * SEND_TIMEOUT  # read for longer than the timeout, never stalled
    assert len(fast_starts) == 1
    assert slow.status == 200 and gzip.decompress(slow.body) == gzip.decompress(first.body)
    assert c.ask(get(POD)).status == 200


# --- 8. client-sent impersonation ----------------------------------------------------------------


def test_client_sent_impersonation_on_a_repeated_request_is_decided_as_by_the_full_pipeline(
    gate, wire_client, wire_fast_starts
):
    """A request that differs by one header is another request: it never rides the plan of the first."""
    as_mallory = [("Impersonate-User", "mallory")]
    fresh = wire_client("olivia").get(POD, as_mallory)  # the full pipeline's answer on a connection with no plans
    assert fresh.status == 403 and "mallory" in fresh.json["message"]

    c = wire_client("olivia")
    plain = c.get(POD)
    assert c.get(POD).status == 200 and len(wire_fast_starts) == 1
    for _ in range(2):
        refused = c.get(POD, as_mallory)
        assert (refused.status, refused.json["message"]) == (fresh.status, fresh.json["message"])
        assert gate.audit(refused.header("x-kubegate-request-id"))["code"] == 403
    assert len(wire_fast_starts) == 1
    assert len(gate.plans(c)) == 1  # the refused request left no plan

    # Impersonating oneself is allowed: remembered as its own plan, repeated on the fast path.
    as_self = [("Impersonate-User", "olivia")]
    assert c.get(POD, as_self).body == plain.body
    answer = c.get(POD, as_self)
    assert answer.body == plain.body and len(wire_fast_starts) == 2 and len(gate.plans(c)) == 2
    assert gate.audit(answer.header("x-kubegate-request-id"))["impersonated_user"] == "olivia"
    assert c.get(POD).body == plain.body and len(wire_fast_starts) == 3




def _catalogs(gate: Gate) -> Any:
    return gate.px.proxy.fwd.catalogs


def test_a_catalog_refreshed_between_two_identical_requests_makes_the_second_take_the_full_pipeline(
    gate, client, fast_starts
):
    """The plan holds the catalog cache's entry it was made from; a new entry with another catalog (what a
    refresh installs) sends the next identical request through the full pipeline, which plans again."""
    import copy

    c = client("ivan")
    assert c.get(POD).status == 200
    assert c.get(POD).status == 200 and len(fast_starts) == 1

    async def refresh() -> None:
        catalogs = _catalogs(gate)
        cluster = gate.px.proxy.fwd.served_cluster(CLUSTER)
        catalogs.put(cluster, copy.copy(catalogs.cached(cluster)))

    gate.px.call(refresh)
    assert c.get(POD).status == 200 and len(fast_starts) == 1  # replanned with the new catalog
    assert c.get(POD).status == 200 and len(fast_starts) == 2


def test_a_catalog_due_for_refresh_still_serves_the_identical_request_fast_and_starts_the_refresh(
    gate, client, fast_starts
):
    c = client("judy")
    assert c.get(POD).status == 200
    assert c.get(POD).status == 200 and len(fast_starts) == 1
    entry = gate.px.call(_async(lambda: _catalogs(gate).entries[CLUSTER]))
    max_age = _catalogs(gate).max_age
    gate.px.call(_async(lambda: setattr(_catalogs(gate), "max_age", 0.0)))
    try:
        assert c.get(POD).status == 200 and len(fast_starts) == 2  # the old catalog meanwhile
        # the refresh ran in the background and installed a new entry
        wait_for(lambda: gate.px.call(_async(lambda: _catalogs(gate).entries[CLUSTER])) is not entry, timeout=10)
    finally:
        gate.px.call(_async(lambda: setattr(_catalogs(gate), "max_age", max_age)))


def _async(read: Callable[[], Any]) -> Callable[[], Any]:
    async def call() -> Any:
        return read()

    return call

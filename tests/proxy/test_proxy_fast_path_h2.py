"""The HTTP/2 fast path (``proxy.fastpath.CodecFastExchange`` from a plan): on one HTTP/2 client
connection, a GET sent again with the same decoded head (target, authority, header fields) is answered on its own stream from
what the full pipeline made of it the first time, and is still refused, counted, audited, flow-controlled
and relayed exactly as the full pipeline would.

The proxy, its sandbox and the clients are those of the HTTP/1.1 fast-path tests (``fast_gate.py``): here
``H2Client``, a raw TLS socket with ALPN h2 driven by the ``h2`` library (its frames, HPACK and flow
control, the stream windows set per test), and kubectl, which speaks h2 to kubegate. What a change of
locks, roles, clusters or health, an upstream that closes or does not answer, and client-sent
impersonation do to a repeated request is specified once for both protocols in
``test_proxy_fast_path.py`` (the tests taking ``wire_client``, run ``[h2]`` and ``[http1]``). Which
requests took the fast path is observed by counting the ``CodecFastExchange`` objects made (each starts as it is made) with one of the
connection's plans (a wrapper set with monkeypatch: no product code for it; the direct path's exchanges,
for a request with no plan yet, are not counted) and by the plans the proxy's connection holds
(``ClientConnection.h2_plans``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from proxy.connection import ClientConnection
from proxy.fastpath import CodecFastExchange
from proxy.testing import wait_for
from tests.proxy.fast_gate import (
    BULK_ITEMS,
    BULK_LIST,
    BULK_NAMESPACE,
    CLUSTER,
    EDGE_EMPTY,
    EDGE_POD,
    OTHER_POD,
    POD,
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
    with running_gate(tmp_path_factory.mktemp("fastpath-h2")) as gate:
        yield gate


@pytest.fixture
def fast_starts(monkeypatch: pytest.MonkeyPatch, gate: Gate) -> list[CodecFastExchange]:
    """Every ``CodecFastExchange`` started from a plan while the test runs (the fast path taken), in order."""
    return record_starts(monkeypatch, gate, CodecFastExchange)


@pytest.fixture
def client(gate: Gate) -> Iterator[Callable[..., H2Client]]:
    """``client(user, roles, **kw)`` → an ``H2Client`` closed at teardown."""
    with opened_clients(gate, H2Client) as make:
        yield make


def _request_ids(answers: list[Response]) -> list[str]:
    ids = [a.header("x-kubegate-request-id") for a in answers]
    assert all(ids)
    return ids  # type: ignore[return-value]


def _same_answer(answer: Response, first: Response) -> None:
    assert answer.status == first.status and answer.body == first.body
    assert answer.header("content-length") == str(len(first.body))
    assert same_fields(answer) == same_fields(first)


# --- 1. the same answers, ids, audit lines and metrics -------------------------------------------------


def test_repeated_gets_on_one_h2_connection_are_answered_by_the_fast_path(gate, client, fast_starts):
    before = gate.requests_counted("get", 200)
    c = client("alice")
    first = c.get(POD)
    assert first.status == 200 and first.json["metadata"]["name"] == "web-1"
    (key,) = gate.plans(c)  # the first request left one plan, keyed by the decoded head
    target, authority, fields = key
    assert (target, authority) == (POD, "127.0.0.1") and (b"accept", b"application/json") in fields
    assert fast_starts == []
    sids = [c.begin(POD) for _ in range(4)]
    repeats = [c.answer(sid) for sid in sids]
    assert [fx.sid for fx in fast_starts] == sids  # each repeat took the fast path, on its own stream

    for answer in repeats:
        _same_answer(answer, first)
    ids = _request_ids([first, *repeats])
    assert len(set(ids)) == 5
    assert [fx.request_id for fx in fast_starts] == ids[1:]

    # One audit line per request; the fast path's have the full pipeline's fields and values.
    events = [gate.audit(request_id) for request_id in ids]
    assert events[0]["code"] == 200 and events[0]["user"] == "alice" and events[0]["verb"] == "get"
    assert events[0]["impersonated_user"] == "alice" and events[0]["bytes_out"] == len(first.body)
    for event in events[1:]:
        assert event.keys() == events[0].keys()
        assert comparable(event) == comparable(events[0])
    assert gate.requests_counted("get", 200) == before + 5


def test_sixteen_concurrent_identical_streams_each_get_their_own_fast_answer(gate, client, fast_starts):
    c = client("bob")
    # Sent in one write, all sixteen heads are read before any answer: none has a plan yet. The API server
    # holds its answers until all sixteen are in flight, so each has an upstream connection of its own.
    with gate.sandbox_held():
        sids = [c.begin(POD, flush=False) for _ in range(16)]
        c.flush()
        wait_for(lambda: gate.px.stats()["exchanges"] == 16, timeout=10)
        time.sleep(0.2)  # the full pipeline's tasks reach their (new) upstream connections
    firsts = [(sid, c.answer(sid)) for sid in sids]
    assert fast_starts == []
    body = firsts[0][1].body
    assert all(a.status == 200 and a.body == body for _, a in firsts)
    # Again: each stream is answered by a fast exchange of its own, on an idle upstream connection of its
    # own (those the first round opened went back to the pool); should there be fewer than sixteen, the
    # streams beyond them take the full pipeline.
    wait_for(lambda: gate.px.stats()["pools"][CLUSTER]["http1_busy"] == 0, timeout=10)
    idle = gate.px.stats()["pools"][CLUSTER]["http1_idle"]
    seconds = c.concurrent(POD, 16)
    assert len(fast_starts) == min(16, idle) >= 8
    assert len({fx.upstream for fx in fast_starts}) == len(fast_starts)
    assert {fx.sid for fx in fast_starts} <= {sid for sid, _ in seconds}
    for _, answer in seconds:
        _same_answer(answer, firsts[0][1])
    ids = _request_ids([a for _, a in firsts + seconds])
    assert len(set(ids)) == 32
    events = [gate.audit(request_id) for request_id in ids]
    assert all(comparable(event) == comparable(events[0]) for event in events)
    assert len(gate.audited("bob")) == 32
    assert c.get(POD).body == body  # and the connection goes on


# --- 2. locks, roles, clusters, health: in test_proxy_fast_path.py, for both protocols ([h2]) -------


# --- 3. the upstream closing its keep-alive connection ---------------------------------------------


def test_a_request_the_server_closes_on_unanswered_is_replayed_through_the_full_pipeline(
    gate, client, fast_starts, monkeypatch
):
    """The keep-alive race: the fast path writes the request to a pooled connection that the server closes
    at that moment without reading it (its idle timeout fired). Made deterministic by holding the sandbox's
    event loop while the request is written, then closing the connection with the request unread. The
    stream's head goes to the full pipeline (``ClientConnection.start_exchange``), which retries the GET;
    a request on another stream meanwhile is served too."""
    replayed = record_starts_exchange(monkeypatch)
    c = client("ivan")
    first = c.get(POD)
    assert c.get(POD).body == first.body and len(fast_starts) == 1
    lines_before = len(gate.audited("ivan"))

    with gate.sandbox_held(then=gate.close_upstream_connections):
        sid = c.begin(POD)
        wait_for(lambda: len(fast_starts) == 2, timeout=10)  # written to the pooled connection
        other = c.begin(OTHER_POD)  # no plan for this one: served meanwhile (direct path or full pipeline)
        time.sleep(0.2)
    again = c.answer(sid)
    assert again.status == 200 and again.body == first.body
    assert c.answer(other).json["metadata"]["name"] == "web-2"
    assert sid in replayed and len(fast_starts) == 2
    # Served once: one audit line, by the full pipeline (the fast exchange handed it over uncounted).
    request_id = again.header("x-kubegate-request-id")
    assert request_id != fast_starts[1].request_id
    assert gate.audit(request_id)["code"] == 200
    wait_for(lambda: len(gate.audited("ivan")) == lines_before + 2, timeout=10)
    assert fast_starts[1].request_id not in {e["request_id"] for e in gate.audited("ivan")}
    assert c.get(POD).body == first.body  # and the connection goes on


def record_starts_exchange(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The stream ids ``ClientConnection.start_exchange`` serves (requests a fast exchange gave up on)."""
    replayed: list[int] = []

    class Observed(ClientConnection):
        def start_exchange(self, head: Any, *, ended: bool) -> None:
            replayed.append(head.stream_id)
            super().start_exchange(head, ended=ended)

    connections_made_as(monkeypatch, Observed)
    return replayed


# --- 4. flow control: a small stream window, and one that never opens ------------------------------


def _cut_count() -> float:
    return REGISTRY.get_sample_value(
        "kubegate_client_connections_rejected_total", {"reason": "client_send_timeout"}) or 0.0


def test_a_large_answer_through_a_small_stream_window_credited_slowly_arrives_whole(
    gate, client, fast_starts, monkeypatch
):
    """The client's streams have a 16 KiB window, credited back 8 KiB at a time after a pause: the fast
    exchange stops reading the upstream whenever the window shuts with data held for the stream
    (``CodecFastExchange._drain``, which waits in ``ClientConnection.drain``) and goes on once the client
    took it, over and over for ~1.2 MB."""
    drains: list[int] = []

    class Observed(ClientConnection):
        async def drain(self, stream_id: int) -> None:
            drains.append(stream_id)
            await super().drain(stream_id)

    connections_made_as(monkeypatch, Observed)
    c = client("judy", window=16384)
    first = c.get(BULK_LIST)
    assert first.status == 200 and len(first.body) > 1_100_000
    names = [item["metadata"]["name"] for item in first.json["items"]]
    assert names == [f"cm-{n:04d}" for n in range(BULK_ITEMS)]

    drains.clear()
    sid = c.begin(BULK_LIST)
    c.held.add(sid)
    stream = c.streams[sid]
    deadline = time.monotonic() + 60
    while not stream.ended:
        assert time.monotonic() < deadline and stream.reset is None
        c.pump()
        if stream.unacked >= 8192:
            time.sleep(0.002)
            c.credit(sid)
    assert [fx.sid for fx in fast_starts] == [sid]
    slow = Response(stream.status, stream.headers, bytes(stream.body))
    _same_answer(slow, first)
    assert len(drains) >= 2 and set(drains) == {sid}  # the upstream waited for the client, and went on
    event = gate.audit(slow.header("x-kubegate-request-id"))
    assert event["code"] == 200 and event["bytes_out"] == len(first.body)
    assert c.get(POD).status == 200


def test_a_stream_whose_window_never_opens_is_reset_after_the_send_timeout_while_others_are_served(
    gate, client, fast_starts
):
    before = _cut_count()
    c = client("ken", window=16384)
    pod = c.concurrent(POD, 2)[0][1]  # two upstream connections for what follows: one stays idle
    full = c.get(BULK_LIST)
    stuck = c.begin(BULK_LIST)
    c.held.add(stuck)  # never credited: its window stays shut after the first 16 KiB
    started = time.monotonic()
    wait_for(lambda: len(fast_starts) == 1, timeout=10)
    exchange = fast_starts[0]
    # Meanwhile the connection serves other streams, on the fast path too.
    for _ in range(3):
        assert c.get(POD).body == pod.body
    assert len(fast_starts) == 4
    c.until(lambda: c.streams[stuck].reset is not None, timeout=SEND_TIMEOUT + 20)
    assert time.monotonic() - started >= SEND_TIMEOUT - 0.1
    assert not c.streams[stuck].ended and len(c.streams[stuck].body) == 16384
    assert _cut_count() == before + 1
    event = gate.audit(exchange.request_id)
    assert event["code"] == 200 and 0 < event["bytes_out"] < len(full.body) // 2  # the upstream was paused
    assert exchange.upstream.closed  # the upstream request ended with it
    assert c.get(POD).body == pod.body and len(fast_starts) == 5  # the connection goes on
    wait_for(lambda: gate.px.stats()["exchanges"] == 0, timeout=10)


# --- 5. the client resetting its stream ------------------------------------------------------------


def test_a_client_reset_ends_the_fast_exchange_and_its_upstream_connection_and_the_connection_goes_on(
    gate, client, fast_starts
):
    c = client("leo", window=16384)
    full = c.get(BULK_LIST)
    pod = c.get(POD)
    gate.shrink_upstream_send_buffers()
    sid = c.begin(BULK_LIST)
    c.held.add(sid)  # the answer stays in flight: the window shuts after 16 KiB
    c.until(lambda: len(c.streams[sid].body) == 16384)
    (exchange,) = fast_starts
    assert not exchange.finished
    c.cancel(sid)
    wait_for(lambda: exchange.finished, timeout=10)
    event = gate.audit(exchange.request_id)
    assert event["code"] == 200 and 0 < event["bytes_out"] < len(full.body)
    assert exchange.upstream.closed

    async def idle_upstreams() -> list[Any]:
        return list(gate.px.proxy.fwd.pools.pools[exchange.cluster.name].h1_idle)

    assert exchange.upstream not in gate.px.call(idle_upstreams)  # not reused
    # The connection goes on (the full pipeline first when the closed upstream connection was the only
    # idle one, and it leaves a new one in the pool), on the fast path again.
    assert [c.get(POD).body for _ in range(2)] == [pod.body] * 2 and len(fast_starts) >= 2
    assert fast_starts[-1].upstream is not exchange.upstream
    assert c.get(BULK_LIST).body == full.body  # held no more: credited as it comes
    wait_for(lambda: gate.px.stats()["exchanges"] == 0, timeout=10)


def test_a_client_reset_before_the_answer_began_ends_the_exchange_and_its_upstream_request(
    gate, client, fast_starts
):
    """The stream is reset while the upstream has not answered yet (its loop held): the exchange ends,
    audited, its upstream connection is closed rather than left with an answer nobody reads, and the
    connection and the cluster's pool serve on."""
    c = client("max")
    first = c.get(POD)
    with gate.sandbox_held():
        sid = c.begin(POD)
        wait_for(lambda: len(fast_starts) == 1, timeout=10)
        (exchange,) = fast_starts
        c.cancel(sid)
        wait_for(lambda: exchange.finished, timeout=10)
        assert exchange.upstream.closed
    assert gate.audit(exchange.request_id)["bytes_out"] == 0
    wait_for(lambda: gate.px.stats()["exchanges"] == 0, timeout=10)
    wait_for(lambda: all(p["http1_busy"] == 0 for p in gate.px.stats()["pools"].values()), timeout=10)
    again = c.get(POD)
    assert again.body == first.body and c.streams[sid].status == 0  # nothing was sent on the reset stream


def test_a_cluster_removed_mid_answer_resets_that_stream_only(gate, client, fast_starts):
    """HTTP/2 can say that an answer was cut short without closing the connection: the stream is reset
    (HTTP/1.1 has to close the connection), and the client's other requests go on."""
    gate.add_cluster("dropped")
    path = f"/k8s/clusters/dropped/api/v1/namespaces/{BULK_NAMESPACE}/configmaps"
    c = client("tess", window=16384)
    try:
        total = len(c.get(path).body)
        pod = c.get(POD)
        sid = c.begin(path)
        c.held.add(sid)  # the answer stays in flight: the window shuts after 16 KiB
        c.until(lambda: len(c.streams[sid].body) == 16384)
        (exchange,) = fast_starts
        gate.registry.remove("dropped", "test-fast")
        c.until(lambda: c.streams[sid].reset is not None)
        assert not c.streams[sid].ended
        event = gate.audit(exchange.request_id)
        assert event["stopped"] == "kubegate ended this stream: cluster dropped was removed"
        assert 0 < event["bytes_out"] < total
        wait_for(lambda: gate.px.stats()["exchanges"] == 0, timeout=10)
        assert "dropped" not in gate.px.stats()["pools"]
    finally:
        gate.registry.remove("dropped", "test-fast")
    assert c.get(POD).body == pod.body  # the connection goes on


def test_an_upstream_that_fails_mid_answer_resets_that_stream_only(gate, client, fast_starts):
    def resets() -> float:
        return REGISTRY.get_sample_value("kubegate_upstream_errors_total", {"cluster": CLUSTER, "kind": "reset"}) or 0.0

    before = resets()
    c = client("uma", window=16384)
    total = len(c.get(BULK_LIST).body)
    pod = c.get(POD)
    gate.shrink_upstream_send_buffers()
    sid = c.begin(BULK_LIST)
    c.held.add(sid)
    c.until(lambda: len(c.streams[sid].body) == 16384)
    (exchange,) = fast_starts

    async def reset_all() -> None:  # the API server's connections end abruptly (a crash, a RST)
        for conn in list(gate.sandbox.server._connections):
            conn.transport.abort()

    gate.sandbox.call(reset_all)
    c.held.discard(sid)
    c.credit(sid)  # reading again: the proxy reads the upstream again, and finds it gone
    c.until(lambda: c.streams[sid].reset is not None or c.streams[sid].ended)
    assert c.streams[sid].reset is not None and len(c.streams[sid].body) < total
    event = gate.audit(exchange.request_id)
    assert event["code"] == 200 and 0 < event["bytes_out"] < total
    assert resets() == before + 1
    wait_for(lambda: gate.px.stats()["exchanges"] == 0, timeout=10)
    assert c.get(POD).body == pod.body  # the connection goes on


# --- 6. chunked, 304 and 204 answers (nginx before the sandbox: ``fast_gate.running_edge``) ------------


@pytest.fixture(scope="module")
def edge(gate: Gate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[bytes]:
    with running_edge(gate, tmp_path_factory.mktemp("edge")) as pod:
        yield pod


def test_chunked_304_and_204_answers_are_framed_by_h2_on_the_fast_path(gate, edge, client, fast_starts):
    """The upstream's HTTP/1.1 framing (chunks, a bodiless 304 or 204) becomes h2 framing: DATA frames
    and END_STREAM, no transfer-encoding, a content-length only where the upstream gave one. The ``h2``
    client checks the framing against the fields (a content-length that does not match is an error)."""
    import gzip

    pod = f"/k8s/clusters/edge{EDGE_POD}"
    c = client("quinn")
    plain = c.get(pod)
    assert plain.status == 200 and plain.body == edge and plain.header("etag")
    gzipped = [c.get(pod, [("accept-encoding", "gzip")]) for _ in range(3)]
    not_modified = [c.get(pod, [("if-none-match", plain.header("etag"))]) for _ in range(2)]
    empty = [c.get(f"/k8s/clusters/edge{EDGE_EMPTY}") for _ in range(2)]
    assert len(fast_starts) == 4  # the second of each
    for answer in gzipped:
        assert answer.status == 200 and answer.header("content-encoding") == "gzip"
        assert gzip.decompress(answer.body) == edge
        assert answer.header("transfer-encoding") is None and answer.header("content-length") is None
    assert same_fields(gzipped[1]) == same_fields(gzipped[0])
    assert [(a.status, a.body) for a in not_modified + empty] == [(304, b""), (304, b""), (204, b""), (204, b"")]
    for first, again in (not_modified, empty):
        assert same_fields(again) == same_fields(first)
    codes = [gate.audit(a.header("x-kubegate-request-id"))["code"] for a in gzipped + not_modified + empty]
    assert codes == [200, 200, 200, 304, 304, 204, 204]
    assert c.get(pod).body == edge  # the connection goes on


def test_answers_relayed_fast_over_h2_carry_the_same_fields_as_the_full_pipelines(gate, edge, client, fast_starts):
    """Whatever the upstream frames its answer with (nginx's ``Connection: keep-alive``, a content-length),
    an answer on the h2 fast path has the same fields and body as the full pipeline's answer to the same
    request (an HTTP/1.0 one, which only it serves), a content-length that matches the body, one request
    id: hop-by-hop fields dropped."""
    paths = [f"/k8s/clusters/edge{EDGE_POD}",  # nginx, from a file: content-length, keep-alive, etag
             f"/k8s/clusters/edge/api/v1/namespaces/{BULK_NAMESPACE}/configmaps/cm-0001",  # nginx proxying
             "/k8s/clusters/edge/api/v1/namespaces/dev/pods/nobody",  # the sandbox's 404 through nginx
             POD, f"/k8s/clusters/{CLUSTER}/api/v1/namespaces/dev/pods/nobody"]  # the sandbox itself
    with opened_clients(gate, Client) as http1:
        full = [http1("sam").ask(get(path).replace(b"HTTP/1.1", b"HTTP/1.0")) for path in paths]
    c = client("sam")
    for path, expected in zip(paths, full, strict=True):
        answers = [c.get(path) for _ in range(3)]
        for answer in answers:
            assert (answer.status, answer.body) == (expected.status, expected.body)
            assert answer.header("content-length") == str(len(answer.body))
            assert [f for f in same_fields(answer) if f[0] != "content-length"] == [
                f for f in same_fields(expected) if f[0] not in ("connection", "keep-alive", "content-length")]
    assert len(fast_starts) == 2 * len(paths)


# --- 7. client-sent impersonation: in test_proxy_fast_path.py, for both protocols ([h2]) ------------


# --- 8. the order of the header fields -------------------------------------------------------------


def test_the_same_fields_in_another_order_are_the_same_request(gate, client, fast_starts):
    """Go's HTTP/2 client (kubectl's, client-go's) writes a request's header fields in map order, which
    differs from one request to the next: fields of different names in another order are the same
    request (RFC 9110 §5.3), and ride its plan. The order of the values of one name is part of the
    request: another order is another request."""
    c = client("pia")
    fields = [("kubectl-command", "kubectl get"), ("kubectl-session", "4b1f"), ("user-agent", "kubectl/v1.37")]
    first = c.get(POD, fields)
    again = c.get(POD, fields[::-1])
    assert again.body == first.body and len(fast_starts) == 1
    assert len(gate.plans(c)) == 1

    values = [("x-probe", "a"), ("x-probe", "b")]
    assert c.get(POD, values).body == first.body
    assert c.get(POD, values[::-1]).body == first.body and len(fast_starts) == 1  # another request: planned anew
    assert len(gate.plans(c)) == 3
    assert c.get(POD, values[::-1]).body == first.body and len(fast_starts) == 2


# --- 9. kubectl -----------------------------------------------------------------------------------


def test_kubectl_getting_the_same_pod_twice_in_one_run_is_served_by_the_fast_path(gate, kubectl, fast_starts):
    """kubectl (each version) speaks h2 to kubegate and keeps one connection for a run: asked for the same
    pod twice, it sends the same request twice, and the second rides the first's plan."""
    import json
    import subprocess

    kubeconfig = gate.px.kubeconfig("pat", ["admin"], ["fast"])
    run = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "get", "pods", "web-1", "web-1", "-n", "dev",
                          "-o", "json"], capture_output=True, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr.decode()
    listed = json.loads(run.stdout)
    assert [item["metadata"]["name"] for item in listed["items"]] == ["web-1", "web-1"]
    assert len(fast_starts) == 1


def test_a_client_granting_huge_windows_that_reads_nothing_does_not_fill_kubegate(gate, client, monkeypatch):
    """Four ~1.2 MB answers to a client whose stream and connection windows are ~2 GiB and that reads
    nothing: h2 flow control never stops them, so only the socket's pause can. Large pieces are written
    at once (not batched to the end of the loop iteration) so that the pause is seen and the upstreams
    wait: what kubegate holds for the client stays around one upstream read per stream (≤ 256 KiB each),
    not the four answers."""
    warm = client("nia")
    # The decision and catalog at hand, and (four answers at once) four idle upstream connections.
    assert all(len(answer.body) > 1_100_000 for _, answer in warm.concurrent(BULK_LIST, 4))
    c = client("nia", window=(1 << 31) - 1)
    assert c.get(POD).status == 200
    gate.shrink_send_buffer(c)
    started = record_starts(monkeypatch, gate, CodecFastExchange, planned=False)  # the direct path's too
    sids = [c.begin(BULK_LIST) for _ in range(4)]  # and read no more
    wait_for(lambda: sorted(exchange.sid for exchange in started) == sids, timeout=10)  # all served at once

    def held() -> int:
        stats = gate.px.stats()
        return stats["to_clients_bytes"] + stats["from_upstreams_bytes"]

    time.sleep(1.5)
    assert held() < 4 * 256 * 1024 + 2 * 65536
    c.close()
    wait_for(lambda: gate.px.stats()["exchanges"] == 0, timeout=SEND_TIMEOUT + 20)

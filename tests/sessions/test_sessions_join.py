"""``kubegate sessions join ID`` (the real CLI, as a subprocess) watches a live ``kubectl exec -it``
session read-only through the proxy listener, authenticated by the joiner's client certificate; the
session's owner sees a line naming who joined; a user without ``join_sessions`` is refused."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from proxy.recording.index import FileSessionIndex
from tests.sessions.conftest import PtyKubectl, read_until, replay_screen, wait_for

pytestmark = pytest.mark.e2e


def _live_session(sessions_dir, marker: str) -> dict:
    index = FileSessionIndex(str(sessions_dir))
    return wait_for(lambda: next((r for r in index.list() if marker in " ".join(r.get("command") or [])
                                  and r.get("state") == "live"), None), 30, "the live session")


def _join(session_id: str, kubeconfig) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "kubegate", "sessions", "join", session_id, "--kubeconfig", str(kubeconfig)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("through", ["same process", "another worker", "another replica"])
def test_an_observer_sees_the_live_session_and_the_owner_sees_the_join(kubectl, rpx, rpx_other_worker, sessions_dir,
                                                                       through, request):
    """``another worker``: the joiner reaches a proxy that does not hold the session (proxy.workers > 1):
    it follows the session's recording file, and the owner's proxy learns of the join from the files.
    ``another replica``: the joiner reaches a replica on another host (the index shared, not the files):
    it asks the replica holding the session for the stream as the joiner, and relays it."""
    from prometheus_client import REGISTRY

    source = {"same process": "this_process", "another worker": "recording_file",
              "another replica": "another_replica"}[through]
    joins_before = REGISTRY.get_sample_value("kubegate_session_joins_total", {"source": source}) or 0
    marker = uuid.uuid4().hex[:12]
    owner_config = rpx.kubeconfig("alice", ["admin"], ["sandbox"])
    joined = {"same process": rpx, "another worker": rpx_other_worker}.get(through) \
        or request.getfixturevalue("rpx_other_replica")
    observer_config = joined.kubeconfig("bob", ["observer"], ["sandbox"])
    viewer_config = joined.kubeconfig("eve", ["viewer"], ["sandbox"])
    term = PtyKubectl([kubectl, "--kubeconfig", str(owner_config), "exec", "-it", "-n", "dev", "web-1", "--",
                       "sh", "-c", f"echo ready-{marker}; exec sh -i"], dict(os.environ, TERM="xterm"))
    joiner = None
    try:
        term.read_until(f"ready-{marker}".encode())
        session = _live_session(sessions_dir, marker)

        refused = subprocess.run([sys.executable, "-m", "kubegate", "sessions", "join", session["session_id"],
                                  "--kubeconfig", str(viewer_config)], capture_output=True, timeout=60)
        assert refused.returncode == 1
        assert b"403" in refused.stderr and b"may not join" in refused.stderr

        joiner = _join(session["session_id"], observer_config)
        read_until(joiner, f"ready-{marker}".encode())  # the recent screen comes first
        term.read_until(b"bob joined this session")
        term.type("echo live-$((2+3))\r")
        term.read_until(b"live-5")
        read_until(joiner, b"live-5")
        term.type("exit\r")
        assert term.wait() == 0
        assert joiner.wait(timeout=30) == 0
        assert joiner.stderr is not None and b"the session ended" in joiner.stderr.read()
        owner_screen = term.screen.display
    finally:
        term.close()
        if joiner is not None and joiner.poll() is None:
            joiner.kill()
            joiner.wait()
    assert REGISTRY.get_sample_value("kubegate_session_joins_total", {"source": source}) == joins_before + 1
    join_events = [e for e in list(joined.audit_events) if e.get("event") == "session.join"]
    assert any(e["session_id"] == session["session_id"] and e["user"] == "bob" and e["owner"] == "alice"
               for e in join_events)
    if through == "another replica":  # the replica holding the session decided and audited the join too
        held = [e for e in list(rpx.audit_events) if e.get("event") == "session.join"
                and e["session_id"] == session["session_id"]]
        assert [(e["user"], e["owner"]) for e in held] == [("bob", "alice")]
        assert session["proxy_addr"] == f"127.0.0.1:{rpx.port}"
    cast = wait_for(lambda: (sessions_dir / f"{session['session_id']}.cast").read_bytes()
                    if FileSessionIndex(str(sessions_dir)).get(session["session_id"])["state"] == "ended" else None)
    assert replay_screen(cast).display == owner_screen  # the join line is in the recording too


def test_joining_a_session_that_is_not_live_is_a_404(rpx, sessions_dir):
    observer_config = rpx.kubeconfig("bob", ["observer"], ["sandbox"])
    result = subprocess.run([sys.executable, "-m", "kubegate", "sessions", "join", uuid.uuid4().hex,
                             "--kubeconfig", str(observer_config)], capture_output=True, timeout=60)
    assert result.returncode == 1 and b"404" in result.stderr and b"not live" in result.stderr


def test_a_join_through_another_replica_relays_the_holders_refusal_and_names_a_holder_that_does_not_answer(
        rpx, rpx_other_replica, sessions_dir):
    """The replica a join reaches relays what the holding replica answers (here its 404: it holds no such
    session any more); when the holder cannot be reached, answers 502 naming it; and when the shared
    backend says the holder's process is gone, 404 at once."""
    from kubegate.demo import free_port

    index = FileSessionIndex(str(sessions_dir))
    observer_config = rpx_other_replica.kubeconfig("bob", ["observer"], ["sandbox"])
    record = {"kind": "exec", "user": "alice", "roles": ["admin"], "cluster": "sandbox", "namespace": "dev",
              "pod": "web-1", "command": [], "state": "live", "recording": None, "start_time": time.time(),
              "proxy_pid": 4242}
    gone, unreachable = uuid.uuid4().hex, uuid.uuid4().hex
    holders = {gone: f"127.0.0.1:{rpx.port}", unreachable: f"127.0.0.1:{free_port()}"}
    for session_id, holder in holders.items():
        index.put({**record, "session_id": session_id, "proxy_addr": holder})
    try:
        # the holder's process gone from the shared backend (backend.presence): answered at once, not asked
        rpx_other_replica.proxy.recordings.present = lambda address, pid: False
        try:
            vanished = subprocess.run([sys.executable, "-m", "kubegate", "sessions", "join", unreachable,
                                       "--kubeconfig", str(observer_config)], capture_output=True, timeout=60)
        finally:
            rpx_other_replica.proxy.recordings.present = None
        assert vanished.returncode == 1 and b"404" in vanished.stderr, vanished.stderr
        assert f"the kubegate replica at {holders[unreachable]} that held it is gone".encode() in vanished.stderr
        relayed = subprocess.run([sys.executable, "-m", "kubegate", "sessions", "join", gone,
                                  "--kubeconfig", str(observer_config)], capture_output=True, timeout=60)
        assert relayed.returncode == 1 and b"404" in relayed.stderr and b"not live" in relayed.stderr, relayed.stderr
        failed = subprocess.run([sys.executable, "-m", "kubegate", "sessions", "join", unreachable,
                                 "--kubeconfig", str(observer_config)], capture_output=True, timeout=60)
        assert failed.returncode == 1 and b"502" in failed.stderr, failed.stderr
        assert f"held by the kubegate replica at {holders[unreachable]}, which did not answer".encode() in failed.stderr
        # a join that says a replica asked it (kubegate-replica-hop) is never asked on: a client setting the
        # header only gets the 404 of a session not held here, where a relay would have answered 502
        # (no chains, no loops between replicas)
        import http.client
        import ssl

        cert, key = rpx_other_replica.issue_user("bob", ["observer"])
        context = ssl.create_default_context(cafile=str(rpx_other_replica.ca_pem_path))
        context.load_cert_chain(str(cert), str(key))
        connection = http.client.HTTPSConnection("127.0.0.1", rpx_other_replica.port, context=context, timeout=30)
        connection.request("GET", f"/kubegate/sessions/{unreachable}/stream", headers={"kubegate-replica-hop": "1"})
        hop = connection.getresponse()
        assert hop.status == 404 and b"not live" in hop.read()
        connection.close()
    finally:
        for session_id in holders:
            index.put({**record, "session_id": session_id, "state": "ended", "proxy_addr": holders[session_id]})

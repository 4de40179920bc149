"""``backend.presence``: a kubegate process's key in the shared backend, held under a lease while it runs,
gone at once when it stops and within the lease's TTL when it is killed; and ``kubegate sessions ls``'s
reading of another replica's live sessions from it. On a real 3-member etcd on loopback."""

from __future__ import annotations

import asyncio
import time

import pytest
import uvloop

from backend.etcd import EtcdBackend
from backend.presence import Presence, is_present
from kubegate.commands.sessions import session_state


@pytest.fixture
def backend(etcd_cluster, etcd_prefix):
    b = EtcdBackend(etcd_cluster.endpoints, prefix=etcd_prefix)
    yield b
    b.close()


def test_a_running_process_is_present_and_a_stopped_one_is_gone_at_once(backend):
    async def scenario() -> tuple[bool, bool, bool]:
        presence = Presence(backend, "kg-1.internal:3026", ttl=2.0, pid=4242)
        task = asyncio.get_running_loop().create_task(presence.run())
        deadline = time.monotonic() + 5
        while not await asyncio.to_thread(is_present, backend, "kg-1.internal:3026", 4242):
            assert time.monotonic() < deadline, "the key never came"
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.5)  # past one TTL: renewed meanwhile
        renewed = await asyncio.to_thread(is_present, backend, "kg-1.internal:3026", 4242)
        other = await asyncio.to_thread(is_present, backend, "kg-1.internal:3026", 4243)
        await presence.stop()
        task.cancel()
        gone = not await asyncio.to_thread(is_present, backend, "kg-1.internal:3026", 4242)
        return renewed, other, gone

    renewed, other, gone = uvloop.run(scenario())
    assert renewed and not other and gone


def test_a_killed_process_is_gone_within_its_lease(backend):
    """A process that stops renewing without revoking (killed): its key outlives it by at most the TTL."""
    lease = backend.grant(2.0)
    backend.put("replicas/kg-2.internal:3026/77", b"{}", lease=lease)  # as Presence writes it, then no renewal
    assert is_present(backend, "kg-2.internal:3026", 77)
    deadline = time.monotonic() + 6
    while is_present(backend, "kg-2.internal:3026", 77):
        assert time.monotonic() < deadline, "the key outlived its lease"
        time.sleep(0.2)


def test_sessions_ls_calls_a_live_session_of_a_replica_whose_process_is_gone_interrupted(backend):
    live = {"state": "live", "proxy_addr": "kg-2.internal:3026", "proxy_pid": 77}
    lease = backend.grant(30.0)
    backend.put("replicas/kg-2.internal:3026/77", b"{}", lease=lease)
    try:
        def present(address: str, pid: int) -> bool:
            return is_present(backend, address, pid)

        assert session_state(live, "kg-1.internal:3026", present) == "live"
        assert session_state({**live, "proxy_pid": 78}, "kg-1.internal:3026", present) == "interrupted"
        assert session_state({**live, "state": "ended", "proxy_pid": 78}, "kg-1.internal:3026", present) == "ended"
        assert session_state({**live, "proxy_pid": 78}, "kg-1.internal:3026") == "live"  # no backend: unknown
    finally:
        backend.revoke(lease)


def test_the_key_is_written_again_after_any_failure(backend):
    """A failure of any kind (here an unexpected one from the backend client) is retried every
    ``ttl / 3``: the task never ends while the process runs, or other hosts would call its sessions
    interrupted."""
    calls = {"n": 0}
    real_grant = backend.grant

    def flaky_grant(ttl: float) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a client bug, not a BackendError")
        return real_grant(ttl)

    backend.grant = flaky_grant

    async def scenario() -> bool:
        presence = Presence(backend, "kg-3.internal:3026", ttl=0.6, pid=99)
        task = asyncio.get_running_loop().create_task(presence.run())
        deadline = time.monotonic() + 5
        while not await asyncio.to_thread(is_present, backend, "kg-3.internal:3026", 99):
            assert not task.done(), task.exception()
            assert time.monotonic() < deadline, "the key never came"
            await asyncio.sleep(0.05)
        await presence.stop()
        task.cancel()
        return calls["n"] >= 2

    assert uvloop.run(scenario())

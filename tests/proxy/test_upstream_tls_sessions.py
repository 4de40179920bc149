"""Upstream TLS sessions: a new connection to an API server offers the session of the last connection
made with the same context, and the API server (the sandbox: OpenSSL, two TLS 1.3 tickets per
connection) resumes it — no certificate chain sent or checked again. A connection made with the other
context of the pool (the one offering only HTTP/1.1 by ALPN, for upgrades) is never offered a session
of the first one's. Through kubegate's TLS layer only (uvloop's TLS transport takes no session)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import uvloop

from proxy import tls
from proxy.testing import cluster_for_sandbox
from proxy.upstream import PoolSettings
from proxy.upstream.pool import ClusterPool
from sandbox.testing import running_sandbox

pytestmark = pytest.mark.skipif(tls.tls_layer() is None, reason="proxy.tls_direct is not built here")


def _ssl_object(conn: object) -> object:
    return conn.transport.get_extra_info("ssl_object")  # type: ignore[attr-defined]


async def _settled(conn: object) -> None:
    """Until the API server's session ticket (TLS 1.3: sent after the handshake) has arrived and been read
    on ``conn`` (5 s at most)."""
    for _ in range(500):
        session = conn.transport.tls_session()  # type: ignore[attr-defined]
        if session is not None and session.has_ticket:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no session ticket came")


def _with_pool(tmp_path: Path, scenario, settings: PoolSettings | None = None):  # noqa: ANN001, ANN202
    """``scenario(pool)`` run on a pool of connections to a running sandbox (the pool closed after): its
    result."""
    with running_sandbox(tmp_path / "sandbox") as sb:
        cluster = cluster_for_sandbox(sb)

        async def main():  # noqa: ANN202
            pool = ClusterPool(cluster, settings or PoolSettings())
            try:
                return await scenario(pool)
            finally:
                pool.close()

        return uvloop.run(main())


def test_a_new_upstream_connection_resumes_the_session_of_the_last_one_made_with_its_context(tmp_path: Path):
    async def scenario(pool: ClusterPool) -> list[bool]:
        reused = []
        for http1 in (True, True, False, False, True):
            conn = await pool._new_connection(http1=http1)
            reused.append(_ssl_object(conn).session_reused)
            await _settled(conn)
        return reused

    # first with the HTTP/1.1-only context: full, then resumed; then the h2 context: full (its own
    # sessions only), then resumed; back to the first context: resumed from its last connection
    assert _with_pool(tmp_path, scenario) == [False, True, False, True, True]


def test_a_resumed_connection_carries_requests_as_a_full_one_does(tmp_path: Path):
    async def scenario(pool: ClusterPool) -> list[tuple[bool, int]]:
        seen = []
        for _ in range(2):
            conn = await pool._new_connection(http1=True)
            pool.h1_idle.append(conn)
            stream = await pool.open("GET", "/api/v1/namespaces", [(b"host", pool.authority.encode())],
                                     body=None, streaming_body=False)
            status, _ = await stream.response_head()
            while await stream.read():
                pass
            seen.append((_ssl_object(conn).session_reused, status))
            await _settled(conn)
            pool.h1_idle.clear()
        return seen

    assert _with_pool(tmp_path, scenario, PoolSettings(use_h2=False)) == [(False, 200), (True, 200)]


def test_a_connection_made_after_the_last_one_closed_resumes_the_session_it_ended_with(tmp_path: Path):
    """What an exec does: a fresh HTTP/1.1 connection each time, the one before already closed (whose
    layer then keeps only its session, not its OpenSSL connection and buffers)."""

    async def scenario(pool: ClusterPool) -> list[bool]:
        reused = []
        for _ in range(3):
            conn = await pool._new_connection(http1=True)
            reused.append(_ssl_object(conn).session_reused)
            await _settled(conn)
            conn.transport.close()
            for _ in range(100):
                if conn.closed:
                    break
                await asyncio.sleep(0.01)
            assert conn.closed
            layer = conn.transport
            # closed, it holds the session it ended with and no longer the OpenSSL connection
            assert layer.get_extra_info("ssl_object") is None and layer.tls_session() is not None
        return reused

    assert _with_pool(tmp_path, scenario) == [False, True, True]

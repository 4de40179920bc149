"""Run the real sandbox cluster in-process, for tests, the demo and the benchmarks.

    with running_sandbox(tmp_path) as sb:
        sb.port; sb.url                          # https://127.0.0.1:<random free port>
        sb.ca_pem_path; sb.admin_kubeconfig      # kubeconfig of sandbox-admin (O=system:masters)
        sb.client_kubeconfig("alice", ["dev"])   # kubeconfig for another certificate identity
        sb.issue_client_cert("alice", ["dev"])   # -> (cert_pem_path, key_pem_path)
        sb.token_kubeconfig("bob", ["dev"])      # registers a bearer token, kubeconfig using it
        sb.store                                 # the seeded Store (thread-safe to read and write)

The server runs on its own thread with its own uvloop event loop, so synchronous tests and kubectl
subprocesses can use it. Leaving the block stops it (graceful, then forced) and joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

import uvloop

from proxy.protocol.events import ServerLimits
from sandbox.server import SandboxParts, SandboxServer, build_sandbox, write_admin_kubeconfig
from sandbox.store import Store
from sandbox.tls import write_kubeconfig

T = TypeVar("T")


class RunningSandbox:
    def __init__(self, parts: SandboxParts, loop: asyncio.AbstractEventLoop) -> None:
        self._parts = parts
        self.loop = loop
        self.server: SandboxServer = parts.server
        self.store: Store = parts.store
        self.state_dir = parts.state_dir
        self.port = parts.server.port
        self.url = parts.server.url
        self.ca_pem_path = parts.pki.ca_cert_path
        self.admin_kubeconfig = parts.admin_kubeconfig
        self.tokens = parts.tokens
        self._kubeconfigs = parts.state_dir / "kubeconfigs"
        self._counter = 0
        self._lock = threading.Lock()

    def _next_path(self, stem: str) -> Path:
        with self._lock:
            self._counter += 1
            n = self._counter
        self._kubeconfigs.mkdir(parents=True, exist_ok=True, mode=0o700)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
        return self._kubeconfigs / f"{safe}-{n}.kubeconfig"

    def issue_client_cert(self, user: str, groups: Sequence[str] = ()) -> tuple[Path, Path]:
        """A client certificate from the sandbox CA (CN=user, O=groups): (cert_pem_path, key_pem_path)."""
        return self._parts.pki.issue_client_cert(user, list(groups), self.state_dir / "users")

    def client_kubeconfig(
        self, user: str, groups: Sequence[str] = (), path: str | os.PathLike[str] | None = None
    ) -> Path:
        cert, key = self.issue_client_cert(user, groups)
        out = Path(path) if path is not None else self._next_path(user)
        return write_kubeconfig(out, self.url, self.ca_pem_path, user=user, cert_path=cert, key_path=key)

    def add_token(
        self, user: str, groups: Sequence[str] = (), uid: str = "", token: str | None = None
    ) -> str:
        """Register a bearer token in the static token file; returns it."""
        token = token or secrets.token_hex(16)
        self.tokens.add(token, user, uid or f"uid-{user}", list(groups))
        return token

    def token_kubeconfig(
        self,
        token_user: str,
        groups: Sequence[str] = (),
        path: str | os.PathLike[str] | None = None,
        token: str | None = None,
    ) -> Path:
        token = self.add_token(token_user, groups, token=token)
        out = Path(path) if path is not None else self._next_path(f"token-{token_user}")
        return write_kubeconfig(out, self.url, self.ca_pem_path, user=token_user, token=token)

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
        """Run a coroutine function on the sandbox's loop and wait for its result."""

        async def run() -> T:
            return await fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def counts(self) -> tuple[int, int]:
        """(open connections, live request tasks) as seen on the server's loop."""

        async def read() -> tuple[int, int]:
            return self.server.connection_count, self.server.task_count

        return self.call(read)


@contextlib.contextmanager
def running_sandbox(
    state_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: bool = True,
    seed_files: Sequence[str | os.PathLike[str]] = (),
    store: Store | None = None,
    limits: ServerLimits | None = None,
    stop_grace: float = 2.0,
) -> Iterator[RunningSandbox]:
    parts = build_sandbox(
        state_dir, host=host, port=port, seed=seed, seed_files=seed_files, store=store, limits=limits
    )
    loop = uvloop.new_event_loop()
    started: Future[None] = Future()
    stopped = threading.Event()

    def thread_main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(parts.server.start())
        except BaseException as exc:  # report start failures to the caller
            started.set_exception(exc)
            loop.close()
            return
        started.set_result(None)
        try:
            loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.wait(pending, timeout=2))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                stopped.set()

    thread = threading.Thread(target=thread_main, name=f"sandbox-{id(parts):x}", daemon=True)
    thread.start()
    started.result(timeout=30)
    write_admin_kubeconfig(parts)
    sandbox = RunningSandbox(parts, loop)
    try:
        yield sandbox
    finally:
        try:
            asyncio.run_coroutine_threadsafe(parts.server.stop(stop_grace), loop).result(stop_grace + 10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=15)

"""A minimal plain-HTTP/1.1 front for ``sandbox.api.Api`` (h11, own thread and loop), used by the
sandbox-api tests to drive real kubectl and the kubernetes client at the API layer alone.

The real sandbox server (TLS, h2, authentication, upgrades) is ``sandbox.server``; this harness only
maps HTTP requests onto ``Api.handle`` and streams responses with chunked encoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote

import h11
import pytest

from sandbox.api import Api
from sandbox.store import Store
from sandbox.types import ApiRequest, RequestAttributes, UserInfo


class AllowAll:
    def authorize(self, attrs: RequestAttributes) -> tuple[bool, str]:
        return True, ""


class EchoReviews:
    def review(self, resource: str, body: dict, user: UserInfo) -> dict:
        if resource == "selfsubjectreviews":
            return dict(body, status={"userInfo": {"username": user.username, "groups": list(user.groups)}})
        return dict(body, status={"allowed": True})


ADMIN = UserInfo("admin", ("system:masters", "system:authenticated"))


async def _serve_conn(api: Api, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                if not data:
                    return
                continue
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED and conn.our_state is h11.MUST_CLOSE:
                return
            if not isinstance(event, h11.Request):
                return
            body = bytearray()
            while True:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                elif isinstance(ev, h11.Data):
                    body += ev.data
                elif isinstance(ev, h11.EndOfMessage):
                    break
            target = event.target.decode()
            path, _, query = target.partition("?")
            headers: dict[str, str] = {}
            for name, value in event.headers:
                key = name.decode().lower()
                headers[key] = f"{headers[key]}, {value.decode()}" if key in headers else value.decode()
            req = ApiRequest(event.method.decode().upper(), unquote(path), parse_qs(query, keep_blank_values=True),
                             headers, bytes(body), ADMIN, target)
            resp = await api.handle(req)
            out_headers = list(resp.headers)
            if resp.stream is None:
                out_headers.append(("content-length", str(len(resp.body))))
            else:
                out_headers.append(("transfer-encoding", "chunked"))
            writer.write(conn.send(h11.Response(status_code=resp.status, headers=out_headers)))
            if resp.stream is None:
                writer.write(conn.send(h11.Data(data=resp.body)))
            else:
                try:
                    async for chunk in resp.stream:
                        writer.write(conn.send(h11.Data(data=chunk)))
                        await writer.drain()
                finally:
                    with contextlib.suppress(RuntimeError):
                        await resp.stream.aclose()
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (ConnectionError, h11.RemoteProtocolError, h11.LocalProtocolError):
        return
    finally:
        writer.close()


@dataclass
class PlainServer:
    url: str
    store: Store
    api: Api
    loop: asyncio.AbstractEventLoop

    def kubeconfig(self, directory: Path) -> str:
        path = directory / "kubeconfig"
        path.write_text(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sb\n  cluster:\n    server: " + self.url + "\n"
            "users:\n- name: admin\n  user: {}\ncontexts:\n- name: sb\n  context: {cluster: sb, user: admin}\n"
            "current-context: sb\n")
        return str(path)

    def call(self, fn, *args):  # run a function on the server's loop (thread-safe store access)
        return asyncio.run_coroutine_threadsafe(_call(fn, *args), self.loop).result(10)


async def _call(fn, *args):
    return fn(*args)


@contextlib.contextmanager
def plain_server(store: Store | None = None, **api_kwargs: object) -> Iterator[PlainServer]:
    store = store or Store.with_seed_data()
    api = Api(store, AllowAll(), EchoReviews(), **api_kwargs)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, object] = {}

    async def start() -> None:
        server = await asyncio.start_server(lambda r, w: _serve_conn(api, r, w), "127.0.0.1", 0)
        holder["server"] = server
        holder["port"] = server.sockets[0].getsockname()[1]
        started.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield PlainServer(f"http://127.0.0.1:{holder['port']}", store, api, loop)
    finally:
        async def stop() -> None:
            server = holder["server"]
            server.close()  # type: ignore[attr-defined]
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def plain_sandbox() -> Iterator[PlainServer]:
    """The API (seeded store, allow-all authorizer) over plain HTTP on a random loopback port."""
    with plain_server(log_tick_seconds=0.2) as server:
        yield server

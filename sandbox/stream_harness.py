"""A minimal plain-HTTP pod API that serves only what exec / attach / port-forward clients need
(GET a pod, the three upgrade subresources), in its own thread and event loop.

It exists so ``sandbox.streams`` can be tested and benchmarked with real kubectl binaries on its own,
without the full sandbox server (``sandbox.server``), and with no TLS or authorization in the way.
Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from proxy.protocol.events import (
    ConnectionClosed,
    ProtocolError,
    RequestEnd,
    RequestHead,
    ResponseHead,
    UpgradeRequested,
)
from proxy.protocol.http1 import Http1ServerConnection
from sandbox import processes
from sandbox.streams import AsyncioByteStream, serve_stream
from sandbox.types import StreamTarget, UserInfo


def make_pod(name: str, namespace: str = "default", annotations: dict[str, str] | None = None,
             containers: tuple[str, ...] = ("main",)) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}",
                     "resourceVersion": "1", "annotations": dict(annotations or {})},
        "spec": {"containers": [{"name": c, "image": "busybox"} for c in containers]},
        "status": {"phase": "Running",
                   "containerStatuses": [{"name": c, "ready": True, "state": {"running": {}}}
                                         for c in containers]},
    }


_DISCOVERY: dict[str, Any] = {
    "/api": {"kind": "APIVersions", "versions": ["v1"],
             "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod", "shortNames": ["po"],
         "verbs": ["get", "list"]},
        {"name": "pods/exec", "singularName": "", "namespaced": True, "kind": "PodExecOptions", "verbs": ["create", "get"]},
        {"name": "pods/attach", "singularName": "", "namespaced": True, "kind": "PodAttachOptions",
         "verbs": ["create", "get"]},
        {"name": "pods/portforward", "singularName": "", "namespaced": True, "kind": "PodPortForwardOptions",
         "verbs": ["create", "get"]},
    ]},
}


class StreamHarness:
    def __init__(self, pods: list[dict[str, Any]], pod_root: Path) -> None:
        self.pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
        self.pod_root = pod_root
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        self._previous_root = pod_root
        self.sessions: set[asyncio.Task[None]] = set()
        self.connections = 0

    # ---- lifecycle

    def start(self) -> StreamHarness:
        self._previous_root = processes.configure(self.pod_root)
        self._thread = threading.Thread(target=self._run, name="stream-harness", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("stream harness did not start")
        return self

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self._server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()
        # Shutdown: end sessions and consoles, then close the loop.
        for task in list(self.sessions):
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*self.sessions, return_exceptions=True))
        self.loop.run_until_complete(processes.stop_consoles())
        self._server.close()
        self.loop.run_until_complete(self._server.wait_closed())
        self.loop.close()

    def stop(self) -> None:
        if self.loop is not None and self._thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(15)
            processes.configure(self._previous_root)

    def __enter__(self) -> StreamHarness:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "harness",
            "clusters": [{"name": "harness", "cluster": {"server": self.url}}],
            "users": [{"name": "harness", "user": {}}],
            "contexts": [{"name": "harness", "context": {"cluster": "harness", "user": "harness",
                                                          "namespace": "default"}}],
        }))
        return path

    def running_sessions(self) -> int:
        return sum(1 for t in self.sessions if not t.done())

    # ---- serving

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.sessions.add(task)
        self.connections += 1
        try:
            await self._serve(reader, writer)
        finally:
            self.sessions.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Http1ServerConnection()
        try:
            while True:
                data = await reader.read(65536)
                for event in conn.receive_data(data):
                    if isinstance(event, UpgradeRequested):
                        writer.write(conn.data_to_send())
                        await self._upgrade(event.head, event.trailing, reader, writer)
                        return
                    if isinstance(event, RequestHead):
                        pending = event
                    elif isinstance(event, RequestEnd):
                        self._respond(conn, pending)
                    elif isinstance(event, (ProtocolError, ConnectionClosed)):
                        writer.write(conn.data_to_send())
                        return
                writer.write(conn.data_to_send())
                await writer.drain()
                if not data or conn.must_close:
                    return
        except (ConnectionError, OSError):
            return
        finally:
            if not writer.is_closing():
                writer.close()

    def _lookup(self, path: str) -> tuple[dict[str, Any] | None, str]:
        parts = path.strip("/").split("/")
        # api/v1/namespaces/<ns>/pods/<name>[/<sub>]
        if len(parts) >= 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
            pod = self.pods.get((parts[3], parts[5]))
            return pod, parts[6] if len(parts) > 6 else ""
        return None, ""

    def _respond(self, conn: Http1ServerConnection, head: RequestHead) -> None:
        pod, sub = self._lookup(urllib.parse.unquote(head.path))
        if head.path in _DISCOVERY:
            status, body = 200, json.dumps(_DISCOVERY[head.path])
        elif head.path == "/version":
            status, body = 200, json.dumps({"major": "1", "minor": "37", "gitVersion": "v1.37.0-harness"})
        elif pod is not None and not sub and head.method == "GET":
            status, body = 200, json.dumps(pod)
        else:
            status, body = 404, json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                            "status": "Failure", "reason": "NotFound", "code": 404,
                                            "message": f"{head.path} not found"})
        raw = body.encode()
        conn.send_response_head(ResponseHead(head.stream_id, status, [(b"content-type", b"application/json")],
                                             content_length=len(raw)))
        conn.send_body(head.stream_id, raw, end_stream=True)

    async def _upgrade(self, head: RequestHead, trailing: bytes, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        pod, sub = self._lookup(urllib.parse.unquote(head.path))
        stream = AsyncioByteStream(reader, writer)
        if pod is None or sub not in ("exec", "attach", "portforward"):
            stream.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await stream.drain()
            stream.close()
            return
        query = urllib.parse.parse_qs(head.query, keep_blank_values=True)
        target = StreamTarget(sub, pod["metadata"]["namespace"], pod, query, UserInfo("harness"))
        await serve_stream(target, head, stream, trailing)


@contextlib.contextmanager
def running_harness(pods: list[dict[str, Any]], pod_root: Path) -> Iterator[StreamHarness]:
    harness = StreamHarness(pods, pod_root).start()
    try:
        yield harness
    finally:
        harness.stop()

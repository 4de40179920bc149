"""exec / attach / port-forward for the sandbox: protocol negotiation and sessions on a raw stream.

``serve_stream(target, head, stream, initial)`` is called by the sandbox server after the HTTP/1.1
request head of an authorized ``pods/exec``, ``pods/attach`` or ``pods/portforward`` request. It
negotiates, writes the ``101`` (or a refusal) itself, runs the session and closes the stream.

Negotiation (what kubectl 1.20 … 1.37 and the ``kubernetes`` Python client send):

* ``Upgrade: websocket`` (GET) with ``Sec-WebSocket-Protocol``: exec/attach choose, newest first,
  ``v5.channel.k8s.io``, ``v5.base64.channel.k8s.io``, ``v4.channel.k8s.io``, ``v4.base64…``,
  ``v3…``, ``v2…``, ``channel.k8s.io``, ``base64.channel.k8s.io`` (no header at all = ``channel.k8s.io``);
  port-forward chooses ``SPDY/3.1+portforward.k8s.io`` (SPDY tunnelled in binary messages),
  then legacy ``portforward.k8s.io`` / ``base64.portforward.k8s.io``. Nothing in common → ``400``
  Status, which client-go counts as an upgrade failure, so kubectl ≥1.30 falls back to SPDY.
* ``Upgrade: SPDY/3.1`` (POST or GET) with ``X-Stream-Protocol-Version`` (repeatable / comma list):
  exec/attach ``v4.channel.k8s.io`` … ``channel.k8s.io``, port-forward ``portforward.k8s.io``. No
  match → ``403`` with ``X-Accepted-Stream-Protocol-Versions`` and the kubelet's message.
* anything else → ``400`` Status ("Upgrade request required").

Sessions:

* exec: the command (``command=`` repeated) runs as a local process (see :mod:`sandbox.processes`),
  stdin/stdout/stderr wired to the streams/channels, tty → pty with resize (TIOCSWINSZ). stdin EOF
  (SPDY: FIN on the stdin stream; WebSocket v5: close message ``[255, 0]``) closes the process's
  stdin. When the process exits its output is flushed, the exit code goes on the error stream
  (v4+: ``Status`` Success, or Failure/NonZeroExitCode with cause ExitCode; v1–v3: text), then the
  connection is closed. A client that goes away kills the process group.
* attach: the pod's console (see :mod:`sandbox.processes`); the client's stdin EOF or departure
  detaches it (Status Success); the console's exit ends the attach with its exit code.
* port-forward: each port maps to a loopback port from the pod annotation
  ``sandbox.kubegate.dev/port-<containerPort>: "<localPort>"`` (without one, the container port
  itself on 127.0.0.1). Bytes flow both ways; a failed connect is reported on that port's error
  stream; a remote EOF ends the data stream (FIN), a client FIN half-closes the TCP connection.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from proxy.protocol import spdy
from proxy.protocol.channels import (
    CLOSE,
    ERROR,
    EXEC_WS_PROTOCOLS,
    PORTFORWARD_SPDY_TUNNEL,
    PORTFORWARD_WS,
    PORTFORWARD_WS_BASE64,
    RESIZE,
    STDERR,
    STDIN,
    STDOUT,
    V1_CHANNEL,
    ChannelCodec,
    ChannelFrameError,
    WebSocketError,
    WebSocketServer,
    channel_protocol,
    choose_protocol,
    offered_protocols,
    port_prefix,
)
from proxy.protocol.events import RequestHead
from sandbox import processes
from sandbox.types import ByteStream, StreamTarget

log = logging.getLogger("sandbox.streams")

SPDY_EXEC_PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
SPDY_PORTFORWARD_PROTOCOLS = ("portforward.k8s.io",)
WS_PORTFORWARD_PROTOCOLS = (PORTFORWARD_SPDY_TUNNEL, PORTFORWARD_WS, PORTFORWARD_WS_BASE64)
PORT_ANNOTATION_PREFIX = "sandbox.kubegate.dev/port-"

STREAM_CREATION_TIMEOUT = 30.0  # seconds to wait for all of a SPDY exec's streams (the kubelet's)
FIRST_RESIZE_TIMEOUT = 1.0  # seconds a tty exec waits for the client's initial terminal size
LINGER_TIMEOUT = 5.0
INPUT_QUEUE_DEPTH = 16  # chunks of client input queued for a process / port before the reader pauses
MAX_EARLY_BYTES = 1024 * 1024
MAX_OPEN_STREAMS = 256  # SPDY streams open at once on one connection (port-forward: 2 per connection)  # data kept for a SPDY stream no session part reads (yet); beyond: dropped  # seconds to wait for the peer's EOF after we finished, before closing


def _status(status: str, code: int | None = None, reason: str = "", message: str = "",
            details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {}, "status": status}
    if message:
        body["message"] = message
    if reason:
        body["reason"] = reason
    if details:
        body["details"] = details
    if code is not None:
        body["code"] = code
    return body


def _api_status(code: int, reason: str, message: str) -> bytes:
    body = {"kind": "Status", "apiVersion": "v1", **_status("Failure", code, reason, message)}
    return json.dumps(body).encode()


def exit_status(exit_code: int, command: list[str]) -> dict[str, Any]:
    """The v4 error-stream Status for an exit code, worded as the kubelet words it."""
    if exit_code == 0:
        return _status("Success")
    return _status(
        "Failure", None, "NonZeroExitCode",
        f"command terminated with non-zero exit code: error executing command {command}, exit code {exit_code}",
        {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
    )


def _http_response(status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _refuse(stream: ByteStream, status: int, reason: str, message: str,
                  extra: list[tuple[str, str]] | None = None) -> None:
    log.info("refusing stream upgrade: %s %s", status, message)
    body = _api_status(status, reason, message)
    stream.write(_http_response(status, {400: "Bad Request", 403: "Forbidden"}.get(status, "Error"),
                                [("Content-Type", "application/json"), *(extra or [])], body))
    with contextlib.suppress(Exception):
        await stream.drain()
    stream.close()


# ------------------------------------------------------------------------------- request options


@dataclass(slots=True)
class Options:
    kind: str
    command: list[str]
    container: str
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool
    ports: list[int] = field(default_factory=list)


def _flag(query: dict[str, list[str]], name: str) -> bool:
    values = query.get(name) or []
    return bool(values) and values[-1].lower() in ("1", "true", "yes", "y", "t")


def parse_options(target: StreamTarget) -> Options | str:
    """The request's options, or an error message for a 400."""
    q = target.query
    containers = [c.get("name", "") for c in (target.pod.get("spec") or {}).get("containers") or []]
    container = (q.get("container") or [""])[-1] or (containers[0] if containers else "")
    pod_name = (target.pod.get("metadata") or {}).get("name", "")
    if containers and container not in containers:
        return f"container {container} is not valid for pod {pod_name}"
    tty = _flag(q, "tty")
    opts = Options(target.kind, list(q.get("command") or []), container, _flag(q, "stdin"),
                   _flag(q, "stdout"), _flag(q, "stderr") and not tty, tty)
    if target.kind == "exec" and not opts.command:
        return "you must specify at least one command for the container"
    if target.kind in ("exec", "attach") and not (opts.stdin or opts.stdout or opts.stderr):
        return "you must specify at least one of stdin, stdout, stderr"
    if target.kind == "portforward":
        for raw in q.get("ports") or []:
            for part in raw.split(","):
                try:
                    port = int(part)
                except ValueError:
                    return f"invalid port {part!r}"
                if not 0 < port < 65536:
                    return f"invalid port {port}"
                opts.ports.append(port)
    return opts


def local_port_for(pod: dict[str, Any], container_port: int) -> int:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    raw = annotations.get(f"{PORT_ANNOTATION_PREFIX}{container_port}")
    if raw is not None:
        try:
            return int(raw)
        except ValueError:
            pass
    return container_port


# ------------------------------------------------------------------------------------------ wires


class Wire(abc.ABC):
    """Bytes in and out of a session (the raw stream, or WebSocket messages for a SPDY tunnel)."""

    @abc.abstractmethod
    async def read(self) -> bytes:
        """Next bytes from the peer; b"" at EOF."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None:
        """Write and wait while the transport's buffer is above its high-water mark."""

    @abc.abstractmethod
    async def finish(self) -> None:
        """Half-close our side, linger for the peer's EOF, close."""


class RawWire(Wire):
    def __init__(self, stream: ByteStream, initial: bytes) -> None:
        self.stream = stream
        self._initial = initial

    async def read(self) -> bytes:
        if self._initial:
            data, self._initial = self._initial, b""
            return data
        try:
            return await self.stream.read()
        except (ConnectionError, OSError):
            return b""

    async def write(self, data: bytes) -> None:
        if data and not self.stream.closed:
            self.stream.write(data)
            await self.stream.drain()

    async def finish(self) -> None:
        await _linger(self.stream)


async def _linger(stream: ByteStream) -> None:
    """Graceful close: our FIN first, then read the peer's leftovers until its EOF (so unread input
    does not turn our close into a RST that could destroy output the peer has not read yet)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        stream.close()  # the server is stopping: no lingering
        return
    try:
        if not stream.closed:
            with contextlib.suppress(Exception):
                await stream.drain()
            with contextlib.suppress(Exception):
                stream.write_eof()
            async with asyncio.timeout(LINGER_TIMEOUT):
                while await stream.read():
                    pass
    except (TimeoutError, ConnectionError, OSError):
        pass
    finally:
        stream.close()


class WsTunnelWire(Wire):
    """SPDY bytes carried in binary WebSocket messages (``SPDY/3.1+portforward.k8s.io``)."""

    def __init__(self, ws: WebSocketServer, stream: ByteStream, initial: bytes) -> None:
        self.ws = ws
        self.stream = stream
        self._initial = initial
        self._pending: list[bytes] = []
        self._eof = False

    async def read(self) -> bytes:
        while not self._pending:
            if self._eof:
                return b""
            if self._initial:
                data, self._initial = self._initial, b""
            else:
                try:
                    data = await self.stream.read()
                except (ConnectionError, OSError):
                    data = b""
            try:
                messages = self.ws.receive_data(data)
            except WebSocketError as exc:
                log.info("port-forward tunnel: %s", exc)
                messages = [None]
            out = self.ws.data_to_send()
            if out and not self.stream.closed:
                self.stream.write(out)
            for message in messages:
                if message is None:
                    self._eof = True
                elif isinstance(message, bytes) and message:
                    self._pending.append(message)
                elif isinstance(message, str) and message:
                    self._pending.append(message.encode("latin-1"))
        return self._pending.pop(0)

    async def write(self, data: bytes) -> None:
        if data and not self.stream.closed:
            self.stream.write(self.ws.send(data))
            await self.stream.drain()

    async def finish(self) -> None:
        if not self.stream.closed:
            self.stream.write(self.ws.close())
        await _linger(self.stream)


# ------------------------------------------------------------------------------ session plumbing


class Channels(abc.ABC):
    """What an exec/attach session needs from its transport, whatever the wire."""

    def __init__(self) -> None:
        # Bounded: a process that does not read its stdin pauses the connection's reader.
        self.stdin: asyncio.Queue[bytes | None] = asyncio.Queue(INPUT_QUEUE_DEPTH)
        self.resize: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        self.gone = asyncio.Event()  # the client went away (EOF, reset, protocol error)

    @abc.abstractmethod
    async def send(self, channel: int, data: bytes) -> None:
        """Data for the client on an output channel (stdout / stderr)."""

    async def close_channel(self, channel: int) -> None:  # noqa: B027 - optional hook, no-op by default
        """Half-close an output channel (no-op where the protocol has no way to say it)."""
        return None

    @abc.abstractmethod
    async def finish(self, status: dict[str, Any] | None, error_text: str) -> None:
        """Report the result on the error channel and close the connection."""


class ResizeParser:
    """Concatenated ``{"Width":W,"Height":H}`` JSON objects (the resize stream) → sizes."""

    def __init__(self) -> None:
        self._buf = ""
        self._decoder = json.JSONDecoder()

    def feed(self, data: bytes) -> list[tuple[int, int]]:
        self._buf += data.decode("utf-8", "replace")
        sizes: list[tuple[int, int]] = []
        while True:
            text = self._buf.lstrip()
            if not text:
                self._buf = ""
                return sizes
            try:
                obj, end = self._decoder.raw_decode(text)
            except ValueError:
                self._buf = text
                if len(self._buf) > 4096:  # garbage, not a partial object
                    self._buf = ""
                return sizes
            self._buf = text[end:]
            if isinstance(obj, dict):
                try:
                    sizes.append((int(obj.get("Width", 0)), int(obj.get("Height", 0))))
                except (TypeError, ValueError):
                    pass


async def run_exec(target: StreamTarget, opts: Options, ch: Channels, protocol_version: int) -> None:
    name = (target.pod.get("metadata") or {}).get("name", "")
    workdir = processes.pod_workdir(target.namespace, name)
    env = processes.pod_env(target.namespace, name, workdir, opts.tty)
    size: tuple[int, int] | None = None
    if opts.tty and protocol_version >= 3:
        # kubectl sends the terminal size first thing on the resize stream: apply it before the
        # process starts, so the process never sees a 0x0 terminal.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_RESIZE_TIMEOUT):
                size = await ch.resize.get()
    try:
        proc = await processes.LocalProcess.start(opts.command, workdir, env, tty=opts.tty, stdin=opts.stdin,
                                                  stderr=opts.stderr, size=size)
    except (OSError, ValueError) as exc:
        message = (f"failed to exec in container: starting container process caused: exec: "
                   f"\"{opts.command[0]}\": {exc.strerror if isinstance(exc, OSError) else exc}")
        log.info("exec in pods/%s/%s failed: %s", target.namespace, name, message)
        await ch.finish(_status("Failure", 500, "InternalError", message), message)
        return
    log.info("exec pid %s in pods/%s/%s: %s", proc.proc.pid, target.namespace, name, opts.command)

    async def stdin_pump() -> None:
        while True:
            data = await ch.stdin.get()
            if data is None:
                await proc.close_stdin()
                return
            await proc.write_stdin(data)

    async def resize_pump() -> None:
        while True:
            width, height = await ch.resize.get()
            proc.resize(width, height)

    async def out(channel: int, data: bytes) -> None:
        if not ch.gone.is_set():
            await ch.send(channel, data)

    helpers = [asyncio.ensure_future(stdin_pump()), asyncio.ensure_future(resize_pump())]
    outputs = asyncio.ensure_future(asyncio.gather(
        proc.pump_stdout(lambda d: out(STDOUT, d)),
        proc.pump_stderr(lambda d: out(STDERR, d)),
    ))
    gone = asyncio.ensure_future(ch.gone.wait())
    try:
        done, _ = await asyncio.wait({outputs, gone}, return_when=asyncio.FIRST_COMPLETED)
        if gone in done:
            log.info("client went away; killing exec pid %s", proc.proc.pid)
            return
        outputs.result()
        # The output is closed; the process may still run (it closed its stdout): wait for its exit,
        # or for the client to leave.
        exited = asyncio.ensure_future(proc.wait())
        done, _ = await asyncio.wait({exited, gone}, return_when=asyncio.FIRST_COMPLETED)
        if exited not in done:
            log.info("client went away; killing exec pid %s", proc.proc.pid)
            exited.cancel()
            return
        code = exited.result()
        if opts.stdout:
            await ch.close_channel(STDOUT)
        if opts.stderr:
            await ch.close_channel(STDERR)
        status = exit_status(code, opts.command)
        text = "" if code == 0 else f"command terminated with non-zero exit code: exit code {code}"
        await ch.finish(status, text)
        log.info("exec pid %s exited with %s", proc.proc.pid, code)
    finally:
        proc.kill()
        for task in (*helpers, gone, outputs):
            task.cancel()
        for task in (*helpers, gone, outputs):
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(BaseException):
            async with asyncio.timeout(5):
                await proc.wait()  # reaped before the session ends
        proc.close()


async def run_attach(target: StreamTarget, opts: Options, ch: Channels) -> None:
    # Like a container: the console has a terminal when the container spec says ``tty: true``.
    spec = next((c for c in (target.pod.get("spec") or {}).get("containers") or []
                 if c.get("name") == opts.container), {})
    console = await processes.get_console(target.namespace, target.pod, opts.container, bool(spec.get("tty")))
    feed = console.subscribe()

    async def stdin_pump() -> None:
        while True:
            data = await ch.stdin.get()
            if data is None:
                return  # this client detaches; the console keeps running
            await console.process.write_stdin(data)

    async def resize_pump() -> None:
        while True:
            width, height = await ch.resize.get()
            console.process.resize(width, height)

    async def out_pump() -> None:
        while True:
            data = await feed.get()
            if data is None:
                return
            if opts.stdout:
                await ch.send(STDOUT, data)

    stdin_task = asyncio.ensure_future(stdin_pump() if opts.stdin else asyncio.Event().wait())
    tasks = [asyncio.ensure_future(out_pump()), asyncio.ensure_future(resize_pump()),
             asyncio.ensure_future(ch.gone.wait()), stdin_task]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if tasks[2] in done:
            return
        if tasks[0] in done:  # the console exited
            code = console.exit_code or 0
            await ch.finish(exit_status(code, processes.console_command(target.pod)), "")
            return
        await ch.finish(exit_status(0, []), "")
    finally:
        console.unsubscribe(feed)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


# ------------------------------------------------------------------------------------------ SPDY


class SpdyServer:
    """Server side of a SPDY connection on a wire: replies to every stream, routes its data."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.conn = spdy.SpdyConnection(client_side=False)
        self.new_streams: asyncio.Queue[spdy.SynStream | None] = asyncio.Queue()
        self.inbound: dict[int, Callable[[bytes | None], Awaitable[None] | None]] = {}
        self.gone = asyncio.Event()
        self._known: set[int] = set()
        self._early: dict[int, list[bytes | None]] = {}

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.wire.write(data)

    async def send(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        with contextlib.suppress(spdy.SpdyLocalError):
            self.conn.send_data(stream_id, data, fin=fin)
        await self.flush()

    async def reader(self) -> None:
        try:
            while True:
                data = await self.wire.read()
                if not data:
                    return
                for event in self.conn.receive_data(data):
                    if isinstance(event, spdy.SynStream):
                        if self.conn.open_streams() > MAX_OPEN_STREAMS:
                            self.conn.send_rst_stream(event.stream_id, spdy.REFUSED_STREAM)
                            continue
                        self._known.add(event.stream_id)
                        self.conn.send_syn_reply(event.stream_id, [])
                        await self.new_streams.put(event)
                        if event.fin:
                            await self._deliver(event.stream_id, None)
                    elif isinstance(event, spdy.Data):
                        if event.data:
                            await self._deliver(event.stream_id, event.data)
                        if event.fin:
                            await self._deliver(event.stream_id, None)
                    elif isinstance(event, spdy.RstStream):
                        await self._deliver(event.stream_id, None)
                        self.inbound.pop(event.stream_id, None)
                        self._known.discard(event.stream_id)
                    elif isinstance(event, spdy.GoAway):
                        return
                await self.flush()
        except spdy.SpdyProtocolError as exc:
            log.info("closing SPDY stream connection: %s", exc)
            self.conn.send_goaway(spdy.GOAWAY_PROTOCOL_ERROR)
            with contextlib.suppress(Exception):
                await self.flush()
        except (ConnectionError, OSError) as exc:
            log.info("SPDY stream connection lost: %s", exc)
        finally:
            self.gone.set()
            await self.new_streams.put(None)
            for sid in list(self.inbound):
                await self._deliver(sid, None)

    async def attach(self, stream_id: int, handler: Callable[[bytes | None], Awaitable[None] | None]) -> None:
        """Route a stream's data (``None``: its end) to ``handler``, replaying what arrived before.
        An awaitable handler result is awaited: a full queue pauses the reader (backpressure)."""
        self.inbound[stream_id] = handler
        for item in self._early.pop(stream_id, []):
            result = handler(item)
            if result is not None:
                await result

    async def _deliver(self, stream_id: int, data: bytes | None) -> None:
        handler = self.inbound.get(stream_id)
        if handler is None:
            # Data can arrive in the same read as the SYN_STREAM, before the session attached a
            # handler: keep it (bounded by the peer's own pacing; the session attaches promptly).
            if stream_id in self._known:
                early = self._early.setdefault(stream_id, [])
                if sum(len(d) for d in early if d) + len(data or b"") <= MAX_EARLY_BYTES:
                    early.append(data)
                elif data is None:
                    early.append(None)
            return
        if data is None:
            self.inbound.pop(stream_id, None)
        result = handler(data)
        if result is not None:
            await result


class SpdyChannels(Channels):
    def __init__(self, server: SpdyServer, streams: dict[str, int], version: int) -> None:
        super().__init__()
        self.server = server
        self.streams = streams
        self.version = version
        self._resize = ResizeParser()
        self._by_channel = {STDOUT: streams.get("stdout"), STDERR: streams.get("stderr")}

    async def attach_inputs(self) -> None:
        if "stdin" in self.streams:
            await self.server.attach(self.streams["stdin"], self.stdin.put)
        if "resize" in self.streams:
            await self.server.attach(self.streams["resize"], self._on_resize)

    def _on_resize(self, data: bytes | None) -> None:
        if data:
            for size in self._resize.feed(data):
                self.resize.put_nowait(size)

    async def send(self, channel: int, data: bytes) -> None:
        sid = self._by_channel.get(channel)
        if sid is not None:
            await self.server.send(sid, data)

    async def close_channel(self, channel: int) -> None:
        sid = self._by_channel.get(channel)
        if sid is not None:
            await self.server.send(sid, b"", fin=True)

    async def finish(self, status: dict[str, Any] | None, error_text: str) -> None:
        sid = self.streams.get("error")
        if sid is not None:
            if self.version >= 4 and status is not None:
                payload = json.dumps(status).encode()
            else:
                payload = error_text.encode()
            if payload:
                await self.server.send(sid, payload)
            await self.server.send(sid, b"", fin=True)
        for name in ("stdout", "stderr", "stdin", "resize"):
            if name in self.streams:
                await self.server.send(self.streams[name], b"", fin=True)


async def _serve_spdy(target: StreamTarget, opts: Options, head: RequestHead, stream: ByteStream,
                      initial: bytes) -> None:
    offered: list[str] = []
    for raw in head.header_values(b"x-stream-protocol-version"):
        offered += [p.strip() for p in raw.decode("latin-1").split(",") if p.strip()]
    supported = SPDY_PORTFORWARD_PROTOCOLS if opts.kind == "portforward" else SPDY_EXEC_PROTOCOLS
    chosen = choose_protocol(offered, supported) if offered else (supported[-1] if opts.kind != "portforward"
                                                                   else supported[0])
    if chosen is None:
        await _refuse(stream, 403, "Forbidden",
                      f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
                      f"server accepts {list(supported)}",
                      [("X-Accepted-Stream-Protocol-Versions", ", ".join(supported))])
        return
    stream.write(_http_response_101([("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
                                     ("X-Stream-Protocol-Version", chosen)]))
    wire = RawWire(stream, initial)
    if opts.kind == "portforward":
        await run_spdy_portforward(target, wire)
    else:
        await run_spdy_exec(target, opts, wire, channel_protocol(chosen).version)


def _http_response_101(headers: list[tuple[str, str]]) -> bytes:
    lines = ["HTTP/1.1 101 Switching Protocols", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def run_spdy_exec(target: StreamTarget, opts: Options, wire: Wire, version: int) -> None:
    server = SpdyServer(wire)
    reader = asyncio.ensure_future(server.reader())
    try:
        expected = {"error"}
        if opts.stdin:
            expected.add("stdin")
        if opts.stdout:
            expected.add("stdout")
        if opts.stderr:
            expected.add("stderr")
        if opts.tty and version >= 3:
            expected.add("resize")
        streams: dict[str, int] = {}
        try:
            async with asyncio.timeout(STREAM_CREATION_TIMEOUT):
                while not expected <= streams.keys():
                    syn = await server.new_streams.get()
                    if syn is None:
                        return  # the client went away before the session started
                    kind = syn.header("streamtype") or ""
                    if kind in ("error", "stdin", "stdout", "stderr", "resize") and kind not in streams:
                        streams[kind] = syn.stream_id
                    else:
                        server.conn.send_rst_stream(syn.stream_id, spdy.PROTOCOL_ERROR)
                    await server.flush()
        except TimeoutError:
            log.info("exec: timed out waiting for streams %s", sorted(expected - streams.keys()))
            return
        channels = SpdyChannels(server, streams, version)
        await channels.attach_inputs()
        server_gone = asyncio.ensure_future(_mirror(server.gone, channels.gone))
        extra = asyncio.ensure_future(_refuse_streams(server))
        try:
            if opts.kind == "attach":
                await run_attach(target, opts, channels)
            else:
                await run_exec(target, opts, channels, version)
        finally:
            server_gone.cancel()
            extra.cancel()
        if not server.gone.is_set():
            server.conn.send_goaway()
            with contextlib.suppress(Exception):
                await server.flush()
    finally:
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader
        await wire.finish()


async def _refuse_streams(server: SpdyServer) -> None:
    """Once an exec/attach session runs, further streams are reset (and not queued without end)."""
    while True:
        syn = await server.new_streams.get()
        if syn is None:
            return
        server.conn.send_rst_stream(syn.stream_id, spdy.PROTOCOL_ERROR)
        await server.flush()


async def _mirror(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


async def run_spdy_portforward(target: StreamTarget, wire: Wire) -> None:
    server = SpdyServer(wire)
    reader = asyncio.ensure_future(server.reader())
    pairs: dict[str, dict[str, int]] = {}
    tasks: set[asyncio.Task[None]] = set()
    try:
        while True:
            syn = await server.new_streams.get()
            if syn is None:
                return
            kind = syn.header("streamtype") or ""
            request_id = syn.header("requestid") or ""
            port_text = syn.header("port") or ""
            pair = pairs.setdefault(request_id, {})
            if kind not in ("error", "data") or kind in pair:
                server.conn.send_rst_stream(syn.stream_id, spdy.PROTOCOL_ERROR)
                await server.flush()
                continue
            pair[kind] = syn.stream_id
            if kind == "data":
                # The data stream's own handler is set now, so no early bytes are lost.
                queue: asyncio.Queue[bytes | None] = asyncio.Queue(INPUT_QUEUE_DEPTH)
                await server.attach(syn.stream_id, queue.put)
                pair_error = pair.get("error")
                task = asyncio.ensure_future(_forward_port(server, target, port_text, syn.stream_id,
                                                           pair_error, queue, pair))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await server.flush()
    finally:
        for task in list(tasks):
            task.cancel()
        for task in list(tasks):
            with contextlib.suppress(BaseException):
                await task
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader
        await wire.finish()


async def _forward_port(server: SpdyServer, target: StreamTarget, port_text: str, data_sid: int,
                        error_sid: int | None, inbound: asyncio.Queue[bytes | None],
                        pair: dict[str, int]) -> None:
    async def report(message: str) -> None:
        sid = error_sid if error_sid is not None else pair.get("error")
        log.info("port-forward to pods/%s: %s", target.namespace, message)
        if sid is not None:
            await server.send(sid, message.encode(), fin=True)
        await server.send(data_sid, b"", fin=True)

    try:
        port = int(port_text)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        await report(f"invalid port {port_text!r}")
        return
    local = local_port_for(target.pod, port)
    pod_name = (target.pod.get("metadata") or {}).get("name", "")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", local)
    except OSError as exc:
        await report(f"an error occurred forwarding {port} -> {port}: error forwarding port {port} to pod "
                     f"{pod_name}: failed to connect to localhost:{local}: {exc.strerror or exc}")
        return

    async def client_to_pod() -> None:
        while True:
            data = await inbound.get()
            if data is None:
                if writer.can_write_eof():
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    upstream = asyncio.ensure_future(client_to_pod())
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            await server.send(data_sid, data)
        await server.send(data_sid, b"", fin=True)
        sid = error_sid if error_sid is not None else pair.get("error")
        if sid is not None:
            await server.send(sid, b"", fin=True)
        # Keep the client->pod direction open until the client finishes it (FIN) or leaves.
        with contextlib.suppress(Exception):
            await upstream
    except (ConnectionError, OSError) as exc:
        log.info("port-forward connection to %s ended: %s", local, exc)
    finally:
        upstream.cancel()
        with contextlib.suppress(BaseException):
            await upstream
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


# ------------------------------------------------------------------------------------- WebSocket


class WsChannels(Channels):
    def __init__(self, ws: WebSocketServer, codec: ChannelCodec, stream: ByteStream) -> None:
        super().__init__()
        self.ws = ws
        self.codec = codec
        self.stream = stream
        self._resize = ResizeParser()

    async def _write(self, data: bytes) -> None:
        if data and not self.stream.closed:
            self.stream.write(data)
            await self.stream.drain()

    async def send(self, channel: int, data: bytes) -> None:
        await self._write(self.ws.send(self.codec.encode(channel, data)))

    # close_channel: no-op. v5 close messages go client -> server only (client-go's reader logs
    # "Unknown stream" for a 255 from the server); the server ends its output by closing the WebSocket.

    async def finish(self, status: dict[str, Any] | None, error_text: str) -> None:
        if self.codec.protocol.status_errors and status is not None:
            await self.send(ERROR, json.dumps(status).encode())
        elif error_text:
            await self.send(ERROR, error_text.encode())
        await self._write(self.ws.close())

    def on_message(self, message: bytes | str) -> Awaitable[None] | None:
        channel, payload = self.codec.decode(message)
        if channel == STDIN:
            if payload:
                return self.stdin.put(payload)
        elif channel == RESIZE:
            for size in self._resize.feed(payload):
                self.resize.put_nowait(size)
        elif channel == CLOSE:
            if payload[:1] == bytes((STDIN,)):
                return self.stdin.put(None)
        return None


async def _ws_reader(ws: WebSocketServer, stream: ByteStream, initial: bytes,
                     on_message: Callable[[bytes | str], Awaitable[None] | None], gone: asyncio.Event) -> None:
    data = initial
    try:
        while True:
            if data:
                messages = ws.receive_data(data)
                out = ws.data_to_send()
                if out and not stream.closed:
                    stream.write(out)
                for message in messages:
                    if message is None:
                        if ws.error:
                            log.info("stream WebSocket closed: %s", ws.error)
                        return
                    try:
                        result = on_message(message)
                        if result is not None:
                            await result
                    except ChannelFrameError as exc:
                        log.info("stream WebSocket: bad message from the client: %s", exc)
            data = await stream.read()
            if not data:
                ws.receive_data(b"")
                return
    except WebSocketError as exc:
        log.info("stream WebSocket closed: %s", exc)
    except (ConnectionError, OSError) as exc:
        log.info("stream WebSocket lost: %s", exc)
    finally:
        gone.set()


async def _serve_websocket(target: StreamTarget, opts: Options, head: RequestHead, stream: ByteStream,
                           initial: bytes) -> None:
    try:
        ws = WebSocketServer(head)
    except WebSocketError as exc:
        await _refuse(stream, 400, "BadRequest", str(exc))
        return
    offered = offered_protocols(head)
    if opts.kind == "portforward":
        chosen = choose_protocol(offered, WS_PORTFORWARD_PROTOCOLS) if offered else PORTFORWARD_WS
    else:
        chosen = choose_protocol(offered, EXEC_WS_PROTOCOLS) if offered else V1_CHANNEL
    if chosen is None:
        stream.write(ws.reject(400, _api_status(
            400, "BadRequest", f"unable to upgrade: no supported WebSocket sub-protocol in {offered}")))
        with contextlib.suppress(Exception):
            await stream.drain()
        stream.close()
        return
    stream.write(ws.accept(chosen if offered else None))
    if chosen == PORTFORWARD_SPDY_TUNNEL:
        await run_spdy_portforward(target, WsTunnelWire(ws, stream, initial))
        return
    codec = ChannelCodec(channel_protocol(chosen))
    if opts.kind == "portforward":
        await run_ws_portforward(target, opts, ws, codec, stream, initial)
        return
    channels = WsChannels(ws, codec, stream)
    reader = asyncio.ensure_future(_ws_reader(ws, stream, initial, channels.on_message, channels.gone))
    try:
        if opts.kind == "attach":
            await run_attach(target, opts, channels)
        else:
            await run_exec(target, opts, channels, codec.protocol.version)
    finally:
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader
        await _linger(stream)


async def run_ws_portforward(target: StreamTarget, opts: Options, ws: WebSocketServer, codec: ChannelCodec,
                             stream: ByteStream, initial: bytes) -> None:
    """Legacy WebSocket port-forward: data channel 2i and error channel 2i+1 for the i-th port."""
    if not opts.ports:
        stream.write(ws.send(codec.encode(1, b"query parameter \"port\" is required")))
        stream.write(ws.close())
        await _linger(stream)
        return
    gone = asyncio.Event()

    async def write_ws(channel: int, data: bytes) -> None:
        if not stream.closed:
            stream.write(ws.send(codec.encode(channel, data)))
            await stream.drain()

    for i, port in enumerate(opts.ports):
        await write_ws(2 * i, port_prefix(port))
        await write_ws(2 * i + 1, port_prefix(port))

    inbound: list[asyncio.Queue[bytes]] = [asyncio.Queue(INPUT_QUEUE_DEPTH) for _ in opts.ports]

    async def forward(i: int, port: int) -> None:
        local = local_port_for(target.pod, port)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
        except OSError as exc:
            await write_ws(2 * i + 1, f"error forwarding port {port}: {exc.strerror or exc}".encode())
            return

        async def client_to_pod() -> None:
            while True:
                writer.write(await inbound[i].get())
                await writer.drain()

        upstream = asyncio.ensure_future(client_to_pod())
        try:
            while data := await reader.read(65536):
                await write_ws(2 * i, data)
        except (ConnectionError, OSError):
            pass
        finally:
            upstream.cancel()
            with contextlib.suppress(BaseException):
                await upstream
            writer.close()

    def on_message(message: bytes | str) -> Awaitable[None] | None:
        channel, payload = codec.decode(message)
        if channel % 2 == 0 and channel // 2 < len(inbound) and payload:
            return inbound[channel // 2].put(payload)
        return None

    reader_task = asyncio.ensure_future(_ws_reader(ws, stream, initial, on_message, gone))
    tasks = [asyncio.ensure_future(forward(i, p)) for i, p in enumerate(opts.ports)]
    try:
        await gone.wait()
    finally:
        for task in (*tasks, reader_task):
            task.cancel()
        for task in (*tasks, reader_task):
            with contextlib.suppress(BaseException):
                await task
        await _linger(stream)


# ------------------------------------------------------------------------------------------ entry


async def serve_stream(target: StreamTarget, head: RequestHead, stream: ByteStream, initial: bytes) -> None:
    """Negotiate, answer the upgrade, run the exec / attach / port-forward session, close the stream."""
    try:
        opts = parse_options(target)
        if isinstance(opts, str):
            await _refuse(stream, 400, "BadRequest", opts)
            return
        upgrade = (head.header(b"upgrade") or b"").decode("latin-1").lower()
        if "websocket" in upgrade:
            await _serve_websocket(target, opts, head, stream, initial)
        elif "spdy/3.1" in upgrade:
            await _serve_spdy(target, opts, head, stream, initial)
        else:
            await _refuse(stream, 400, "BadRequest", "Upgrade request required")
    except asyncio.CancelledError:
        stream.close()
        raise
    except Exception:
        log.exception("stream session for pods/%s/%s failed", target.namespace,
                      (target.pod.get("metadata") or {}).get("name", ""))
        stream.close()


class AsyncioByteStream:
    """A :class:`sandbox.types.ByteStream` over asyncio's StreamReader/StreamWriter (tests, tools)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._closed = False

    async def read(self) -> bytes:
        if self._closed:
            return b""
        try:
            return await self._reader.read(65536)
        except (ConnectionError, OSError):
            return b""

    def write(self, data: bytes) -> None:
        if not self._closed and not self._writer.is_closing():
            self._writer.write(data)

    async def drain(self) -> None:
        if not self._closed and not self._writer.is_closing():
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.drain()

    def write_eof(self) -> None:
        if not self._closed and self._writer.can_write_eof() and not self._writer.is_closing():
            with contextlib.suppress(OSError):
                self._writer.write_eof()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._writer.close()

    @property
    def closed(self) -> bool:
        return self._closed or self._writer.is_closing()

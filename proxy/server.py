"""The mTLS listener: accept TCP, enforce the connection limit, run the TLS handshake (bounded by the
header timeout) and count its failures by reason, then hand the TLS transport to a ``ClientConnection``.

The handshake is done with ``loop.start_tls`` on the accepted transport rather than ``create_server(ssl=)``
so that a failed handshake surfaces here (uvloop swallows those silently) and can be classified.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

from proxy.connection import ClientConnection
from proxy.forward import Forwarder
from proxy.tls import classify_handshake_error

log = logging.getLogger("kubegate.proxy.server")


class _Acceptor(asyncio.Protocol):
    """Owns a freshly accepted TCP connection until its TLS handshake is over."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        listener = self.listener
        fwd = listener.fwd
        if listener.closing or len(fwd.connections) + len(listener.handshakes) >= fwd.settings.max_connections:
            fwd.connection_rejected("closing" if listener.closing else "max_connections")
            transport.abort()
            return
        transport.pause_reading()  # type: ignore[attr-defined]
        task = fwd.loop.create_task(listener.handshake(transport))  # type: ignore[arg-type]
        listener.handshakes.add(task)
        task.add_done_callback(listener.handshakes.discard)

    def data_received(self, data: bytes) -> None:  # pragma: no cover - reading is paused
        pass


class Listener:
    def __init__(self, fwd: Forwarder, ssl_context: ssl.SSLContext) -> None:
        self.fwd = fwd
        self.ssl_context = ssl_context
        self.servers: list[asyncio.AbstractServer] = []
        self.handshakes: set[asyncio.Task[None]] = set()
        self.closing = False

    async def listen(self, sockets: list[socket.socket]) -> None:
        loop = self.fwd.loop
        for sock in sockets:
            server = await loop.create_server(lambda: _Acceptor(self), sock=sock, backlog=4096)
            self.servers.append(server)

    async def handshake(self, transport: asyncio.Transport) -> None:
        fwd = self.fwd
        peer = transport.get_extra_info("peername")
        peer_ip = str(peer[0]) if peer else ""
        conn = ClientConnection(fwd, peer_ip)
        try:
            tls_transport = await fwd.loop.start_tls(
                transport,
                conn,
                self.ssl_context,
                server_side=True,
                ssl_handshake_timeout=fwd.settings.header_timeout,
            )
        except (asyncio.CancelledError, Exception) as exc:
            reason = "shutdown" if isinstance(exc, asyncio.CancelledError) else classify_handshake_error(exc)
            fwd.handshake_failed(reason)
            log.info("TLS handshake failed", extra={"peer": peer_ip, "reason": reason, "problem": str(exc)[:200]})
            transport.abort()
            return
        if tls_transport is None:  # the peer went away during the handshake
            fwd.handshake_failed("eof")
            transport.abort()
            return
        conn.connection_made(tls_transport)

    def close(self) -> None:
        """Stop accepting (the listening sockets close; open connections go on)."""
        self.closing = True
        for server in self.servers:
            server.close()
        for task in list(self.handshakes):
            task.cancel()

    @property
    def ports(self) -> list[int]:
        ports = []
        for server in self.servers:
            for sock in server.sockets:
                ports.append(sock.getsockname()[1])
        return ports


def listening_socket(host: str, port: int, *, reuse_port: bool = False, backlog: int = 4096) -> socket.socket:
    """A bound, listening TCP socket (``SO_REUSEPORT`` so several worker processes share a port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock

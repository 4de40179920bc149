"""The mTLS listener: accept TCP, enforce the connection limit, run the TLS handshake (bounded by the
header timeout) and count its failures by reason, then hand the TLS transport to a ``ClientConnection``.

Accepting is done by hand (``add_reader`` on the listening socket) and the handshake with
``loop.connect_accepted_socket`` so that a failed handshake surfaces here and is classified
(uvloop's ``create_server(ssl=...)`` swallows those silently). The TLS layer is kubegate's
``proxy.tls_direct.TLSTransport`` over uvloop's TCP transport where that accelerator runs (records
handled by OpenSSL called from C), else uvloop's own (``connect_accepted_socket(ssl=...)``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl

from proxy.connection import ClientConnection
from proxy.forward import Forwarder
from proxy.tls import classify_handshake_error, handshake_within, tls_layer

# ``proxy.tls_direct.TLSTransport`` where it runs here (else None: uvloop's own TLS transport).
_TLS_LAYER = tls_layer()

log = logging.getLogger("kubegate.proxy.server")

ACCEPT_BACKOFF = 0.25  # seconds without accepting after the process ran out of file descriptors
_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


class Listener:
    """Accepts on listening sockets (``add_reader`` + non-blocking ``accept``), enforces the connection
    limit, and runs each TLS handshake with ``loop.connect_accepted_socket(ssl=...)``, which raises on a
    failed handshake so the reason can be counted (``create_server(ssl=...)`` hides those)."""

    def __init__(self, fwd: Forwarder, ssl_context: ssl.SSLContext) -> None:
        self.fwd = fwd
        self.ssl_context = ssl_context
        self.sockets: list[socket.socket] = []
        self.handshakes: set[asyncio.Task[None]] = set()
        self.closing = False

    async def listen(self, sockets: list[socket.socket]) -> None:
        loop = self.fwd.loop
        for sock in sockets:
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._accept, sock)
            self.sockets.append(sock)

    def _accept(self, lsock: socket.socket) -> None:
        fwd = self.fwd
        for _ in range(128):
            try:
                sock, addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ENFILE, ECONNABORTED...
                fwd.connection_rejected("accept_error")
                fwd.throttled_log.info("accept_error", "accept failed", {"problem": str(exc)})
                if exc.errno in _OUT_OF_RESOURCES:
                    # The connection stays in the backlog and the socket stays readable: without a pause
                    # this callback would spin the loop until a file descriptor is freed.
                    self._pause_accepting(lsock)
                return
            if self.closing or len(fwd.connections) + len(self.handshakes) >= fwd.settings.max_connections:
                fwd.connection_rejected("closing" if self.closing else "max_connections")
                sock.close()
                continue
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            task = fwd.loop.create_task(self.handshake(sock, addr))
            self.handshakes.add(task)
            task.add_done_callback(self.handshakes.discard)

    async def handshake(self, sock: socket.socket, addr: object) -> None:
        fwd = self.fwd
        peer_ip = str(addr[0]) if isinstance(addr, tuple) and addr else ""
        conn = ClientConnection(fwd, peer_ip)
        try:
            if _TLS_LAYER is not None:
                layer = _TLS_LAYER(self.ssl_context, conn, fwd.loop)
                transport, _ = await fwd.loop.connect_accepted_socket(lambda: layer, sock)
                await handshake_within(layer, transport, fwd.settings.header_timeout)
            else:
                await fwd.loop.connect_accepted_socket(
                    lambda: conn, sock, ssl=self.ssl_context, ssl_handshake_timeout=fwd.settings.header_timeout
                )
        except (asyncio.CancelledError, Exception) as exc:
            reason = "shutdown" if isinstance(exc, asyncio.CancelledError) else classify_handshake_error(exc)
            fwd.handshake_failed(reason)
            fwd.throttled_log.info(
                f"handshake_{reason}", "TLS handshake failed", {"peer": peer_ip, "reason": reason, "problem": str(exc)[:200]}
            )
            try:
                sock.close()
            except OSError:
                pass

    def _pause_accepting(self, lsock: socket.socket) -> None:
        loop = self.fwd.loop
        try:
            loop.remove_reader(lsock.fileno())
        except (ValueError, OSError):
            return
        loop.call_later(ACCEPT_BACKOFF, self._resume_accepting, lsock)

    def _resume_accepting(self, lsock: socket.socket) -> None:
        if not self.closing and lsock.fileno() >= 0:
            self.fwd.loop.add_reader(lsock.fileno(), self._accept, lsock)

    def close(self) -> None:
        """Stop accepting (open connections go on)."""
        self.closing = True
        for sock in self.sockets:
            try:
                self.fwd.loop.remove_reader(sock.fileno())
            except (ValueError, OSError):
                pass
        for task in list(self.handshakes):
            task.cancel()

    @property
    def ports(self) -> list[int]:
        return [sock.getsockname()[1] for sock in self.sockets]


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

"""Following a live session that another replica holds.

With ``backend.type: etcd`` the replicas share the session index, and each records the sessions that
reach it. A join (``GET /kubegate/sessions/<id>/stream``) may reach a replica that does not hold the
session: that replica reads the owning replica's address from the index record (``proxy_addr``, its
``proxy.public_addr``) and asks it for the same stream, as the joiner. It holds the shared CA's key, so
it signs a short-lived certificate naming the joiner exactly as the joiner's own certificate does
(``CertificateAuthority.reissue_client_certificate``: subject and kubegate identity extension, a new
key) and presents it; the owning replica decides, audits and tells the owner of the join as for any
joiner, and its answer is relayed as it comes. No replica trusts another's word for who a joiner is
beyond what the CA's signature says, and no new kind of credential exists.

This module is the blocking client side (run in the loop's executor: a join is rare and long-lived);
:mod:`proxy.recording.join` decides when to use it and relays what it reads.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from cryptography import x509

if TYPE_CHECKING:
    from certs.ca import CertificateAuthority

PEER_HOP_HEADER = b"kubegate-replica-hop"  # on a join asked by a replica: the replica asked does not ask on
PEER_CERT_TTL = timedelta(minutes=5)  # checked by the owner at the handshake only: the stream may last longer
CONNECT_TIMEOUT = 5.0  # seconds for the owner's TCP connect, TLS handshake and answer head
KEEPALIVE = (30, 10, 3)  # TCP keepalive idle / interval / count: an owner that vanished ends the join in ~1 min


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); ValueError when it is neither."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a host:port address: {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def load_chain_from_memory(context: ssl.SSLContext, pem: bytes) -> None:
    """``context.load_cert_chain`` of a certificate and key held in memory: ``load_cert_chain`` reads
    files only, so the PEM goes to an anonymous in-memory file (``memfd_create``: no path, never on
    disk) read through ``/proc/self/fd``; where there is none, to a private temporary directory that
    lives for the call."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("kubegate-peer", os.MFD_CLOEXEC)
        try:
            view = memoryview(pem)
            while view:
                view = view[os.write(fd, view):]
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="kubegate-peer-") as directory:
        path = os.path.join(directory, "joiner.pem")
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(pem)
        context.load_cert_chain(path)


@dataclass
class PeerStream:
    """The owning replica's answer: status, its body so far (``read`` gives the rest), and how to stop."""

    status: int
    response: http.client.HTTPResponse
    connection: http.client.HTTPSConnection

    def read(self) -> bytes:
        """The next bytes of the body as they arrive (b"" at its end); blocks."""
        return self.response.read1(65536)

    def body(self, limit: int = 64 * 1024) -> bytes:
        """The whole (short) body of an answer that is not a stream."""
        return self.response.read(limit)

    def close(self) -> None:
        """Ends the stream; safe from another thread while ``read`` blocks (the socket is shut down)."""
        sock = self.connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.connection.close()


class PeerSessions:
    """Opens session streams on other replicas on behalf of joiners."""

    def __init__(self, ca: CertificateAuthority, *, connect_timeout: float = CONNECT_TIMEOUT,
                 lifetime: timedelta = PEER_CERT_TTL) -> None:
        self.ca = ca
        self.connect_timeout = connect_timeout
        self.lifetime = lifetime

    def _context(self, joiner: x509.Certificate) -> ssl.SSLContext:
        issued = self.ca.reissue_client_certificate(joiner, self.lifetime)
        assert issued.key_pem is not None
        context = ssl.create_default_context(cadata=self.ca.cert_pem.decode())
        load_chain_from_memory(context, issued.cert_pem + issued.key_pem)
        return context

    def open(self, address: str, session_id: str, joiner_der: bytes) -> PeerStream:
        """``GET /kubegate/sessions/<session_id>/stream`` on the replica at ``address`` as the joiner whose
        certificate is ``joiner_der``: its answer's head read, its body not yet. Raises ``ValueError``
        (a bad address or certificate), ``OSError`` / ``ssl.SSLError`` (the replica cannot be reached or
        is not who it should be: its certificate must chain to the CA and name ``address``'s host) or
        ``http.client.HTTPException`` (it did not answer in HTTP)."""
        host, port = split_address(address)
        context = self._context(x509.load_der_x509_certificate(joiner_der))
        connection = http.client.HTTPSConnection(host, port, context=context, timeout=self.connect_timeout)
        try:
            connection.connect()
            assert connection.sock is not None
            connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            idle, interval, count = KEEPALIVE
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
            connection.request("GET", f"/kubegate/sessions/{session_id}/stream",
                               headers={"Accept": "application/x-asciicast", "User-Agent": "kubegate-replica",
                                        PEER_HOP_HEADER.decode(): "1"})
            response = connection.getresponse()
            connection.sock.settimeout(None)  # a live session may print nothing for a long time
        except BaseException:
            connection.close()
            raise
        return PeerStream(response.status, response, connection)

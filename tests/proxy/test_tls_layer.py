"""``proxy.tls_direct.TLSTransport``, the TLS layer over uvloop's TCP transport of the listener (server
side) and of the upstream connections (client side). Against a real TLS client (the ``ssl`` module's,
through asyncio streams on loopback) the server side behaves as uvloop's own TLS transport does — the
handshake's outcome (ALPN, the client's certificate, the failures a listener classifies), bytes both
ways in records of every size, a buffered protocol, paused and resumed reading, write flow control,
close with close_notify from either side, abort. Against a real TLS server (uvloop's) the client side
sends the server name (SNI), checks the server's certificate against it and the CA, presents its own
certificate, and fails a handshake with the ``ssl`` module's own errors, which the upstream pool turns
into the statuses it answers. The whole test suite also runs through both sides wherever the
accelerator is built."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from datetime import timedelta
from pathlib import Path

import pytest
import uvloop

from proxy import tls

pytestmark = pytest.mark.skipif(tls.tls_layer() is None, reason="proxy.tls_direct is not built here")


def _files(tmp_path: Path) -> tuple[str, str, str, str, str]:
    """CA file, server cert and key for localhost, a client cert and key from the same CA."""
    from certs.ca import CertificateAuthority

    ca = CertificateAuthority.create_in_memory()
    server = ca.issue_server_certificate(["localhost"])
    client = ca.issue_user_certificate("alice", ["reader"], timedelta(hours=1))
    paths = [tmp_path / n for n in ("ca.pem", "s.pem", "s.key", "c.pem", "c.key")]
    for path, pem in zip(paths, (ca.cert_pem, server.cert_pem, server.key_pem, client.cert_pem, client.key_pem),
                         strict=True):
        path.write_bytes(pem)
    return tuple(str(p) for p in paths)  # type: ignore[return-value]


class Recorder(asyncio.Protocol):
    """The protocol under the layer: records what it is told; echoes when ``echo``."""

    def __init__(self, echo: bool = True) -> None:
        self.echo = echo
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()
        self.events: list[str] = []
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.received += data
        if self.echo:
            assert self.transport is not None
            self.transport.write(data)

    def eof_received(self) -> bool | None:
        self.events.append("eof")
        return None

    def pause_writing(self) -> None:
        self.events.append("pause_writing")

    def resume_writing(self) -> None:
        self.events.append("resume_writing")

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


class Buffered(asyncio.BufferedProtocol, Recorder):
    eof_received = Recorder.eof_received  # (asyncio.BufferedProtocol's own would come first)

    def __init__(self) -> None:
        Recorder.__init__(self, echo=False)
        self.buffer = bytearray(4096)
        self.updates = 0

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes: int) -> None:
        self.updates += 1
        self.received += self.buffer[:nbytes]


def run(coro_fn, tmp_path: Path):  # noqa: ANN001, ANN201
    files = _files(tmp_path)

    async def main():  # noqa: ANN202
        return await coro_fn(files)

    return uvloop.run(main())


async def _serve(files: tuple[str, ...], protocol: asyncio.BaseProtocol, *, require_cert: bool = True):  # noqa: ANN202
    """A listening socket whose first connection gets a ``TLSTransport`` around ``protocol``; returns
    (port, task resolving to the layer once its handshake is done or failed)."""
    ca, cert, key, _, _ = files
    ctx = tls.server_context(cert, key, ca)
    if require_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
    loop = asyncio.get_running_loop()
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    lsock.setblocking(False)
    layer_class = tls.tls_layer()

    async def accept():  # noqa: ANN202
        sock, _ = await loop.sock_accept(lsock)
        lsock.close()
        layer = layer_class(ctx, protocol, loop)
        await loop.connect_accepted_socket(lambda: layer, sock)
        await asyncio.wait_for(layer.handshake_done, 5)
        return layer

    return lsock.getsockname()[1], asyncio.ensure_future(accept())


def _client_context(files: tuple[str, ...], *, alpn: list[str] | None = None, cert: bool = True) -> ssl.SSLContext:
    ca, _, _, ccert, ckey = files
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(ccert, ckey)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


async def _connected(files: tuple[str, ...], app: asyncio.BaseProtocol, *, alpn: list[str] | None = None):  # noqa: ANN202
    """A TLS client (asyncio streams, with the client certificate) connected to a ``TLSTransport`` around
    ``app``: (reader, writer, the layer once its handshake is done)."""
    port, accepted = await _serve(files, app)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=_client_context(files, alpn=alpn), server_hostname="localhost")
    return reader, writer, await accepted


def test_bytes_both_ways_in_records_of_every_size_with_alpn_and_the_clients_certificate(tmp_path):
    async def scenario(files):  # noqa: ANN001, ANN202
        app = Recorder(echo=True)
        reader, writer, layer = await _connected(files, app, alpn=["h2", "http/1.1"])
        sslobj = layer.get_extra_info("ssl_object")
        assert sslobj.selected_alpn_protocol() == "h2"
        assert sslobj.getpeercert(binary_form=True)  # the client's certificate, as the listener reads it
        assert layer.get_extra_info("peername")[0] == "127.0.0.1"
        sent = b""
        for size in (1, 100, 16383, 16384, 16385, 200_000):
            data = bytes(range(256)) * (size // 256) + bytes(size % 256)
            writer.write(data)
            sent += data
        await writer.drain()
        echoed = await reader.readexactly(len(sent))
        assert echoed == sent and bytes(app.received) == sent
        writer.close()
        await app.lost
        return app.events

    events = run(scenario, tmp_path)
    assert events[0] == "made" and events[-1] == "lost" and "eof" in events


def test_close_sends_close_notify_and_the_client_sees_a_clean_end(tmp_path):
    async def scenario(files):  # noqa: ANN001, ANN202
        app = Recorder(echo=False)
        reader, writer, layer = await _connected(files, app)
        layer.write(b"bye")
        layer.close()
        assert layer.is_closing()
        layer.write(b"dropped")  # after close: dropped, as uvloop drops it
        data = await reader.read()  # a close_notify ends the stream without an error
        assert await app.lost is None
        writer.close()
        return data

    assert run(scenario, tmp_path) == b"bye"


def test_a_buffered_protocol_gets_the_records_in_its_buffer_and_reading_pauses_and_resumes(tmp_path):
    async def scenario(files):  # noqa: ANN001, ANN202
        app = Recorder(echo=False)
        reader, writer, layer = await _connected(files, app)
        buffered = Buffered()
        layer.set_protocol(buffered)
        assert layer.get_protocol() is buffered
        buffered.transport = layer
        writer.write(b"x" * 10_000)
        await writer.drain()
        for _ in range(100):
            if len(buffered.received) == 10_000:
                break
            await asyncio.sleep(0.01)
        assert bytes(buffered.received) == b"x" * 10_000 and buffered.updates >= 3  # 4 KiB buffers
        layer.pause_reading()
        assert not layer.is_reading()
        writer.write(b"held")
        await writer.drain()
        await asyncio.sleep(0.1)
        assert len(buffered.received) == 10_000  # nothing while paused
        layer.resume_reading()
        for _ in range(100):
            if len(buffered.received) == 10_004:
                break
            await asyncio.sleep(0.01)
        assert bytes(buffered.received[-4:]) == b"held"
        layer.abort()
        writer.close()
        return await buffered.lost

    assert run(scenario, tmp_path) is None


def test_writes_beyond_the_high_water_mark_pause_the_protocol_until_the_client_reads(tmp_path):
    async def scenario(files):  # noqa: ANN001, ANN202
        app = Recorder(echo=False)
        reader, writer, layer = await _connected(files, app)  # the reader's limit: asyncio's 64 KiB
        layer.set_write_buffer_limits(high=64 * 1024)
        layer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        for _ in range(200):
            layer.write(b"y" * 16384)
        assert "pause_writing" in app.events and layer.get_write_buffer_size() > 0
        got = await reader.readexactly(200 * 16384)
        assert got == b"y" * (200 * 16384)
        for _ in range(100):
            if "resume_writing" in app.events:
                break
            await asyncio.sleep(0.01)
        assert "resume_writing" in app.events
        layer.close()
        writer.close()
        await app.lost

    run(scenario, tmp_path)


@pytest.mark.parametrize("case", ["untrusted client", "no client certificate", "plain http", "silence"])
def test_failed_handshakes_fail_with_the_errors_the_listener_classifies(tmp_path, case):
    async def scenario(files):  # noqa: ANN001, ANN202
        app = Recorder()
        port, accepted = await _serve(files, app)
        if case == "untrusted client":
            from certs.ca import CertificateAuthority

            other = CertificateAuthority.create_in_memory().issue_user_certificate("mallory", [], timedelta(hours=1))
            (tmp_path / "m.pem").write_bytes(other.cert_pem)
            (tmp_path / "m.key").write_bytes(other.key_pem)
            ctx = _client_context(files, cert=False)
            ctx.load_cert_chain(str(tmp_path / "m.pem"), str(tmp_path / "m.key"))
        else:
            ctx = _client_context(files, cert=False)
        if case == "plain http":
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        elif case == "silence":
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        else:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
                await reader.read()  # TLS 1.3: the client learns of the refusal on its first read
            except (ssl.SSLError, ConnectionError):
                pass
        if case == "silence":
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(accepted), 0.3)
            accepted.cancel()
            return "timeout", app.events
        with pytest.raises(Exception) as caught:  # noqa: PT011 - which one is the point of the test
            await accepted
        return tls.classify_handshake_error(caught.value), app.events

    reason, events = run(scenario, tmp_path)
    assert events == []  # the protocol never heard of the connection
    assert reason == {"untrusted client": "client_cert_untrusted", "no client certificate": "no_client_cert",
                      "plain http": "plain_http", "silence": "timeout"}[case]


def test_the_peers_close_notify_tells_the_protocol_of_the_end_and_closes(tmp_path):
    async def scenario(files):  # noqa: ANN001, ANN202
        app = Recorder(echo=False)
        reader, writer, _ = await _connected(files, app)
        writer.write(b"last words")
        await writer.drain()
        writer.close()  # asyncio's TLS client sends close_notify
        await writer.wait_closed()
        exc = await app.lost
        return bytes(app.received), app.events, exc

    received, events, exc = run(scenario, tmp_path)
    assert received == b"last words" and events == ["made", "eof", "lost"] and exc is None


class _TCPTransportStandIn:
    """What the layer needs of uvloop's TCP transport, recorded, so a test can hand it bytes and the end of
    the stream exactly when it wants to (uvloop itself reads no more once reading is paused)."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.written += data

    def take(self) -> bytes:
        data, self.written = bytes(self.written), bytearray()
        return data

    def close(self) -> None:
        self.closed = True

    abort = close

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


async def _over_stand_in(files: tuple[str, ...], app: asyncio.BaseProtocol):  # noqa: ANN202
    """A ``TLSTransport`` around ``app`` over the stand-in, its handshake done with a client ``SSLObject``
    over memory BIOs: (layer, stand-in, client, client's incoming BIO, client's outgoing BIO)."""
    ca, cert, key, _, _ = files
    tcp = _TCPTransportStandIn()
    layer = tls.tls_layer()(tls.server_context(cert, key, ca), app, asyncio.get_running_loop())
    layer.connection_made(tcp)
    c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = _client_context(files).wrap_bio(c_in, c_out, server_hostname="localhost")
    for _ in range(10):
        try:
            client.do_handshake()
            break
        except ssl.SSLWantReadError:
            layer.data_received(c_out.read())
            c_in.write(tcp.take())
    layer.data_received(c_out.read())  # the client's last flight
    await layer.handshake_done
    return layer, tcp, client, c_in, c_out


def test_the_end_of_the_stream_is_told_after_the_records_a_paused_protocol_had_not_read(tmp_path):
    async def scenario(files):  # noqa: ANN001, ANN202
        app = Buffered()
        app.buffer = bytearray(1000)
        layer, tcp, client, c_in, c_out = await _over_stand_in(files, app)
        layer.pause_reading()
        client.write(b"a" * 3000)
        layer.data_received(c_out.read())  # received while the protocol does not read
        assert layer.eof_received() is True  # the TCP stream ends: kept open for what waits
        assert app.events == ["made"] and len(app.received) == 0
        layer.resume_reading()
        await asyncio.sleep(0)  # the records are read at the next turn of the loop
        assert bytes(app.received) == b"a" * 3000 and app.events == ["made", "eof"]
        assert tcp.closed  # then the connection is closed, with our close_notify
        c_in.write(tcp.take())
        assert client.read(10) == b""  # the client sees a clean end
        layer.connection_lost(None)
        return app.events

    assert run(scenario, tmp_path) == ["made", "eof", "lost"]


def test_a_record_that_does_not_decrypt_fails_the_connection_with_the_ssl_modules_error(tmp_path):
    async def scenario(files):  # noqa: ANN001, ANN202
        app = Recorder(echo=False)
        layer, tcp, client, c_in, c_out = await _over_stand_in(files, app)
        client.write(b"tampered")
        record = bytearray(c_out.read())
        record[-1] ^= 0xFF
        layer.data_received(bytes(record))
        assert tcp.closed and layer.is_closing()  # aborted
        layer.write(b"dropped")  # after the failure: dropped
        layer.connection_lost(None)  # what the TCP transport then reports
        return await app.lost, bytes(app.received), app.events

    exc, received, events = run(scenario, tmp_path)
    # the ssl module's own exception (the SSLObject asked again), not a stand-in of the layer's
    assert isinstance(exc, ssl.SSLError) and exc.reason == "DECRYPTION_FAILED_OR_BAD_RECORD_MAC"
    assert received == b"" and events == ["made", "lost"]


# --- the client side (upstream connections) ------------------------------------------------------------


async def _tls_echo_server(files: tuple[str, ...], *, alpn: list[str] | None = None):  # noqa: ANN202
    """A TLS echo server (uvloop's TLS transport) for localhost requiring a client certificate from the
    CA: (port, the server names clients sent by SNI, the client certificates seen, the server)."""
    ca, cert, key, _, _ = files
    ctx = tls.server_context(cert, key, ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    if alpn:
        ctx.set_alpn_protocols(alpn)
    names: list[str | None] = []
    peers: list[dict] = []
    ctx.sni_callback = lambda _obj, name, _ctx: names.append(name)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peercert"))
        while data := await reader.read(65536):
            if data == b"bye":
                break
            writer.write(data)
        writer.close()  # with close_notify

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=ctx)
    return server.sockets[0].getsockname()[1], names, peers, server


async def _dial(files: tuple[str, ...], app: asyncio.BaseProtocol, port: int, *, hostname: str = "localhost",
                alpn: list[str] | None = None, ca: str | None = None):  # noqa: ANN202
    """A client-side ``TLSTransport`` around ``app`` over a TCP connection to ``port``, as the upstream pool
    makes it: the layer once its handshake is done (or the handshake's error raised)."""
    ctx = _client_context(files, alpn=alpn)
    if ca is not None:
        ctx = ssl.create_default_context(cafile=ca)
    loop = asyncio.get_running_loop()
    layer = tls.tls_layer()(ctx, app, loop, False, hostname)
    raw, _ = await loop.create_connection(lambda: layer, "127.0.0.1", port)
    try:
        await asyncio.wait_for(layer.handshake_done, 5)
    except BaseException:
        raw.abort()
        raise
    return layer


def test_the_client_side_sends_the_server_name_shows_its_certificate_and_relays_both_ways(tmp_path):
    async def scenario(files):  # noqa: ANN001, ANN202
        port, names, peers, server = await _tls_echo_server(files, alpn=["http/1.1"])
        app = Recorder(echo=False)
        layer = await _dial(files, app, port, alpn=["h2", "http/1.1"])
        assert app.events == ["made"] and app.transport is layer
        assert layer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"  # the server's choice
        assert layer.get_extra_info("peercert")["subjectAltName"] == (("DNS", "localhost"),)
        sent = b""
        for size in (1, 16384, 16385, 300_000):  # answers of many records, several in one TCP read
            data = bytes(range(256)) * (size // 256) + bytes(size % 256)
            layer.write(data)
            sent += data
        for _ in range(200):
            if len(app.received) == len(sent):
                break
            await asyncio.sleep(0.01)
        assert bytes(app.received) == sent
        layer.write(b"bye")  # the server ends the connection with close_notify
        exc = await asyncio.wait_for(app.lost, 5)
        server.close()
        return names, peers, app.events, exc

    names, peers, events, exc = run(scenario, tmp_path)
    assert names == ["localhost"]  # SNI
    assert dict(x[0] for x in peers[0]["subject"])["commonName"] == "alice"  # the client certificate
    assert events == ["made", "eof", "lost"] and exc is None


@pytest.mark.parametrize("case", ["another name", "another CA"])
def test_the_client_side_refuses_a_server_it_cannot_verify_with_the_ssl_modules_error(tmp_path, case):
    async def scenario(files):  # noqa: ANN001, ANN202
        port, _, _, server = await _tls_echo_server(files)
        app = Recorder()
        kwargs: dict = {"hostname": "api.other.example"} if case == "another name" else {}
        if case == "another CA":
            from certs.ca import CertificateAuthority

            (tmp_path / "other-ca.pem").write_bytes(CertificateAuthority.create_in_memory().cert_pem)
            kwargs["ca"] = str(tmp_path / "other-ca.pem")
        with pytest.raises(ssl.SSLCertVerificationError) as caught:
            await _dial(files, app, port, **kwargs)
        server.close()
        return caught.value.verify_message, app.events

    message, events = run(scenario, tmp_path)
    assert events == []  # the protocol never heard of the connection
    # the server's chain ends in a CA that is not the one trusted here
    assert ("Hostname mismatch" in message) if case == "another name" else ("self-signed" in message)


def test_a_client_side_whose_context_checks_names_needs_the_server_name(tmp_path):
    async def scenario(files):  # noqa: ANN001, ANN202
        with pytest.raises(ValueError, match="server_hostname"):
            tls.tls_layer()(_client_context(files), Recorder(), asyncio.get_running_loop(), False, None)

    run(scenario, tmp_path)


def test_a_buffered_protocol_gets_every_record_of_one_read_in_one_buffer_as_far_as_it_holds(tmp_path):
    async def scenario(files):  # noqa: ANN001, ANN202
        app = Buffered()
        app.buffer = bytearray(256 * 1024)
        layer, tcp, client, c_in, c_out = await _over_stand_in(files, app)
        client.write(b"r" * 100_000)  # seven records
        layer.data_received(c_out.read())  # in one read of the socket
        one_read = app.updates
        app.buffer = bytearray(40_000)  # a buffer smaller than what came: filled, then the next one
        client.write(b"s" * 100_000)
        layer.data_received(c_out.read())
        layer.abort()
        return one_read, app.updates - one_read, bytes(app.received)

    first, second, received = run(scenario, tmp_path)
    assert first == 1  # a relay writes it on as one write, not one per 16 KiB record
    assert second == 3 and received == b"r" * 100_000 + b"s" * 100_000


def test_the_ssl_object_handed_out_outlives_the_connection_without_reaching_into_it(tmp_path):
    """The layer's own BIOs point at the layer; the ``SSLObject`` it hands out (``ssl_object``) may live
    on after the layer is gone, and then answers as a connection with nothing more to read or write."""

    async def scenario(files):  # noqa: ANN001, ANN202
        import gc

        app = Recorder(echo=False)
        layer, tcp, client, c_in, c_out = await _over_stand_in(files, app)
        sslobj = layer.get_extra_info("ssl_object")
        client.write(b"before")
        layer.data_received(c_out.read())
        assert bytes(app.received) == b"before"
        layer.connection_lost(None)
        del layer
        gc.collect()
        with pytest.raises(ssl.SSLWantReadError):
            sslobj.read(10)
        with pytest.raises(ssl.SSLError):
            sslobj.write(b"after")
        return await app.lost

    assert run(scenario, tmp_path) is None


def test_an_error_another_caller_left_in_openssls_queue_does_not_fail_the_next_read(tmp_path):
    """``SSL_get_error`` reads the thread's OpenSSL error queue: the layer empties it before its reads and
    writes (it looks first, and clears only what is there), so an error some other code left behind is
    not taken for this connection's."""
    import ctypes

    from proxy import tls_direct  # type: ignore[attr-defined]

    libssl = ctypes.CDLL(tls_direct._libssl_path())  # the loaded one; libcrypto's symbols through it
    libssl.ERR_new.restype = None
    libssl.ERR_set_error.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p]
    libssl.ERR_peek_error.restype = ctypes.c_ulong

    async def scenario(files):  # noqa: ANN001, ANN202
        app = Recorder(echo=False)
        layer, tcp, client, c_in, c_out = await _over_stand_in(files, app)
        client.write(b"x" * 5000)
        record = c_out.read()
        libssl.ERR_new()
        libssl.ERR_set_error(20, 100, b"left behind by someone else")  # ERR_LIB_SSL, any reason
        assert libssl.ERR_peek_error() != 0
        layer.data_received(record[:100])  # part of a record: OpenSSL wants more
        assert not tcp.closed and not layer.is_closing()
        layer.data_received(record[100:])
        assert bytes(app.received) == b"x" * 5000
        layer.connection_lost(None)
        return await app.lost

    assert run(scenario, tmp_path) is None


def test_a_close_while_the_peer_keeps_sending_still_delivers_everything_written_before_it(tmp_path):
    """A lingering close. The layer answers 4 MiB and closes while the client goes on sending (a flood,
    a request body nobody reads). Had the TCP socket been closed with those bytes unread, the kernel
    would answer them with a reset, and the client's kernel would drop the answer's tail not read yet:
    the GOAWAY of an h2 flood was lost so (seen in CI). The layer instead ends its sending side after its
    last bytes and reads on, discarding, until the client ends: the client reads all 4 MiB and then the
    close_notify. The client is the ``ssl`` module's blocking socket in a thread; its flood goes on a
    duplicate of the socket's descriptor, as raw bytes, once the layer has closed (no record is read then)."""
    import os
    import threading

    answer = os.urandom(4 << 20)

    def client(port: int, files: tuple[str, ...]) -> tuple[bytes, str]:
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                _client_context(files).wrap_socket(raw, server_hostname="localhost",
                                                   suppress_ragged_eofs=False) as conn:
            conn.settimeout(10)
            received = bytearray(conn.recv(65536))  # the layer has written everything and closed by now
            flood = socket.socket(fileno=os.dup(conn.fileno()))
            stop = threading.Event()

            def send_junk() -> None:
                flood.settimeout(0.2)
                while not stop.is_set():
                    try:
                        flood.send(b"\x17" * 65536)
                    except TimeoutError:
                        continue
                    except OSError:
                        return

            sender = threading.Thread(target=send_junk, daemon=True)
            sender.start()
            time.sleep(0.3)  # the junk fills the layer's socket while the answer waits to be read
            end = "close_notify"
            try:
                while chunk := conn.recv(65536):
                    received += chunk
            except OSError as exc:
                end = type(exc).__name__
            stop.set()
            sender.join(5)
            flood.close()
            return bytes(received), end

    async def scenario(files):  # noqa: ANN001, ANN202
        app = Recorder(echo=False)
        port, accepted = await _serve(files, app)
        answered = asyncio.ensure_future(asyncio.to_thread(client, port, files))
        layer = await accepted
        layer.write(answer)
        layer.close()
        received, end = await answered
        await asyncio.wait_for(app.lost, 5)
        return received, end

    received, end = run(scenario, tmp_path)
    assert (len(received), end) == (len(answer), "close_notify")
    assert received == answer

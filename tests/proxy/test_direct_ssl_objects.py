"""``proxy.tls.DirectSSLObject``: the TLS connections kubegate's contexts make over memory BIOs (what
uvloop uses) call OpenSSL's C methods for ``read``, ``write`` and ``pending`` directly, and behave
exactly as the ``ssl`` module's own objects: a real TLS 1.3 session between two of them, bytes both
ways, reads into a caller's buffer, what is pending, and the session's close."""

from __future__ import annotations

import ssl
from pathlib import Path

from proxy.tls import DirectSSLObject, direct_ssl_objects


def _server_files(tmp_path: Path) -> tuple[str, str, str]:
    """A CA's certificate file and a server certificate and key it issued for ``localhost``."""
    from certs.ca import CertificateAuthority

    ca = CertificateAuthority.create_in_memory()
    issued = ca.issue_server_certificate(["localhost"])
    files = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server-key.pem"
    for path, pem in zip(files, (ca.cert_pem, issued.cert_pem, issued.key_pem), strict=True):
        path.write_bytes(pem)
    return str(files[0]), str(files[1]), str(files[2])


def _contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca_file, cert_file, key_file = _server_files(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cafile=ca_file)
    return direct_ssl_objects(server), direct_ssl_objects(client)


def _pump(src: ssl.MemoryBIO, dst: ssl.MemoryBIO) -> None:
    data = src.read()
    if data:
        dst.write(data)


def test_a_session_between_direct_objects_carries_bytes_both_ways_as_the_ssl_modules_own(tmp_path):
    server_ctx, client_ctx = _contexts(tmp_path)
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    assert isinstance(client, DirectSSLObject) and isinstance(server, DirectSSLObject)
    # the C methods themselves, as uvloop binds them right after wrap_bio
    assert type(client.read).__name__ == "builtin_function_or_method"
    assert client.read.__self__ is client._sslobj and server.pending.__self__ is server._sslobj
    for _ in range(10):  # the handshake, record by record
        done = 0
        for side in (client, server):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        _pump(c_out, s_in)
        _pump(s_out, c_in)
        if done == 2:
            break
    assert client.version() == server.version() == "TLSv1.3"
    assert client.write(b"GET / HTTP/1.1\r\n\r\n") == 18
    _pump(c_out, s_in)
    assert server.read(5) == b"GET /" and server.pending() == 13  # the rest of the record waits
    buffer = bytearray(64)
    assert server.read(64, buffer) == 13 and bytes(buffer[:13]) == b" HTTP/1.1\r\n\r\n"
    server.write(b"x" * 40000)  # more than one record
    _pump(s_out, c_in)
    received = b""
    while len(received) < 40000:
        received += client.read(65536)
    assert received == b"x" * 40000
    try:
        client.unwrap()
    except ssl.SSLWantReadError:
        pass
    _pump(c_out, s_in)
    assert server.read(10) == b""  # the client's close_notify: the session ended cleanly


def test_kubegates_contexts_make_direct_objects(tmp_path):
    from proxy.tls import server_context

    ca_file, cert_file, key_file = _server_files(tmp_path)
    assert server_context(cert_file, key_file, ca_file).sslobject_class is DirectSSLObject

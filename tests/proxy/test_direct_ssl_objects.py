"""``proxy.tls.DirectSSLObject``: the TLS connections kubegate's contexts make over memory BIOs (what
uvloop uses) call C functions for ``read``, ``write`` and ``pending`` directly (``proxy.tls_direct``'s,
which call OpenSSL themselves, where that accelerator is built; else the ``_ssl`` module's C methods),
and behave exactly as the ``ssl`` module's own objects: a real TLS 1.3 session between two of them,
bytes both ways, reads into a caller's buffer, what is pending, the errors of a read with nothing to
read and of a broken record, and the session's close."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from proxy import tls
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


def _contexts(files: tuple[str, str, str], *, direct: bool = True) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Server and client contexts for the CA and server certificate in ``files``, making
    ``DirectSSLObject``s when ``direct``, the ``ssl`` module's own ``SSLObject``s otherwise."""
    ca_file, cert_file, key_file = files
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cafile=ca_file)
    return (direct_ssl_objects(server), direct_ssl_objects(client)) if direct else (server, client)


def _pump(src: ssl.MemoryBIO, dst: ssl.MemoryBIO) -> None:
    data = src.read()
    if data:
        dst.write(data)


def _handshake(client: ssl.SSLObject, server: ssl.SSLObject, c_in: ssl.MemoryBIO, c_out: ssl.MemoryBIO,
               s_in: ssl.MemoryBIO, s_out: ssl.MemoryBIO) -> None:
    """The handshake between ``client`` and ``server``, record by record over their BIOs."""
    for _ in range(10):
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
            return


def test_a_session_between_direct_objects_carries_bytes_both_ways_as_the_ssl_modules_own(tmp_path):
    server_ctx, client_ctx = _contexts(_server_files(tmp_path))
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    assert isinstance(client, DirectSSLObject) and isinstance(server, DirectSSLObject)
    # C functions, as uvloop binds them right after wrap_bio: the accelerator's, or the _ssl object's own
    if tls._ATTACH_DIRECT is not None:
        assert type(client.read).__name__ == "builtin_function_or_method"
        assert type(client.read.__self__).__name__ == "DirectTLS"
    else:
        assert client.read.__self__ is client._sslobj and server.pending.__self__ is server._sslobj
    _handshake(client, server, c_in, c_out, s_in, s_out)
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


@pytest.fixture(params=["accelerated", "ssl-module-methods"])
def direct_kind(request, monkeypatch):
    """Each test below runs with ``proxy.tls_direct`` (where it was built) and with the ``_ssl`` methods."""
    if request.param == "ssl-module-methods":
        monkeypatch.setattr(tls, "_ATTACH_DIRECT", None)
    elif tls._ATTACH_DIRECT is None:
        pytest.skip("proxy.tls_direct is not built here (KUBEGATE_PURE_PYTHON=1 or no C compiler)")
    return request.param


def _outcome(call) -> object:  # noqa: ANN001
    try:
        return ("value", call())
    except ssl.SSLError as exc:
        return ("raised", type(exc).__name__, exc.reason)
    except (ValueError, OverflowError) as exc:
        return ("raised", type(exc).__name__, str(exc))


def _session_transcript(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> list[object]:
    """What a session's edge cases answer: reads with nothing to read, empty and zero-size calls, a record
    split across two arrivals, a read into a smaller buffer, a tampered record, then the close."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    seen: list[object] = [_outcome(lambda: server.read(10))]  # before the handshake: wants to read
    _handshake(client, server, c_in, c_out, s_in, s_out)
    seen.append(_outcome(lambda: server.read(10)))  # nothing sent yet
    seen.append(_outcome(lambda: server.read(0)))
    seen.append(_outcome(lambda: server.read(-1)))
    seen.append(_outcome(lambda: server.pending()))
    seen.append(_outcome(lambda: client.write(b"")))
    seen.append(_outcome(lambda: client.write(memoryview(b"abcdef")[2:])))
    record = c_out.read()
    s_in.write(record[:7])  # half a record: nothing to read yet
    seen.append(_outcome(lambda: server.read(100)))
    s_in.write(record[7:])
    buffer = bytearray(3)
    seen.append(_outcome(lambda: server.read(100, buffer)))
    seen.append(bytes(buffer))
    seen.append(_outcome(lambda: server.pending()))
    seen.append(_outcome(lambda: server.read(100)))
    seen.append(_outcome(lambda: server.write(bytearray(b"y" * 20000))))
    _pump(s_out, c_in)
    seen.append(_outcome(lambda: len(client.read(100000))))  # one record's worth at most
    seen.append(_outcome(lambda: len(client.read(100000))))
    client.write(b"tampered")
    tampered = bytearray(c_out.read())
    tampered[-1] ^= 0xFF
    s_in.write(bytes(tampered))
    seen.append(_outcome(lambda: server.read(100)))  # the record's tag does not verify: a fatal alert
    seen.append(_outcome(lambda: server.read(100)))
    return seen


def test_direct_objects_answer_every_edge_case_as_the_ssl_modules_own(tmp_path, direct_kind):
    files = _server_files(tmp_path)
    reference = _session_transcript(*_contexts(files, direct=False))
    assert reference[0][0] == "raised" and reference[-2][0] == "raised"  # the transcript has its errors
    assert _session_transcript(*_contexts(files)) == reference


def test_kubegates_session_works_with_each_kind_of_direct_object(tmp_path, direct_kind):
    test_a_session_between_direct_objects_carries_bytes_both_ways_as_the_ssl_modules_own(tmp_path)

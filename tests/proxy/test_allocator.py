"""The serving process's C allocator (``proxy.memory.tune_allocator``): a TLS read, for which uvloop asks
``SSLObject.read`` for up to 256 KiB each time, is served from the heap instead of a fresh ``mmap`` (and
an ``mremap``, a ``munmap``, page faults) per read.

Each case runs in a fresh interpreter (the allocator's settings are process-wide): a real TLS session
between two ``SSLObject`` over memory BIOs, as uvloop drives them, one 2.4 KB record read the way uvloop
reads it; glibc's ``mallinfo2`` tells how many chunks are mapped on their own while the read's bytes
are held.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import ctypes, datetime, json, ssl, sys, tempfile
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
            "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    tuned = None
    if sys.argv[1] == "tuned":
        from proxy.memory import tune_allocator
        tuned = tune_allocator()

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "localhost")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(datetime.datetime(2020, 1, 1))
            .not_valid_after(datetime.datetime(2040, 1, 1)).sign(key, hashes.SHA256()))
    with tempfile.NamedTemporaryFile(suffix=".pem") as pem:
        pem.write(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        pem.flush()
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(pem.name)
        client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client_ctx.load_verify_locations(pem.name)
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    for _ in range(10):
        for end in (client, server):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    server.write(b"x" * 2400)
    c_in.write(s_out.read())
    before = libc.mallinfo2().hblks
    held = client.read(256 * 1024)  # uvloop's SSL_READ_MAX_SIZE
    print(json.dumps({"tuned": tuned, "read": len(held), "mapped_while_held": libc.mallinfo2().hblks - before}))
""")


def _read_once(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60,
                          check=True)
    return json.loads(done.stdout)


def _glibc_with_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL(None), "mallinfo2")  # glibc 2.33+
    except OSError:
        return False


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="glibc's allocator (mallinfo2: glibc 2.33+)")
def test_a_tls_read_is_a_mapping_of_its_own_by_default_and_comes_from_the_heap_once_tuned():
    default = _read_once("default")
    assert default["read"] == 2400
    assert default["mapped_while_held"] == 1  # 256 KiB asked: mmap-ed, then shrunk (mremap), later munmap-ed
    assert _read_once("tuned") == {"tuned": True, "read": 2400, "mapped_while_held": 0}

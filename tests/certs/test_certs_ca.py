"""The kubegate CA: creation on disk, reload, idempotence, and the certificates it issues."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.ca import (
    CAError,
    CertificateAuthority,
    CertificateVerificationError,
    server_hosts,
    verify_client_chain,
)
from certs.extension import IDENTITY_EXTENSION_OID


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ca_is_created_with_private_key_mode_0600(tmp_path: Path) -> None:
    ca, created = CertificateAuthority.load_or_create(tmp_path / "ca")
    assert created
    assert mode(tmp_path / "ca" / "ca-key.pem") == 0o600
    assert mode(tmp_path / "ca" / "ca.pem") == 0o644
    assert mode(tmp_path / "ca") == 0o700
    assert isinstance(ca.private_key, ec.EllipticCurvePrivateKey)
    assert ca.private_key.curve.name == "secp256r1"
    constraints = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    assert ca.certificate.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert ca.cert_path == tmp_path / "ca" / "ca.pem"
    # nothing left behind from the atomic creation
    assert [p.name for p in tmp_path.iterdir()] == ["ca"]


def test_ca_is_loaded_not_recreated(tmp_path: Path) -> None:
    first, created_first = CertificateAuthority.load_or_create(tmp_path / "ca")
    second, created_second = CertificateAuthority.load_or_create(tmp_path / "ca")
    assert created_first and not created_second
    assert second.certificate == first.certificate
    assert second.fingerprint_sha256 == first.fingerprint_sha256
    assert len(first.fingerprint_sha256.split(":")) == 32


def test_ca_creation_fills_an_empty_precreated_directory(tmp_path: Path) -> None:
    (tmp_path / "ca").mkdir()
    ca, created = CertificateAuthority.load_or_create(tmp_path / "ca")
    assert created and ca.cert_path.exists()


def test_concurrent_creators_end_up_with_one_ca(tmp_path: Path) -> None:
    results: list[CertificateAuthority] = []
    barrier = threading.Barrier(4)

    def create() -> None:
        barrier.wait()
        results.append(CertificateAuthority.load_or_create(tmp_path / "ca")[0])

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    on_disk = CertificateAuthority.load(tmp_path / "ca")
    assert {r.fingerprint_sha256 for r in results} == {on_disk.fingerprint_sha256}


def test_partial_ca_directory_is_an_error_not_silently_replaced(tmp_path: Path) -> None:
    ca, _ = CertificateAuthority.load_or_create(tmp_path / "ca")
    ca.key_path.unlink()
    with pytest.raises(CAError, match="missing ca-key.pem"):
        CertificateAuthority.load_or_create(tmp_path / "ca")


def test_mismatched_key_is_refused(tmp_path: Path) -> None:
    CertificateAuthority.load_or_create(tmp_path / "a")
    CertificateAuthority.load_or_create(tmp_path / "b")
    (tmp_path / "a" / "ca-key.pem").write_bytes((tmp_path / "b" / "ca-key.pem").read_bytes())
    with pytest.raises(CAError, match="does not match"):
        CertificateAuthority.load(tmp_path / "a")


def test_user_certificate_fields(ca: CertificateAuthority) -> None:
    issued = ca.issue_user_certificate(
        "alice", ["dev-access", "viewer"], timedelta(hours=8), traits={"kubernetes_groups": ["a", "b"]}
    )
    cert = issued.certificate
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == ["alice"]
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "dev-access",
        "viewer",
    ]
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    ext = cert.extensions.get_extension_for_oid(IDENTITY_EXTENSION_OID)
    assert not ext.critical
    assert 2**127 <= cert.serial_number < 2**128
    assert issued.serial == format(cert.serial_number, "x")
    assert issued.key_pem is not None and b"PRIVATE KEY" in issued.key_pem
    verify_client_chain(cert, ca)


def test_serials_are_random(ca: CertificateAuthority) -> None:
    serials = {ca.issue_user_certificate("u", ["r"], timedelta(minutes=5)).serial for _ in range(20)}
    assert len(serials) == 20


def test_validity_window_follows_the_clock(tmp_path: Path, clock) -> None:
    clock.now = 1_800_000_000
    ca, _ = CertificateAuthority.load_or_create(tmp_path / "ca", clock=clock)
    issued = ca.issue_user_certificate("alice", ["viewer"], timedelta(hours=2))
    now = datetime.fromtimestamp(clock.now, tz=UTC)
    assert issued.not_after == now + timedelta(hours=2)
    assert issued.not_before == now - timedelta(minutes=1)  # back-dated for clock skew
    verify_client_chain(issued.certificate, ca)
    with pytest.raises(CertificateVerificationError, match="not valid before"):
        verify_client_chain(issued.certificate, ca, now=now - timedelta(minutes=2))
    clock.advance(2 * 3600 + 1)
    with pytest.raises(CertificateVerificationError, match="expired"):
        verify_client_chain(issued.certificate, ca)


def test_ttl_never_outlives_the_ca(ca: CertificateAuthority) -> None:
    issued = ca.issue_user_certificate("alice", ["viewer"], timedelta(days=100 * 365))
    assert issued.not_after == ca.certificate.not_valid_after_utc


def test_bad_inputs_are_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="ttl must be positive"):
        ca.issue_user_certificate("alice", ["viewer"], timedelta(0))
    with pytest.raises(ValueError, match="user name"):
        ca.issue_user_certificate("", ["viewer"], timedelta(hours=1))
    with pytest.raises(ValueError, match="role name"):
        ca.issue_user_certificate("alice", ["bad\nrole"], timedelta(hours=1))
    with pytest.raises(ValueError, match="kind"):
        ca.issue_user_certificate("alice", ["viewer"], timedelta(hours=1), kind="robot")


def test_certificate_from_another_ca_does_not_verify(ca: CertificateAuthority, tmp_path: Path) -> None:
    other, _ = CertificateAuthority.load_or_create(tmp_path / "other")
    foreign = other.issue_user_certificate("mallory", ["admin"], timedelta(hours=1))
    with pytest.raises(CertificateVerificationError, match="not the kubegate CA"):
        verify_client_chain(foreign.certificate, ca)


def test_server_certificate_verification_rejects_it_as_client_cert(ca: CertificateAuthority) -> None:
    server = ca.issue_server_certificate(["127.0.0.1"])
    with pytest.raises(CertificateVerificationError, match="clientAuth"):
        verify_client_chain(server.certificate, ca)


def test_server_hosts_from_public_and_listen_addresses() -> None:
    hosts = server_hosts(["kubegate.example.com:3026", "[2001:db8::1]:443"], "10.0.0.5:3026")
    assert hosts == ["kubegate.example.com", "2001:db8::1", "10.0.0.5", "localhost", "127.0.0.1", "::1"]
    assert server_hosts([], "0.0.0.0:3026") == ["localhost", "127.0.0.1", "::1"]
    assert server_hosts(["https://LocalHost:3026/"], "[::]:1") == ["localhost", "127.0.0.1", "::1"]


def test_serving_certificate_is_kept_until_it_needs_renewal(tmp_path: Path, clock) -> None:
    ca, _ = CertificateAuthority.load_or_create(tmp_path / "ca", clock=clock)
    hosts = server_hosts(["kubegate.example.com:3026"], "0.0.0.0:3026")
    cert_path, key_path, issued = ca.ensure_server_certificate(hosts)
    assert issued and cert_path == tmp_path / "ca" / "server.pem" and mode(key_path) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["kubegate.example.com", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert (
        ExtendedKeyUsageOID.SERVER_AUTH
        in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    # same hosts: kept
    assert ca.ensure_server_certificate(hosts)[2] is False
    # a new public address: re-issued with it
    assert ca.ensure_server_certificate([*hosts, "proxy.internal"])[2] is True
    # 340 days later (inside the 30-day renewal window): re-issued
    clock.advance(340 * 86400)
    assert ca.ensure_server_certificate([*hosts, "proxy.internal"])[2] is True


def test_tls_handshake_with_python_ssl(ca: CertificateAuthority, tmp_path: Path) -> None:
    """A real handshake: server cert from the CA for 127.0.0.1, client cert required from the CA."""
    server_cert, server_key, _ = ca.ensure_server_certificate(
        ["127.0.0.1"], tmp_path / "s.pem", tmp_path / "s.key"
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(server_cert, server_key)
    server_ctx.load_verify_locations(cafile=str(ca.cert_path))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    issued = ca.issue_user_certificate("alice", ["viewer"], timedelta(hours=1))
    (tmp_path / "c.pem").write_bytes(issued.cert_pem)
    (tmp_path / "c.key").write_bytes(issued.key_pem or b"")
    client_ctx = ssl.create_default_context(cafile=str(ca.cert_path))
    client_ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "c.key")

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            seen.append(tls.getpeercert(binary_form=True) or b"")
            tls.sendall(b"ok")

    thread = threading.Thread(target=serve)
    thread.start()
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.recv(2) == b"ok"
    thread.join(timeout=5)
    listener.close()
    assert x509.load_der_x509_certificate(seen[0]).serial_number == issued.certificate.serial_number


def _handshake(ca: CertificateAuthority, tmp_path: Path, cert_pem: bytes, key_pem: bytes) -> str | None:
    """Client handshake + one read against a server requiring a client cert from ``ca``; error text or None."""
    server_cert, server_key, _ = ca.ensure_server_certificate(
        ["127.0.0.1"], tmp_path / "s.pem", tmp_path / "s.key"
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(server_cert, server_key)
    server_ctx.load_verify_locations(cadata=ca.cert_pem.decode())
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    (tmp_path / "c.pem").write_bytes(cert_pem + key_pem)
    client_ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    client_ctx.load_cert_chain(
        tmp_path / "c.pem"
    )  # one file holding certificate and key, as a bot's identity.pem
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                data = tls.recv(2)
                return None if data == b"ok" else f"connection closed ({data!r})"
    except (ssl.SSLError, OSError) as exc:
        return str(exc)
    finally:
        thread.join(timeout=10)
        listener.close()


def test_handshake_refuses_foreign_and_expired_certificates(ca: CertificateAuthority, tmp_path: Path) -> None:
    good = ca.issue_user_certificate("alice", ["viewer"], timedelta(hours=1))
    assert _handshake(ca, tmp_path, good.cert_pem, good.key_pem or b"") is None
    other, _ = CertificateAuthority.load_or_create(tmp_path / "other")
    foreign = other.issue_user_certificate("mallory", ["viewer"], timedelta(hours=1))
    refused = _handshake(ca, tmp_path, foreign.cert_pem, foreign.key_pem or b"")
    assert refused is not None and "unknown ca" in refused.lower()
    past = CertificateAuthority(
        ca.certificate, ca.private_key, clock=lambda: datetime.now(tz=UTC).timestamp() - 7200
    )
    expired = past.issue_user_certificate("alice", ["viewer"], timedelta(hours=1))
    assert expired.not_after < datetime.now(tz=UTC)
    refused = _handshake(ca, tmp_path, expired.cert_pem, expired.key_pem or b"")
    assert refused is not None and "expired" in refused.lower()


def test_a_client_certificate_reissued_names_the_same_identity_with_a_new_key_and_no_later_expiry(
        ca: CertificateAuthority) -> None:
    """What a replica presents to the replica holding a session on behalf of a joiner (whose key it does
    not have): the joiner as their certificate names them, signed again, for a key of its own."""
    from dataclasses import replace

    from certs.identity import identity_from_certificate

    own = ca.issue_user_certificate("bob", ["observer", "dev"], timedelta(hours=8), traits={"team": ["a"]},
                                    cluster="prod").certificate
    again = ca.reissue_client_certificate(own, timedelta(minutes=5))
    cert = again.certificate
    reissued, original = identity_from_certificate(cert), identity_from_certificate(own)
    assert cert.subject == own.subject
    assert replace(reissued, serial=original.serial, not_after=original.not_after) == original
    assert cert.extensions.get_extension_for_oid(IDENTITY_EXTENSION_OID).value == \
        own.extensions.get_extension_for_oid(IDENTITY_EXTENSION_OID).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert cert.public_key() != own.public_key() and again.key_pem is not None
    assert cert.serial_number != own.serial_number
    assert cert.not_valid_after_utc - datetime.now(UTC) <= timedelta(minutes=5, seconds=1)
    verify_client_chain(cert, ca.certificate)

    short = ca.issue_user_certificate("bob", ["observer"], timedelta(minutes=2)).certificate
    assert ca.reissue_client_certificate(short, timedelta(minutes=5)).certificate.not_valid_after_utc == \
        short.not_valid_after_utc


def test_only_this_cas_client_certificates_are_reissued(ca: CertificateAuthority) -> None:
    other = CertificateAuthority.create_in_memory()
    with pytest.raises(ValueError, match="not issued by this CA"):
        ca.reissue_client_certificate(other.issue_user_certificate("bob", [], timedelta(hours=1)).certificate,
                                      timedelta(minutes=5))
    with pytest.raises(ValueError, match="not a client certificate"):
        ca.reissue_client_certificate(ca.issue_server_certificate(["localhost"]).certificate, timedelta(minutes=5))


def test_a_reissued_certificate_and_key_load_from_memory_and_leave_no_file(ca: CertificateAuthority, tmp_path,
                                                                         monkeypatch) -> None:
    """``proxy.recording.peer.load_chain_from_memory``: the joiner's certificate and its new key go to an
    anonymous in-memory file, not to the temporary directory (nor anywhere on disk)."""
    import tempfile

    from proxy.recording.peer import load_chain_from_memory

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    own = ca.issue_user_certificate("bob", ["observer"], timedelta(hours=1)).certificate
    again = ca.reissue_client_certificate(own, timedelta(minutes=5))
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    load_chain_from_memory(context, again.cert_pem + again.key_pem)
    assert list(scratch.iterdir()) == []
    with pytest.raises(ssl.SSLError):  # a key that does not match the certificate is refused as from a file
        load_chain_from_memory(ssl.create_default_context(), again.cert_pem + ca.issue_user_certificate(
            "bob", [], timedelta(hours=1)).key_pem)

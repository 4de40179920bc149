"""The etcd backend over TLS with a client certificate (etcd started with ``--client-cert-auth``)."""

from __future__ import annotations

import threading

import pytest

from backend.base import BackendError
from backend.etcd import EtcdBackend
from backend.testing import EtcdCluster


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory):
    with EtcdCluster(tmp_path_factory.mktemp("etcd-tls"), members=1, tls=True) as cluster:
        yield cluster


def test_reads_writes_and_watches_with_a_client_certificate(tls_etcd):
    backend = EtcdBackend(tls_etcd.endpoints, prefix="/tls/", ca_file=tls_etcd.ca_file,
                          cert_file=tls_etcd.client_cert, key_file=tls_etcd.client_key)
    assert tls_etcd.endpoints[0].startswith("https://")
    _, revision = backend.get_range("locks/")
    seen = threading.Event()
    watch = backend.watch("locks/", revision, lambda events: seen.set(), lambda exc: None)
    try:
        item = backend.put("locks/list", b"{}")
        assert backend.get("locks/list") == item
        assert seen.wait(10), "the watch over TLS delivered the put"
    finally:
        watch.cancel()


def test_without_a_client_certificate_etcd_refuses(tls_etcd):
    backend = EtcdBackend(tls_etcd.endpoints, prefix="/tls/", ca_file=tls_etcd.ca_file, timeout=2.0)
    with pytest.raises(BackendError):
        backend.get("locks/list")


def test_a_member_not_signed_by_the_configured_ca_is_not_trusted(tls_etcd, tmp_path):
    from sandbox.tls import SandboxPKI

    other_ca = SandboxPKI(tmp_path / "other").ca_cert_path
    backend = EtcdBackend(tls_etcd.endpoints, prefix="/tls/", ca_file=str(other_ca),
                          cert_file=tls_etcd.client_cert, key_file=tls_etcd.client_key, timeout=2.0)
    with pytest.raises(BackendError):
        backend.get("locks/list")

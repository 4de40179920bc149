"""Constructing the Proxy: no roles → refuse to start (never allow everything); config limits map to settings."""

from __future__ import annotations

import ssl

import pytest

from proxy.app import Proxy


class NoClusters:
    def get(self, name):
        return None

    def list(self):
        return []

    def subscribe(self, listener):
        return lambda: None


def test_without_roles_or_policy_the_proxy_refuses_to_start():
    with pytest.raises(ValueError, match="roles"):
        Proxy(clusters=NoClusters(), ssl_context=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))


def test_without_certificates_the_proxy_refuses_to_start():
    with pytest.raises(ValueError, match="certificate"):
        Proxy(clusters=NoClusters(), policy=object())


def test_from_config_reads_the_validated_limits():
    from kubegate.config import config_from_mapping

    cfg = config_from_mapping({
        "version": "v1",
        "proxy": {"limits": {"header_timeout": "3s", "idle_timeout": "2m", "max_connections": 77,
                             "max_header_bytes": "16KiB", "upstream_connect_timeout": "4s",
                             "upstream_response_timeout": "45s", "write_high_water": "512KiB"}},
    })
    proxy = Proxy.from_config(cfg, ssl_context=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), clusters=NoClusters(),
                              policy=object())
    s, p = proxy.settings, proxy.pool_settings
    assert (s.header_timeout, s.idle_timeout, s.max_connections, s.max_header_bytes) == (3.0, 120.0, 77, 16384)
    assert (p.connect_timeout, p.response_head_timeout, p.high_water) == (4.0, 45.0, 512 * 1024)

"""Upstream side: per-cluster connection pools to the API servers (HTTP/2 multiplexed, HTTP/1.1
keep-alive, fresh HTTP/1.1 connections for upgrades). ``ClusterPools`` is the entry point."""

from pathlib import Path

from proxy.protocol import use_sources

use_sources(__name__, Path(__file__).resolve().parent)  # http1 and pool may be compiled (setup.py)

from proxy.upstream.base import UpstreamError, UpstreamStream  # noqa: E402
from proxy.upstream.pool import ClusterPool, ClusterPools, PoolSettings  # noqa: E402

__all__ = ["ClusterPool", "ClusterPools", "PoolSettings", "UpstreamError", "UpstreamStream"]

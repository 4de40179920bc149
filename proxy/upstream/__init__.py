"""Upstream side: per-cluster connection pools to the API servers (HTTP/2 multiplexed, HTTP/1.1
keep-alive, fresh HTTP/1.1 connections for upgrades). ``ClusterPools`` is the entry point."""

from proxy.upstream.base import UpstreamError, UpstreamStream
from proxy.upstream.pool import ClusterPool, ClusterPools, PoolSettings

__all__ = ["ClusterPool", "ClusterPools", "PoolSettings", "UpstreamError", "UpstreamStream"]

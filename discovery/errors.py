"""Errors raised by discovery: each names the file or cluster it is about."""

from __future__ import annotations


class DiscoveryError(Exception):
    """A cluster definition that cannot be used (bad YAML, bad kubeconfig, unsupported auth...).

    The message always names the file and/or the cluster, so an operator can find the culprit; the other
    clusters keep working.
    """


class FetchError(DiscoveryError):
    """A cloud list/describe call failed: the run is abandoned, nothing is deleted."""

"""The cluster model shared by discovery (which fills the registry) and the proxy (which reads it).

Pure data plus two small interfaces: ``CredentialsProvider`` (how kubegate authenticates to a cluster's
API server) and ``ClusterSource`` (what the proxy reads: ``get``/``list``/``subscribe``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class UpstreamCredentials:
    """What to present to a cluster's API server, as of now."""

    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    bearer_token: str | None = None
    expires_at: float | None = None  # unix time; None: does not expire (re-read on change only)


class CredentialsProvider(Protocol):
    async def get(self) -> UpstreamCredentials:
        """Current credentials; refreshes (EKS/AKS tokens, token files) before they run out."""
        ...


@dataclass(frozen=True, slots=True)
class StaticCredentials:
    credentials: UpstreamCredentials

    async def get(self) -> UpstreamCredentials:
        return self.credentials


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str
    labels: dict[str, str]  # static ∪ dynamic, as of the last update
    server: str  # https://host:port[/path]
    ca_pem: bytes | None = None  # None: system trust store
    tls_server_name: str | None = None
    insecure_skip_tls_verify: bool = False
    credentials: CredentialsProvider = field(default_factory=lambda: StaticCredentials(UpstreamCredentials()))
    origin: str = "config"  # kubeconfig | kube_cluster | aws | azure | config
    discovery_group: str = ""
    health: str = "unknown"  # unknown | healthy | unhealthy
    health_detail: str = ""
    generation: int = 0  # bumped by the registry whenever anything about the cluster changes


ClusterListener = Callable[[str, "Cluster | None"], None]  # (name, new cluster or None when removed)


class ClusterSource(Protocol):
    """The small interface the proxy reads clusters through."""

    def get(self, name: str) -> Cluster | None: ...

    def list(self) -> list[Cluster]: ...

    def subscribe(self, listener: ClusterListener) -> Callable[[], None]:
        """Call ``listener`` on every add/update/remove; returns an unsubscribe function."""
        ...

"""What an identity may be issued and may reach: TTL capping by roles, and the clusters a kubeconfig lists.

Pure functions over values (a ``RoleSet``, a list of clusters): the CLI feeds them from the config, the
tests feed them directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from rbac.decision import cluster_visible
from rbac.identity import Identity
from rbac.roles import RoleSet

__all__ = ["NamedCluster", "ClusterLike", "TtlDecision", "cap_ttl", "unknown_roles", "visible_clusters"]


class ClusterLike(Protocol):
    """Anything with a name and labels (``discovery.model.Cluster``, ``NamedCluster``)."""

    @property
    def name(self) -> str: ...

    @property
    def labels(self) -> Mapping[str, str]: ...


@dataclass(frozen=True, slots=True)
class NamedCluster:
    name: str
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class TtlDecision:
    ttl: timedelta  # what will be issued
    requested: timedelta
    capped_by: str | None  # the role whose max_session_ttl capped it, None when not capped

    @property
    def capped(self) -> bool:
        return self.capped_by is not None


def unknown_roles(role_names: Sequence[str], roles: RoleSet) -> list[str]:
    """The names in ``role_names`` that ``roles`` does not define (issuing for them is refused)."""
    return [name for name in role_names if name not in roles]


def cap_ttl(requested: timedelta, role_names: Sequence[str], roles: RoleSet) -> TtlDecision:
    """The TTL to issue: ``requested``, lowered to the smallest ``max_session_ttl`` of the named roles
    (as Teleport does: the most restrictive role wins). Roles without a limit do not cap."""
    ttl, capped_by = requested, None
    for name in role_names:
        role = roles.get(name)
        if role is None or role.max_session_ttl is None:
            continue
        limit = timedelta(seconds=role.max_session_ttl)
        if limit < ttl:
            ttl, capped_by = limit, name
    return TtlDecision(ttl=ttl, requested=requested, capped_by=capped_by)


def visible_clusters(identity: Identity, roles: RoleSet, clusters: Iterable[ClusterLike]) -> list[str]:
    """Names (sorted) of the clusters the identity's roles can see — the contexts of its kubeconfig.

    A cluster is visible per ``rbac.cluster_visible`` (allow labels of some role match, no deny labels
    match); a certificate pinned to a cluster sees only that one.
    """
    names = {
        cluster.name
        for cluster in clusters
        if cluster_visible(identity, roles, dict(cluster.labels), cluster.name)
    }
    return sorted(names)

"""Who is calling: the identity kubegate reads from a client certificate (DESIGN §3).

Pure data. ``certs.identity`` builds it from a certificate; ``rbac`` decides with it; the proxy carries it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Identity:
    user: str  # certificate CN: the kubegate user (or bot) name
    roles: tuple[str, ...]  # one certificate O per kubegate role
    traits: dict[str, tuple[str, ...]] = field(default_factory=dict)  # e.g. {"kubernetes_groups": (...)}
    pinned_cluster: str | None = None  # certificate may only reach this cluster
    kind: str = "user"  # "user" | "bot"
    serial: str = ""  # certificate serial number as lower-case hex; the lock list can name it
    not_after: datetime | None = None  # certificate expiry (UTC, timezone-aware)

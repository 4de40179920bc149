"""Impersonation: which Kubernetes user and groups a request is forwarded as (DESIGN §5).

Pure: ``ImpersonationRequest`` is what the client asked for (its ``Impersonate-*`` headers);
``resolve_impersonation`` picks the user and groups from the roles' allowed sets. The proxy replaces
(never appends) the ``Impersonate-*`` headers upstream with the result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from rbac.roles import Role, expand_templates

__all__ = [
    "AUTHENTICATED_GROUP",
    "ImpersonationError",
    "ImpersonationRequest",
    "allowed_principals",
    "resolve_impersonation",
]

AUTHENTICATED_GROUP = "system:authenticated"


@dataclass(frozen=True, slots=True)
class ImpersonationRequest:
    """The client's own ``Impersonate-*`` headers (all empty = no impersonation requested)."""

    user: str | None = None
    groups: tuple[str, ...] = ()
    uid: str | None = None
    # the <key> of each Impersonate-Extra-<key> header (and the whole name of any other Impersonate-*)
    extra_keys: tuple[str, ...] = ()
    several_users: bool = False  # Impersonate-User came more than once with different values

    @classmethod
    def from_headers(cls, headers: Iterable[tuple[str | bytes, str | bytes]]) -> ImpersonationRequest:
        """From (name, value) header pairs; names are case-insensitive, ``Impersonate-Group`` repeats
        (``Impersonate-User`` repeated with different values is remembered and refused: which one a
        server reads differs between implementations)."""
        user: str | None = None
        several_users = False
        groups: list[str] = []
        uid: str | None = None
        extras: list[str] = []
        for raw_name, raw_value in headers:
            name = (raw_name.decode("latin-1") if isinstance(raw_name, bytes) else raw_name).lower()
            if not name.startswith("impersonate-"):
                continue
            value = raw_value.decode("latin-1") if isinstance(raw_value, bytes) else raw_value
            if name == "impersonate-user":
                several_users = several_users or (user is not None and user != value)
                user = value
            elif name == "impersonate-group":
                groups.append(value)
            elif name == "impersonate-uid":
                uid = value
            elif name.startswith("impersonate-extra-"):
                extras.append(name[len("impersonate-extra-") :])
            else:  # an Impersonate-* header Kubernetes does not define: refused like the extras
                extras.append(name)
        return cls(user, tuple(groups), uid, tuple(extras), several_users)

    @property
    def requested(self) -> bool:
        return bool(self.user is not None or self.groups or self.uid is not None or self.extra_keys)


class ImpersonationError(Exception):
    """The requested impersonation is refused (403); the message says why."""


def allowed_principals(
    allow_roles: Sequence[Role], all_roles: Sequence[Role], traits: Mapping[str, Sequence[str]]
) -> tuple[list[str], list[str]]:
    """(users, groups): union over ``allow_roles`` of allowed users/groups, minus any role's denied ones."""
    users: list[str] = []
    groups: list[str] = []
    for role in allow_roles:
        cond = role.allow
        templated = cond.principal_templates
        for u in expand_templates(cond.kubernetes_users, traits) if templated else cond.kubernetes_users:
            if u not in users:
                users.append(u)
        for g in expand_templates(cond.kubernetes_groups, traits) if templated else cond.kubernetes_groups:
            if g not in groups:
                groups.append(g)
    denied_users: set[str] = set()
    denied_groups: set[str] = set()
    for role in all_roles:
        if role.deny.kubernetes_users:
            denied_users.update(expand_templates(role.deny.kubernetes_users, traits))
        if role.deny.kubernetes_groups:
            denied_groups.update(expand_templates(role.deny.kubernetes_groups, traits))
    if "" in users or "" in groups:  # an empty trait value is no principal
        users = [u for u in users if u]
        groups = [g for g in groups if g]
    if not denied_users and not denied_groups:
        return users, groups
    return [u for u in users if u not in denied_users], [g for g in groups if g not in denied_groups]


def resolve_impersonation(
    kubegate_user: str, users: Sequence[str], groups: Sequence[str], request: ImpersonationRequest
) -> tuple[str, tuple[str, ...]]:
    """The (user, groups) to forward as. Raises ``ImpersonationError`` for a refused choice.

    - ``Impersonate-Uid``, ``Impersonate-Extra-*`` and differing repeated ``Impersonate-User`` are refused;
    - a requested user must be one of ``users`` (or the kubegate user name when ``users`` is empty);
    - requested groups must each be in ``groups``; without a request, all ``groups`` are used;
    - no requested user: one allowed user → it; none → the kubegate user name; several → refused;
    - ``system:authenticated`` is always added.
    """
    if request.several_users:
        raise ImpersonationError("several different Impersonate-User headers: send one")
    if request.uid is not None:
        raise ImpersonationError(
            "impersonating a user by UID (Impersonate-Uid) is not allowed through kubegate"
        )
    if request.extra_keys:
        key = request.extra_keys[0]
        header = key if key.startswith("impersonate-") else f"Impersonate-Extra-{key}"
        raise ImpersonationError(
            f"impersonating extra user attributes ({header}) is not allowed through kubegate"
        )
    if request.user is not None:
        permitted = list(users) if users else [kubegate_user]
        if request.user not in permitted:
            raise ImpersonationError(
                f'impersonating user "{request.user}" is not allowed: choose one of {", ".join(repr(u) for u in permitted)}'
            )
        user = request.user
    elif len(users) == 1:
        user = users[0]
    elif not users:
        user = kubegate_user
    else:
        raise ImpersonationError(
            "several Kubernetes users are allowed for this request "
            f"({', '.join(repr(u) for u in users)}): choose one with --as (Impersonate-User)"
        )
    if request.groups:
        for g in request.groups:
            if g not in groups and g != AUTHENTICATED_GROUP:
                allowed = ", ".join(repr(x) for x in groups) or "none"
                raise ImpersonationError(
                    f'impersonating group "{g}" is not allowed (allowed groups: {allowed})'
                )
        chosen = list(dict.fromkeys(request.groups))
    else:
        chosen = list(groups)
    if AUTHENTICATED_GROUP not in chosen:
        chosen.append(AUTHENTICATED_GROUP)
    return user, tuple(chosen)

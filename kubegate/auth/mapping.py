"""What a provider says about a person → kubegate roles and traits (Teleport's mapping shapes). Pure.

- OIDC ``claims_to_roles``: ``{claim, value, roles}``; the claim's value (a string, or any element of a
  list) matching ``value`` (literal, glob, ``^regex$``) grants ``roles``.
- OIDC ``claims_to_traits``: ``{trait: claim}``, e.g. ``kubernetes_groups: groups``; a list claim gives
  every element, a string claim one value.
- GitHub ``teams_to_roles``: ``{organization, team, roles}``; membership of ``org/team`` (team slug)
  grants ``roles``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from rbac.labels import value_matches

__all__ = ["claim_values", "roles_from_claims", "traits_from_claims", "roles_from_teams"]


class ClaimRule(Protocol):
    claim: str
    value: str
    roles: tuple[str, ...]


class TeamRule(Protocol):
    organization: str
    team: str
    roles: tuple[str, ...]


def claim_values(claims: Mapping[str, Any], claim: str) -> list[str]:
    """The claim as a list of strings (a string claim → one value; numbers/booleans → their text)."""
    value = claims.get(claim)
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [item if isinstance(item, str) else str(item) for item in items if isinstance(item, str | int | bool)]


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def roles_from_claims(claims: Mapping[str, Any], rules: Sequence[ClaimRule]) -> list[str]:
    roles: list[str] = []
    for rule in rules:
        if any(value_matches(rule.value, value) for value in claim_values(claims, rule.claim)):
            roles.extend(rule.roles)
    return _unique(roles)


def traits_from_claims(claims: Mapping[str, Any], mapping: Mapping[str, Any]) -> dict[str, list[str]]:
    traits: dict[str, list[str]] = {}
    for trait, claim in mapping.items():
        values = claim_values(claims, str(claim))
        if values:
            traits[trait] = _unique(values)
    return traits


def roles_from_teams(teams: Iterable[tuple[str, str]], rules: Sequence[TeamRule]) -> list[str]:
    """``teams``: (organization login, team slug) pairs the user belongs to."""
    members = {(org.lower(), team.lower()) for org, team in teams}
    roles: list[str] = []
    for rule in rules:
        if (rule.organization.lower(), rule.team.lower()) in members:
            roles.extend(rule.roles)
    return _unique(roles)

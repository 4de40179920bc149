"""``kubectl auth can-i --list`` through kubegate: the SelfSubjectRulesReview answer.

The proxy forwards the review to the cluster (as the impersonated user) and passes the cluster's
answer through ``restrict_rules_review``, which answers with what BOTH grant in the review's namespace:

1. kubegate's allow rules (of the roles that see the cluster) are written as Kubernetes rules, wildcards
   as ``*``: verbs as written (``exec`` → ``get``/``create`` on ``pods/exec`` and ``pods/attach``,
   ``portforward`` → on ``pods/portforward``, ``proxy`` → ``*`` on ``pods|services|nodes/proxy``); a
   kind's other subresources get the rule's verbs in a rule of their own (kubegate checks them as their
   parent); a rule applies when its namespace pattern matches the review's namespace, or matches "" (then
   for cluster-scoped kinds only); ``kind: namespaces, name: X`` grants everything in namespace X; the
   self reviews anyone may create are added;
2. each is intersected with each of the cluster's rules (verbs, groups, resources and names; ``*`` and
   ``*/sub`` as RBAC reads them; a kubegate glob or regex keeps the cluster's names it matches);
3. rules with the same groups, resources and names are merged, and rules another one covers whole are
   left out (each listed once: a ``*`` role is one ``*.*`` line);
4. deny rules that cover a listed rule remove it; those that cover part of one cannot be written as a
   rule: the answer is then ``incomplete`` and ``evaluationError`` (what kubectl prints after "the list
   may be incomplete:") says which role denies what. kubegate patterns left in the answer (globs,
   regexes: RBAC has none) and a cluster's own incompleteness are reported the same way.

Non-resource URLs: kubegate lets through GET on discovery paths only; they are listed in one rule, each
once, as far as the cluster also allows them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rbac.catalog import ResourceCatalog
from rbac.decision import SELF_REVIEWS, visible_roles
from rbac.identity import Identity
from rbac.labels import value_matches
from rbac.request import DISCOVERY_PREFIXES, DISCOVERY_URLS
from rbac.roles import ResourceRule, RoleSet

__all__ = ["restrict_rules_review"]

_ALL = "*"
_MATCH_ALL = frozenset({"*", "^.*$"})
_SPECIAL_SUBRESOURCES = frozenset({"exec", "attach", "portforward", "proxy"})
_PROXY_KINDS = ("pods", "services", "nodes")
_STREAM_VERBS = ("get", "create")  # what kubectl uses for exec/attach/portforward (WebSocket GET, SPDY POST)
# The discovery URLs kubegate lets through, as RBAC nonResourceURLs (a trailing * is a prefix match).
_DISCOVERY_RULE_URLS = (*sorted(DISCOVERY_URLS), "/api/*", "/apis/*", *(p + "*" for p in DISCOVERY_PREFIXES))

Rule = tuple[
    tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]
]  # verbs, groups, resources, names


def _is_pattern(value: str) -> bool:
    return value not in _MATCH_ALL and ("*" in value or (value.startswith("^") and value.endswith("$")))


def _meet(mine: Sequence[str], theirs: Sequence[str], subresources: bool = False) -> tuple[str, ...]:
    """What both lists cover: ``mine`` may hold kubegate patterns, ``theirs`` RBAC values (``*``; with
    ``subresources``, ``*/sub`` matches any resource's ``sub``)."""
    if _ALL in mine:
        return tuple(theirs)
    if _ALL in theirs:
        return tuple(mine)
    out = [x for x in theirs if any(value_matches(p, x) for p in mine)]
    if subresources:
        wild = {t[2:] for t in theirs if t.startswith("*/")}
        out += [x for x in mine if "/" in x and x.partition("/")[2] in wild and x not in out]
    return tuple(dict.fromkeys(out))


def _intersect(mine: Rule, theirs: Rule) -> Rule | None:
    verbs = _meet(mine[0], theirs[0])
    groups = _meet(mine[1], theirs[1])
    resources = _meet(mine[2], theirs[2], subresources=True)
    names = _meet(mine[3], theirs[3])
    if verbs and groups and resources and names:
        return verbs, groups, resources, names
    return None


def _names(pattern: str) -> tuple[str, ...]:
    return (_ALL,) if pattern in _MATCH_ALL else (pattern,)


def _kubegate_rules(rule: ResourceRule, namespace: str, catalog: ResourceCatalog) -> list[Rule]:
    """One kubegate rule as Kubernetes rules for the review's namespace (see the module docstring)."""
    in_namespace = value_matches(rule.namespace, namespace)
    cluster_wide = value_matches(rule.namespace, "")
    out: list[Rule] = []
    verbs = rule.verbs
    if rule.kind == "namespaces" and rule.api_group in ("", _ALL) and value_matches(rule.name, namespace):
        out.append((verbs, (_ALL,), (_ALL,), (_ALL,)))  # everything inside the namespace
    if not in_namespace and not cluster_wide:
        return out
    kinds: tuple[str, ...] = (rule.kind,)
    if not in_namespace:  # cluster-scoped kinds only
        if rule.kind == _ALL or _is_pattern(rule.kind):
            kinds = tuple(
                sorted(
                    {
                        i.plural
                        for i in catalog
                        if not i.namespaced
                        and value_matches(rule.kind, i.plural)
                        and value_matches(rule.api_group, i.group)
                    }
                )
            )
        elif any(i.namespaced for i in catalog.find(rule.kind) if i.plural == rule.kind):
            return out
    if not kinds:
        return out
    group = (rule.api_group,)
    names = _names(rule.name)
    if _ALL in verbs:
        out.append(((_ALL,), group, kinds, names))
        if rule.kind != _ALL:
            subs = _subresources(kinds, rule.api_group, catalog, special=True)
            if subs:
                out.append(((_ALL,), group, subs, names))
        return out
    plain = tuple(v for v in verbs if v not in ("exec", "portforward", "proxy"))
    if plain:
        out.append((plain, group, kinds, names))
        if rule.kind != _ALL:
            subs = _subresources(kinds, rule.api_group, catalog, special=False)
            if subs:
                out.append((plain, group, subs, names))
    core = value_matches(rule.api_group, "")
    if core and value_matches(rule.kind, "pods"):
        if "exec" in verbs:
            out.append((_STREAM_VERBS, ("",), ("pods/exec", "pods/attach"), names))
        if "portforward" in verbs:
            out.append((_STREAM_VERBS, ("",), ("pods/portforward",), names))
    if core and "proxy" in verbs:
        proxied = tuple(f"{k}/proxy" for k in _PROXY_KINDS if value_matches(rule.kind, k))
        if proxied:
            out.append(((_ALL,), ("",), proxied, names))
    return out


def _subresources(
    kinds: Iterable[str], group: str, catalog: ResourceCatalog, special: bool
) -> tuple[str, ...]:
    """The catalog's subresources of these kinds (``special``: exec/attach/portforward/proxy too)."""
    subs: list[str] = []
    for kind in kinds:
        for info in catalog.find(kind):
            if info.plural == kind and value_matches(group, info.group):
                subs += [
                    f"{kind}/{s}"
                    for s in sorted(info.subresources)
                    if special or s not in _SPECIAL_SUBRESOURCES
                ]
    return tuple(dict.fromkeys(subs))


def _cluster_rules(status: Mapping[str, Any]) -> list[Rule]:
    rules: list[Rule] = []
    for raw in status.get("resourceRules") or []:
        if not isinstance(raw, Mapping):
            continue
        rules.append(
            (
                tuple(str(v) for v in raw.get("verbs") or ()),
                tuple(str(g) for g in raw.get("apiGroups") or ()),
                tuple(str(r) for r in raw.get("resources") or ()),
                tuple(str(n) for n in raw.get("resourceNames") or ()) or (_ALL,),
            )
        )
    return rules


def _within(values: Sequence[str], patterns: Sequence[str]) -> bool:
    """Every value (``*`` = any) is matched by one of the patterns."""
    if _ALL in patterns:
        return True
    return _ALL not in values and all(any(value_matches(p, v) for p in patterns) for v in values)


def _covers(deny: Rule, rule: Rule) -> bool:
    """Whether a deny rule (as Kubernetes rules) covers all of ``rule``."""
    return all(_within(rule[i], deny[i]) for i in range(4))


def _describe(deny: ResourceRule) -> str:
    group = f"group {deny.api_group!r}" if deny.api_group != _ALL else "any group"
    name = "" if deny.name in _MATCH_ALL else f" named {deny.name!r}"
    return f"{'/'.join(deny.verbs)} on {deny.kind}{name} in {group}"


def _merge(rules: Iterable[Rule]) -> list[dict[str, Any]]:
    """Each rule once: rules with the same groups, resources and names become one (verbs joined), and a
    rule that another listed rule covers whole is left out."""
    merged: dict[tuple[tuple[str, ...], ...], list[str]] = {}
    for verbs, groups, resources, names in rules:
        have = merged.setdefault((groups, resources, names), [])
        have += [v for v in verbs if v not in have]
    joined: list[Rule] = [
        ((_ALL,) if _ALL in verbs else tuple(verbs), groups, resources, names)
        for (groups, resources, names), verbs in merged.items()
    ]
    out: list[dict[str, Any]] = []
    for rule in joined:
        if any(other is not rule and _covers(other, rule) for other in joined):
            continue
        verbs, groups, resources, names = rule
        entry: dict[str, Any] = {
            "verbs": list(verbs),
            "apiGroups": list(groups),
            "resources": list(resources),
        }
        if _ALL not in names:
            entry["resourceNames"] = list(names)
        out.append(entry)
    return out


def _non_resource_rules(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    granted: list[str] = []
    for raw in status.get("nonResourceRules") or []:
        if not isinstance(raw, Mapping):
            continue
        verbs = [str(v) for v in raw.get("verbs") or ()]
        if "get" not in verbs and _ALL not in verbs:
            continue
        granted += [str(u) for u in raw.get("nonResourceURLs") or ()]
    kept = [
        url
        for url in _DISCOVERY_RULE_URLS
        if any(g == url or g == _ALL or (g.endswith("*") and url.startswith(g[:-1])) for g in granted)
    ]
    return [{"verbs": ["get"], "nonResourceURLs": kept}] if kept else []


def restrict_rules_review(
    identity: Identity,
    roles: RoleSet,
    cluster_name: str,
    cluster_labels: Mapping[str, str],
    response: Mapping[str, Any],
    catalog: ResourceCatalog | None = None,
) -> dict[str, Any]:
    """The cluster's SelfSubjectRulesReview answer, intersected with what kubegate allows."""
    catalog = catalog or ResourceCatalog.builtin()
    out = dict(response)
    status = dict(response.get("status") or {})
    spec = response.get("spec") or {}
    namespace = str(spec.get("namespace") or "") if isinstance(spec, Mapping) else ""
    allowing = visible_roles(identity, roles, cluster_labels, cluster_name)
    if allowing is None:
        status.update(resourceRules=[], nonResourceRules=[], incomplete=False)
        status.pop("evaluationError", None)
        out["status"] = status
        return out
    reasons: list[str] = []
    if status.get("incomplete"):
        reasons.append(
            f"cluster {cluster_name}: {status.get('evaluationError') or 'its answer is incomplete'}"
        )

    mine: list[Rule] = []
    for role in allowing:
        for rule in role.allow.kubernetes_resources:
            mine += _kubegate_rules(rule, namespace, catalog)
    reviews: dict[str, list[str]] = {}
    for group, resource in sorted(SELF_REVIEWS):
        reviews.setdefault(group, []).append(resource)
    mine += [(("create",), (group,), tuple(resources), (_ALL,)) for group, resources in reviews.items()]

    theirs = _cluster_rules(status)
    both = [r for m in mine for t in theirs if (r := _intersect(m, t)) is not None]

    kept = both
    for role in roles.for_names(identity.roles):  # deny rules of every role, whatever its labels
        for deny in role.deny.kubernetes_resources:
            as_rules = _kubegate_rules(deny, namespace, catalog)
            if not as_rules:
                continue
            kept = [r for r in kept if not any(_covers(d, r) for d in as_rules)]
            if any(_intersect(d, r) is not None for d in as_rules for r in kept):
                reasons.append(
                    f'kubegate role "{role.name}" denies {_describe(deny)}: not subtracted from the rules listed'
                )
    patterns = sorted(
        {v for r in kept for v in (*r[1], *r[2], *r[3]) if _is_pattern(v) and not v.startswith("*/")}
    )
    if patterns:
        reasons.append(
            "kubegate patterns shown as written (RBAC has no globs or regular expressions): "
            + ", ".join(patterns)
        )
    status.update(
        resourceRules=_merge(kept),
        nonResourceRules=_non_resource_rules(status),
        incomplete=bool(reasons),
    )
    if reasons:
        status["evaluationError"] = "; ".join(dict.fromkeys(reasons))
    else:
        status.pop("evaluationError", None)
    out["status"] = status
    return out

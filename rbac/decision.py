"""Decisions: may this identity do this request on this cluster, and as whom (DESIGN §5, Teleport v8).

Rules, in order:

1. The cluster is visible when some role's allow ``kubernetes_labels`` match the cluster's labels and no
   role's deny ``kubernetes_labels`` match (trait templates in label values are expanded first). A
   certificate pinned to another cluster sees nothing. Not visible → 404, worded like an unknown cluster.
2. Client impersonation headers are checked (``rbac.impersonation``): ``-Uid``/``-Extra-*`` → 403.
3. Creating a self review (SelfSubjectAccessReview, SelfSubjectRulesReview, SelfSubjectReview) is
   allowed; ``Decision.review`` tells the proxy to apply ``rbac.reviews`` to it.
4. Non-resource paths: discovery, version, OpenAPI and health paths are allowed; others → 403.
5. Resource requests: deny rules of EVERY role of the identity are checked first (whatever their labels);
   then some allow rule of a role whose allow labels match the cluster must match, in that same role.
   A rule matches when its verbs contain the verb (or ``*``), and kind / api_group / name / namespace
   patterns match (``rbac.labels.value_matches``). Cluster-scoped resources match only rules whose
   namespace pattern matches the empty string (omitted, ``''`` or ``'*'``), as in Teleport v8 (a rule
   for namespace ``dev`` or ``^.+$`` never grants nodes). ``kind: namespaces, name: X`` matches
   everything inside namespace X (and the namespace object X), as DESIGN §5 says (Teleport v8 itself
   grants only the namespace object with it; its v7 → v8 conversion adds ``{kind: '*', namespace: X}``
   for the contents). An allow rule naming resources in namespace X also lets its holder
   get/list/watch the namespace object X (Teleport does the same, so ``kubectl get ns`` works).
6. Unknown resources (not in the catalog): an allow rule matches only when its kind is ``*`` or the
   resource plural literally, and its api_group matches the request's group (as for known resources: a
   rule for core ``pods`` never allows ``/apis/made.up/v1/.../pods``); ``kind: namespaces`` scopes do
   not cover them. Deny rules match them as usual (fail closed).
7. Lists and watches (and the collection a fieldSelector=metadata.name narrows): allowed without a
   filter when an allow rule covers the whole collection and no deny rule can match any of its items;
   allowed with ``Decision.filter`` when rules only cover some items; 403 when none can match.
   ``deletecollection`` needs full cover (it cannot be filtered).
8. Impersonation: union of ``kubernetes_users`` / ``kubernetes_groups`` over the roles whose allow rules
   matched, minus every role's denied ones; see ``rbac.impersonation.resolve_impersonation``.

Subresources are checked as their parent resource with the verb of the request (``pods/log`` → get on
pods), except exec/attach (verb ``exec``), portforward (verb ``portforward``) and the ``proxy``
subresource of core pods / services / nodes (verb ``proxy``, Teleport v19), whatever the method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rbac.identity import Identity
from rbac.impersonation import (
    ImpersonationError,
    ImpersonationRequest,
    allowed_principals,
    resolve_impersonation,
)
from rbac.labels import labels_match, value_matches
from rbac.request import RequestInfo
from rbac.roles import ResourceRule, Role, RoleSet, expand_templates
from rbac.status import forbidden, not_found

if TYPE_CHECKING:
    from rbac.filtering import ResponseFilter

__all__ = [
    "Decision",
    "ItemFilter",
    "cluster_not_found_body",
    "cluster_visible",
    "decide",
    "visible_roles",
]

_MATCH_ALL = frozenset({"*", "^.*$", "^.+$"})
_READ_VERBS = frozenset({"get", "list", "watch"})
# "Self" reviews reveal only the caller's own permissions: anyone who sees the cluster may create them.
SELF_REVIEWS = frozenset(
    {
        ("authorization.k8s.io", "selfsubjectaccessreviews"),
        ("authorization.k8s.io", "selfsubjectrulesreviews"),
        ("authentication.k8s.io", "selfsubjectreviews"),
    }
)


def cluster_not_found_body(cluster_name: str) -> bytes:
    """The 404 Status for an unknown cluster; also used for a cluster the caller may not see."""
    return not_found(f'cluster "{cluster_name}" not found', name=cluster_name, kind="clusters")


# --- cluster visibility --------------------------------------------------------------------------------


def _expanded_selector(
    selector: Mapping[str, Sequence[str]], traits: Mapping[str, Sequence[str]]
) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, values in selector.items():
        if any("{{" in v for v in values):
            out[key] = expand_templates(values, traits)
        else:
            out[key] = list(values)
    return out


def _allow_labels_match(role: Role, labels: Mapping[str, str], traits: Mapping[str, Sequence[str]]) -> bool:
    cond = role.allow
    sel = (
        _expanded_selector(cond.kubernetes_labels, traits) if cond.label_templates else cond.kubernetes_labels
    )
    return labels_match(sel, labels)


def _deny_labels_match(role: Role, labels: Mapping[str, str], traits: Mapping[str, Sequence[str]]) -> bool:
    cond = role.deny
    if not cond.kubernetes_labels:
        return False
    sel = (
        _expanded_selector(cond.kubernetes_labels, traits) if cond.label_templates else cond.kubernetes_labels
    )
    return labels_match(sel, labels)


def visible_roles(
    identity: Identity, roles: RoleSet, labels: Mapping[str, str], cluster_name: str | None = None
) -> list[Role] | None:
    """The identity's roles whose allow labels match the cluster, or None if the cluster is not visible."""
    if identity.pinned_cluster and cluster_name is not None and identity.pinned_cluster != cluster_name:
        return None
    mine = roles.for_names(identity.roles)
    traits = identity.traits
    if any(_deny_labels_match(r, labels, traits) for r in mine):
        return None
    allowing = [r for r in mine if _allow_labels_match(r, labels, traits)]
    return allowing or None


def cluster_visible(
    identity: Identity, roles: RoleSet, labels: Mapping[str, str], cluster_name: str | None = None
) -> bool:
    """Whether the identity may see (reach) a cluster with these labels (pinned cluster honoured if named)."""
    return visible_roles(identity, roles, labels, cluster_name) is not None


# --- rule matching -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    resource: str
    group: str
    namespace: str
    name: str
    namespaced: bool
    known: bool
    verb: str


def _kind_matches(rule: ResourceRule, t: _Target, allow: bool) -> bool:
    """The rule's kind and api_group both match the target. An allow rule names an unknown resource only
    literally (or with kind ``*``): a glob or regex written for known kinds does not stretch to it."""
    if allow and not t.known and rule.kind != "*" and rule.kind != t.resource:
        return False
    return value_matches(rule.kind, t.resource) and value_matches(rule.api_group, t.group)


def _is_ns_scope(rule: ResourceRule) -> bool:
    return rule.kind == "namespaces" and rule.api_group in ("", "*")


def _rule_matches(rule: ResourceRule, t: _Target, allow: bool) -> bool:
    """A concrete object (name may be "" for a create without a known name)."""
    if not rule.allows_verb(t.verb):
        return False
    if _is_ns_scope(rule) and t.namespaced and t.namespace and (t.known or not allow):
        if value_matches(rule.name, t.namespace):
            return True
    if (
        allow
        and t.resource == "namespaces"
        and t.group == ""
        and t.verb in _READ_VERBS
        and not _is_ns_scope(rule)
        and rule.namespace
        and t.name
        and value_matches(rule.namespace, t.name)
    ):
        return True
    if not _kind_matches(rule, t, allow):
        return False
    if not value_matches(rule.name, t.name):
        return False
    return value_matches(rule.namespace, t.namespace if t.namespaced else "")


def _covers(pattern: str, value: str) -> bool:
    """Whether a pattern matches every value a collection can hold ("" value = any value)."""
    return pattern in _MATCH_ALL if value == "" else value_matches(pattern, value)


def _rule_covers_collection(rule: ResourceRule, t: _Target, allow: bool) -> bool:
    """Whether the rule matches EVERY item of the collection ``t`` (t.name "" = any name)."""
    if not rule.allows_verb(t.verb):
        return False
    if _is_ns_scope(rule) and t.namespaced and (t.known or not allow):
        if _covers(rule.name, t.namespace):
            return True
    if not _kind_matches(rule, t, allow):
        return False
    if not _covers(rule.name, t.name):
        return False
    if not t.namespaced:
        return value_matches(rule.namespace, "")
    return _covers(rule.namespace, t.namespace)


def _rule_touches_collection(rule: ResourceRule, t: _Target, allow: bool) -> bool:
    """Whether the rule may match SOME item of the collection ``t``."""
    if not rule.allows_verb(t.verb):
        return False
    if _is_ns_scope(rule) and t.namespaced and (t.known or not allow):
        if t.namespace == "" or value_matches(rule.name, t.namespace):
            return True
    if allow and t.resource == "namespaces" and t.group == "" and t.verb in _READ_VERBS and rule.namespace:
        if t.name == "" or value_matches(rule.namespace, t.name):
            return True
    if not _kind_matches(rule, t, allow):
        return False
    if t.name and not value_matches(rule.name, t.name):
        return False
    if not t.namespaced:
        return value_matches(rule.namespace, "")
    return t.namespace == "" or value_matches(rule.namespace, t.namespace)


# --- the decision --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemFilter:
    """Which items of a list/watch response the caller may see. Pure; cheap to call per item."""

    _allow: tuple[ResourceRule, ...]
    _deny: tuple[ResourceRule, ...]
    resource: str
    group: str
    namespaced: bool
    known: bool
    verb: str

    def allows(self, namespace: str, name: str) -> bool:
        t = _Target(
            self.resource,
            self.group,
            namespace if self.namespaced else "",
            name,
            self.namespaced,
            self.known,
            self.verb,
        )
        if any(_rule_matches(r, t, False) for r in self._deny):
            return False
        return any(_rule_matches(r, t, True) for r in self._allow)

    def stream(self, watch: bool = False) -> ResponseFilter:
        """A fresh incremental filter for one response body (``watch=True`` for watch event streams)."""
        from rbac.filtering import ListFilter, WatchFilter

        return WatchFilter(self.allows) if watch else ListFilter(self.allows)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    status: int  # 200 when allowed; 403 / 404 when denied
    reason: str  # machine-readable: allowed, allowed_filtered, cluster_not_visible, denied_by_rule, no_matching_rule, impersonation_refused, non_resource_denied
    message: str = ""
    body: bytes | None = None  # Status JSON when denied
    user: str = ""  # Impersonate-User to send upstream (when allowed)
    groups: tuple[str, ...] = ()  # Impersonate-Group values to send upstream (when allowed)
    filter: ItemFilter | None = None  # set when a list/watch response must be filtered
    info: RequestInfo | None = None
    matched_roles: tuple[str, ...] = ()  # roles whose allow rules granted the request
    denied_by: str | None = None  # the role whose deny rule matched
    review: str | None = None  # "selfsubjectaccessreviews" | "selfsubjectrulesreviews" | "selfsubjectreviews"

    @property
    def force_json(self) -> bool:
        """The proxy must ask upstream for JSON (not protobuf) because the response will be filtered."""
        return self.filter is not None


def _target(info: RequestInfo, verb: str | None = None) -> _Target:
    namespace = info.namespace if info.namespaced else ""
    return _Target(
        info.resource, info.api_group, namespace, info.name, info.namespaced, info.known, verb or info.verb
    )


def _describe(info: RequestInfo) -> str:
    res = info.group_resource
    if info.name:
        return f'{res} "{info.name}"'
    return res


def _where(info: RequestInfo, cluster_name: str) -> str:
    if info.namespaced and info.namespace:
        return f'in namespace "{info.namespace}" of cluster "{cluster_name}"'
    if info.namespaced:
        return f'in all namespaces of cluster "{cluster_name}"'
    return f'of cluster "{cluster_name}"'


def _deny(
    info: RequestInfo | None, reason: str, message: str, status: int = 403, denied_by: str | None = None
) -> Decision:
    if status == 404:
        body = not_found(message)
    elif info is not None and info.is_resource_request:
        body = forbidden(message, name=info.name or None, group=info.api_group or None, kind=info.resource)
    else:
        body = forbidden(message)
    return Decision(False, status, reason, message, body, info=info, denied_by=denied_by)


def decide(
    identity: Identity,
    roles: RoleSet,
    cluster_name: str,
    cluster_labels: Mapping[str, str],
    info: RequestInfo,
    impersonation: ImpersonationRequest | None = None,
) -> Decision:
    """Decide one request (see the module docstring for the rules)."""
    impersonation = impersonation or ImpersonationRequest()
    allowing = visible_roles(identity, roles, cluster_labels, cluster_name)
    if allowing is None:
        msg = f'cluster "{cluster_name}" not found'
        return Decision(
            False, 404, "cluster_not_visible", msg, cluster_not_found_body(cluster_name), info=info
        )
    mine = roles.for_names(identity.roles)
    user_q = f'user "{identity.user}"'

    if impersonation.uid is not None or impersonation.extra_keys or impersonation.several_users:
        try:
            resolve_impersonation(identity.user, (), (), impersonation)
        except ImpersonationError as exc:
            return _deny(info, "impersonation_refused", f"impersonation is forbidden: {exc}")

    if not info.is_resource_request:
        if not info.is_discovery:
            msg = (
                f'forbidden: kubegate role(s) of {user_q} do not allow "{info.verb}" on the non-resource URL '
                f'"{info.path}" of cluster "{cluster_name}"'
            )
            return _deny(info, "non_resource_denied", msg)
        return _with_impersonation(identity, allowing, mine, info, impersonation, None, "allowed")

    if info.verb == "create" and not info.subresource and (info.api_group, info.resource) in SELF_REVIEWS:
        return _with_impersonation(
            identity, allowing, mine, info, impersonation, None, "allowed", info.resource
        )

    t = _target(info)
    # 1. deny rules of every role
    collection = info.is_collection or (
        info.namespaced and not info.namespace and info.verb in ("list", "watch")
    )
    partial_deny: list[ResourceRule] = []
    for role in mine:
        for rule in role.deny.kubernetes_resources:
            hit = _rule_covers_collection(rule, t, False) if collection else _rule_matches(rule, t, False)
            if hit:
                msg = (
                    f'{_describe(info)} is forbidden: a deny rule of kubegate role "{role.name}" of {user_q} '
                    f'denies "{info.verb}" on {info.group_resource} {_where(info, cluster_name)}'
                )
                return _deny(info, "denied_by_rule", msg, denied_by=role.name)
            if collection and _rule_touches_collection(rule, t, False):
                partial_deny.append(rule)

    # 2. allow rules of the roles that see this cluster
    full: list[Role] = []
    partial: list[Role] = []
    for role in allowing:
        rules = role.allow.kubernetes_resources
        if collection:
            if any(_rule_covers_collection(r, t, True) for r in rules):
                full.append(role)
            elif any(_rule_touches_collection(r, t, True) for r in rules):
                partial.append(role)
        elif any(_rule_matches(r, t, True) for r in rules):
            full.append(role)

    item_filter: ItemFilter | None = None
    if collection and (partial_deny or not full):
        if info.verb == "deletecollection" or not (full or partial):
            full = []
        else:
            allow_rules = tuple(r for role in full + partial for r in role.allow.kubernetes_resources)
            deny_rules = tuple(partial_deny)
            item_filter = ItemFilter(
                allow_rules, deny_rules, info.resource, info.api_group, info.namespaced, info.known, info.verb
            )
            full = full + partial
    if not full:
        unknown = "" if info.known else " (unknown resource: only a rule naming it or kind '*' allows it)"
        msg = (
            f'{_describe(info)} is forbidden: kubegate role(s) of {user_q} do not allow "{info.verb}" on '
            f"{info.group_resource} {_where(info, cluster_name)}{unknown}"
        )
        return _deny(info, "no_matching_rule", msg)
    return _with_impersonation(
        identity,
        full,
        mine,
        info,
        impersonation,
        item_filter,
        "allowed_filtered" if item_filter else "allowed",
    )


def _with_impersonation(
    identity: Identity,
    granting: Sequence[Role],
    mine: Sequence[Role],
    info: RequestInfo,
    impersonation: ImpersonationRequest,
    item_filter: ItemFilter | None,
    reason: str,
    review: str | None = None,
) -> Decision:
    users, groups = allowed_principals(granting, mine, identity.traits)
    try:
        user, chosen = resolve_impersonation(identity.user, users, groups, impersonation)
    except ImpersonationError as exc:
        what = _describe(info) if info.is_resource_request else f'non-resource URL "{info.path}"'
        return _deny(info, "impersonation_refused", f"{what} is forbidden: {exc}")
    return Decision(
        True,
        200,
        reason,
        "",
        None,
        user,
        chosen,
        item_filter,
        info,
        tuple(r.name for r in granting),
        None,
        review,
    )

"""``kubectl auth can-i`` through kubegate: SelfSubjectAccessReview and SelfSubjectRulesReview.

The proxy lets anyone who can see a cluster POST these "self" reviews (``Decision.review`` names
them). For a ``SelfSubjectAccessReview`` it first calls ``review_access``: when kubegate's roles deny
the reviewed action, the proxy answers itself (201, ``status.allowed = false``, ``denied = true``);
otherwise it forwards the review to the cluster (as the impersonated user), whose answer stands. For a
``SelfSubjectRulesReview`` the proxy forwards it and passes the cluster's answer through
``restrict_rules_review``, which keeps only what kubegate also allows (``status.incomplete`` is set when
kubegate cannot express the intersection exactly, e.g. wildcards or deny rules).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rbac.catalog import ResourceCatalog
from rbac.decision import decide, visible_roles
from rbac.identity import Identity
from rbac.request import RequestInfo, kubegate_verb
from rbac.roles import RoleSet

__all__ = ["ReviewOutcome", "restrict_rules_review", "review_access"]

_K8S_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
_DISCOVERY_URLS = (
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/version",
    "/openapi/*",
    "/healthz",
    "/livez",
    "/readyz",
)


@dataclass(frozen=True, slots=True)
class ReviewOutcome:
    ask_cluster: bool  # True: forward the review upstream; its answer stands
    response: dict[str, Any] | None = None  # kubegate's own answer (allowed=false) when not asking
    reason: str = ""


def _info_for(attrs: Mapping[str, Any], catalog: ResourceCatalog) -> RequestInfo:
    group = str(attrs.get("group") or "")
    resource = str(attrs.get("resource") or "")
    sub = str(attrs.get("subresource") or "")
    namespace = str(attrs.get("namespace") or "")
    name = str(attrs.get("name") or "")
    k8s_verb = str(attrs.get("verb") or "")
    info = catalog.get(group, resource)
    namespaced = info.namespaced if info is not None else bool(namespace)
    verb = kubegate_verb(group, resource, sub, k8s_verb, info is not None)
    return RequestInfo(
        method="POST",
        path="",
        is_resource_request=True,
        verb=verb,
        k8s_verb=k8s_verb,
        api_prefix="apis" if group else "api",
        api_group=group,
        api_version=str(attrs.get("version") or ""),
        resource=resource,
        subresource=sub,
        namespace=namespace if namespaced and resource != "namespaces" else "",
        name=name,
        namespaced=namespaced,
        known=info is not None or resource == "*",
        kind=info.kind if info is not None else "",
    )


def _denied(body: Mapping[str, Any], reason: str) -> dict[str, Any]:
    return {
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": None},
        "spec": dict(body.get("spec") or {}),
        "status": {"allowed": False, "denied": True, "reason": reason},
    }


def review_access(
    identity: Identity,
    roles: RoleSet,
    cluster_name: str,
    cluster_labels: Mapping[str, str],
    body: Mapping[str, Any],
    catalog: ResourceCatalog,
) -> ReviewOutcome:
    """Whether kubegate denies the action a SelfSubjectAccessReview asks about (see module docstring)."""
    spec = body.get("spec") if isinstance(body, Mapping) else None
    if not isinstance(spec, Mapping):
        return ReviewOutcome(False, _denied({}, "kubegate: malformed SelfSubjectAccessReview"), "malformed")
    if visible_roles(identity, roles, cluster_labels, cluster_name) is None:
        return ReviewOutcome(
            False, _denied(body, f'kubegate: cluster "{cluster_name}" not found'), "cluster_not_visible"
        )
    non_resource = spec.get("nonResourceAttributes")
    attrs = spec.get("resourceAttributes")
    if isinstance(non_resource, Mapping) and not isinstance(attrs, Mapping):
        from rbac.request import parse_request

        path = str(non_resource.get("path") or "")
        verb = str(non_resource.get("verb") or "get")
        try:
            info = parse_request("GET" if verb == "get" else "POST", path or "/", None, catalog)
        except ValueError:
            return ReviewOutcome(False, _denied(body, "kubegate: invalid path"), "malformed")
        if not info.is_resource_request and info.is_discovery and verb == "get":
            return ReviewOutcome(True)
        return ReviewOutcome(
            False, _denied(body, f'kubegate roles do not allow "{verb}" on "{path}"'), "denied"
        )
    if not isinstance(attrs, Mapping):
        return ReviewOutcome(False, _denied(body, "kubegate: malformed SelfSubjectAccessReview"), "malformed")
    info = _info_for(attrs, catalog)
    decision = decide(identity, roles, cluster_name, cluster_labels, info)
    if decision.allowed:
        return ReviewOutcome(True)
    return ReviewOutcome(False, _denied(body, f"kubegate: {decision.message}"), decision.reason)


def _allowed(
    identity: Identity,
    roles: RoleSet,
    cluster_name: str,
    labels: Mapping[str, str],
    attrs: dict[str, str],
    catalog: ResourceCatalog,
) -> bool:
    return decide(identity, roles, cluster_name, labels, _info_for(attrs, catalog)).allowed


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
    mine = roles.for_names(identity.roles)
    incomplete = bool(status.get("incomplete")) or any(r.deny.kubernetes_resources for r in mine)
    # kubegate patterns (globs, regexes, name lists) cannot be written as rules: the answer is a subset
    incomplete = incomplete or any(
        any(c in pattern for c in "*^$")
        for role in roles.for_names(identity.roles)
        for rule in role.allow.kubernetes_resources
        for pattern in (rule.name, rule.namespace, rule.kind)
        if pattern not in ("*", "")
    )
    if allowing is None:
        status.update(resourceRules=[], nonResourceRules=[], incomplete=False)
        out["status"] = status
        return out

    # candidate (verb, group, resource[/sub], name) combinations
    candidates: list[tuple[str, str, str, str]] = []
    kg_rules = [r for role in allowing for r in role.allow.kubernetes_resources]
    for rule in status.get("resourceRules") or []:
        if not isinstance(rule, Mapping):
            continue
        verbs = [str(v) for v in rule.get("verbs") or []]
        groups = [str(g) for g in rule.get("apiGroups") or []]
        resources = [str(r) for r in rule.get("resources") or []]
        names = [str(n) for n in rule.get("resourceNames") or []] or [""]
        wild = "*" in verbs or "*" in groups or "*" in resources
        if wild:
            incomplete = True
            for kr in kg_rules:
                if any(c in kr.kind + kr.api_group for c in "*^$") and kr.kind != "namespaces":
                    continue  # a kubegate pattern cannot be listed as a concrete rule
                kverbs = _K8S_VERBS if "*" in kr.verbs else tuple(v for v in kr.verbs if v in _K8S_VERBS)
                for v in kverbs:
                    if ("*" in verbs or v in verbs) and ("*" in groups or kr.api_group in groups):
                        if "*" in resources or kr.kind in resources:
                            kname = kr.name if kr.name and not any(c in kr.name for c in "*^$") else ""
                            candidates.append((v, kr.api_group, kr.kind, kname))
            continue
        for v in verbs:
            for g in groups:
                for res in resources:
                    for n in names:
                        candidates.append((v, g, res, n))
    kept: dict[tuple[str, str, str], list[str]] = {}
    for v, g, res, n in candidates:
        resource, _, sub = res.partition("/")
        attrs = {
            "verb": v,
            "group": g,
            "resource": resource,
            "subresource": sub,
            "namespace": namespace,
            "name": n,
        }
        if _allowed(identity, roles, cluster_name, cluster_labels, attrs, catalog):
            verbs = kept.setdefault((g, res, n), [])
            if v not in verbs:
                verbs.append(v)
    rules_out: list[dict[str, Any]] = []
    for (g, res, n), verbs in kept.items():
        entry: dict[str, Any] = {"verbs": verbs, "apiGroups": [g], "resources": [res]}
        if n:
            entry["resourceNames"] = [n]
        rules_out.append(entry)
    non_resource_out: list[dict[str, Any]] = []
    for rule in status.get("nonResourceRules") or []:
        if not isinstance(rule, Mapping):
            continue
        urls = [str(u) for u in rule.get("nonResourceURLs") or []]
        verbs = [str(v) for v in rule.get("verbs") or []]
        if "get" not in verbs and "*" not in verbs:
            continue
        allowed_urls = (
            list(_DISCOVERY_URLS)
            if "*" in urls
            else [
                u
                for u in urls
                if u in _DISCOVERY_URLS or u.startswith(("/openapi/", "/healthz/", "/livez/", "/readyz/"))
            ]
        )
        if allowed_urls:
            non_resource_out.append({"verbs": ["get"], "nonResourceURLs": allowed_urls})
    status.update(resourceRules=rules_out, nonResourceRules=non_resource_out, incomplete=incomplete)
    out["status"] = status
    return out

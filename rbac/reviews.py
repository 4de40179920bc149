"""``kubectl auth can-i`` through kubegate: SelfSubjectAccessReview and SelfSubjectRulesReview.

The proxy lets anyone who can see a cluster POST these "self" reviews (``Decision.review`` names
them). For a ``SelfSubjectAccessReview`` it first calls ``review_access``: when kubegate's roles deny
the reviewed action, the proxy answers itself (201, ``status.allowed = false``, ``denied = true``);
otherwise it forwards the review to the cluster (as the impersonated user), whose answer stands. For a
``SelfSubjectRulesReview`` the proxy forwards it and passes the cluster's answer through
``restrict_rules_review`` (``rbac.rules_review``).
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
from rbac.rules_review import restrict_rules_review

__all__ = ["ReviewOutcome", "restrict_rules_review", "review_access"]



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

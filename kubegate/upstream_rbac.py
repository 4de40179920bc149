"""The Kubernetes RBAC a cluster needs for kubegate (``kubegate clusters setup CLUSTER``). Pure: roles and
names in, Kubernetes objects (dicts) and notes out.

Two parts:

1. kubegate's own upstream identity (the credentials of the cluster's kubeconfig context) needs, as
   Teleport's Kubernetes agent does: ``impersonate`` on ``users``, ``groups`` and ``serviceaccounts``;
   ``get`` on ``pods``; ``create`` on ``selfsubjectaccessreviews`` and ``selfsubjectrulesreviews``
   (health checks, ``kubectl auth can-i``) → ClusterRole + ClusterRoleBinding ``kubegate-impersonator``.
2. The groups and users kubegate impersonates (each role's ``kubernetes_groups`` / ``kubernetes_users``,
   templates expanded with the traits given) need the cluster to allow what the role allows, since the
   cluster's own RBAC still applies to the impersonated identity: per kubegate role, rules with
   ``namespace: '*'`` → ClusterRole + ClusterRoleBinding ``kubegate-role-<role>``; rules for one namespace
   (and ``kind: namespaces, name: X``: everything inside X) → Role + RoleBinding ``kubegate-role-<role>``
   in it.

Translation of a rule: ``kind`` is the resource plural; ``verbs`` map one to one, ``exec`` → ``create``/
``get`` on ``pods/exec`` and ``pods/attach``, ``portforward`` → on ``pods/portforward``, ``get`` on pods
also grants ``pods/log``; a literal ``name`` becomes ``resourceNames``. What RBAC cannot express is
widened, with a note: glob/regex kinds, groups and names become ``*`` (kubegate still enforces the exact
rule first), and deny rules are kubegate's alone. Namespace patterns other than ``*`` cannot be bound and
are left out with a note. Built-in ``system:`` groups and users (``system:masters`` …) are never bound.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from rbac.roles import ResourceRule, Role, expand_templates

RBAC_API = "rbac.authorization.k8s.io/v1"
RBAC_GROUP = "rbac.authorization.k8s.io"
IMPERSONATOR = "kubegate-impersonator"
MANAGED_BY = {"app.kubernetes.io/managed-by": "kubegate"}
STANDARD_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


@dataclass
class SetupPlan:
    objects: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def subject_for_username(username: str) -> dict:
    """The RBAC subject of an authenticated user name (``system:serviceaccount:NS:NAME`` → ServiceAccount)."""
    parts = username.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
        return {"kind": "ServiceAccount", "name": parts[3], "namespace": parts[2]}
    return {"kind": "User", "apiGroup": RBAC_GROUP, "name": username}


def impersonator_objects(subject: Mapping[str, str]) -> list[dict]:
    """ClusterRole + ClusterRoleBinding for kubegate's upstream identity (Teleport's agent's shape)."""
    role = {
        "apiVersion": RBAC_API, "kind": "ClusterRole",
        "metadata": {"name": IMPERSONATOR, "labels": dict(MANAGED_BY)},
        "rules": [
            {"apiGroups": [""], "resources": ["users", "groups", "serviceaccounts"], "verbs": ["impersonate"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
            {"apiGroups": ["authorization.k8s.io"],
             "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
        ],
    }
    return [role, _binding("ClusterRoleBinding", IMPERSONATOR, None, "ClusterRole", IMPERSONATOR, [dict(subject)])]


def _binding(kind: str, name: str, namespace: str | None, role_kind: str, role_name: str,
             subjects: list[dict]) -> dict:
    metadata: dict = {"name": name, "labels": dict(MANAGED_BY)}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": RBAC_API, "kind": kind, "metadata": metadata,
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": role_kind, "name": role_name}, "subjects": subjects}


def rbac_object_name(role: str) -> str:
    """``kubegate-role-<role>``, made a valid lower-case DNS subdomain (what every API server accepts)."""
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", role.lower()).strip("-.")
    return f"kubegate-role-{cleaned}"[:253].rstrip("-.")


def _is_pattern(value: str) -> bool:
    return "*" in value or value.startswith("^") or "?" in value


def _translate(rule: ResourceRule, role: str, notes: list[str]) -> list[dict]:
    """RBAC policy rules granting at least what ``rule`` allows."""
    group = rule.api_group
    if group != "*" and _is_pattern(group):
        notes.append(f"role {role}: api_group {group!r} is a pattern: bound as '*'")
        group = "*"
    kind = rule.kind
    if kind != "*" and _is_pattern(kind):
        notes.append(f"role {role}: kind {kind!r} is a pattern: bound as '*'")
        kind = "*"
    names: list[str] = []
    if rule.name != "*":
        if _is_pattern(rule.name):
            notes.append(f"role {role}: name {rule.name!r} is a pattern: bound for every name")
        else:
            names = [rule.name]
    verbs = rule.verbs
    out: list[dict] = []

    def add(resources: list[str], rule_verbs: Sequence[str], groups: Sequence[str] = (group,)) -> None:
        entry: dict = {"apiGroups": list(groups), "resources": resources, "verbs": list(rule_verbs)}
        if names:
            entry["resourceNames"] = list(names)
        out.append(entry)

    if "*" in verbs:
        add([kind] if kind == "*" else [kind, f"{kind}/*"], ["*"])
        return out
    plain = [v for v in verbs if v in STANDARD_VERBS]
    if plain:
        add([kind], plain)
    pods = kind in ("pods", "*") and group in ("", "*")
    if kind == "pods" and group in ("", "*") and "get" in verbs:
        add(["pods/log"], ["get"], [""])
    if pods and "exec" in verbs:
        add(["pods/exec", "pods/attach"], ["create", "get"], [""])
    if pods and "portforward" in verbs:
        add(["pods/portforward"], ["create", "get"], [""])
    return out


def _principals(role: Role, traits: Mapping[str, Sequence[str]], notes: list[str]) -> list[dict]:
    subjects: list[dict] = []
    for what, values, kind in (("kubernetes_groups", role.allow.kubernetes_groups, "Group"),
                               ("kubernetes_users", role.allow.kubernetes_users, "User")):
        expanded = expand_templates(list(values), traits)
        for template in values:
            if "{{" in template and not expand_templates([template], traits):
                notes.append(f"role {role.name}: {what} {template!r} has no value without --traits "
                             "(the values each person's certificate carries): not bound")
        for value in expanded:
            if value.startswith("system:"):
                notes.append(f"role {role.name}: {kind.lower()} {value!r} is built into Kubernetes: not bound")
                continue
            subjects.append({"kind": kind, "apiGroup": RBAC_GROUP, "name": value})
    return subjects


def role_objects(roles: Iterable[Role], traits: Mapping[str, Sequence[str]]) -> SetupPlan:
    """Roles/ClusterRoles and their bindings for the principals the given kubegate roles impersonate."""
    plan = SetupPlan()
    for role in sorted(roles, key=lambda r: r.name):
        subjects = _principals(role, traits, plan.notes)
        if not subjects:
            plan.notes.append(f"role {role.name}: impersonates no group or user to bind")
            continue
        cluster_rules: list[dict] = []
        namespaced: dict[str, list[dict]] = {}
        for rule in role.allow.kubernetes_resources:
            if rule.kind == "namespaces":  # kubegate: everything inside the named namespace(s)
                scope, rules = rule.name, [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
            else:
                scope, rules = rule.namespace, _translate(rule, role.name, plan.notes)
            if scope == "*":
                cluster_rules.extend(rules)
            elif _is_pattern(scope):
                plan.notes.append(f"role {role.name}: namespace {scope!r} is a pattern: not bound")
            else:
                namespaced.setdefault(scope, []).extend(rules)
        name = rbac_object_name(role.name)
        if cluster_rules:
            plan.objects.append({"apiVersion": RBAC_API, "kind": "ClusterRole",
                                 "metadata": {"name": name, "labels": dict(MANAGED_BY)}, "rules": cluster_rules})
            plan.objects.append(_binding("ClusterRoleBinding", name, None, "ClusterRole", name, subjects))
        for namespace in sorted(namespaced):
            plan.objects.append({"apiVersion": RBAC_API, "kind": "Role",
                                 "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)},
                                 "rules": namespaced[namespace]})
            plan.objects.append(_binding("RoleBinding", name, namespace, "Role", name, subjects))
        if role.deny.kubernetes_resources:
            plan.notes.append(f"role {role.name}: its deny rules are enforced by kubegate (RBAC cannot deny)")
    return plan

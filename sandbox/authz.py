"""RBAC authorization for the sandbox cluster, with kube-apiserver's semantics.

- ``RbacAuthorizer(store)`` reads Role / ClusterRole / RoleBinding / ClusterRoleBinding objects
  (``rbac.authorization.k8s.io``) from the store. A ClusterRoleBinding grants its role's rules
  everywhere; a RoleBinding grants its Role's (or ClusterRole's) rules inside its namespace only.
  Subjects: ``User``, ``Group``, ``ServiceAccount`` (user ``system:serviceaccount:<ns>:<name>``).
  Rules: ``verbs``, ``apiGroups``, ``resources`` (``pods/exec`` style subresources, ``*``,
  ``*/<subresource>``), ``resourceNames`` (a rule with names never matches a request without a name),
  ``nonResourceURLs`` (exact or ``prefix*``). ClusterRoles with an ``aggregationRule`` collect the
  rules of ClusterRoles whose labels match. Members of ``system:masters`` are allowed everything.
  The compiled rules of a user are cached until the store's resourceVersion moves.
- ``ReviewService(authorizer)`` answers SelfSubjectAccessReview, SubjectAccessReview,
  SelfSubjectRulesReview (``authorization.k8s.io/v1``) and SelfSubjectReview
  (``authentication.k8s.io/v1``): what ``kubectl auth can-i [--list]`` and ``kubectl auth whoami`` use.
- ``bootstrap_rbac_objects()``: cluster-admin, admin, edit, view, system:basic-user,
  system:discovery, system:public-info-viewer and their bindings, as the server stores them at start.
- ``forbidden_status(attrs, reason)``: the apiserver's 403 ``Status`` for a denied request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from proxy.protocol import protobuf_wire
from sandbox.types import RequestAttributes, UserInfo

RBAC_GROUP = "rbac.authorization.k8s.io"
MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"


class RbacStore(Protocol):
    def list_objects(
        self, group: str, resource: str, namespace: str | None = None
    ) -> list[dict[str, Any]]: ...


# --------------------------------------------------------------------------- forbidden wording


def forbidden_message(attrs: RequestAttributes, reason: str = "") -> str:
    """kube-apiserver's ``responsewriters.Forbidden`` text (without the ``<resource> "<name>" is
    forbidden:`` prefix that ``forbidden_status`` adds)."""
    user = attrs.user.username
    if not attrs.resource_request:
        msg = f'User "{user}" cannot {attrs.verb} path "{attrs.path}"'
    else:
        resource = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
        if attrs.namespace:
            msg = (
                f'User "{user}" cannot {attrs.verb} resource "{resource}" in API group "{attrs.api_group}" '
                f'in the namespace "{attrs.namespace}"'
            )
        else:
            msg = (
                f'User "{user}" cannot {attrs.verb} resource "{resource}" in API group "{attrs.api_group}" '
                "at the cluster scope"
            )
    return f"{msg}: {reason}" if reason else msg


def forbidden_status(attrs: RequestAttributes, reason: str = "") -> dict[str, Any]:
    """The 403 ``Status`` object kube-apiserver answers for a denied request (``apierrors.NewForbidden``)."""
    err = forbidden_message(attrs, reason)
    qualified = attrs.resource + (f".{attrs.api_group}" if attrs.api_group else "")
    if not attrs.resource_request:
        message = f"forbidden: {err}"
        details: dict[str, Any] = {}
    elif attrs.name:
        message = f'{qualified} "{attrs.name}" is forbidden: {err}'
        details = {"name": attrs.name, "kind": attrs.resource}
    else:
        message = f"{qualified} is forbidden: {err}"
        details = {"kind": attrs.resource}
    if attrs.api_group and details:
        details["group"] = attrs.api_group
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Forbidden",
    }
    if details:
        status["details"] = details
    status["code"] = 403
    return status


def forbidden_body(attrs: RequestAttributes, reason: str = "") -> bytes:
    return json.dumps(forbidden_status(attrs, reason), separators=(",", ":")).encode()


# --------------------------------------------------------------------------- compiled rules


@dataclass(frozen=True, slots=True)
class Rule:
    verbs: frozenset[str]
    api_groups: frozenset[str]
    resources: frozenset[str]
    resource_names: frozenset[str]
    non_resource_urls: tuple[str, ...]
    source: str  # 'ClusterRoleBinding "x" of ClusterRole "y"'

    @classmethod
    def from_dict(cls, rule: Mapping[str, Any], source: str) -> Rule:
        return cls(
            frozenset(rule.get("verbs") or ()),
            frozenset(rule.get("apiGroups") or ()),
            frozenset(rule.get("resources") or ()),
            frozenset(rule.get("resourceNames") or ()),
            tuple(rule.get("nonResourceURLs") or ()),
            source,
        )

    def allows(self, attrs: RequestAttributes) -> bool:
        if attrs.verb not in self.verbs and "*" not in self.verbs:
            return False
        if not attrs.resource_request:
            path = attrs.path
            for url in self.non_resource_urls:
                if url == "*" or url == path or (url.endswith("*") and path.startswith(url[:-1])):
                    return True
            return False
        if attrs.api_group not in self.api_groups and "*" not in self.api_groups:
            return False
        resources = self.resources
        if "*" not in resources:
            if attrs.subresource:
                combined = f"{attrs.resource}/{attrs.subresource}"
                if combined not in resources and f"*/{attrs.subresource}" not in resources:
                    return False
            elif attrs.resource not in resources:
                return False
        if self.resource_names:
            return attrs.name in self.resource_names
        return True

    def to_review(self) -> dict[str, Any]:
        if self.non_resource_urls and not self.resources:
            return {"verbs": sorted(self.verbs), "nonResourceURLs": list(self.non_resource_urls)}
        out: dict[str, Any] = {
            "verbs": sorted(self.verbs),
            "apiGroups": sorted(self.api_groups),
            "resources": sorted(self.resources),
        }
        if self.resource_names:
            out["resourceNames"] = sorted(self.resource_names)
        return out


@dataclass(slots=True)
class UserRules:
    cluster: list[Rule]
    namespaced: dict[str, list[Rule]]


def _subject_matches(subject: Mapping[str, Any], user: UserInfo, binding_namespace: str) -> bool:
    kind = subject.get("kind")
    name = subject.get("name", "")
    if kind == "User":
        return name == user.username
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return user.username == f"system:serviceaccount:{namespace}:{name}"
    return False


def _labels_match(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


class RbacAuthorizer:
    """Implements ``sandbox.types.Authorizer`` over the RBAC objects of a store."""

    def __init__(self, store: RbacStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._cache_rv: object = None
        self._cache_fingerprint: object = None
        self._cache: dict[tuple[str, tuple[str, ...]], UserRules] = {}

    def _revision(self) -> object:
        return getattr(self._store, "resource_version", None)

    def _rbac_fingerprint(self) -> object:
        """Changes whenever an RBAC object is created, updated or deleted: (count, newest rv) per kind.
        Lets a write to anything else (pods, events, …) keep the compiled rules."""
        list_entries = getattr(self._store, "list_entries", None)
        if list_entries is None:
            return None
        fingerprint = []
        for resource in ("clusterroles", "clusterrolebindings", "roles", "rolebindings"):
            entries = list_entries(RBAC_GROUP, resource)[0]
            fingerprint.append((len(entries), max((e.rv for e in entries), default=0)))
        return tuple(fingerprint)

    def _cluster_role_rules(self) -> dict[str, list[dict[str, Any]]]:
        roles = self._store.list_objects(RBAC_GROUP, "clusterroles")
        rules = {r["metadata"]["name"]: list(r.get("rules") or ()) for r in roles}
        for role in roles:
            aggregation = role.get("aggregationRule") or {}
            selectors = aggregation.get("clusterRoleSelectors") or ()
            if not selectors:
                continue
            collected = list(rules[role["metadata"]["name"]])
            for other in roles:
                if other is role:
                    continue
                labels = (other.get("metadata") or {}).get("labels") or {}
                if any(_labels_match(sel, labels) for sel in selectors):
                    collected.extend(other.get("rules") or ())
            rules[role["metadata"]["name"]] = collected
        return rules

    def rules_for(self, user: UserInfo) -> UserRules:
        key = (user.username, user.groups)
        rv = self._revision()
        with self._lock:
            if rv is not None and rv != self._cache_rv:
                # Something was written; keep the compiled rules unless an RBAC object changed.
                fingerprint = self._rbac_fingerprint()
                if fingerprint is None or fingerprint != self._cache_fingerprint:
                    self._cache.clear()
                    self._cache_fingerprint = fingerprint
                self._cache_rv = rv
            if rv is not None:
                cached = self._cache.get(key)
                if cached is not None:
                    return cached
        compiled = self._compile(user)
        with self._lock:
            if rv is not None and rv == self._cache_rv:
                if len(self._cache) > 4096:
                    self._cache.clear()
                self._cache[key] = compiled
        return compiled

    def _compile(self, user: UserInfo) -> UserRules:
        store = self._store
        cluster_roles = self._cluster_role_rules()
        cluster: list[Rule] = []
        for binding in store.list_objects(RBAC_GROUP, "clusterrolebindings"):
            ref = binding.get("roleRef") or {}
            if ref.get("kind") != "ClusterRole":
                continue
            if not any(_subject_matches(s, user, "") for s in binding.get("subjects") or ()):
                continue
            source = f'ClusterRoleBinding "{binding["metadata"]["name"]}" of ClusterRole "{ref.get("name")}"'
            cluster.extend(Rule.from_dict(r, source) for r in cluster_roles.get(ref.get("name", ""), ()))
        namespaced: dict[str, list[Rule]] = {}
        bindings = store.list_objects(RBAC_GROUP, "rolebindings")
        if bindings:
            roles = {
                (r["metadata"].get("namespace", ""), r["metadata"]["name"]): r.get("rules") or ()
                for r in store.list_objects(RBAC_GROUP, "roles")
            }
            for binding in bindings:
                namespace = binding["metadata"].get("namespace", "")
                if not any(_subject_matches(s, user, namespace) for s in binding.get("subjects") or ()):
                    continue
                ref = binding.get("roleRef") or {}
                if ref.get("kind") == "ClusterRole":
                    role_rules: Iterable[dict[str, Any]] = cluster_roles.get(ref.get("name", ""), ())
                elif ref.get("kind") == "Role":
                    role_rules = roles.get((namespace, ref.get("name", "")), ())
                else:
                    continue
                source = (
                    f'RoleBinding "{binding["metadata"]["name"]}/{namespace}" of '
                    f'{ref.get("kind")} "{ref.get("name")}"'
                )
                namespaced.setdefault(namespace, []).extend(Rule.from_dict(r, source) for r in role_rules)
        return UserRules(cluster, namespaced)

    def authorize(self, attrs: RequestAttributes) -> tuple[bool, str]:
        user = attrs.user
        if MASTERS in user.groups:
            return True, ""
        rules = self.rules_for(user)
        for rule in rules.cluster:
            if rule.allows(attrs):
                return True, f"RBAC: allowed by {rule.source} to {_describe(user)}"
        if attrs.namespace and attrs.resource_request:
            for rule in rules.namespaced.get(attrs.namespace, ()):
                if rule.allows(attrs):
                    return True, f"RBAC: allowed by {rule.source} to {_describe(user)}"
        return False, ""

    def rules_review(
        self, user: UserInfo, namespace: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(resourceRules, nonResourceRules) that apply to ``user`` in ``namespace``."""
        rules = self.rules_for(user)
        applicable = list(rules.cluster) + list(rules.namespaced.get(namespace, ()) if namespace else ())
        resource_rules: list[dict[str, Any]] = []
        non_resource_rules: list[dict[str, Any]] = []
        if MASTERS in user.groups and not applicable:
            resource_rules.append({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})
            non_resource_rules.append({"verbs": ["*"], "nonResourceURLs": ["*"]})
        for rule in applicable:
            if rule.resources or rule.api_groups:
                resource_rules.append(rule.to_review())
            if rule.non_resource_urls:
                non_resource_rules.append(
                    {"verbs": sorted(rule.verbs), "nonResourceURLs": list(rule.non_resource_urls)}
                )
        return resource_rules, non_resource_rules


def _describe(user: UserInfo) -> str:
    return f'User "{user.username}"'


# --------------------------------------------------------------------------- reviews


class ReviewError(ValueError):
    """A review body the apiserver would reject (400/422 Invalid)."""


def _attrs_from_spec(user: UserInfo, spec: Mapping[str, Any]) -> RequestAttributes:
    resource_attrs = spec.get("resourceAttributes")
    non_resource = spec.get("nonResourceAttributes")
    if resource_attrs and non_resource:
        raise ReviewError("spec.resourceAttributes and spec.nonResourceAttributes are mutually exclusive")
    if isinstance(resource_attrs, Mapping):
        return RequestAttributes(
            user=user,
            verb=str(resource_attrs.get("verb", "")),
            resource_request=True,
            api_group=str(resource_attrs.get("group", "")),
            api_version=str(resource_attrs.get("version", "")),
            resource=str(resource_attrs.get("resource", "")),
            subresource=str(resource_attrs.get("subresource", "")),
            namespace=str(resource_attrs.get("namespace", "")),
            name=str(resource_attrs.get("name", "")),
        )
    if isinstance(non_resource, Mapping):
        return RequestAttributes(
            user=user,
            verb=str(non_resource.get("verb", "")),
            resource_request=False,
            path=str(non_resource.get("path", "")),
        )
    raise ReviewError("exactly one of spec.resourceAttributes or spec.nonResourceAttributes must be set")


def _extra(raw: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): tuple(str(v) for v in (vals or ())) for k, vals in raw.items()}


class ReviewService:
    """Answers the authorization / authentication review resources."""

    RESOURCES = frozenset(
        ("selfsubjectaccessreviews", "subjectaccessreviews", "selfsubjectrulesreviews", "selfsubjectreviews")
    )

    def __init__(self, authorizer: RbacAuthorizer) -> None:
        self.authorizer = authorizer

    def review(self, resource: str, body: dict[str, Any], user: UserInfo) -> dict[str, Any]:
        """The review object as the apiserver returns it (spec kept, ``status`` filled in).
        Raises ``ReviewError`` for a malformed spec and ``KeyError`` for an unknown resource."""
        if not isinstance(body, dict):
            raise ReviewError("the review body must be a JSON object")
        spec = body.get("spec") or {}
        if not isinstance(spec, dict):
            raise ReviewError("spec must be an object")
        out = dict(body)
        metadata = dict(out.get("metadata") or {})
        metadata.setdefault("creationTimestamp", None)
        out["metadata"] = metadata
        if resource == "selfsubjectreviews":
            info: dict[str, Any] = {"username": user.username, "groups": list(user.groups)}
            if user.uid:
                info["uid"] = user.uid
            if user.extra:
                info["extra"] = {k: list(v) for k, v in user.extra.items()}
            out.setdefault("kind", "SelfSubjectReview")
            out.setdefault("apiVersion", "authentication.k8s.io/v1")
            out["status"] = {"userInfo": info}
            return out
        if resource == "selfsubjectaccessreviews":
            attrs = _attrs_from_spec(user, spec)
            out.setdefault("kind", "SelfSubjectAccessReview")
        elif resource == "subjectaccessreviews":
            subject = UserInfo(
                username=str(spec.get("user", "")),
                groups=tuple(str(g) for g in spec.get("groups") or ()),
                uid=str(spec.get("uid", "")),
                extra=_extra(spec.get("extra")),
            )
            if not subject.username and not subject.groups:
                raise ReviewError("at least one of user or group must be specified")
            attrs = _attrs_from_spec(subject, spec)
            out.setdefault("kind", "SubjectAccessReview")
        elif resource == "selfsubjectrulesreviews":
            namespace = str(spec.get("namespace", ""))
            resource_rules, non_resource_rules = self.authorizer.rules_review(user, namespace)
            out.setdefault("kind", "SelfSubjectRulesReview")
            out.setdefault("apiVersion", "authorization.k8s.io/v1")
            out["status"] = {
                "resourceRules": resource_rules,
                "nonResourceRules": non_resource_rules,
                "incomplete": False,
            }
            return out
        else:
            raise KeyError(resource)
        out.setdefault("apiVersion", "authorization.k8s.io/v1")
        allowed, reason = self.authorizer.authorize(attrs)
        status: dict[str, Any] = {"allowed": allowed}
        if reason:
            status["reason"] = reason
        out["status"] = status
        return out


# --------------------------------------------------------------------------- bootstrap

_READ = ["get", "list", "watch"]
_WRITE = ["create", "delete", "deletecollection", "patch", "update"]
_CORE_READ_RESOURCES = [
    "configmaps",
    "endpoints",
    "persistentvolumeclaims",
    "persistentvolumeclaims/status",
    "pods",
    "pods/log",
    "pods/status",
    "replicationcontrollers",
    "replicationcontrollers/scale",
    "replicationcontrollers/status",
    "serviceaccounts",
    "services",
    "services/status",
    "bindings",
    "events",
    "limitranges",
    "namespaces/status",
    "resourcequotas",
    "resourcequotas/status",
]
_APPS = [
    "daemonsets",
    "deployments",
    "deployments/scale",
    "deployments/status",
    "replicasets",
    "replicasets/scale",
    "replicasets/status",
    "statefulsets",
    "statefulsets/scale",
    "statefulsets/status",
    "controllerrevisions",
]


def _cluster_role(
    name: str, rules: list[dict[str, Any]], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "labels": {"kubernetes.io/bootstrapping": "rbac-defaults", **(labels or {})},
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    }
    return {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRole", "metadata": meta, "rules": rules}


def _cluster_binding(name: str, role: str, groups: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        },
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": g} for g in groups],
    }


def bootstrap_rbac_objects() -> list[tuple[str, str, dict[str, Any]]]:
    """The default ClusterRoles and ClusterRoleBindings of a fresh cluster, as (group, resource, object)."""
    view_rules: list[dict[str, Any]] = [
        {"apiGroups": [""], "resources": _CORE_READ_RESOURCES + ["namespaces"], "verbs": _READ},
        {"apiGroups": ["apps"], "resources": _APPS, "verbs": _READ},
        {
            "apiGroups": ["batch"],
            "resources": ["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
            "verbs": _READ,
        },
        {
            "apiGroups": ["networking.k8s.io"],
            "resources": ["ingresses", "ingresses/status", "networkpolicies"],
            "verbs": _READ,
        },
        {
            "apiGroups": ["policy"],
            "resources": ["poddisruptionbudgets", "poddisruptionbudgets/status"],
            "verbs": _READ,
        },
        {"apiGroups": ["example.kubegate.dev"], "resources": ["widgets"], "verbs": _READ},
    ]
    edit_rules: list[dict[str, Any]] = [
        {
            "apiGroups": [""],
            "resources": [
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "secrets",
                "services/proxy",
            ],
            "verbs": _READ,
        },
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]},
        {
            "apiGroups": [""],
            "resources": ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"],
            "verbs": ["create", "delete", "deletecollection", "patch", "update"],
        },
        {
            "apiGroups": [""],
            "resources": [
                "configmaps",
                "events",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ],
            "verbs": _WRITE,
        },
        {"apiGroups": ["apps"], "resources": [r for r in _APPS if "/status" not in r], "verbs": _WRITE},
        {"apiGroups": ["batch"], "resources": ["cronjobs", "jobs"], "verbs": _WRITE},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "networkpolicies"], "verbs": _WRITE},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": _WRITE},
        {"apiGroups": ["example.kubegate.dev"], "resources": ["widgets"], "verbs": _WRITE},
    ]
    admin_rules: list[dict[str, Any]] = [
        {
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["localsubjectaccessreviews"],
            "verbs": ["create"],
        },
        {
            "apiGroups": [RBAC_GROUP],
            "resources": ["rolebindings", "roles"],
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        },
    ]
    agg = "rbac.authorization.k8s.io/aggregate-to-"
    roles = [
        _cluster_role(
            "cluster-admin",
            [
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ],
        ),
        {
            **_cluster_role("admin", []),
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {f"{agg}admin": "true"}}]},
        },
        {
            **_cluster_role("edit", [], {f"{agg}admin": "true"}),
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {f"{agg}edit": "true"}}]},
        },
        {
            **_cluster_role("view", [], {f"{agg}edit": "true"}),
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {f"{agg}view": "true"}}]},
        },
        _cluster_role("system:aggregate-to-admin", admin_rules, {f"{agg}admin": "true"}),
        _cluster_role("system:aggregate-to-edit", edit_rules, {f"{agg}edit": "true"}),
        _cluster_role("system:aggregate-to-view", view_rules, {f"{agg}view": "true"}),
        _cluster_role(
            "system:basic-user",
            [
                {
                    "apiGroups": ["authorization.k8s.io"],
                    "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    "verbs": ["create"],
                },
                {
                    "apiGroups": ["authentication.k8s.io"],
                    "resources": ["selfsubjectreviews"],
                    "verbs": ["create"],
                },
            ],
        ),
        _cluster_role(
            "system:discovery",
            [
                {
                    "nonResourceURLs": [
                        "/api",
                        "/api/*",
                        "/apis",
                        "/apis/*",
                        "/healthz",
                        "/livez",
                        "/openapi",
                        "/openapi/*",
                        "/readyz",
                        "/version",
                        "/version/",
                    ],
                    "verbs": ["get"],
                }
            ],
        ),
        _cluster_role(
            "system:public-info-viewer",
            [
                {
                    "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"],
                    "verbs": ["get"],
                }
            ],
        ),
    ]
    bindings = [
        _cluster_binding("cluster-admin", "cluster-admin", [MASTERS]),
        _cluster_binding("system:basic-user", "system:basic-user", [AUTHENTICATED]),
        _cluster_binding("system:discovery", "system:discovery", [AUTHENTICATED]),
        _cluster_binding(
            "system:public-info-viewer", "system:public-info-viewer", [AUTHENTICATED, UNAUTHENTICATED]
        ),
    ]
    return [(RBAC_GROUP, "clusterroles", r) for r in roles] + [
        (RBAC_GROUP, "clusterrolebindings", b) for b in bindings
    ]


# --------------------------------------------------------------------------- protobuf review bodies
# kubectl >= 1.3x sends the review objects as Kubernetes protobuf (``application/vnd.kubernetes.protobuf``):
# the ``k8s\0`` magic, then a runtime.Unknown {1: TypeMeta{1 apiVersion, 2 kind}, 2: raw object bytes}.
# Only the fields the reviews read are decoded (authorization/v1 and authentication/v1 generated.proto).

PROTOBUF_MAGIC = protobuf_wire.MAGIC


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of one protobuf message (malformed bytes are a :class:`ReviewError`)."""
    try:
        return protobuf_wire.fields(data)
    except protobuf_wire.ProtobufError as exc:
        raise ReviewError(f"protobuf: {exc}") from None


def _strings(data: bytes, names: Mapping[int, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, value in _fields(data):
        if number in names and isinstance(value, bytes) and value:
            out[names[number]] = value.decode("utf-8")
    return out


_RESOURCE_ATTRS = {
    1: "namespace",
    2: "verb",
    3: "group",
    4: "version",
    5: "resource",
    6: "subresource",
    7: "name",
}
_NON_RESOURCE_ATTRS = {1: "path", 2: "verb"}


def _access_spec(data: bytes, with_subject: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    groups: list[str] = []
    extra: dict[str, list[str]] = {}
    for number, value in _fields(data):
        if not isinstance(value, bytes):
            continue
        if number == 1:
            spec["resourceAttributes"] = _strings(value, _RESOURCE_ATTRS)
        elif number == 2:
            spec["nonResourceAttributes"] = _strings(value, _NON_RESOURCE_ATTRS)
        elif with_subject and number == 3:
            spec["user"] = value.decode("utf-8")
        elif with_subject and number == 4:
            groups.append(value.decode("utf-8"))
        elif with_subject and number == 5:
            entry = dict(_fields(value))
            key = entry.get(1, b"")
            values = [
                v.decode("utf-8") for n, v in _fields(entry.get(2, b"")) if n == 1 and isinstance(v, bytes)
            ]
            if isinstance(key, bytes):
                extra[key.decode("utf-8")] = values
        elif with_subject and number == 6:
            spec["uid"] = value.decode("utf-8")
    if groups:
        spec["groups"] = groups
    if extra:
        spec["extra"] = extra
    return spec


def decode_review_protobuf(data: bytes) -> dict[str, Any]:
    """A review object sent as Kubernetes protobuf, as the JSON-shaped dict the reviews take."""
    try:
        envelope = protobuf_wire.unwrap(data)
        kind, api_version = envelope.kind, envelope.api_version
        spec_bytes = protobuf_wire.last_bytes(envelope.raw, 2)
    except protobuf_wire.ProtobufError as exc:
        raise ReviewError(f"protobuf: {exc}") from None
    obj: dict[str, Any] = {"kind": kind, "apiVersion": api_version, "metadata": {}}
    if kind == "SelfSubjectAccessReview":
        obj["spec"] = _access_spec(spec_bytes, with_subject=False)
    elif kind == "SubjectAccessReview":
        obj["spec"] = _access_spec(spec_bytes, with_subject=True)
    elif kind == "SelfSubjectRulesReview":
        obj["spec"] = _strings(spec_bytes, {1: "namespace"})
    elif kind == "SelfSubjectReview":
        pass  # field 2 is status; there is no spec
    else:
        raise ReviewError(f"unsupported protobuf kind {kind!r}")
    return obj

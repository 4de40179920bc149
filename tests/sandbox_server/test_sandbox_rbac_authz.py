"""RbacAuthorizer, ReviewService and the protobuf review decoder: tables, no sockets."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.authz import (
    RBAC_GROUP,
    RbacAuthorizer,
    ReviewError,
    ReviewService,
    bootstrap_rbac_objects,
    decode_review_protobuf,
    forbidden_status,
)
from sandbox.types import RequestAttributes, UserInfo


class MemStore:
    """The two Store methods the authorizer uses."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.resource_version = 1

    def put(self, resource: str, obj: dict[str, Any]) -> None:
        self.objects.setdefault((RBAC_GROUP, resource), []).append(obj)
        self.resource_version += 1

    def list_objects(self, group: str, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        items = self.objects.get((group, resource), [])
        return [o for o in items if namespace is None or o["metadata"].get("namespace") == namespace]


def role(name: str, rules: list[dict], namespace: str | None = None) -> dict:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"metadata": meta, "rules": rules}


def binding(name: str, kind: str, role_name: str, subjects: list[dict], namespace: str | None = None) -> dict:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {
        "metadata": meta,
        "roleRef": {"kind": kind, "name": role_name, "apiGroup": RBAC_GROUP},
        "subjects": subjects,
    }


@pytest.fixture
def store() -> MemStore:
    s = MemStore()
    for group, resource, obj in bootstrap_rbac_objects():
        assert group == RBAC_GROUP
        s.put(resource, obj)
    s.put(
        "roles",
        role(
            "pod-reader",
            [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}],
            "dev",
        ),
    )
    s.put(
        "rolebindings",
        binding("alice-reads", "Role", "pod-reader", [{"kind": "User", "name": "alice"}], "dev"),
    )
    s.put(
        "rolebindings",
        binding("devs-edit", "ClusterRole", "edit", [{"kind": "Group", "name": "developers"}], "dev"),
    )
    s.put(
        "clusterroles",
        role(
            "cm-one",
            [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": ["settings"],
                    "verbs": ["get", "update"],
                }
            ],
        ),
    )
    s.put(
        "clusterroles", role("exec-only", [{"apiGroups": [""], "resources": ["*/exec"], "verbs": ["create"]}])
    )
    s.put(
        "clusterroles",
        role(
            "impersonator",
            [
                {
                    "apiGroups": [""],
                    "resources": ["users"],
                    "resourceNames": ["bob"],
                    "verbs": ["impersonate"],
                },
                {"apiGroups": [""], "resources": ["groups"], "verbs": ["impersonate"]},
            ],
        ),
    )
    s.put(
        "clusterrolebindings",
        binding("carol-cm", "ClusterRole", "cm-one", [{"kind": "User", "name": "carol"}]),
    )
    s.put(
        "clusterrolebindings",
        binding(
            "sa-exec",
            "ClusterRole",
            "exec-only",
            [{"kind": "ServiceAccount", "name": "runner", "namespace": "ci"}],
        ),
    )
    s.put(
        "clusterrolebindings",
        binding("imp", "ClusterRole", "impersonator", [{"kind": "User", "name": "imp"}]),
    )
    return s


def attrs(
    user: str,
    verb: str,
    resource: str = "",
    namespace: str = "",
    name: str = "",
    sub: str = "",
    group: str = "",
    groups=("system:authenticated",),
    path: str = "",
) -> RequestAttributes:
    info = UserInfo(user, tuple(groups))
    if path:
        return RequestAttributes(info, verb, False, path=path)
    return RequestAttributes(info, verb, True, group, "v1", resource, sub, namespace, name)


@pytest.mark.parametrize(
    ("request_attrs", "allowed"),
    [
        (attrs("root", "delete", "nodes", groups=("system:masters",)), True),
        (attrs("alice", "get", "pods", "dev", "web-1"), True),
        (attrs("alice", "list", "pods", "dev"), True),
        (attrs("alice", "get", "pods", "dev", "web-1", sub="log"), True),
        (attrs("alice", "create", "pods", "dev", "web-1", sub="exec"), False),  # subresource not granted
        (attrs("alice", "get", "pods", "prod", "web-1"), False),  # RoleBinding is namespace-local
        (attrs("alice", "list", "pods"), False),  # ...and never cluster-wide
        (attrs("alice", "delete", "pods", "dev", "web-1"), False),
        (
            attrs("dan", "create", "deployments", "dev", group="apps", groups=("developers",)),
            True,
        ),  # edit via aggregation
        (attrs("dan", "create", "pods", "dev", "x", sub="exec", groups=("developers",)), True),
        (
            attrs("dan", "list", "rolebindings", "dev", group=RBAC_GROUP, groups=("developers",)),
            False,
        ),  # admin only
        (attrs("dan", "get", "secrets", "prod", "s", groups=("developers",)), False),
        (attrs("carol", "get", "configmaps", "prod", "settings"), True),  # resourceNames
        (attrs("carol", "get", "configmaps", "prod", "other"), False),
        (attrs("carol", "list", "configmaps", "prod"), False),  # names never match a nameless request
        (attrs("system:serviceaccount:ci:runner", "create", "pods", "dev", "x", sub="exec"), True),  # */exec
        (attrs("system:serviceaccount:ci:runner", "create", "pods", "dev", "x", sub="attach"), False),
        (attrs("system:serviceaccount:ci:other", "create", "pods", "dev", "x", sub="exec"), False),
        (attrs("anyone", "get", "", path="/api"), True),  # system:discovery
        (attrs("anyone", "get", "", path="/apis/apps/v1"), True),
        (attrs("anyone", "get", "", path="/metrics"), False),
        (attrs("anyone", "post", "", path="/api"), False),
        (
            attrs("anyone", "create", "selfsubjectaccessreviews", group="authorization.k8s.io"),
            True,
        ),  # basic-user
        (attrs("imp", "impersonate", "users", name="bob"), True),
        (attrs("imp", "impersonate", "users", name="eve"), False),
        (attrs("imp", "impersonate", "groups", name="anything"), True),
    ],
)
def test_rbac_decisions(store: MemStore, request_attrs: RequestAttributes, allowed: bool) -> None:
    assert RbacAuthorizer(store).authorize(request_attrs)[0] is allowed


def test_allowed_reason_names_the_binding(store: MemStore) -> None:
    ok, reason = RbacAuthorizer(store).authorize(attrs("alice", "get", "pods", "dev", "p"))
    assert ok and 'RoleBinding "alice-reads/dev" of Role "pod-reader"' in reason and 'User "alice"' in reason


def test_cache_follows_store_changes(store: MemStore) -> None:
    authz = RbacAuthorizer(store)
    request = attrs("erin", "list", "pods", "prod")
    assert authz.authorize(request)[0] is False
    store.put(
        "rolebindings",
        binding("erin-view", "ClusterRole", "view", [{"kind": "User", "name": "erin"}], "prod"),
    )
    assert authz.authorize(request)[0] is True


@pytest.mark.parametrize(
    ("request_attrs", "message"),
    [
        (
            attrs("alice", "list", "pods", "prod"),
            'pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "prod"',
        ),
        (
            attrs("alice", "get", "nodes", name="n1"),
            'nodes "n1" is forbidden: User "alice" cannot get resource "nodes" in API group "" at the cluster scope',
        ),
        (
            attrs("alice", "create", "pods", "dev", "p", sub="exec"),
            'pods "p" is forbidden: User "alice" cannot create resource "pods/exec" in API group "" in the namespace "dev"',
        ),
        (
            attrs("alice", "list", "deployments", "dev", group="apps"),
            'deployments.apps is forbidden: User "alice" cannot list resource "deployments" in API group "apps" in the namespace "dev"',
        ),
        (attrs("alice", "get", path="/metrics"), 'forbidden: User "alice" cannot get path "/metrics"'),
    ],
)
def test_forbidden_wording_matches_the_apiserver(request_attrs: RequestAttributes, message: str) -> None:
    status = forbidden_status(request_attrs)
    assert status["message"] == message
    assert (status["code"], status["reason"], status["kind"]) == (403, "Forbidden", "Status")


def test_self_subject_access_review(store: MemStore) -> None:
    reviews = ReviewService(RbacAuthorizer(store))
    body = {"spec": {"resourceAttributes": {"namespace": "dev", "verb": "get", "resource": "pods"}}}
    out = reviews.review("selfsubjectaccessreviews", body, UserInfo("alice", ("system:authenticated",)))
    assert out["status"]["allowed"] is True
    assert out["kind"] == "SelfSubjectAccessReview" and out["spec"] == body["spec"]
    body = {"spec": {"resourceAttributes": {"namespace": "prod", "verb": "get", "resource": "pods"}}}
    assert reviews.review("selfsubjectaccessreviews", body, UserInfo("alice"))["status"] == {"allowed": False}


def test_subject_access_review_judges_the_named_subject(store: MemStore) -> None:
    reviews = ReviewService(RbacAuthorizer(store))
    spec = {
        "user": "dan",
        "groups": ["developers"],
        "resourceAttributes": {"namespace": "dev", "verb": "create", "resource": "configmaps"},
    }
    out = reviews.review("subjectaccessreviews", {"spec": spec}, UserInfo("root", ("system:masters",)))
    assert out["status"]["allowed"] is True
    with pytest.raises(ReviewError):
        reviews.review("subjectaccessreviews", {"spec": {"resourceAttributes": {}}}, UserInfo("root"))


def test_self_subject_rules_review_lists_namespace_and_cluster_rules(store: MemStore) -> None:
    reviews = ReviewService(RbacAuthorizer(store))
    out = reviews.review(
        "selfsubjectrulesreviews",
        {"spec": {"namespace": "dev"}},
        UserInfo("alice", ("system:authenticated",)),
    )
    rules = out["status"]["resourceRules"]
    assert {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]} in rules
    assert any("selfsubjectaccessreviews" in r["resources"] for r in rules)
    assert any("/api" in r["nonResourceURLs"] for r in out["status"]["nonResourceRules"])
    assert out["status"]["incomplete"] is False
    prod = reviews.review(
        "selfsubjectrulesreviews",
        {"spec": {"namespace": "prod"}},
        UserInfo("alice", ("system:authenticated",)),
    )
    assert not any("pods" in r["resources"] for r in prod["status"]["resourceRules"])


def test_self_subject_review_reports_the_user() -> None:
    reviews = ReviewService(RbacAuthorizer(MemStore()))
    out = reviews.review(
        "selfsubjectreviews", {}, UserInfo("bob", ("g", "system:authenticated"), "u1", {"scopes": ("a",)})
    )
    assert out["status"]["userInfo"] == {
        "username": "bob",
        "groups": ["g", "system:authenticated"],
        "uid": "u1",
        "extra": {"scopes": ["a"]},
    }


# Bytes kubectl 1.37 sent for `kubectl auth can-i create pods`, `auth can-i --list`, `auth whoami`.
SSAR_PB = (
    b'k8s\x00\n2\n\x17authorization.k8s.io/v1\x12\x17SelfSubjectAccessReview\x12?\n\x10\n\x00\x12\x00\x1a\x00"\x00'
    b'*\x002\x008\x00B\x00\x12!\n\x1f\n\x07default\x12\x06create\x1a\x00"\x00*\x04pods2\x00:\x00\x1a\x08\x08\x00'
    b'\x12\x00\x1a\x00 \x00\x1a\x00"\x00'
)
SSRR_PB = (
    b'k8s\x00\n1\n\x17authorization.k8s.io/v1\x12\x16SelfSubjectRulesReview\x12#\n\x10\n\x00\x12\x00\x1a\x00"\x00'
    b'*\x002\x008\x00B\x00\x12\t\n\x07default\x1a\x04\x18\x00"\x00\x1a\x00"\x00'
)
SSR_PB = (
    b'k8s\x00\n-\n\x18authentication.k8s.io/v1\x12\x11SelfSubjectReview\x12\x1a\n\x10\n\x00\x12\x00\x1a\x00"\x00'
    b'*\x002\x008\x00B\x00\x12\x06\n\x04\n\x00\x12\x00\x1a\x00"\x00'
)


def test_protobuf_review_bodies_decode_to_the_json_shape() -> None:
    assert decode_review_protobuf(SSAR_PB)["spec"] == {
        "resourceAttributes": {"namespace": "default", "verb": "create", "resource": "pods"}
    }
    ssrr = decode_review_protobuf(SSRR_PB)
    assert (ssrr["kind"], ssrr["spec"]) == ("SelfSubjectRulesReview", {"namespace": "default"})
    ssr = decode_review_protobuf(SSR_PB)
    assert (ssr["kind"], ssr["apiVersion"]) == ("SelfSubjectReview", "authentication.k8s.io/v1")


@pytest.mark.parametrize("data", [b"k8s\x00\n\xff", b"nope", SSAR_PB[:40], b"k8s\x00\n\x04\x12\x02Xy"])
def test_bad_protobuf_is_a_review_error(data: bytes) -> None:
    with pytest.raises(ReviewError):
        decode_review_protobuf(data)


def test_real_store_keeps_rules_across_other_writes_and_sees_rbac_changes() -> None:
    from sandbox.store import Store

    store = Store()
    for group, resource, obj in bootstrap_rbac_objects():
        store.put_object(group, resource, obj)
    store.put_object("", "namespaces", {"metadata": {"name": "dev"}})
    authz = RbacAuthorizer(store)
    compiled = []
    original = authz._compile
    authz._compile = lambda user: compiled.append(user.username) or original(user)  # type: ignore[method-assign]
    request = attrs("frank", "list", "pods", "dev")
    assert authz.authorize(request)[0] is False
    store.put_object("", "configmaps", {"metadata": {"name": "c", "namespace": "dev"}})  # not RBAC
    assert authz.authorize(request)[0] is False
    assert compiled == ["frank"]  # the unrelated write kept the compiled rules
    store.put_object(
        RBAC_GROUP,
        "rolebindings",
        binding("frank-view", "ClusterRole", "view", [{"kind": "User", "name": "frank"}], "dev"),
    )
    assert authz.authorize(request)[0] is True
    store.delete(RBAC_GROUP, "rolebindings", "dev", "frank-view")
    assert authz.authorize(request)[0] is False
    assert compiled == ["frank", "frank", "frank"]

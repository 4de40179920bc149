"""`kubectl auth can-i` through kubegate: SelfSubjectAccessReview answered "no" by kubegate when its
roles deny, forwarded otherwise; SelfSubjectRulesReview intersected with kubegate's rules."""

from __future__ import annotations

from rbac import ResourceCatalog, RoleSet, restrict_rules_review, review_access
from rbac.identity import Identity
from rbac.roles import parse_roles_yaml

ROLES = RoleSet(
    parse_roles_yaml(
        """
kind: role
version: v8
metadata: {name: dev}
spec:
  allow:
    kubernetes_labels: {env: dev}
    kubernetes_resources:
      - {kind: pods, api_group: '', namespace: dev, name: '*', verbs: [get, list, watch, exec]}
      - {kind: configmaps, api_group: '', namespace: dev, name: 'app-*', verbs: [get]}
  deny:
    kubernetes_resources: [{kind: secrets, api_group: '', namespace: '*', name: '*', verbs: ['*']}]
"""
    )
)
CATALOG = ResourceCatalog.builtin()
ALICE = Identity("alice", ("dev",))
DEV = {"env": "dev"}


def ssar(**attrs: str) -> dict:
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attrs},
    }


def test_allowed_by_kubegate_means_ask_the_cluster() -> None:
    for attrs in (
        {"verb": "list", "resource": "pods", "namespace": "dev"},
        {"verb": "create", "resource": "pods", "subresource": "exec", "namespace": "dev", "name": "web"},
        {"verb": "get", "resource": "configmaps", "namespace": "dev", "name": "app-1"},
    ):
        outcome = review_access(ALICE, ROLES, "c1", DEV, ssar(**attrs), CATALOG)
        assert outcome.ask_cluster and outcome.response is None, attrs


def test_denied_by_kubegate_is_answered_without_the_cluster() -> None:
    body = ssar(verb="create", resource="pods", subresource="exec", namespace="prod", name="web")
    outcome = review_access(ALICE, ROLES, "c1", DEV, body, CATALOG)
    assert not outcome.ask_cluster
    assert outcome.response["kind"] == "SelfSubjectAccessReview"
    assert outcome.response["spec"] == body["spec"]
    status = outcome.response["status"]
    assert (
        status["allowed"] is False
        and status["denied"] is True
        and '"exec" on pods in namespace "prod"' in status["reason"]
    )
    assert not review_access(
        ALICE, ROLES, "c1", DEV, ssar(verb="get", resource="secrets", namespace="dev"), CATALOG
    ).ask_cluster
    assert not review_access(
        ALICE, ROLES, "c1", DEV, ssar(verb="delete", resource="pods", namespace="dev"), CATALOG
    ).ask_cluster
    assert not review_access(
        ALICE, ROLES, "c1", {"env": "prod"}, ssar(verb="get", resource="pods", namespace="dev"), CATALOG
    ).ask_cluster


def test_non_resource_and_malformed_reviews() -> None:
    disc = {"spec": {"nonResourceAttributes": {"path": "/version", "verb": "get"}}}
    assert review_access(ALICE, ROLES, "c1", DEV, disc, CATALOG).ask_cluster
    metrics = {"spec": {"nonResourceAttributes": {"path": "/metrics", "verb": "get"}}}
    assert not review_access(ALICE, ROLES, "c1", DEV, metrics, CATALOG).ask_cluster
    for bad in ({}, {"spec": "x"}, {"spec": {}}):
        outcome = review_access(ALICE, ROLES, "c1", DEV, bad, CATALOG)
        assert not outcome.ask_cluster and outcome.response["status"]["allowed"] is False


def test_rules_review_is_intersected_with_kubegate_roles() -> None:
    cluster_answer = {
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": "dev"},
        "status": {
            "resourceRules": [
                {"verbs": ["get", "list", "delete"], "apiGroups": [""], "resources": ["pods", "secrets"]},
                {"verbs": ["create"], "apiGroups": [""], "resources": ["pods/exec"]},
                {
                    "verbs": ["get"],
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": ["app-1", "db"],
                },
                {"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments"]},
            ],
            "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/version", "/metrics"]}],
            "incomplete": False,
        },
    }
    out = restrict_rules_review(ALICE, ROLES, "c1", DEV, cluster_answer, CATALOG)
    assert out["status"]["resourceRules"] == [
        {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]},
        {"verbs": ["create"], "apiGroups": [""], "resources": ["pods/exec"]},
        {"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["app-1"]},
    ]
    assert out["status"]["nonResourceRules"] == [{"verbs": ["get"], "nonResourceURLs": ["/version"]}]
    assert (
        out["status"]["incomplete"] is True
    )  # kubegate has deny rules: the list may overstate nothing but is not exact


def test_rules_review_with_cluster_wildcards_uses_kubegate_rules() -> None:
    admin = {
        "spec": {"namespace": "dev"},
        "status": {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]},
    }
    out = restrict_rules_review(ALICE, ROLES, "c1", DEV, admin, CATALOG)
    assert {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["pods"]} in out["status"][
        "resourceRules"
    ]
    assert out["status"]["incomplete"] is True
    invisible = restrict_rules_review(ALICE, ROLES, "c1", {"env": "prod"}, admin, CATALOG)
    assert invisible["status"]["resourceRules"] == []

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
    # every rule listed is exact (the deny on secrets touches none of them; 'app-*' met a concrete name)
    assert out["status"]["incomplete"] is False and "evaluationError" not in out["status"]


def test_rules_review_with_cluster_wildcards_uses_kubegate_rules() -> None:
    admin = {
        "spec": {"namespace": "dev"},
        "status": {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]},
    }
    out = restrict_rules_review(ALICE, ROLES, "c1", DEV, admin, CATALOG)
    assert {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["pods"]} in out["status"][
        "resourceRules"
    ]
    assert {"verbs": ["get", "create"], "apiGroups": [""], "resources": ["pods/exec", "pods/attach"]} in out["status"][
        "resourceRules"
    ]
    assert out["status"]["incomplete"] is True  # configmaps 'app-*': a glob, shown as written
    assert "app-*" in out["status"]["evaluationError"]
    invisible = restrict_rules_review(ALICE, ROLES, "c1", {"env": "prod"}, admin, CATALOG)
    assert invisible["status"]["resourceRules"] == []


ADMIN_ANSWER = {  # what an apiserver answers system:masters (plus the basic discovery rules, repeated)
    "kind": "SelfSubjectRulesReview",
    "apiVersion": "authorization.k8s.io/v1",
    "spec": {"namespace": "dev"},
    "status": {
        "resourceRules": [
            {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
            {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"]},
            {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
        ],
        "nonResourceRules": [
            {"verbs": ["*"], "nonResourceURLs": ["*"]},
            {"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"]},
            {"verbs": ["get"], "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"]},
        ],
        "incomplete": False,
    },
}  # fmt: skip

WIDE = RoleSet(
    parse_roles_yaml(
        """
kind: role
version: v8
metadata: {name: all}
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources: [{kind: '*', api_group: '*', namespace: '*', name: '*', verbs: ['*']}]
---
kind: role
version: v8
metadata: {name: no-secrets}
spec:
  deny:
    kubernetes_resources: [{kind: secrets, api_group: '', namespace: '*', name: '*', verbs: ['*']}]
---
kind: role
version: v8
metadata: {name: web-proxy}
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources:
      - {kind: pods, api_group: '', namespace: dev, name: 'web-*', verbs: [get, proxy, portforward]}
      - {kind: nodes, api_group: '', name: '*', verbs: [get]}
"""
    )
)


def test_a_wildcard_role_is_listed_as_wildcards_with_each_rule_once() -> None:
    out = restrict_rules_review(Identity("root", ("all",)), WIDE, "c1", DEV, ADMIN_ANSWER, CATALOG)
    status = out["status"]
    assert status["resourceRules"] == [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]
    (non_resource,) = status["nonResourceRules"]
    urls = non_resource["nonResourceURLs"]
    assert len(urls) == len(set(urls)) and {"/api", "/apis/*", "/version", "/healthz"} <= set(urls)
    assert "/metrics" not in urls and "*" not in urls
    assert status["incomplete"] is False and "evaluationError" not in status


def test_a_deny_that_cannot_be_subtracted_makes_the_answer_incomplete_and_says_why() -> None:
    out = restrict_rules_review(Identity("sam", ("all", "no-secrets")), WIDE, "c1", DEV, ADMIN_ANSWER, CATALOG)
    status = out["status"]
    assert {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]} in status["resourceRules"]
    assert status["incomplete"] is True
    assert status["evaluationError"] == (
        'kubegate role "no-secrets" denies * on secrets in group \'\': not subtracted from the rules listed'
    )


def test_a_deny_that_covers_a_rule_removes_it() -> None:
    roles = RoleSet(
        parse_roles_yaml(
            """
kind: role
version: v8
metadata: {name: r}
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources:
      - {kind: secrets, api_group: '', namespace: dev, name: '*', verbs: [get, list]}
      - {kind: configmaps, api_group: '', namespace: dev, name: '*', verbs: [get]}
  deny:
    kubernetes_resources: [{kind: secrets, api_group: '', namespace: '*', name: '*', verbs: ['*']}]
"""
        )
    )
    status = restrict_rules_review(Identity("u", ("r",)), roles, "c1", DEV, ADMIN_ANSWER, CATALOG)["status"]
    assert [r["resources"] for r in status["resourceRules"]][:1] == [["configmaps"]]
    assert not any("secrets" in r["resources"] for r in status["resourceRules"])
    assert status["incomplete"] is False


def test_stream_and_proxy_verbs_and_name_patterns_are_described() -> None:
    out = restrict_rules_review(Identity("wes", ("web-proxy",)), WIDE, "c1", DEV, ADMIN_ANSWER, CATALOG)
    rules = out["status"]["resourceRules"]
    assert {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["web-*"]} in rules
    assert {"verbs": ["get", "create"], "apiGroups": [""], "resources": ["pods/portforward"], "resourceNames": ["web-*"]} in rules
    assert {"verbs": ["*"], "apiGroups": [""], "resources": ["pods/proxy"], "resourceNames": ["web-*"]} in rules
    assert {"verbs": ["get"], "apiGroups": [""], "resources": ["nodes"]} in rules  # cluster-scoped: listed
    assert not any("pods/exec" in r["resources"] for r in rules)
    assert out["status"]["incomplete"] is True and "web-*" in out["status"]["evaluationError"]
    other = dict(ADMIN_ANSWER, spec={"namespace": "prod"})
    rules = restrict_rules_review(Identity("wes", ("web-proxy",)), WIDE, "c1", DEV, other, CATALOG)["status"]["resourceRules"]
    assert not any(r["resources"][0].startswith("pods") for r in rules)  # the pods rule is for dev only
    assert {"verbs": ["get"], "apiGroups": [""], "resources": ["nodes"]} in rules

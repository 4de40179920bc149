"""Decisions per DESIGN §5: visibility, deny first, same-role allow, namespace scopes, filters,
impersonation, and the Status bodies of denials."""

from __future__ import annotations

import json

import pytest

from rbac import (
    ImpersonationRequest,
    ResourceCatalog,
    RoleSet,
    cluster_not_found_body,
    cluster_visible,
    decide,
    parse_request,
)
from rbac.identity import Identity
from rbac.roles import parse_roles_yaml

CATALOG = ResourceCatalog.builtin().merged(
    ResourceCatalog.from_discovery(
        [
            {
                "groupVersion": "example.com/v1",
                "resources": [{"name": "widgets", "namespaced": True, "kind": "Widget"}],
            }
        ]
    )
)


def role(name: str, allow: str = "", deny: str = "", labels: str = "{'*': '*'}") -> str:
    return f"""
kind: role
version: v8
metadata: {{name: {name}}}
spec:
  allow:
    kubernetes_labels: {labels}
{allow}
  deny:
{deny}
---
"""


ROLES = RoleSet(
    parse_roles_yaml(
        role(
            "viewer",
            "    kubernetes_resources: [{kind: '*', api_group: '*', namespace: '*', name: '*', verbs: [get, list, watch]}]\n"
            "    kubernetes_groups: [viewers]",
        )
        + role(
            "dev",
            "    kubernetes_resources:\n"
            "      - {kind: pods, api_group: '', namespace: dev, name: '*', verbs: [get, list, watch, exec]}\n"
            "      - {kind: namespaces, name: dev, verbs: ['*']}\n"
            "    kubernetes_groups: ['{{internal.kubernetes_groups}}', developers]",
            labels="{env: [dev, staging]}",
        )
        + role(
            "admin-no-secrets",
            "    kubernetes_resources: [{kind: '*', api_group: '*', namespace: '*', name: '*', verbs: ['*']}]\n"
            "    kubernetes_groups: [system:masters]",
            "    kubernetes_resources: [{kind: secrets, api_group: '', namespace: '*', name: '*', verbs: ['*']}]",
        )
        + role(
            "web-only",
            "    kubernetes_resources: [{kind: pods, api_group: '', namespace: '*', name: 'web-*', verbs: [get, list, watch]}]\n"
            "    kubernetes_users: [web-reader]",
        )
        + role(
            "labels-only",
            "    kubernetes_resources: [{kind: configmaps, api_group: '', namespace: '*', name: '*', verbs: [get]}]\n"
            "    kubernetes_groups: [lonely]",
            labels="{env: dev}",
        )
        + role(
            "resources-elsewhere",
            "    kubernetes_resources: [{kind: pods, api_group: '', namespace: '*', name: '*', verbs: ['*']}]",
            labels="{env: staging}",
        )
        + role("deny-prod-label", deny="    kubernetes_labels: {env: prod}", labels="{'*': '*'}")
        + role(
            "multi-user",
            "    kubernetes_resources: [{kind: pods, api_group: '', namespace: '*', name: '*', verbs: [get]}]\n"
            "    kubernetes_users: [ops, '{{external.kube_user}}']\n    kubernetes_groups: [g-a, g-b, g-secret]",
            "    kubernetes_groups: [g-secret]",
        )
        + role(
            "crd-explicit",
            "    kubernetes_resources:\n"
            "      - {kind: things, api_group: unknown.io, namespace: '*', name: '*', verbs: [get]}\n"
            "      - {kind: 'thi*', api_group: '*', namespace: '*', name: '*', verbs: [list]}",
        )
        + role(
            "no-exec-anywhere",
            deny="    kubernetes_resources: [{kind: pods, api_group: '', namespace: '*', name: '*', verbs: [exec]}]",
            labels="{nothing: here}",
        )
        + role(
            "dev-no-web-secret",
            "    kubernetes_resources: [{kind: configmaps, api_group: '', namespace: dev, name: '*', verbs: [list, get]}]",
            "    kubernetes_resources: [{kind: configmaps, api_group: '', namespace: dev, name: 'secret-*', verbs: ['*']}]",
        )
    )
)

DEV = {"env": "dev"}
PROD = {"env": "prod"}


def ident(*roles: str, user: str = "alice", **traits: tuple[str, ...]) -> Identity:
    return Identity(user, roles, dict(traits))


def check(
    identity: Identity,
    method: str,
    path: str,
    labels: dict | None = None,
    query: str = "",
    imp: ImpersonationRequest | None = None,
    cluster: str = "c1",
):
    return decide(
        identity,
        ROLES,
        cluster,
        DEV if labels is None else labels,
        parse_request(method, path, query, CATALOG),
        imp or ImpersonationRequest(),
    )


# --- visibility ----------------------------------------------------------------------------------


def test_cluster_visibility() -> None:
    assert cluster_visible(ident("dev"), ROLES, {"env": "dev"})
    assert cluster_visible(ident("dev"), ROLES, {"env": "staging", "x": "y"})
    assert not cluster_visible(ident("dev"), ROLES, {"env": "prod"})
    assert not cluster_visible(ident("dev"), ROLES, {})
    assert cluster_visible(ident("viewer"), ROLES, {})  # '*': '*'
    assert not cluster_visible(ident("viewer", "deny-prod-label"), ROLES, PROD)  # deny labels win
    assert cluster_visible(ident("viewer", "deny-prod-label"), ROLES, DEV)
    assert not cluster_visible(ident("no-such-role"), ROLES, DEV)
    pinned = Identity("bot", ("viewer",), pinned_cluster="c1")
    assert cluster_visible(pinned, ROLES, DEV, "c1") and not cluster_visible(pinned, ROLES, DEV, "c2")


def test_label_templates_expand_from_traits() -> None:
    roles = RoleSet(
        parse_roles_yaml(role("team", "    kubernetes_resources: []", labels="{team: '{{external.team}}'}"))
    )
    assert cluster_visible(Identity("a", ("team",), {"team": ("blue", "red")}), roles, {"team": "red"})
    assert not cluster_visible(Identity("a", ("team",), {"team": ("blue",)}), roles, {"team": "red"})
    assert not cluster_visible(Identity("a", ("team",), {}), roles, {"team": "red"})


def test_invisible_cluster_is_404_like_an_unknown_cluster() -> None:
    d = check(ident("dev"), "GET", "/api/v1/namespaces/dev/pods", labels=PROD, cluster="c9")
    assert (d.allowed, d.status, d.reason) == (False, 404, "cluster_not_visible")
    assert d.body == cluster_not_found_body("c9")
    body = json.loads(d.body)
    assert (
        body["reason"] == "NotFound" and body["code"] == 404 and body["message"] == 'cluster "c9" not found'
    )
    assert body["details"] == {
        "name": "c9",
        "kind": "clusters",
    }  # the same body the proxy gives an unknown cluster
    assert (
        check(Identity("b", ("viewer",), pinned_cluster="c1"), "GET", "/version", cluster="c2").status == 404
    )


# --- the scenarios ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("roles", "method", "path", "allowed", "filtered"),
    [
        (("viewer",), "GET", "/api/v1/pods", True, False),
        (("viewer",), "GET", "/api/v1/namespaces/prod/pods/web", True, False),
        (("viewer",), "POST", "/api/v1/namespaces/dev/pods/web/exec", False, False),
        (("viewer",), "GET", "/api/v1/namespaces/dev/pods/web/exec", False, False),
        (("viewer",), "DELETE", "/api/v1/namespaces/dev/pods/web", False, False),
        (("dev",), "POST", "/api/v1/namespaces/dev/pods/web/exec", True, False),
        (("dev",), "GET", "/api/v1/namespaces/dev/pods/web/attach", True, False),
        (("dev",), "POST", "/api/v1/namespaces/prod/pods/web/exec", False, False),
        (
            ("dev",),
            "POST",
            "/api/v1/namespaces/dev/pods/web/portforward",
            True,
            False,
        ),  # namespaces: dev, verbs *
        (("dev",), "GET", "/apis/apps/v1/namespaces/dev/deployments", True, False),  # whole namespace scope
        (("dev",), "DELETE", "/apis/apps/v1/namespaces/dev/deployments/x", True, False),
        (("dev",), "GET", "/apis/apps/v1/namespaces/prod/deployments", False, False),
        (
            ("dev",),
            "GET",
            "/apis/example.com/v1/namespaces/dev/widgets",
            True,
            False,
        ),  # CRD known to the catalog
        (
            ("dev",),
            "GET",
            "/apis/unknown.io/v1/namespaces/dev/things",
            False,
            False,
        ),  # unknown: not by a namespace scope
        (("dev",), "GET", "/api/v1/pods", True, True),  # all namespaces: only dev's pods
        (("dev",), "GET", "/api/v1/namespaces", True, True),
        (("dev",), "GET", "/api/v1/namespaces/dev", True, False),
        (("dev",), "GET", "/api/v1/namespaces/prod", False, False),
        (("admin-no-secrets",), "GET", "/api/v1/namespaces/dev/secrets", False, False),
        (("admin-no-secrets",), "GET", "/api/v1/secrets", False, False),
        (("admin-no-secrets",), "GET", "/api/v1/namespaces/dev/secrets/s", False, False),
        (("admin-no-secrets",), "GET", "/api/v1/namespaces/dev/configmaps", True, False),
        (
            ("admin-no-secrets", "viewer"),
            "GET",
            "/api/v1/namespaces/dev/secrets",
            False,
            False,
        ),  # deny wins over any allow
        (("web-only",), "GET", "/api/v1/namespaces/dev/pods", True, True),
        (("web-only",), "GET", "/api/v1/namespaces/dev/pods", True, True),
        (("web-only",), "GET", "/api/v1/namespaces/dev/pods/web-1", True, False),
        (("web-only",), "GET", "/api/v1/namespaces/dev/pods/db-1", False, False),
        (
            ("web-only",),
            "DELETE",
            "/api/v1/namespaces/dev/pods",
            False,
            False,
        ),  # deletecollection is never filtered
        (("web-only",), "GET", "/api/v1/namespaces/dev/configmaps", False, False),
        (
            ("labels-only", "resources-elsewhere"),
            "GET",
            "/api/v1/namespaces/dev/pods",
            False,
            False,
        ),  # not in the same role
        (
            ("no-exec-anywhere", "dev"),
            "POST",
            "/api/v1/namespaces/dev/pods/web/exec",
            False,
            False,
        ),  # deny of a role whose labels do not match
        (
            ("crd-explicit",),
            "GET",
            "/apis/unknown.io/v1/namespaces/a/things/t",
            True,
            False,
        ),  # unknown, named literally
        (
            ("crd-explicit",),
            "GET",
            "/apis/unknown.io/v1/namespaces/a/things",
            False,
            False,
        ),  # 'thi*' glob: not for unknown kinds
        (("viewer",), "GET", "/apis/unknown.io/v1/namespaces/a/things", True, False),  # kind '*'
        # an allow rule's api_group holds for unknown resources too: core pods are not made.up's pods
        (("dev",), "GET", "/apis/made.up/v1/namespaces/dev/pods", False, False),
        (("dev",), "GET", "/apis/made.up/v1/namespaces/dev/pods/web", False, False),
        (("web-only",), "GET", "/apis/made.up/v1/namespaces/dev/pods/web-1", False, False),
        (("web-only",), "GET", "/apis/made.up/v1/pods", False, False),
        (("crd-explicit",), "GET", "/apis/other.io/v1/namespaces/a/things/t", False, False),
        # an allow with api_group '*' still covers any group's unknown resources
        (("admin-no-secrets",), "GET", "/apis/made.up/v1/namespaces/dev/widgets", True, False),
        (
            ("dev-no-web-secret",),
            "GET",
            "/api/v1/namespaces/dev/configmaps",
            True,
            True,
        ),  # a partial deny filters
        (("dev-no-web-secret",), "GET", "/api/v1/namespaces/dev/configmaps/secret-1", False, False),
        (("dev-no-web-secret",), "GET", "/api/v1/namespaces/dev/configmaps/plain", True, False),
    ],
)
def test_decisions(roles: tuple[str, ...], method: str, path: str, allowed: bool, filtered: bool) -> None:
    d = check(ident(*roles), method, path)
    assert d.allowed is allowed, d.message
    assert (d.filter is not None) is filtered
    assert d.force_json is filtered
    assert d.status == (200 if allowed else 403)


def test_field_selector_on_one_name_needs_no_filter() -> None:
    d = check(
        ident("web-only"),
        "GET",
        "/api/v1/namespaces/dev/pods",
        query="fieldSelector=metadata.name%3Dweb-1&watch=1",
    )
    assert d.allowed and d.filter is None
    d = check(
        ident("web-only"),
        "GET",
        "/api/v1/namespaces/dev/pods",
        query="fieldSelector=metadata.name%3Ddb&watch=1",
    )
    assert not d.allowed


def test_filters_select_exactly_the_visible_items() -> None:
    f = check(ident("dev"), "GET", "/api/v1/pods").filter
    assert f is not None
    assert f.allows("dev", "anything") and not f.allows("prod", "anything")
    f = check(ident("web-only"), "GET", "/api/v1/pods", query="watch=1").filter
    assert f is not None and f.allows("x", "web-1") and not f.allows("x", "db")
    f = check(ident("dev"), "GET", "/api/v1/namespaces").filter
    assert f is not None and f.allows("", "dev") and not f.allows("", "prod")
    f = check(ident("dev-no-web-secret"), "GET", "/api/v1/namespaces/dev/configmaps").filter
    assert f is not None and f.allows("dev", "plain") and not f.allows("dev", "secret-x")


def test_non_resource_paths() -> None:
    for path in ("/api", "/apis", "/api/v1", "/apis/apps/v1", "/version", "/openapi/v2", "/healthz"):
        d = check(ident("web-only"), "GET", path)
        assert d.allowed and d.user == "web-reader", path
    d = check(ident("viewer"), "GET", "/metrics")
    assert not d.allowed and d.status == 403 and '"/metrics"' in d.message


def test_self_reviews_are_allowed_and_flagged() -> None:
    d = check(ident("web-only"), "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
    assert d.allowed and d.review == "selfsubjectaccessreviews"
    d = check(ident("web-only"), "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews")
    assert not d.allowed  # not a *self* review


# --- denial messages -------------------------------------------------------------------------------


def test_denial_message_names_the_missing_permission() -> None:
    d = check(ident("dev"), "POST", "/api/v1/namespaces/prod/pods/web/exec")
    assert (
        d.message
        == 'pods "web" is forbidden: kubegate role(s) of user "alice" do not allow "exec" on pods in namespace "prod" of cluster "c1"'
    )
    body = json.loads(d.body)
    assert body == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": d.message,
        "reason": "Forbidden", "details": {"name": "web", "kind": "pods"}, "code": 403,
    }  # fmt: skip
    d = check(ident("dev"), "GET", "/apis/apps/v1/namespaces/prod/deployments")
    assert d.message.startswith(
        'deployments.apps is forbidden: kubegate role(s) of user "alice" do not allow "list" on deployments.apps'
    )
    assert json.loads(d.body)["details"] == {"group": "apps", "kind": "deployments"}
    d = check(ident("admin-no-secrets"), "GET", "/api/v1/namespaces/dev/secrets/s")
    assert (
        d.reason == "denied_by_rule"
        and d.denied_by == "admin-no-secrets"
        and 'secrets "s" is forbidden' in d.message
    )
    d = check(ident("viewer"), "GET", "/apis/unknown.io/v1/nope")
    assert d.allowed
    d = check(ident("web-only"), "GET", "/apis/unknown.io/v1/nope")
    assert "unknown resource" in d.message


# --- impersonation ---------------------------------------------------------------------------------


def test_impersonation_defaults() -> None:
    d = check(ident("dev", kubernetes_groups=("g1", "g2")), "GET", "/api/v1/namespaces/dev/pods")
    assert d.user == "alice"  # no kubernetes_users → the kubegate user name
    assert d.groups == ("g1", "g2", "developers", "system:authenticated")
    d = check(ident("web-only"), "GET", "/api/v1/namespaces/dev/pods/web-1")
    assert (d.user, d.groups) == ("web-reader", ("system:authenticated",))


def test_empty_trait_values_are_no_principals() -> None:
    d = check(ident("dev", kubernetes_groups=("", "g1")), "GET", "/api/v1/namespaces/dev/pods")
    assert d.groups == ("g1", "developers", "system:authenticated")


def test_impersonation_unions_only_roles_that_grant_the_request() -> None:
    d = check(ident("viewer", "web-only"), "GET", "/api/v1/namespaces/dev/pods/web-1")
    assert d.user == "web-reader" and d.groups == ("viewers", "system:authenticated")
    d = check(
        ident("viewer", "web-only"), "GET", "/api/v1/namespaces/dev/configmaps/x"
    )  # web-only grants nothing here
    assert d.user == "alice" and d.groups == ("viewers", "system:authenticated")


def test_several_users_require_a_choice_within_the_set() -> None:
    me = ident("multi-user", kube_user=("me",))
    d = check(me, "GET", "/api/v1/namespaces/dev/pods/p")
    assert not d.allowed and d.status == 403 and "choose one" in d.message and "'ops'" in d.message
    d = check(me, "GET", "/api/v1/namespaces/dev/pods/p", imp=ImpersonationRequest(user="me"))
    assert (
        d.allowed and d.user == "me" and d.groups == ("g-a", "g-b", "system:authenticated")
    )  # denied group removed
    d = check(me, "GET", "/api/v1/namespaces/dev/pods/p", imp=ImpersonationRequest(user="root"))
    assert not d.allowed and d.reason == "impersonation_refused" and '"root"' in d.message
    d = check(
        me, "GET", "/api/v1/namespaces/dev/pods/p", imp=ImpersonationRequest(user="ops", groups=("g-b",))
    )
    assert d.allowed and (d.user, d.groups) == ("ops", ("g-b", "system:authenticated"))
    d = check(
        me, "GET", "/api/v1/namespaces/dev/pods/p", imp=ImpersonationRequest(user="ops", groups=("g-secret",))
    )
    assert not d.allowed and '"g-secret"' in d.message


def test_client_may_impersonate_its_own_name_when_no_users_are_listed() -> None:
    d = check(ident("dev"), "GET", "/api/v1/namespaces/dev/pods", imp=ImpersonationRequest(user="alice"))
    assert d.allowed and d.user == "alice"
    assert not check(
        ident("dev"), "GET", "/api/v1/namespaces/dev/pods", imp=ImpersonationRequest(user="bob")
    ).allowed


@pytest.mark.parametrize(
    "imp", [ImpersonationRequest(uid="123"), ImpersonationRequest(extra_keys=("scopes",))]
)
def test_uid_and_extra_impersonation_are_refused(imp: ImpersonationRequest) -> None:
    d = check(ident("viewer"), "GET", "/api/v1/pods", imp=imp)
    assert not d.allowed and d.status == 403 and d.reason == "impersonation_refused"
    assert json.loads(d.body)["reason"] == "Forbidden"


def test_impersonation_request_from_headers() -> None:
    imp = ImpersonationRequest.from_headers(
        [
            (b"Impersonate-User", b"ops"),
            ("impersonate-group", "a"),
            ("Impersonate-Group", "b"),
            ("Accept", "x"),
            (b"Impersonate-Extra-Scopes", b"s"),
        ]
    )
    assert imp == ImpersonationRequest("ops", ("a", "b"), None, ("scopes",))
    assert imp.requested and not ImpersonationRequest.from_headers([("Accept", "*/*")]).requested


# --- the proxy verb (Teleport v19) -----------------------------------------------------------------

PROXY_ROLES = RoleSet(
    parse_roles_yaml(
        role(
            "getter",
            "    kubernetes_resources:\n"
            "      - {kind: pods, api_group: '', namespace: dev, name: '*', verbs: [get, list, create]}\n"
            "      - {kind: services, api_group: '', namespace: dev, name: '*', verbs: [get, list]}\n"
            "      - {kind: nodes, api_group: '', name: '*', verbs: [get, list]}",
        )
        + role(
            "proxier",
            "    kubernetes_resources:\n"
            "      - {kind: pods, api_group: '', namespace: dev, name: '*', verbs: [proxy]}\n"
            "      - {kind: services, api_group: '', namespace: dev, name: 'web', verbs: [proxy]}\n"
            "      - {kind: nodes, api_group: '', name: '*', verbs: [proxy]}",
        )
        + role(
            "star",
            "    kubernetes_resources: [{kind: '*', api_group: '*', namespace: '*', name: '*', verbs: ['*']}]",
        )
    )
)

PROXY_PATHS = [
    ("GET", "/api/v1/namespaces/dev/pods/web/proxy/metrics"),
    ("POST", "/api/v1/namespaces/dev/pods/web/proxy/"),
    ("GET", "/api/v1/namespaces/dev/services/web/proxy"),
    ("GET", "/api/v1/namespaces/dev/services/web:8080/proxy/healthz"),
    ("GET", "/api/v1/nodes/n1/proxy/metrics"),
]


@pytest.mark.parametrize(("method", "path"), PROXY_PATHS)
@pytest.mark.parametrize(
    ("roles", "allowed"),
    [(("getter",), False), (("star",), True)],
)
def test_proxying_needs_the_proxy_verb_and_get_does_not_grant_it(
    roles: tuple[str, ...], allowed: bool, method: str, path: str
) -> None:
    d = decide(ident(*roles), PROXY_ROLES, "c1", DEV, parse_request(method, path, "", CATALOG))
    assert d.allowed is allowed, d.message
    if not allowed:
        assert 'do not allow "proxy"' in d.message


def test_the_proxy_verb_grants_proxying_only() -> None:
    def allowed(method: str, path: str) -> bool:
        return decide(ident("proxier"), PROXY_ROLES, "c1", DEV, parse_request(method, path, "", CATALOG)).allowed

    assert allowed("GET", "/api/v1/namespaces/dev/pods/db-0/proxy/metrics")
    assert allowed("GET", "/api/v1/nodes/n1/proxy/metrics")
    assert allowed("GET", "/api/v1/namespaces/dev/services/web/proxy/")
    assert not allowed("GET", "/api/v1/namespaces/dev/services/api/proxy/")  # name-restricted
    assert not allowed("GET", "/api/v1/namespaces/prod/pods/db-0/proxy/metrics")
    assert not allowed("GET", "/api/v1/namespaces/dev/pods/db-0")  # proxy is not get
    assert not allowed("GET", "/api/v1/namespaces/dev/pods/db-0/log")


def test_roles_accept_the_proxy_verb() -> None:
    (r,) = parse_roles_yaml(role("p", "    kubernetes_resources: [{kind: pods, api_group: '', namespace: '*', verbs: [proxy]}]"))
    assert r.allow.kubernetes_resources[0].verbs == ("proxy",)

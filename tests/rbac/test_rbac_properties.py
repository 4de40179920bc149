"""Property tests of the decision engine: deny always wins; adding an allow rule never removes access;
adding a deny rule never adds access (including per item, for filtered lists and watches)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from rbac import ResourceCatalog, RoleSet, decide, parse_request
from rbac.identity import Identity
from rbac.roles import Conditions, ResourceRule, Role

CATALOG = ResourceCatalog.builtin()
LABELS = {"env": "dev"}
ITEMS = [
    ("dev", "web"),
    ("dev", "db"),
    ("prod", "web"),
    ("prod", "api"),
    ("kube-system", "dns"),
    ("", "dev"),
    ("", "prod"),
]

kinds = st.sampled_from(
    ["pods", "configmaps", "secrets", "deployments", "namespaces", "nodes", "*", "p*", "widgets"]
)
groups = st.sampled_from(["", "apps", "*"])
namespaces = st.sampled_from(["dev", "prod", "*", "d*", "^p.*$", ""])
names = st.sampled_from(["web", "db", "*", "w*", "^d.+$"])
verb_lists = st.one_of(
    st.just(("*",)),
    st.lists(
        st.sampled_from(["get", "list", "watch", "create", "delete", "deletecollection", "exec", "patch"]),
        min_size=1,
        max_size=3,
        unique=True,
    ).map(tuple),
)
rules = st.builds(ResourceRule, kinds, groups, namespaces, names, verb_lists)
label_selectors = st.sampled_from([{"*": ("*",)}, {"env": ("dev",)}, {"env": ("prod",)}, {"env": ("d*",)}])


@st.composite
def roles(draw: st.DrawFn, name: str) -> Role:
    allow = Conditions(draw(label_selectors), tuple(draw(st.lists(rules, max_size=3))), ("g",), ())
    deny = Conditions({}, tuple(draw(st.lists(rules, max_size=1))), (), ())
    return Role(name, "v8", allow, deny)


role_sets = st.lists(st.sampled_from(["r0", "r1", "r2"]), min_size=1, max_size=3, unique=True).flatmap(
    lambda ns: st.tuples(*[roles(n) for n in ns])
)

REQUESTS = [
    ("GET", "/api/v1/namespaces/dev/pods"), ("GET", "/api/v1/pods"), ("GET", "/api/v1/pods?watch=1"),
    ("GET", "/api/v1/namespaces/dev/pods/web"), ("GET", "/api/v1/namespaces/prod/pods/db"),
    ("POST", "/api/v1/namespaces/dev/pods/web/exec"), ("DELETE", "/api/v1/namespaces/dev/pods"),
    ("DELETE", "/api/v1/namespaces/prod/configmaps/web"), ("GET", "/api/v1/namespaces/dev/secrets"),
    ("GET", "/apis/apps/v1/deployments"), ("PATCH", "/apis/apps/v1/namespaces/dev/deployments/web"),
    ("GET", "/api/v1/namespaces"), ("GET", "/api/v1/namespaces/dev"), ("DELETE", "/api/v1/namespaces/prod"),
    ("GET", "/api/v1/nodes"), ("GET", "/api/v1/nodes/web"), ("POST", "/api/v1/namespaces/dev/configmaps"),
    ("GET", "/apis/unknown.io/v1/namespaces/dev/widgets/web"), ("GET", "/apis/unknown.io/v1/widgets"),
]  # fmt: skip
requests = st.sampled_from(REQUESTS)


def outcome(role_list: tuple[Role, ...], request: tuple[str, str]) -> tuple[bool, frozenset[tuple[str, str]]]:
    """(allowed, the items visible): unfiltered allowed → every item."""
    identity = Identity("alice", tuple(r.name for r in role_list))
    method, path = request
    d = decide(identity, RoleSet(role_list), "c1", LABELS, parse_request(method, path, None, CATALOG))
    if not d.allowed:
        return False, frozenset()
    if d.filter is None:
        return True, frozenset(ITEMS)
    return True, frozenset(i for i in ITEMS if d.filter.allows(*i))


@settings(max_examples=250, deadline=None)
@given(role_sets, requests, rules, st.integers(0, 2))
def test_adding_an_allow_rule_never_removes_access(role_list, request, rule, which) -> None:
    before = outcome(role_list, request)
    target = role_list[which % len(role_list)]
    grown = replace(
        target, allow=replace(target.allow, kubernetes_resources=(*target.allow.kubernetes_resources, rule))
    )
    after = outcome(tuple(grown if r is target else r for r in role_list), request)
    assert before[0] <= after[0]
    assert before[1] <= after[1]


@settings(max_examples=250, deadline=None)
@given(role_sets, requests, rules, st.integers(0, 2))
def test_adding_a_deny_rule_never_adds_access(role_list, request, rule, which) -> None:
    before = outcome(role_list, request)
    target = role_list[which % len(role_list)]
    grown = replace(
        target, deny=replace(target.deny, kubernetes_resources=(*target.deny.kubernetes_resources, rule))
    )
    after = outcome(tuple(grown if r is target else r for r in role_list), request)
    assert after[0] <= before[0]
    assert after[1] <= before[1]


@settings(max_examples=250, deadline=None)
@given(role_sets, requests, st.integers(0, 2))
def test_a_deny_rule_matching_the_request_always_wins(role_list, request, which) -> None:
    method, path = request
    info = parse_request(method, path, None, CATALOG)
    deny = ResourceRule(info.resource, info.api_group, "*", "*", (info.verb,))
    target = role_list[which % len(role_list)]
    grown = replace(target, deny=replace(target.deny, kubernetes_resources=(deny,)))
    allowed, _ = outcome(tuple(grown if r is target else r for r in role_list), request)
    assert not allowed


@settings(max_examples=200, deadline=None)
@given(role_sets, st.integers(0, 2))
def test_filtered_items_agree_with_single_object_decisions(role_list, which) -> None:
    """An item a filtered list shows is one a GET of that object would allow (for the same verb family)."""
    identity = Identity("alice", tuple(r.name for r in role_list))
    rs = RoleSet(role_list)
    d = decide(identity, rs, "c1", LABELS, parse_request("GET", "/api/v1/pods", None, CATALOG))
    if not d.allowed or d.filter is None:
        return
    for ns, name in ITEMS:
        if not ns:
            continue
        single = decide(
            identity,
            rs,
            "c1",
            LABELS,
            parse_request(
                "GET", f"/api/v1/namespaces/{ns}/pods", f"fieldSelector=metadata.name%3D{name}", CATALOG
            ),
        )
        assert d.filter.allows(ns, name) == single.allowed, (ns, name)

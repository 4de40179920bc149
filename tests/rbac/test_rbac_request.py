"""Request parsing: every URL shape of the Kubernetes API → (verb, group, version, resource, subresource,
namespace, name), plus non-resource paths and CRDs from a discovery-built catalog."""

from __future__ import annotations

import pytest

from rbac.catalog import ResourceCatalog
from rbac.request import RequestParseError, parse_request

CRD_DOCS = [
    {
        "kind": "APIResourceList",
        "groupVersion": "example.com/v1",
        "resources": [
            {
                "name": "widgets",
                "singularName": "widget",
                "namespaced": True,
                "kind": "Widget",
                "verbs": ["get", "list"],
                "shortNames": ["wd"],
            },
            {
                "name": "widgets/status",
                "singularName": "",
                "namespaced": True,
                "kind": "Widget",
                "verbs": ["get", "patch"],
            },
            {
                "name": "gadgets",
                "singularName": "gadget",
                "namespaced": False,
                "kind": "Gadget",
                "verbs": ["get"],
            },
        ],
    }
]
CATALOG = ResourceCatalog.builtin().merged(ResourceCatalog.from_discovery(CRD_DOCS))

# method, path, query → verb, group, version, resource, subresource, namespace, name, namespaced, known
CASES = [
    # core, namespaced
    ("GET", "/api/v1/namespaces/dev/pods", "", ("list", "", "v1", "pods", "", "dev", "", True, True)),
    ("GET", "/api/v1/namespaces/dev/pods/web", "", ("get", "", "v1", "pods", "", "dev", "web", True, True)),
    ("HEAD", "/api/v1/namespaces/dev/pods/web", "", ("get", "", "v1", "pods", "", "dev", "web", True, True)),
    ("GET", "/api/v1/pods", "", ("list", "", "v1", "pods", "", "", "", True, True)),
    ("GET", "/api/v1/pods", "watch=true", ("watch", "", "v1", "pods", "", "", "", True, True)),
    ("GET", "/api/v1/pods", "watch=1&resourceVersion=5", ("watch", "", "v1", "pods", "", "", "", True, True)),
    ("GET", "/api/v1/pods", "watch=false", ("list", "", "v1", "pods", "", "", "", True, True)),
    (
        "GET",
        "/api/v1/namespaces/dev/pods",
        "watch=True",
        ("watch", "", "v1", "pods", "", "dev", "", True, True),
    ),
    ("GET", "/api/v1/watch/pods", "", ("watch", "", "v1", "pods", "", "", "", True, True)),
    ("GET", "/api/v1/watch/namespaces/dev/pods", "", ("watch", "", "v1", "pods", "", "dev", "", True, True)),
    (
        "GET",
        "/api/v1/watch/namespaces/dev/pods/web",
        "",
        ("watch", "", "v1", "pods", "", "dev", "web", True, True),
    ),
    (
        "GET",
        "/api/v1/namespaces/dev/pods",
        "fieldSelector=metadata.name%3Dweb&watch=1",
        ("watch", "", "v1", "pods", "", "dev", "web", True, True),
    ),
    (
        "GET",
        "/api/v1/namespaces/dev/pods",
        "fieldSelector=metadata.name%3D%3Dweb",
        ("list", "", "v1", "pods", "", "dev", "web", True, True),
    ),
    (
        "GET",
        "/api/v1/namespaces/dev/pods",
        "fieldSelector=metadata.name%3Dweb,status.phase%3DRunning",
        ("list", "", "v1", "pods", "", "dev", "", True, True),
    ),
    (
        "GET",
        "/api/v1/namespaces/dev/pods",
        "fieldSelector=metadata.name%21%3Dweb",
        ("list", "", "v1", "pods", "", "dev", "", True, True),
    ),
    ("POST", "/api/v1/namespaces/dev/pods", "", ("create", "", "v1", "pods", "", "dev", "", True, True)),
    (
        "PUT",
        "/api/v1/namespaces/dev/pods/web",
        "",
        ("update", "", "v1", "pods", "", "dev", "web", True, True),
    ),
    (
        "PATCH",
        "/api/v1/namespaces/dev/pods/web",
        "",
        ("patch", "", "v1", "pods", "", "dev", "web", True, True),
    ),
    (
        "DELETE",
        "/api/v1/namespaces/dev/pods/web",
        "",
        ("delete", "", "v1", "pods", "", "dev", "web", True, True),
    ),
    (
        "DELETE",
        "/api/v1/namespaces/dev/pods",
        "",
        ("deletecollection", "", "v1", "pods", "", "dev", "", True, True),
    ),
    (
        "DELETE",
        "/api/v1/namespaces/dev/pods",
        "labelSelector=app%3Dweb",
        ("deletecollection", "", "v1", "pods", "", "dev", "", True, True),
    ),
    # pod subresources
    (
        "POST",
        "/api/v1/namespaces/dev/pods/web/exec",
        "command=sh&stdin=true",
        ("exec", "", "v1", "pods", "exec", "dev", "web", True, True),
    ),
    (
        "GET",
        "/api/v1/namespaces/dev/pods/web/exec",
        "command=sh",
        ("exec", "", "v1", "pods", "exec", "dev", "web", True, True),
    ),
    (
        "POST",
        "/api/v1/namespaces/dev/pods/web/attach",
        "",
        ("exec", "", "v1", "pods", "attach", "dev", "web", True, True),
    ),
    (
        "GET",
        "/api/v1/namespaces/dev/pods/web/attach",
        "",
        ("exec", "", "v1", "pods", "attach", "dev", "web", True, True),
    ),
    (
        "POST",
        "/api/v1/namespaces/dev/pods/web/portforward",
        "",
        ("portforward", "", "v1", "pods", "portforward", "dev", "web", True, True),
    ),
    (
        "GET",
        "/api/v1/namespaces/dev/pods/web/portforward",
        "ports=80",
        ("portforward", "", "v1", "pods", "portforward", "dev", "web", True, True),
    ),
    (
        "GET",
        "/api/v1/namespaces/dev/pods/web/log",
        "follow=true",
        ("get", "", "v1", "pods", "log", "dev", "web", True, True),
    ),
    (
        "PATCH",
        "/api/v1/namespaces/dev/pods/web/status",
        "",
        ("patch", "", "v1", "pods", "status", "dev", "web", True, True),
    ),
    (
        "POST",
        "/api/v1/namespaces/dev/pods/web/eviction",
        "",
        ("create", "", "v1", "pods", "eviction", "dev", "web", True, True),
    ),
    (
        "PATCH",
        "/api/v1/namespaces/dev/pods/web/ephemeralcontainers",
        "",
        ("patch", "", "v1", "pods", "ephemeralcontainers", "dev", "web", True, True),
    ),
    (
        "GET",
        "/api/v1/namespaces/dev/pods/web/proxy/healthz/x",
        "",
        ("proxy", "", "v1", "pods", "proxy", "dev", "web", True, True),
    ),
    (
        "GET",
        "/api/v1/namespaces/dev/services/web/proxy",
        "",
        ("proxy", "", "v1", "services", "proxy", "dev", "web", True, True),
    ),
    (
        "POST",
        "/api/v1/namespaces/dev/serviceaccounts/default/token",
        "",
        ("create", "", "v1", "serviceaccounts", "token", "dev", "default", True, True),
    ),
    # cluster-scoped, incl. subresources
    ("GET", "/api/v1/nodes", "", ("list", "", "v1", "nodes", "", "", "", False, True)),
    ("GET", "/api/v1/nodes/n1", "", ("get", "", "v1", "nodes", "", "", "n1", False, True)),
    ("GET", "/api/v1/nodes/n1/proxy/metrics", "", ("proxy", "", "v1", "nodes", "proxy", "", "n1", False, True)),
    ("POST", "/api/v1/nodes/n1/proxy/x", "", ("proxy", "", "v1", "nodes", "proxy", "", "n1", False, True)),
    (
        "DELETE",
        "/api/v1/namespaces/dev/services/https:web:443/proxy/api",
        "",
        ("proxy", "", "v1", "services", "proxy", "dev", "https:web:443", True, True),
    ),
    ("PATCH", "/api/v1/nodes/n1/status", "", ("patch", "", "v1", "nodes", "status", "", "n1", False, True)),
    ("GET", "/api/v1/namespaces", "", ("list", "", "v1", "namespaces", "", "", "", False, True)),
    ("GET", "/api/v1/watch/namespaces", "", ("watch", "", "v1", "namespaces", "", "", "", False, True)),
    ("GET", "/api/v1/namespaces/dev", "", ("get", "", "v1", "namespaces", "", "", "dev", False, True)),
    ("DELETE", "/api/v1/namespaces/dev", "", ("delete", "", "v1", "namespaces", "", "", "dev", False, True)),
    (
        "PUT",
        "/api/v1/namespaces/dev/status",
        "",
        ("update", "", "v1", "namespaces", "status", "", "dev", False, True),
    ),
    (
        "PUT",
        "/api/v1/namespaces/dev/finalize",
        "",
        ("update", "", "v1", "namespaces", "finalize", "", "dev", False, True),
    ),
    (
        "GET",
        "/api/v1/persistentvolumes/pv1",
        "",
        ("get", "", "v1", "persistentvolumes", "", "", "pv1", False, True),
    ),
    (
        "GET",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin",
        "",
        ("get", "rbac.authorization.k8s.io", "v1", "clusterroles", "", "", "admin", False, True),
    ),
    (
        "PUT",
        "/apis/certificates.k8s.io/v1/certificatesigningrequests/c1/approval",
        "",
        (
            "update",
            "certificates.k8s.io",
            "v1",
            "certificatesigningrequests",
            "approval",
            "",
            "c1",
            False,
            True,
        ),
    ),
    (
        "GET",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "",
        ("list", "apiextensions.k8s.io", "v1", "customresourcedefinitions", "", "", "", False, True),
    ),
    # named groups
    (
        "GET",
        "/apis/apps/v1/namespaces/dev/deployments",
        "",
        ("list", "apps", "v1", "deployments", "", "dev", "", True, True),
    ),
    (
        "GET",
        "/apis/apps/v1/deployments",
        "watch=1",
        ("watch", "apps", "v1", "deployments", "", "", "", True, True),
    ),
    (
        "GET",
        "/apis/apps/v1/watch/namespaces/dev/deployments/web",
        "",
        ("watch", "apps", "v1", "deployments", "", "dev", "web", True, True),
    ),
    (
        "PUT",
        "/apis/apps/v1/namespaces/dev/deployments/web/scale",
        "",
        ("update", "apps", "v1", "deployments", "scale", "dev", "web", True, True),
    ),
    (
        "PATCH",
        "/apis/apps/v1/namespaces/dev/deployments/web",
        "",
        ("patch", "apps", "v1", "deployments", "", "dev", "web", True, True),
    ),
    (
        "DELETE",
        "/apis/batch/v1/namespaces/dev/jobs",
        "",
        ("deletecollection", "batch", "v1", "jobs", "", "dev", "", True, True),
    ),
    (
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        "",
        ("create", "authorization.k8s.io", "v1", "selfsubjectaccessreviews", "", "", "", False, True),
    ),
    (
        "GET",
        "/apis/autoscaling/v2/namespaces/dev/horizontalpodautoscalers/h",
        "",
        ("get", "autoscaling", "v2", "horizontalpodautoscalers", "", "dev", "h", True, True),
    ),
    # CRDs from discovery, and unknown resources (shape from the URL)
    (
        "GET",
        "/apis/example.com/v1/namespaces/dev/widgets",
        "",
        ("list", "example.com", "v1", "widgets", "", "dev", "", True, True),
    ),
    (
        "PATCH",
        "/apis/example.com/v1/namespaces/dev/widgets/w1/status",
        "",
        ("patch", "example.com", "v1", "widgets", "status", "dev", "w1", True, True),
    ),
    (
        "GET",
        "/apis/example.com/v1/gadgets/g1",
        "",
        ("get", "example.com", "v1", "gadgets", "", "", "g1", False, True),
    ),
    (
        "GET",
        "/apis/unknown.io/v1/namespaces/dev/things/t",
        "",
        ("get", "unknown.io", "v1", "things", "", "dev", "t", True, False),
    ),
    (
        "GET",
        "/apis/unknown.io/v1/things",
        "",
        ("list", "unknown.io", "v1", "things", "", "", "", False, False),
    ),
    # trailing slash and escaped names
    ("GET", "/api/v1/namespaces/dev/pods/", "", ("list", "", "v1", "pods", "", "dev", "", True, True)),
    (
        "GET",
        "/api/v1/namespaces/dev/configmaps/a%3Ab",
        "",
        ("get", "", "v1", "configmaps", "", "dev", "a:b", True, True),
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"), CASES, ids=[f"{c[0]} {c[1]}?{c[2]}" for c in CASES]
)
def test_resource_paths(method: str, path: str, query: str, expected: tuple) -> None:
    info = parse_request(method, path, query, CATALOG)
    assert info.is_resource_request
    got = (
        info.verb,
        info.api_group,
        info.api_version,
        info.resource,
        info.subresource,
        info.namespace,
        info.name,
        info.namespaced,
        info.known,
    )
    assert got == expected


def test_query_in_path_and_mapping_queries_are_understood() -> None:
    assert parse_request("GET", "/api/v1/pods?watch=1", None, CATALOG).verb == "watch"
    assert parse_request("GET", "/api/v1/pods", {"watch": "true"}, CATALOG).verb == "watch"
    assert parse_request("GET", "/api/v1/pods", b"watch=1", CATALOG).verb == "watch"


def test_kubernetes_verb_differs_from_kubegate_verb_for_exec() -> None:
    info = parse_request("POST", "/api/v1/namespaces/dev/pods/web/exec", "", CATALOG)
    assert (info.verb, info.k8s_verb) == ("exec", "create")


def test_the_proxy_subresource_is_verb_proxy_whatever_the_method() -> None:
    # Teleport v19: pods|services|nodes/{name}/proxy/... are authorised as "proxy", never as get/create
    for method, k8s_verb in (("GET", "get"), ("POST", "create"), ("PUT", "update"), ("PATCH", "patch")):
        info = parse_request(method, "/api/v1/namespaces/dev/pods/web/proxy/metrics", "", CATALOG)
        assert (info.verb, info.k8s_verb) == ("proxy", k8s_verb)


def test_create_name_from_body() -> None:
    info = parse_request(
        "POST", "/api/v1/namespaces/dev/configmaps", "", CATALOG, body=b'{"metadata":{"name":"cm1"}}'
    )
    assert info.name == "cm1"
    assert (
        parse_request("POST", "/api/v1/namespaces/dev/configmaps", "", CATALOG, body=b"not json").name == ""
    )


@pytest.mark.parametrize(
    ("path", "discovery"),
    [
        ("/api", True), ("/api/", True), ("/api/v1", True), ("/apis", True), ("/apis/apps", True),
        ("/apis/apps/v1", True), ("/version", True), ("/openapi/v2", True), ("/openapi/v3", True),
        ("/openapi/v3/apis/apps/v1", True), ("/healthz", True), ("/healthz/etcd", True), ("/livez", True),
        ("/readyz", True), ("/", False), ("/metrics", False), ("/logs/", False), ("/debug/pprof", False),
    ],
)  # fmt: skip
def test_non_resource_paths(path: str, discovery: bool) -> None:
    info = parse_request("GET", path, "", CATALOG)
    assert not info.is_resource_request
    assert info.is_discovery is discovery
    assert parse_request("POST", path, "", CATALOG).is_discovery is False


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("GET", "api/v1/pods", 404),
        ("GET", "/api/v1/namespaces/dev/pods/web/exec/more", 404),
        ("GET", "/api/v1/namespaces/dev/nodes/n1", 404),  # cluster-scoped under a namespace
        ("GET", "/api/v1/pods/web", 404),  # namespaced object without a namespace
        ("GET", "/api/v1/namespaces/dev/pods/web/nosuchsub", 404),
        ("GET", "/api/v1/namespaces/dev/pods/../secrets", 404),
        ("GET", "/api/v1/watch", 404),
        ("OPTIONS", "/api/v1/pods", 405),
        ("TRACE", "/api/v1/namespaces/dev/pods/x", 405),
        # path tricks: encoded dots, double encoding, '\\', '?' / '#', case, ';' parameters, bad UTF-8
        ("GET", "/api/v1/namespaces/dev/pods/%2E%2E/secrets", 404),
        ("GET", "/api/v1/namespaces/dev/pods/%2e", 404),
        ("GET", "/api/v1/namespaces/dev/pods//web", 404),
        ("GET", "/api/v1/namespaces/dev/secrets%252Fx", 400),
        ("GET", "/api/v1/namespaces/dev/pods/web%5C..%5Csecrets", 400),
        ("GET", "/api/v1/namespaces/dev/pods/web\\x", 400),
        ("GET", "/api/v1/namespaces/dev/secrets%3Fwatch=1", 400),
        ("GET", "/api/v1/namespaces/dev/secrets%23x", 400),
        ("GET", "/api/v1/namespaces/dev/pods/web%00", 400),
        ("GET", "/api/v1/namespaces/dev/%FF", 400),
        ("GET", "/api/v1/namespaces/dev/Secrets", 404),
        ("GET", "/api/V1/namespaces/dev/secrets", 404),
        ("GET", "/apis/Apps/v1/namespaces/dev/deployments", 404),
        ("GET", "/api/v1/Namespaces/dev/secrets", 404),
        ("GET", "/api/v1/namespaces/dev/pods/web/EXEC", 404),
        ("GET", "/api/v1/namespaces/dev/secrets;x=1", 404),
        ("GET", "/api/v1/namespaces/dev/secrets%3Bx", 404),
    ],
)
def test_invalid_requests(method: str, path: str, code: int) -> None:
    with pytest.raises(RequestParseError) as info:
        parse_request(method, path, "", CATALOG)
    assert info.value.code == code


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # decoded THEN split, as the apiserver does: %2F separates segments exactly as upstream
        ("/api/v1/namespaces/dev%2Fsecrets", ("list", "secrets", "dev", "", "")),
        ("/api/v1/namespaces%2Fdev%2Fsecrets%2Fdb", ("get", "secrets", "dev", "db", "")),
        ("/api/v1/namespaces/dev/pods/web%2Fexec", ("exec", "pods", "dev", "web", "exec")),
        ("/api/v1/namespaces/dev/pods/web-%31", ("get", "pods", "dev", "web-1", "")),
        ("/api/v1/namespaces/dev/pods/web/proxy/a%2Fb%25c", ("proxy", "pods", "dev", "web", "proxy")),
    ],
)
def test_percent_encoding_is_decoded_before_the_path_is_split(path: str, expected: tuple) -> None:
    info = parse_request("GET", path, "", CATALOG)
    assert (info.verb, info.resource, info.namespace, info.name, info.subresource) == expected


@pytest.mark.parametrize(
    ("query", "verb"),
    [
        ("watch=true", "watch"), ("watch=1", "watch"), ("watch=yes", "watch"), ("watch=True", "watch"),
        ("watch=0", "list"), ("watch=false", "list"), ("watch=", "list"), ("watch=false&watch=true", "list"),
        ("watch=on&watch=false", "watch"),
    ],
)  # fmt: skip
def test_watch_is_read_like_the_apiserver_first_value_anything_but_false(query: str, verb: str) -> None:
    assert parse_request("GET", "/api/v1/namespaces/dev/pods", query, CATALOG).verb == verb


def test_only_a_single_field_selector_names_the_object() -> None:
    # the apiserver reads the first fieldSelector: a second one must not make kubegate think "web-1 only"
    two = "fieldSelector=metadata.namespace%3Ddev&fieldSelector=metadata.name%3Dweb-1"
    assert parse_request("GET", "/api/v1/namespaces/dev/pods", two, CATALOG).name == ""
    one = "fieldSelector=metadata.name%3Dweb-1"
    assert parse_request("GET", "/api/v1/namespaces/dev/pods", one, CATALOG).name == "web-1"


@pytest.mark.parametrize(
    "query",
    [
        "fieldSelector=metadata.name%3Dweb-1;x",  # Go's url.ParseQuery drops a pair holding ';'
        "fieldSelector=metadata.name%3Dweb-1%ZZ",  # ... and one with a bad escape
        "fieldSelector=metadata.name%3Dweb-1%2",
    ],
)
def test_query_pairs_the_apiserver_drops_are_dropped(query: str) -> None:
    # the apiserver would list every pod: kubegate must not take the list for "web-1 only"
    info = parse_request("GET", "/api/v1/namespaces/dev/pods", query + "&limit=5", CATALOG)
    assert info.verb == "list" and info.name == "" and info.is_collection
    assert parse_request("GET", "/api/v1/namespaces/dev/pods", "watch=1;x", CATALOG).verb == "list"


def test_catalog_from_discovery_and_lookup_by_alias() -> None:
    docs = [
        {"groupVersion": "v1", "resources": [
            {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod", "shortNames": ["po"], "verbs": ["get"]},
            {"name": "pods/exec", "namespaced": True, "kind": "PodExecOptions", "verbs": ["create", "get"]},
            {"name": "nodes", "singularName": "node", "namespaced": False, "kind": "Node", "shortNames": ["no"]},
        ]},
        {"groupVersion": "example.com/v1beta1", "resources": [{"name": "widgets", "namespaced": True, "kind": "Widget"}]},
        {"groupVersion": "example.com/v1", "resources": [{"name": "widgets", "namespaced": True, "kind": "Widget"}]},
        {"garbage": True}, "not a dict",
    ]  # fmt: skip
    cat = ResourceCatalog.from_discovery(docs)  # type: ignore[arg-type]
    pods = cat.get("", "pods")
    assert (
        pods is not None
        and pods.namespaced
        and pods.kind == "Pod"
        and pods.subresources == frozenset({"exec"})
    )
    assert cat.is_namespaced("", "nodes") is False and cat.is_namespaced("", "nope") is None
    assert [i.plural for i in cat.find("po")] == ["pods"] and [i.plural for i in cat.find("Pod")] == ["pods"]
    assert [i.plural for i in cat.find("node")] == ["nodes"]
    widgets = cat.get("example.com", "widgets")
    assert (
        widgets is not None
        and widgets.versions == ("v1beta1", "v1")
        and widgets.group_resource == "widgets.example.com"
    )
    assert len(ResourceCatalog.builtin()) > 50

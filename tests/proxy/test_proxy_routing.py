"""Routing: /k8s/clusters/<name>/<rest> → cluster and upstream target (pure)."""

from __future__ import annotations

import pytest

from discovery.model import Cluster
from proxy.routing import pinned_route, split_target, upstream_address, upstream_target


@pytest.mark.parametrize(
    ("target", "name", "upstream", "query"),
    [
        ("/k8s/clusters/prod/api/v1/pods", "prod", "/api/v1/pods", ""),
        ("/k8s/clusters/prod/api/v1/pods?watch=1&rv=5", "prod", "/api/v1/pods?watch=1&rv=5", "watch=1&rv=5"),
        ("/k8s/clusters/prod", "prod", "/", ""),
        ("/k8s/clusters/prod/", "prod", "/", ""),
        ("/k8s/clusters/prod?x=1", "prod", "/?x=1", "x=1"),
        ("/k8s/clusters/my%20cluster/version", "my cluster", "/version", ""),
        ("/k8s/clusters/eks-us-east-1/apis/apps/v1/namespaces/a/deployments/b/scale", "eks-us-east-1",
         "/apis/apps/v1/namespaces/a/deployments/b/scale", ""),
    ],
)
def test_cluster_prefix_is_stripped(target, name, upstream, query):
    route = split_target(target)
    assert route is not None
    assert (route.cluster_name, route.target, route.query) == (name, upstream, query)


@pytest.mark.parametrize(
    "target",
    ["/api/v1/pods", "/k8s/clusters/", "/k8s/clusters//api", "/k8s/clusters/../api", "/k8s/clusters/a/../b/api",
     "/k8s/clusters/a/./api", "/k8s/cluster/a/api", "/k8s/clusters/a%2Fb/api"],
)
def test_paths_without_a_proper_cluster_prefix_are_not_routed(target):
    assert split_target(target) is None


def test_cluster_base_path_is_kept():
    cluster = Cluster(name="c", labels={}, server="https://rancher.example.com/k8s/clusters/c-1/")
    route = split_target("/k8s/clusters/c/api/v1/pods?limit=1")
    assert upstream_target(cluster, route) == "/k8s/clusters/c-1/api/v1/pods?limit=1"


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("https://10.0.0.1:6443", ("10.0.0.1", 6443, "10.0.0.1:6443")),
        ("https://api.example.com", ("api.example.com", 443, "api.example.com")),
        ("https://[::1]:8443/base", ("::1", 8443, "[::1]:8443")),
        ("https://[fd00::2]", ("fd00::2", 443, "[fd00::2]")),
    ],
)
def test_upstream_address(server, expected):
    assert upstream_address(server) == expected


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/api/v1/namespaces/dev/pods", ("/api/v1/namespaces/dev/pods", "/api/v1/namespaces/dev/pods", "")),
        ("/apis/apps/v1/deployments?limit=5", ("/apis/apps/v1/deployments?limit=5", "/apis/apps/v1/deployments",
                                               "limit=5")),
        ("/version", ("/version", "/version", "")),
        ("/api/../secrets", None),  # dot segments never reach an upstream
        ("/k8s/clusters/other/api", None),  # a prefixed path is routed by its prefix, not the pin
        ("*", None),
    ],
)
def test_a_pinned_certificate_routes_unprefixed_paths_to_its_cluster(target, expected):
    route = pinned_route("lab", target)
    if expected is None:
        assert route is None
    else:
        assert route is not None and route.cluster_name == "lab"
        assert (route.target, route.path, route.query) == expected

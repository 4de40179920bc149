"""Routing: ``/k8s/clusters/<name>/<rest>`` → (cluster, ``/<rest>``) (DESIGN §4). Pure apart from the
cluster lookup through a ``ClusterSource``.

A certificate pinned to one cluster also reaches it without the prefix (``pinned_route``): ``/api/v1/pods``
goes to the pinned cluster as is, as Teleport routes a cluster-pinned certificate. kubectl 1.20's
``get --raw /api/...`` drops the server URL's path, so only such a certificate works with it.

Unknown clusters and clusters the caller may not see get the same 404 (existence is not revealed); the
visibility check is the policy's job, done by the caller with the cluster this returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from discovery.model import Cluster, ClusterSource

PREFIX = "/k8s/clusters/"


@dataclass(frozen=True, slots=True)
class Route:
    cluster_name: str
    target: str  # upstream request target: path (prefix stripped) plus "?query" as sent
    path: str  # the same path, without the query
    query: str


_SPLIT_CACHE: dict[str, Route | None] = {}
_MISS = object()
_SPLIT_CACHE_MAX = 4096  # bounded: emptied when full (targets carry arbitrary names and queries)


def split_target(target: str) -> Route | None:
    """Split a request target into cluster name and upstream target; None when it has no cluster prefix
    or a malformed one (empty name, dot segments). Results are cached per target string (``Route`` is
    immutable and the split depends on the string alone)."""
    route = _SPLIT_CACHE.get(target, _MISS)
    if route is not _MISS:
        return route  # type: ignore[return-value]
    route = _split_target(target)
    if len(_SPLIT_CACHE) >= _SPLIT_CACHE_MAX:
        _SPLIT_CACHE.clear()
    _SPLIT_CACHE[target] = route
    return route


def _split_target(target: str) -> Route | None:
    if not target.startswith(PREFIX):
        return None
    rest = target[len(PREFIX) :]
    path_part, sep, query = rest.partition("?")
    name, slash, tail = path_part.partition("/")
    name = unquote(name)
    if not name or name in (".", "..") or "/" in name:
        return None
    path = "/" + tail if slash else "/"
    if "/../" in path + "/" or "/./" in path + "/":
        return None
    upstream_target = path + (sep + query if sep else "")
    return Route(cluster_name=name, target=upstream_target, path=path, query=query)


def pinned_route(cluster_name: str, target: str) -> Route | None:
    """The route of an un-prefixed ``target`` for a certificate pinned to ``cluster_name``; None for a
    target that is not an origin-form path or has dot segments. Not cached: only un-prefixed requests of
    pinned certificates get here."""
    if not target.startswith("/") or target.startswith(PREFIX):
        return None
    path, sep, query = target.partition("?")
    if "/../" in path + "/" or "/./" in path + "/":
        return None
    return Route(cluster_name=cluster_name, target=target, path=path, query=query)


def upstream_target(cluster: Cluster, route: Route) -> str:
    """The request target on the upstream: the cluster's server base path (if any) plus the route's."""
    base = _base_path(cluster.server)
    if not base:
        return route.target
    return base + route.target


def _base_path(server: str) -> str:
    _, _, rest = server.partition("://")
    _, slash, path = rest.partition("/")
    return ("/" + path).rstrip("/") if slash else ""


class Router:
    """Looks up the cluster of a request target."""

    def __init__(self, source: ClusterSource) -> None:
        self.source = source

    def resolve(self, target: str) -> tuple[Route | None, Cluster | None]:
        route = split_target(target)
        if route is None:
            return None, None
        return route, self.source.get(route.cluster_name)


def upstream_address(server: str) -> tuple[str, int, str]:
    """(host, port, authority) of an ``https://host[:port][/path]`` server URL."""
    scheme, _, rest = server.partition("://")
    hostport = rest.split("/", 1)[0]
    default = 443 if scheme != "http" else 80
    if hostport.startswith("["):
        host, _, after = hostport[1:].partition("]")
        port = int(after[1:]) if after.startswith(":") else default
    elif hostport.count(":") == 1:
        host, _, port_s = hostport.partition(":")
        port = int(port_s)
    else:
        host, port = hostport, default
    return host, port, hostport

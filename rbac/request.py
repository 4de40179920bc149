"""Request parsing: (method, path, query) → what the request does, in the apiserver's terms.

Follows apiserver's ``RequestInfoFactory`` (``k8s.io/apiserver/pkg/endpoints/request``) for URL shapes,
and adds kubegate's verb (DESIGN §5):

- resource paths: ``/api/v1/...`` (core) and ``/apis/<group>/<version>/...``; the optional ``watch/``
  segment; ``namespaces/<ns>/<resource>[/<name>[/<subresource>]]``; cluster-scoped
  ``<resource>[/<name>[/<subresource>]]``; ``namespaces/<ns>/status|finalize`` is the namespace's own
  subresource;
- apiserver verb from the method: GET/HEAD → get, list (no name) or watch (``/watch/`` or
  ``watch=1|true``); POST → create; PUT → update; PATCH → patch; DELETE → delete or deletecollection
  (no name). A list/watch with ``fieldSelector=metadata.name=X`` names the object X (as the apiserver);
- kubegate verb (``kubegate_verb``): the apiserver verb, except subresources ``exec`` and ``attach`` →
  ``exec`` and ``portforward`` → ``portforward`` whatever the method (kubectl ≥1.30 uses GET for
  WebSocket), and ``proxy`` of core ``pods`` / ``services`` / ``nodes`` (``…/{name}/proxy[/path]``) →
  ``proxy`` whatever the method (Teleport v19: a role written for ``get`` does not grant proxying);
- non-resource paths (``/api``, ``/apis``, ``/apis/<group>[/<version>]`` discovery, ``/version``,
  ``/openapi/...``, ``/healthz`` …) have ``is_resource_request = False``; ``is_discovery`` says whether
  kubegate lets them through for anyone who can see the cluster.

Unknown resources (not in the catalog): parsed from the URL shape anyway (``known = False``); the
decision denies them unless a rule names that kind explicitly or uses ``kind: '*'``
(see ``rbac.decision``). The proxy should refresh the catalog on such a miss.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

from rbac.catalog import ResourceCatalog

__all__ = [
    "DISCOVERY_PREFIXES",
    "DISCOVERY_URLS",
    "RequestInfo",
    "RequestParseError",
    "kubegate_verb",
    "parse_query",
    "parse_request",
]

_METHOD_VERBS = {
    "GET": "get",
    "HEAD": "get",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_EXEC_SUBRESOURCES = {"exec": "exec", "attach": "exec", "portforward": "portforward"}
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Characters no name, namespace or resource may hold once decoded (checked when the path was encoded).
_NOT_IN_NAMES = re.compile(r"[%?#\\\x00-\x1f\x7f]")
# Core resources whose ``proxy`` subresource relays to the object (pod, service, node): verb ``proxy``.
_PROXY_RESOURCES = frozenset({"pods", "services", "nodes"})

# Non-resource paths anyone who can see the cluster may read (discovery, version, OpenAPI, health).
DISCOVERY_PREFIXES = ("/openapi/", "/healthz/", "/livez/", "/readyz/")
DISCOVERY_URLS = frozenset({"/api", "/apis", "/version", "/openapi", "/healthz", "/livez", "/readyz"})


class RequestParseError(ValueError):
    """A path that is not a valid Kubernetes API path (→ 404 NotFound) or a bad method (→ 405)."""

    def __init__(self, message: str, code: int = 404) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class RequestInfo:
    method: str
    path: str
    is_resource_request: bool
    verb: str  # kubegate verb (get … deletecollection, exec, portforward, proxy); non-resource: get/create/…
    k8s_verb: str  # the apiserver's verb (exec/attach/portforward/proxy subresources → get, create …)
    api_prefix: str = ""  # "api" | "apis" | "" for non-resource
    api_group: str = ""
    api_version: str = ""
    resource: str = ""  # plural
    subresource: str = ""
    namespace: str = ""  # "" for cluster-scoped requests and all-namespace lists
    name: str = ""
    namespaced: bool = False  # the resource is namespaced (catalog, or URL shape if unknown)
    known: bool = True  # the catalog knows the resource
    kind: str = ""  # Kind from the catalog ("" when unknown)
    is_discovery: bool = False  # a non-resource path kubegate lets through when the cluster is visible
    field_selector_name: bool = False  # ``name`` came from fieldSelector=metadata.name=…

    @property
    def is_collection(self) -> bool:
        """list / watch / deletecollection without a single object name: results may need filtering."""
        return (
            self.is_resource_request and not self.name and self.verb in ("list", "watch", "deletecollection")
        )

    @property
    def group_resource(self) -> str:
        return f"{self.resource}.{self.api_group}" if self.api_group else self.resource

    @property
    def resource_with_subresource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


QueryLike = str | bytes | Mapping[str, str | Sequence[str]] | None


def parse_query(query: QueryLike) -> dict[str, list[str]]:
    """A query string (with or without ``?``) or mapping → {key: [values]}.

    Read as the apiserver's Go ``url.ParseQuery`` reads it: a ``key=value`` pair holding ``;`` or a bad
    percent-escape is skipped (Go drops it; keeping it, e.g. ``fieldSelector=metadata.name%3Dweb-1;x``,
    would let kubegate decide on a name the apiserver never applies)."""
    if not query:
        return {}
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    if isinstance(query, str):
        query = query.lstrip("?")
        if ";" in query or "%" in query:
            query = "&".join(p for p in query.split("&") if ";" not in p and not _BAD_ESCAPE.search(p))
        return parse_qs(query, keep_blank_values=True, errors="surrogateescape") if query else {}
    return {k: [v] if isinstance(v, str) else list(v) for k, v in query.items()}


def kubegate_verb(group: str, resource: str, subresource: str, k8s_verb: str, known: bool) -> str:
    """The verb kubegate's rules are checked with (see the module docstring)."""
    if subresource == "proxy":
        return "proxy" if group == "" and resource in _PROXY_RESOURCES else k8s_verb
    if resource == "pods" or not known:
        return _EXEC_SUBRESOURCES.get(subresource, k8s_verb)
    return k8s_verb


def _truthy_watch(values: list[str]) -> bool:
    """The apiserver's reading of ``watch=``: its FIRST value, anything but ``false`` / ``0`` / "" is a
    watch (``watch=yes`` is a watch: taking it for a list would filter a watch stream as a list)."""
    return bool(values) and values[0].lower() not in ("false", "0", "")


def _field_selector_name(values: list[str]) -> str:
    """X from ``metadata.name=X`` / ``metadata.name==X`` when that is the only requirement of the only
    ``fieldSelector`` (the apiserver reads the first one only: any other shape is filtered, not named)."""
    if len(values) != 1:
        return ""
    parts = [p for p in values[0].split(",") if p]
    if len(parts) != 1:
        return ""
    key, op, value = parts[0].partition("==")
    if not op:
        key, op, value = parts[0].partition("=")
    if op and key.strip() == "metadata.name" and value and "!" not in key:
        return value.strip()
    return ""


def _body_name(body: bytes) -> str:
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else ""


def parse_request(
    method: str, path: str, query: QueryLike, catalog: ResourceCatalog, body: bytes | None = None
) -> RequestInfo:
    """Parse one request. ``path`` is without the ``/k8s/clusters/<name>`` prefix and without the query.

    ``body`` (optional, create requests only): the JSON body, whose ``metadata.name`` becomes the name of
    a create (so name-restricted rules can allow creating exactly those objects). Without it a create
    has no name and only rules with a name pattern matching "" (e.g. ``*``) allow it.

    Raises ``RequestParseError`` for paths that cannot be a Kubernetes API request (code 404) and
    methods the apiserver does not serve (405).
    """
    method = method.upper()
    if "?" in path:
        path, _, rest = path.partition("?")
        query = rest if query is None or query == "" or query == b"" else query
    if not path.startswith("/"):
        raise RequestParseError(f"path {path!r} must start with '/'")
    base_verb = _METHOD_VERBS.get(method)
    stripped = path.rstrip("/") or "/"
    decoded = "%" in stripped
    if decoded:
        # As the apiserver (Go's URL.Path): decode, THEN split, so %2F separates segments here exactly as
        # upstream (deciding on "namespaces/dev%2Fsecrets" as one name would let secrets through).
        try:
            stripped = unquote(stripped, errors="strict")
        except UnicodeDecodeError:
            raise RequestParseError(f"invalid path {path!r}: percent-encoding is not UTF-8", 400) from None
    segments = stripped.strip("/").split("/") if stripped != "/" else []
    if any(s in ("", ".", "..") for s in segments):
        raise RequestParseError(f"invalid path {path!r}")

    def non_resource(discovery: bool) -> RequestInfo:
        verb = base_verb or method.lower()
        return RequestInfo(
            method, path, False, verb, verb, is_discovery=discovery and method in ("GET", "HEAD")
        )

    if not segments or segments[0] not in ("api", "apis"):
        discovery = stripped in DISCOVERY_URLS or stripped.startswith(DISCOVERY_PREFIXES)
        return non_resource(discovery)
    prefix = segments[0]
    if prefix == "api":
        if len(segments) < 3:  # /api, /api/v1
            return non_resource(True)
        group, version, parts = "", segments[1], segments[2:]
    else:
        if len(segments) < 4:  # /apis, /apis/<g>, /apis/<g>/<v>
            return non_resource(True)
        group, version, parts = segments[1], segments[2], segments[3:]
    if base_verb is None:
        raise RequestParseError(f"method {method} is not supported", code=405)

    q = parse_query(query)
    verb = base_verb
    watch_prefix = False
    if parts[0] == "watch":
        watch_prefix = True
        parts = parts[1:]
        if not parts:
            raise RequestParseError(f"invalid watch path {path!r}")
    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
        # else: the namespace object itself (/namespaces/x, /namespaces/x/status)
    resource = parts[0]
    name = parts[1] if len(parts) > 1 else ""
    subresource = parts[2] if len(parts) > 2 else ""
    if len(parts) > 3:
        # only the proxy subresources carry a path after them (pods/x/proxy/some/path)
        if subresource != "proxy":
            raise RequestParseError(f"invalid resource path {path!r}")
    if resource == "namespaces":
        namespace = ""  # a namespace object is cluster-scoped; its name is the namespace
    structure = group + version + resource + subresource
    if (decoded or "\\" in stripped or "#" in stripped) and _NOT_IN_NAMES.search(
        f"{structure}/{namespace}/{name}"
    ):
        # no Kubernetes name holds these (path.IsValidPathSegmentName forbids '%'); a server or proxy on
        # the way could read them differently from kubegate (double decoding, '\\' as '/', '?' / '#')
        raise RequestParseError(f"invalid path {path!r}: a name or resource holds a reserved character", 400)
    if structure != structure.lower() or ";" in structure:
        # API groups, versions, resources and subresources are lower case with no ';' (no "Secrets", no
        # "secrets;x" that a server stripping path parameters would read as secrets)
        raise RequestParseError(f"the server could not find the requested resource ({path!r})")

    by_name = False
    if watch_prefix and method in ("GET", "HEAD"):
        verb = "watch"
    elif verb == "get" and not name:
        verb = "watch" if _truthy_watch(q.get("watch", [])) else "list"
    elif verb == "delete" and not name:
        verb = "deletecollection"
    if verb in ("list", "watch", "deletecollection") and not name:
        fs_name = _field_selector_name(q.get("fieldSelector", []))
        if fs_name:
            name, by_name = fs_name, True

    if verb == "create" and not name and body:
        name = _body_name(body)

    info = catalog.get(group, resource)
    known = info is not None
    namespaced = info.namespaced if info is not None else bool(namespace)
    if info is not None and not info.namespaced and resource != "namespaces" and namespace:
        # a cluster-scoped resource under /namespaces/<ns>/: the apiserver answers 404
        raise RequestParseError(
            f"the server could not find the requested resource ({resource} is cluster-scoped)"
        )
    if info is not None and info.namespaced and not namespace and name and not by_name:
        raise RequestParseError(
            f"the server could not find the requested resource ({resource} is namespaced)"
        )
    if info is not None and subresource and info.subresources and subresource not in info.subresources:
        raise RequestParseError(
            f"the server could not find the requested resource ({resource}/{subresource})"
        )
    k8s_verb = verb
    kg_verb = kubegate_verb(group, resource, subresource, verb, known)
    return RequestInfo(
        method=method,
        path=path,
        is_resource_request=True,
        verb=kg_verb,
        k8s_verb=k8s_verb,
        api_prefix=prefix,
        api_group=group,
        api_version=version,
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        name=name,
        namespaced=namespaced,
        known=known,
        kind=info.kind if info is not None else "",
        field_selector_name=by_name,
    )

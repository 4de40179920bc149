"""kubegate policy: roles, request parsing, decisions, impersonation, response filtering, Status errors.

Pure code: no asyncio, no sockets, no clock reads (``RoleWatcher`` takes a clock). Public API:

Labels (``rbac.labels``) — the one label matcher, also used by discovery::

    labels_match(selector: Mapping[str, str | Sequence[str]], labels: Mapping[str, str]) -> bool
    value_matches(pattern: str, value: str) -> bool      # literal, '*', glob 'dev-*', '^regex$'

Status bodies (``rbac.status``)::

    status_body(code, reason, message, details=None) -> bytes    # Kubernetes Status JSON
    forbidden(msg, name=, group=, kind=), not_found(...), bad_request(msg), unauthorized(),
    method_not_allowed(msg), gone(msg), too_many_requests(msg, retry), internal_error(msg),
    service_unavailable(msg), timeout(msg) -> bytes

Roles (``rbac.roles``)::

    load_roles_dir(path) -> RoleSet            # per file: a bad file is refused (RoleSet.refused:
                                               # path -> RoleError naming file, role and key), the
                                               # others load; raises RoleError only for a missing dir
    RoleWatcher(path, clock, min_check_interval=1.0, on_error=None, on_reload=None, *, initial_ok=True)
        .current() -> RoleSet                  # stats the files at most every min_check_interval and
                                               # reloads on any add/change/remove; a refused file's
                                               # roles are not served (never opens access)
        .errors: list[RoleError] (bounded); .last_error; .refused; .reloads;
        .check() -> bool (look now); on_error(RoleError) once per refused file version (log + metric)
    RoleSet.get(name) -> Role | None; .names(); .for_names(names) -> list[Role]
    Role.max_session_ttl -> int seconds | None; Role.name; Role.allow / Role.deny (Conditions)

Catalog and parsing (``rbac.catalog``, ``rbac.request``)::

    ResourceCatalog.from_discovery([APIResourceList dicts from /api/v1, /apis/<g>/<v> ...])
    ResourceCatalog.builtin()                  # standard resources, before discovery ran
    catalog.get(group, plural, version=None) -> ResourceInfo | None; catalog.find(kind_or_short_name)
    parse_request(method, path, query, catalog, body=None) -> RequestInfo
        # RequestInfo: verb (kubegate: get list watch create update patch delete deletecollection
        # exec portforward proxy), k8s_verb, api_group, api_version, resource, subresource, namespace,
        # name, namespaced, known, kind, is_resource_request, is_discovery, is_collection
        # path WITHOUT /k8s/clusters/<name>; query: raw string/bytes or mapping; raises
        # RequestParseError(.code 404 or 405). RequestInfo.known is False for resources the
        # catalog lacks: refresh the catalog and parse again before deciding.

Decisions (``rbac.decision``, ``rbac.impersonation``)::

    ImpersonationRequest.from_headers(headers)   # the client's Impersonate-* headers
    decide(identity, roles, cluster_name, cluster_labels, info, impersonation) -> Decision
        Decision.allowed, .status (200/403/404), .body (Status JSON bytes when denied), .reason,
        .message, .user, .groups (send as Impersonate-User / Impersonate-Group, REPLACING the
        client's headers), .filter (ItemFilter | None), .force_json (== filter is not None),
        .matched_roles, .denied_by, .review (set on self-review creates: see below)
    cluster_visible(identity, roles, labels, cluster_name=None) -> bool
    cluster_not_found_body(cluster_name) -> bytes  # the same 404 for unknown and invisible clusters

    When ``decision.filter`` is set: send upstream ``Accept: json_accept_header(accept)`` and the query
    ``filtering_query(query)``; then pass the response body through ``decision.filter.stream(watch)``
    (``watch=True`` for watch requests): ``feed(bytes) -> bytes`` per chunk, ``close() -> bytes`` at
    the end. ``ItemFilter.allows(namespace, name)`` is the per-item predicate. The body changes
    length: drop Content-Length (chunked / h2 DATA). A gzip body is decompressed, filtered and
    re-compressed (Content-Encoding stays valid); a body that is neither JSON nor gzip (protobuf)
    yields nothing (fail closed) — so do force JSON.

Access reviews (``rbac.reviews``)::

    review_access(identity, roles, cluster_name, labels, ssar_body: dict, catalog) -> ReviewOutcome
        .ask_cluster: bool      # True: forward the SSAR upstream (as the impersonated user)
        .response: dict | None  # when kubegate denies: answer it yourself, HTTP 201, this JSON
    restrict_rules_review(identity, roles, cluster_name, labels, ssrr_response: dict) -> dict
        # the cluster's SelfSubjectRulesReview answer intersected with kubegate's rules

Semantics (details in ``rbac.decision`` and ``rbac.roles``): Teleport role v8 (v7 converted on load);
deny rules of every role first, whatever their labels; allow needs labels and resource in one role;
``kind: namespaces, name: X`` covers everything inside X (DESIGN §5; Teleport v8 grants only the
namespace object); cluster-scoped resources need a rule namespace matching "" (omitted or ``*``); an
allow side with labels but no ``kubernetes_resources`` grants everything (Teleport default); trait
templates ``{{internal.x}}``, ``{{external.x}}``, ``email.local(...)``, ``regexp.replace(...)``.
Unknown resources (not in the catalog) are denied unless an allow rule names the resource plural
literally or uses ``kind: '*'`` (Teleport would let them through). Non-resource paths other than
discovery (/api, /apis/..., /version, /openapi/..., /healthz, /livez, /readyz) are denied.
"""

from __future__ import annotations

from rbac.catalog import ResourceCatalog, ResourceInfo
from rbac.decision import Decision, ItemFilter, cluster_not_found_body, cluster_visible, decide
from rbac.impersonation import ImpersonationRequest
from rbac.labels import labels_match, value_matches
from rbac.request import RequestInfo, RequestParseError, parse_request
from rbac.reviews import ReviewOutcome, restrict_rules_review, review_access
from rbac.roles import Role, RoleError, RoleSet, RoleWatcher, load_roles_dir
from rbac.status import status_body

__all__ = [
    "Decision",
    "ImpersonationRequest",
    "ItemFilter",
    "RequestInfo",
    "RequestParseError",
    "ResourceCatalog",
    "ReviewOutcome",
    "ResourceInfo",
    "Role",
    "RoleError",
    "RoleSet",
    "RoleWatcher",
    "cluster_not_found_body",
    "cluster_visible",
    "decide",
    "labels_match",
    "load_roles_dir",
    "parse_request",
    "restrict_rules_review",
    "review_access",
    "status_body",
    "value_matches",
]

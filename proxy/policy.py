"""The proxy's one seam to policy: who may see which cluster, and what one request may do.

``Policy`` is what the forwarding pipeline calls (once per request); ``RbacPolicy`` implements it with
``rbac/`` (roles from a role source with ``.current() -> RoleSet``, e.g. ``rbac.RoleWatcher``). There is
no "allow everything" policy in the product: ``Proxy`` refuses to start without a role source or an
explicit policy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from discovery.model import Cluster
from proxy.protobuf import MAGIC as PROTOBUF_MAGIC
from proxy.protobuf import ProtobufError, access_review_from_protobuf
from proxy.protobuf import fields as protobuf_fields
from proxy.protocol.events import Headers
from rbac.identity import Identity
from rbac.sessions import RecordingDecision, may_join, recording_decision


@dataclass(slots=True)
class Verdict:
    allowed: bool
    status: int = 200
    body: bytes = b""  # Status JSON when denied
    user: str = ""
    groups: tuple[str, ...] = ()
    reason: str = ""
    # None, or a factory of incremental response filters (``feed(bytes) -> bytes``, ``close() -> bytes``);
    # set when the caller may see only some items of a list/watch.
    filter: Callable[[], Any] | None = None
    accept: bytes | None = None  # replaces the client's Accept upstream (JSON when filtering)
    query: str | None = None  # replaces the query upstream (when filtering needs it)
    review: str | None = None  # self-review resource kubegate must take part in
    catalog_miss: bool = False  # decided on a resource the catalog did not know: refresh and retry
    verb: str = ""
    resource: str = ""
    namespace: str = ""
    name: str = ""
    api_group: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Policy(Protocol):
    def visible(self, identity: Identity, cluster: Cluster) -> bool:
        """May this identity know the cluster exists?"""
        ...

    def decide(
        self, identity: Identity, cluster: Cluster, method: str, path: str, query: str, headers: Headers, catalog: Any,
        body: bytes | None = None,
    ) -> Verdict:
        """One decision per request (``path`` without the ``/k8s/clusters/<name>`` prefix). ``body`` is given
        only for a create the proxy buffered because the decision without it was a denial: the object's
        name is read from it (JSON, YAML or Kubernetes protobuf; see ``object_name``)."""
        ...

    def review_access(self, identity: Identity, cluster: Cluster, body: bytes, catalog: Any) -> bytes | None:
        """For a SelfSubjectAccessReview: kubegate's own JSON answer when its roles deny, else None (ask
        the cluster)."""
        ...

    def restrict_rules(self, identity: Identity, cluster: Cluster, response: bytes, catalog: Any) -> bytes:
        """The cluster's SelfSubjectRulesReview answer, restricted to what kubegate allows."""
        ...

    def recording(self, identity: Identity, tty: bool, proxy_strict: bool) -> RecordingDecision:
        """Whether (and how strictly) to record an exec/attach session of this identity."""
        ...

    def may_join(self, identity: Identity, owner: str, owner_roles: list[str]) -> bool:
        """May this identity observe a live session of ``owner`` (holding ``owner_roles``)?"""
        ...


class RbacPolicy:
    """``Policy`` over ``rbac``.

    Decisions are memoised: the same identity object, role set, catalog and cluster object asking the same
    method / path / query with the same impersonation and Accept headers gets the same verdict, so a hot
    GET skips request parsing and rule matching. Entries hold the objects they were computed from and a
    hit checks them by identity (a reloaded role set, refreshed catalog or changed cluster is a new object,
    hence a miss). Locks and certificate expiry are checked by the proxy on every request, outside this.
    """

    cache_size = 8192

    def __init__(self, roles: Any) -> None:
        import rbac
        from rbac.filtering import filtering_query, json_accept_header

        self._rbac = rbac
        self._accept = json_accept_header
        self._query = filtering_query
        self.roles = roles
        self._visible: dict[tuple[int, int, int], tuple[Identity, Cluster, Any, bool]] = {}
        self._verdicts: dict[tuple[Any, ...], tuple[Identity, Cluster, Any, Any, Verdict]] = {}

    def visible(self, identity: Identity, cluster: Cluster) -> bool:
        if identity.pinned_cluster and identity.pinned_cluster != cluster.name:
            return False
        roles = self.roles.current()
        key = (id(identity), id(cluster), id(roles))
        hit = self._visible.get(key)
        if hit is not None and hit[0] is identity and hit[1] is cluster and hit[2] is roles:
            return hit[3]
        answer = bool(self._rbac.cluster_visible(identity, roles, cluster.labels, cluster.name))
        if len(self._visible) >= self.cache_size:
            self._visible.clear()
        self._visible[key] = (identity, cluster, roles, answer)
        return answer

    def decide(
        self, identity: Identity, cluster: Cluster, method: str, path: str, query: str, headers: Headers, catalog: Any,
        body: bytes | None = None,
    ) -> Verdict:
        roles = self.roles.current()
        if body is not None:  # a create decided on its object's name: never memoised (the body varies)
            return self._decide(identity, cluster, roles, method, path, query, headers, catalog, body)
        varying = tuple((k, v) for k, v in headers if k.startswith(b"impersonate-") or k == b"accept")
        key = (id(identity), id(cluster), id(roles), id(catalog), method, path, query, varying)
        hit = self._verdicts.get(key)
        if hit is not None and hit[0] is identity and hit[1] is cluster and hit[2] is roles and hit[3] is catalog:
            return hit[4]
        verdict = self._decide(identity, cluster, roles, method, path, query, headers, catalog)
        if len(self._verdicts) >= self.cache_size:
            self._verdicts.clear()
        self._verdicts[key] = (identity, cluster, roles, catalog, verdict)
        return verdict

    def _decide(
        self, identity: Identity, cluster: Cluster, roles: Any, method: str, path: str, query: str, headers: Headers,
        catalog: Any, body: bytes | None = None,
    ) -> Verdict:
        rbac = self._rbac
        name_body = None
        if body is not None:
            name = object_name(body)
            # rbac reads the name of a create from a JSON body: hand it just that, whatever the wire format.
            name_body = json.dumps({"metadata": {"name": name}}).encode() if name else None
        try:
            info = rbac.parse_request(method, path, query, catalog, body=name_body)
        except rbac.RequestParseError as exc:
            code = exc.code
            reason = "NotFound" if code == 404 else "MethodNotAllowed" if code == 405 else "BadRequest"
            return Verdict(False, code, rbac.status_body(code, reason, str(exc)), reason="bad_path")
        impersonation = rbac.ImpersonationRequest.from_headers(headers)
        decision = rbac.decide(identity, roles, cluster.name, cluster.labels, info, impersonation)
        verdict = Verdict(
            allowed=decision.allowed,
            status=decision.status,
            body=decision.body or b"",
            user=decision.user,
            groups=tuple(decision.groups),
            reason=decision.reason,
            review=decision.review,
            catalog_miss=not info.known,
            verb=info.verb,
            resource=info.resource,
            namespace=info.namespace,
            name=info.name,
            api_group=info.api_group,
        )
        item_filter = decision.filter
        if decision.allowed and item_filter is not None:
            watch = info.verb == "watch"
            verdict.filter = lambda: item_filter.stream(watch)
            verdict.accept = self._accept(_header(headers, b"accept")).encode("latin-1")
            verdict.query = self._query(query)
        return verdict

    def review_access(self, identity: Identity, cluster: Cluster, body: bytes, catalog: Any) -> bytes | None:
        try:
            doc = access_review_from_protobuf(body) if body.startswith(PROTOBUF_MAGIC) else json.loads(body or b"{}")
        except ValueError:
            doc = {}
        outcome = self._rbac.review_access(identity, self.roles.current(), cluster.name, cluster.labels, doc, catalog)
        if outcome.ask_cluster:
            return None
        return json.dumps(outcome.response, separators=(",", ":")).encode()

    def recording(self, identity: Identity, tty: bool, proxy_strict: bool) -> RecordingDecision:
        roles = self.roles.current().for_names(identity.roles)
        return recording_decision((r.record_session for r in roles), tty, proxy_strict)

    def may_join(self, identity: Identity, owner: str, owner_roles: list[str]) -> bool:
        roles = self.roles.current().for_names(identity.roles)
        rules = [rule for role in roles for rule in role.join_sessions]
        return may_join(rules, owner_roles, owner=owner, joiner=identity.user)

    def restrict_rules(self, identity: Identity, cluster: Cluster, response: bytes, catalog: Any) -> bytes:
        doc = json.loads(response)
        restricted = self._rbac.restrict_rules_review(identity, self.roles.current(), cluster.name, cluster.labels, doc, catalog)
        return json.dumps(restricted, separators=(",", ":")).encode()


def _header(headers: Headers, name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def object_name(body: bytes) -> str:
    """``metadata.name`` of the object in a create request body, or "" (none, ``generateName`` only, or
    unreadable: the caller then decides without a name, i.e. fails closed).

    Kubernetes protobuf (``k8s\\0`` + ``runtime.Unknown{2: raw}``; every object's field 1 is its
    ``ObjectMeta``, whose field 1 is the name), JSON, or YAML (``application/yaml``: any body that is
    neither protobuf nor a JSON object is read as YAML).
    """
    if body.startswith(PROTOBUF_MAGIC):
        return _protobuf_object_name(body)
    doc: Any = None
    stripped = body.lstrip()
    if stripped.startswith(b"{"):
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return ""
    else:
        import yaml

        try:
            doc = yaml.load(body, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - safe loader
        except (yaml.YAMLError, UnicodeDecodeError, ValueError):
            return ""
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else ""


def _protobuf_object_name(body: bytes) -> str:
    try:
        raw = b""
        for number, value in protobuf_fields(body[len(PROTOBUF_MAGIC) :]):
            if number == 2 and isinstance(value, bytes):
                raw = value
        for number, value in protobuf_fields(raw):
            if number == 1 and isinstance(value, bytes):
                for sub, sub_value in protobuf_fields(value):
                    if sub == 1 and isinstance(sub_value, bytes):
                        return sub_value.decode("utf-8")
                return ""
    except (ProtobufError, UnicodeDecodeError):
        return ""
    return ""

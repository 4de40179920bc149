"""The sandbox's Kubernetes API: one ``ApiRequest`` in, one ``ApiResponse`` out (no sockets here).

    api = Api(store, authorizer, reviews)
    response = await api.handle(request)          # discovery, openapi, CRUD, list/watch, logs, tables…
    target = api.resolve_stream(request)          # exec / attach / portforward: StreamTarget or error

Every failure is a Kubernetes ``Status`` with the apiserver's code, reason and wording; nothing raises
out of ``handle``. Authorization happens here, after the request is parsed into the attributes RBAC
sees (verb list/watch/get distinguished, subresources, non-resource paths).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import logging
import random
import re
import string
import time
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import yaml

from rbac.status import status_dict
from sandbox import patch as patches
from sandbox import protobuf, tables
from sandbox.controllers import DeploymentController, PodAddresses, collect_garbage
from sandbox.crds import CRD_GROUP, CRD_PLURAL, crd_resource_types, crd_status
from sandbox.discovery_docs import AGGREGATED_V2, DOCS, OPENAPI_V2_PROTOBUF, DiscoveryDocs
from sandbox.resources import CATALOG, KIND_FIELDS, Catalog, ResourceType
from sandbox.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from sandbox.store import AlreadyExists, Conflict, Entry, Event, Gone, NotFound, Store, dumps, now_rfc3339
from sandbox.types import ApiRequest, ApiResponse, Authorizer, RequestAttributes, StreamTarget, UserInfo

log = logging.getLogger("sandbox.api")
# Warnings of the request being handled (answered as ``Warning: 299 - "..."`` headers, like the apiserver).
_WARNINGS: ContextVar[list[str] | None] = ContextVar("sandbox_api_warnings", default=None)

JSON = "application/json"
MAX_BODY_BYTES = 3 * 1024 * 1024
STREAM_KINDS = ("exec", "attach", "portforward")
PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public")
BAD_INPUT_CODES = (400, 406, 413, 415, 422)
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ACCEPTED_BODIES = "application/json, application/yaml, application/vnd.kubernetes.protobuf"
PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
)


class ReviewService(Protocol):
    def review(self, resource: str, body: dict[str, Any], user: UserInfo) -> dict[str, Any]: ...


class ApiError(Exception):
    """An error answered as a Status body."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        return status_dict(self.code, self.reason, self.message, self.details)

    def response(self) -> ApiResponse:
        return ApiResponse(self.code, [("content-type", JSON)], dumps(self.status()))


def _qualified(rt: ResourceType | None, resource: str, group: str) -> str:
    plural = rt.plural if rt else resource
    grp = rt.group if rt else group
    return f"{plural}.{grp}" if grp else plural


def _details(name: str, group: str, kind: str) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = kind
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{_qualified(rt, "", "")} "{name}" not found', _details(name, rt.group, rt.plural))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(rt: ResourceType, name: str, causes: list[tuple[str, str]]) -> ApiError:
    text = ", ".join(f"{field}: {msg}" for field, msg in causes)
    message = f'{rt.kind}{"." + rt.group if rt.group else ""} "{name}" is invalid: {text}'
    details = _details(name, rt.group, rt.kind)
    details["causes"] = [{"reason": "FieldValueInvalid", "message": msg, "field": field} for field, msg in causes]
    return ApiError(422, "Invalid", message, details)


RESOURCE_NOT_FOUND = ApiError(404, "NotFound", "the server could not find the requested resource",
                              {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]})
METHOD_NOT_ALLOWED = ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


@dataclass(frozen=True, slots=True)
class MediaPrefs:
    table: str | None  # "meta.k8s.io/v1" / "meta.k8s.io/v1beta1" when a Table is wanted
    partial: bool  # PartialObjectMetadata(List)
    aggregated: bool
    json_ok: bool


def _accept(headers: dict[str, str]) -> MediaPrefs:
    accept = headers.get("accept", "")
    if not accept:
        return MediaPrefs(None, False, False, True)
    table: str | None = None
    partial = aggregated = json_ok = False
    for clause in accept.split(","):
        parts = [p.strip() for p in clause.split(";")]
        media = parts[0].lower()
        params = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        if media in ("application/json", "application/*", "*/*", "application/yaml"):
            as_ = params.get("as")
            if as_ is None:
                json_ok = True
            elif as_ == "Table" and params.get("g") == "meta.k8s.io" and table is None:
                table = f"meta.k8s.io/{params.get('v', 'v1')}"
            elif as_ in ("PartialObjectMetadata", "PartialObjectMetadataList") and params.get("g") == "meta.k8s.io":
                partial = True
            elif as_ == "APIGroupDiscoveryList" and params.get("g") == "apidiscovery.k8s.io" and params.get("v") == "v2":
                aggregated = True
        elif media.startswith("application/vnd.kubernetes.protobuf") or media.startswith("application/com.github"):
            continue
        else:
            json_ok = json_ok or media.startswith("text/") or media == ""
    return MediaPrefs(table, partial, aggregated, json_ok)


def _q(query: dict[str, list[str]], key: str, default: str = "") -> str:
    values = query.get(key)
    return values[0] if values else default


def _truthy(query: dict[str, list[str]], key: str) -> bool:
    return _q(query, key).lower() in ("true", "1", "yes")


def _json_response(status: int, body: bytes | dict[str, Any] | list[Any]) -> ApiResponse:
    raw = body if isinstance(body, bytes) else dumps(body)
    return ApiResponse(status, [("content-type", JSON)], raw)


def _media_type(headers: dict[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


class _YamlLoader(yaml.SafeLoader):
    """YAML as Kubernetes reads it: timestamps stay strings; aliases are refused (no expansion bombs)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "YAML aliases are not supported", event.start_mark)
        return super().compose_node(parent, index)


_YamlLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON number {name}")


def loads(body: bytes) -> Any:
    """A JSON request body (strict: no NaN/Infinity). Raises ValueError."""
    return json.loads(body, parse_constant=_reject_constant)


def load_yaml(body: bytes) -> Any:
    """A YAML (or JSON) body as JSON values; errors are 400 BadRequest."""
    try:
        value = yaml.load(body, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass
        return json.loads(json.dumps(value))
    except yaml.YAMLError as exc:
        raise bad_request(f"error converting YAML to JSON: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise bad_request(f"error converting YAML to JSON: {exc}") from None


def _random_suffix() -> str:
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=5))


class Api:
    def __init__(self, store: Store, authorizer: Authorizer, reviews: ReviewService, *,
                 catalog: Catalog = CATALOG, docs: DiscoveryDocs = DOCS, max_body_bytes: int = MAX_BODY_BYTES,
                 log_tick_seconds: float = 1.0, bookmark_seconds: float = 15.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.authorizer = authorizer
        self.reviews = reviews
        self.catalog = catalog
        self.docs = docs
        self._builtin = catalog  # what is served without any CRD; CRDs in the store add to it
        self.max_body_bytes = max_body_bytes
        self.log_tick_seconds = log_tick_seconds
        self.bookmark_seconds = bookmark_seconds
        self.clock = clock
        self._next_cluster_ip = 100
        self.deployments = DeploymentController(store, self._controller_pod)
        self.pod_addresses = PodAddresses(store)
        self._serve_crds()

    # ================================================================== entry points

    async def handle(self, req: ApiRequest) -> ApiResponse:
        token = _WARNINGS.set([])
        try:
            response = await self._handle(req)
            warnings = _WARNINGS.get()
            if warnings and response.status < 400:
                response.headers.extend(("warning", f'299 - "{w}"'.replace("\n", " ")) for w in warnings)
            return response
        except ApiError as exc:
            if exc.code >= 500:
                log.warning("%s %s -> %d %s", req.method, req.path, exc.code, exc.message)
            elif exc.code in BAD_INPUT_CODES:  # the client sent something broken: say what, once
                log.info("bad request from %s: %s %s -> %d %s: %s", req.user.username, req.method, req.path,
                         exc.code, exc.reason, exc.message[:300])
            return exc.response()
        except RecursionError:
            log.info("bad request from %s: %s %s -> 400 body nested too deeply", req.user.username, req.method,
                     req.path)
            return bad_request("the request body is nested too deeply").response()
        except Exception as exc:  # never let a bug escape as a dropped connection
            log.exception("internal error serving %s %s", req.method, req.path)
            return ApiError(500, "InternalError", f"Internal error occurred: {type(exc).__name__}: {exc}").response()
        finally:
            _WARNINGS.reset(token)

    def resolve_stream(self, req: ApiRequest) -> StreamTarget | ApiResponse:
        """Authorize and locate the pod of an exec / attach / portforward upgrade request."""
        try:
            parsed = self._parse_resource_path(req)
            if parsed is None:
                raise RESOURCE_NOT_FOUND
            rt, namespace, name, sub, _ = parsed
            if (rt.group, rt.plural) != ("", "pods") or sub not in STREAM_KINDS or not name:
                raise bad_request(f"{req.path}: not a pod exec, attach or portforward request")
            self._authorize(req.user, "create", rt, namespace, name, sub)
            entry = self.store.get_entry("", "pods", namespace, name)
            if entry is None:
                raise not_found(rt, name)
            return StreamTarget(sub, namespace, entry.obj, req.query, req.user)
        except ApiError as exc:
            return exc.response()
        except Exception as exc:
            log.exception("internal error resolving stream %s", req.path)
            return ApiError(500, "InternalError", f"Internal error occurred: {exc}").response()

    # ================================================================== routing

    async def _handle(self, req: ApiRequest) -> ApiResponse:
        path = req.path.rstrip("/") or "/"
        if len(req.body) > self.max_body_bytes:
            raise ApiError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {self.max_body_bytes}")
        if path.startswith("/api/") or path.startswith("/apis/"):
            parsed = self._parse_resource_path(req)
            if parsed is not None:
                return await self._resource_request(req, *parsed)
        return self._non_resource(req, path)

    def _non_resource(self, req: ApiRequest, path: str) -> ApiResponse:
        self._authorize_path(req.user, req.method.lower() if req.method != "HEAD" else "get", path)
        if req.method not in ("GET", "HEAD"):
            raise METHOD_NOT_ALLOWED if path in ("/api", "/apis", "/version") else RESOURCE_NOT_FOUND
        prefs = _accept(req.headers)
        docs = self.docs
        if path == "/version":
            return _json_response(200, docs.version)
        if path == "/api":
            if prefs.aggregated:
                return ApiResponse(200, [("content-type", AGGREGATED_V2)], docs.aggregated_core)
            return _json_response(200, docs.api_versions)
        if path == "/apis":
            if prefs.aggregated:
                return ApiResponse(200, [("content-type", AGGREGATED_V2)], docs.aggregated_apis)
            return _json_response(200, docs.api_groups)
        if path in ("/healthz", "/livez", "/readyz"):
            return ApiResponse(200, [("content-type", "text/plain; charset=utf-8")], b"ok")
        if path == "/openapi/v2":
            if "protobuf" in req.headers.get("accept", ""):
                return ApiResponse(200, [("content-type", OPENAPI_V2_PROTOBUF)], docs.openapi_v2_protobuf)
            return _json_response(200, docs.openapi_v2_json)
        if path == "/openapi/v3":
            return _json_response(200, docs.openapi_v3_index)
        if path.startswith("/openapi/v3/"):
            body = docs.openapi_v3(path[len("/openapi/v3/"):])
            if body is not None:
                return _json_response(200, body)
            raise RESOURCE_NOT_FOUND
        parts = path.strip("/").split("/")
        if parts == ["api", "v1"]:
            return _json_response(200, docs.resource_list("", "v1") or b"")
        if len(parts) == 2 and parts[0] == "apis":
            body = docs.group(parts[1])
            if body is not None:
                return _json_response(200, body)
        if len(parts) == 3 and parts[0] == "apis":
            body = docs.resource_list(parts[1], parts[2])
            if body is not None:
                return _json_response(200, body)
        raise RESOURCE_NOT_FOUND

    def _parse_resource_path(self, req: ApiRequest) -> tuple[ResourceType, str, str, str, bool] | None:
        """(resource type, namespace, name, subresource, /watch/ prefix) or None for other paths."""
        parts = [p for p in req.path.split("/") if p]
        if not parts:
            return None
        if parts[0] == "api" and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        if not self.catalog.has_group_version(group, version):
            return None
        watch_prefix = False
        if rest[0] == "watch":
            watch_prefix = True
            rest = rest[1:]
            if not rest:
                return None
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace = rest[1]
            rest = rest[2:]
        plural = rest[0]
        rt = self.catalog.get(group, version, plural)
        if rt is None:
            raise RESOURCE_NOT_FOUND
        if len(rest) > 3:
            raise RESOURCE_NOT_FOUND
        name = rest[1] if len(rest) >= 2 else ""
        sub = rest[2] if len(rest) == 3 else ""
        if sub and sub not in rt.subresources:
            raise RESOURCE_NOT_FOUND
        if namespace and not rt.namespaced:
            raise RESOURCE_NOT_FOUND
        return rt, namespace, name, sub, watch_prefix

    # ================================================================== authorization

    def _authorize(self, user: UserInfo, verb: str, rt: ResourceType, namespace: str, name: str, sub: str) -> None:
        attrs = RequestAttributes(user=user, verb=verb, resource_request=True, api_group=rt.group,
                                  api_version=rt.version, resource=rt.plural, subresource=sub,
                                  namespace=namespace, name=name)
        allowed, reason = self.authorizer.authorize(attrs)
        if allowed:
            return
        resource = f"{rt.plural}/{sub}" if sub else rt.plural
        scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        msg = f'User "{user.username}" cannot {verb} resource "{resource}" in API group "{rt.group}" {scope}'
        if reason:
            msg = f"{msg}: {reason}"
        qualified = _qualified(rt, "", "")
        full = f'{qualified} "{name}" is forbidden: {msg}' if name else f"{qualified} is forbidden: {msg}"
        raise ApiError(403, "Forbidden", full, _details(name, rt.group, rt.plural))

    def _authorize_path(self, user: UserInfo, verb: str, path: str) -> None:
        attrs = RequestAttributes(user=user, verb=verb, resource_request=False, path=path)
        allowed, reason = self.authorizer.authorize(attrs)
        if not allowed:
            msg = f'forbidden: User "{user.username}" cannot {verb} path "{path}"'
            raise ApiError(403, "Forbidden", f"{msg}: {reason}" if reason else msg, {})

    # ================================================================== resources

    async def _resource_request(self, req: ApiRequest, rt: ResourceType, namespace: str, name: str, sub: str,
                                watch_prefix: bool) -> ApiResponse:
        method = req.method
        query = req.query
        watch = watch_prefix or _truthy(query, "watch")
        if method in ("GET", "HEAD"):
            verb = "watch" if watch else ("get" if name else "list")
        elif method == "POST":
            verb = "create"
        elif method == "PUT":
            verb = "update"
        elif method == "PATCH":
            verb = "patch"
        elif method == "DELETE":
            verb = "delete" if name else "deletecollection"
        else:
            raise METHOD_NOT_ALLOWED
        if rt.namespaced and not namespace and verb not in ("list", "watch") and not rt.virtual:
            raise RESOURCE_NOT_FOUND if name else METHOD_NOT_ALLOWED
        self._authorize(req.user, verb, rt, namespace, name, sub)

        if rt.virtual:
            if verb != "create" or name:
                raise METHOD_NOT_ALLOWED
            return self._review(req, rt)
        if sub in STREAM_KINDS:
            raise bad_request("Upgrade request required")
        if sub == "log":
            if verb != "get":
                raise METHOD_NOT_ALLOWED
            return self._logs(req, rt, namespace, name)
        if verb not in rt.verbs and not sub:
            raise METHOD_NOT_ALLOWED
        if verb == "watch":
            return self._watch(req, rt, namespace, name)
        if verb == "list":
            return self._list(req, rt, namespace)
        if sub == "scale":
            return self._scale(req, rt, namespace, name, verb)
        if verb == "get":
            return self._get(req, rt, namespace, name)
        if verb == "create":
            if name:
                raise METHOD_NOT_ALLOWED
            return self._create(req, rt, namespace)
        if verb == "update":
            return self._update(req, rt, namespace, name, sub)
        if verb == "patch":
            return self._patch(req, rt, namespace, name, sub)
        if verb == "delete":
            if sub:
                raise METHOD_NOT_ALLOWED
            return self._delete(req, rt, namespace, name)
        if sub:
            raise METHOD_NOT_ALLOWED
        return self._delete_collection(req, rt, namespace)

    # ------------------------------------------------------------------ read

    def _entry(self, rt: ResourceType, namespace: str, name: str) -> Entry:
        entry = self.store.get_entry(rt.group, rt.plural, namespace, name)
        if entry is None:
            raise not_found(rt, name)
        return entry

    def _render_one(self, req: ApiRequest, rt: ResourceType, entry: Entry, status: int = 200) -> ApiResponse:
        prefs = _accept(req.headers)
        if prefs.table:
            table = tables.table(rt.group, rt.plural, [entry.obj],
                                 {"resourceVersion": entry.obj["metadata"].get("resourceVersion", "")},
                                 _q(req.query, "includeObject", "Metadata"), self.clock())
            table["apiVersion"] = prefs.table
            return _json_response(status, table)
        if prefs.partial and not prefs.json_ok:
            return _json_response(status, tables.partial_metadata(entry.obj))
        if not prefs.json_ok and not prefs.partial:
            raise ApiError(406, "NotAcceptable", "only the following media types are accepted: application/json, "
                           "application/yaml, application/vnd.kubernetes.protobuf")
        return _json_response(status, entry.raw)

    def _get(self, req: ApiRequest, rt: ResourceType, namespace: str, name: str) -> ApiResponse:
        return self._render_one(req, rt, self._entry(rt, namespace, name))

    def _selectors(self, req: ApiRequest, rt: ResourceType) -> tuple[LabelSelector, FieldSelector]:
        try:
            labels = parse_label_selector(_q(req.query, "labelSelector"))
            fields = parse_field_selector(_q(req.query, "fieldSelector"), rt.group, rt.plural, custom=not rt.builtin)
        except SelectorError as exc:
            raise bad_request(str(exc)) from None
        return labels, fields

    def _matching(self, rt: ResourceType, namespace: str, labels: LabelSelector,
                  fields: FieldSelector) -> tuple[list[Entry], int]:
        ns = namespace or fields.exact("metadata.namespace") or None
        name = fields.exact("metadata.name")
        if name is not None and (ns or not rt.namespaced):
            entry = self.store.get_entry(rt.group, rt.plural, ns, name)
            entries = [entry] if entry else []
            rv = self.store.resource_version
        else:
            entries, rv = self.store.list_entries(rt.group, rt.plural, ns)
        if not labels.empty or not fields.empty:
            entries = [e for e in entries
                       if labels.matches(e.obj["metadata"].get("labels")) and fields.matches(e.obj)]
        return entries, rv

    def _list(self, req: ApiRequest, rt: ResourceType, namespace: str) -> ApiResponse:
        labels, fields = self._selectors(req, rt)
        entries, rv = self._matching(rt, namespace, labels, fields)
        limit_text = _q(req.query, "limit")
        cont = _q(req.query, "continue")
        list_rv = rv
        if cont:
            try:
                token = json.loads(base64.urlsafe_b64decode(cont.encode() + b"=="))
                start = (str(token["start"][0]), str(token["start"][1]))
                list_rv = int(token["rv"])
            except Exception:
                raise bad_request(f'continue key is not valid: "{cont}"') from None
            if list_rv < self.store._floor.get((rt.group, rt.plural), 0):
                raise ApiError(410, "Expired", "The provided continue parameter is too old to display a consistent "
                               "list result. You can start a new list without the continue parameter.")
            entries = [e for e in entries if self._key(rt, e.obj) > start]
        meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if limit_text:
            try:
                limit = int(limit_text)
            except ValueError:
                raise bad_request(f'invalid limit "{limit_text}"') from None
            if limit > 0 and len(entries) > limit:
                last = entries[limit - 1]
                remaining = len(entries) - limit
                entries = entries[:limit]
                token_raw = json.dumps({"rv": list_rv, "start": list(self._key(rt, last.obj))}).encode()
                meta["continue"] = base64.urlsafe_b64encode(token_raw).decode().rstrip("=")
                meta["remainingItemCount"] = remaining
        prefs = _accept(req.headers)
        if prefs.table:
            return _json_response(200, tables.table_bytes(rt.group, rt.plural, entries, meta,
                                                          _q(req.query, "includeObject", "Metadata"), self.clock(),
                                                          prefs.table))
        if prefs.partial and not prefs.json_ok:
            return _json_response(200, {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                                        "metadata": meta, "items": [tables.partial_metadata(e.obj) for e in entries]})
        if not prefs.json_ok:
            raise ApiError(406, "NotAcceptable", "only the following media types are accepted: application/json, "
                           "application/yaml, application/vnd.kubernetes.protobuf")
        head = dumps({"kind": rt.list_kind_name, "apiVersion": rt.group_version, "metadata": meta})[:-1]
        body = b"".join((head, b',"items":[', b",".join(e.raw for e in entries), b"]}"))
        return ApiResponse(200, [("content-type", JSON)], body)

    @staticmethod
    def _key(rt: ResourceType, obj: dict[str, Any]) -> tuple[str, str]:
        meta = obj["metadata"]
        return (meta.get("namespace", "") if rt.namespaced else "", meta.get("name", ""))

    # ------------------------------------------------------------------ watch

    def _watch(self, req: ApiRequest, rt: ResourceType, namespace: str, name: str) -> ApiResponse:
        labels, fields = self._selectors(req, rt)
        if name:
            fields = FieldSelector(fields.requirements + parse_field_selector(
                f"metadata.name={name}", rt.group, rt.plural).requirements)
        rv_text = _q(req.query, "resourceVersion")
        try:
            since = int(rv_text) if rv_text not in ("", "0") else None
        except ValueError:
            raise bad_request(f'invalid resource version "{rv_text}"') from None
        timeout_text = _q(req.query, "timeoutSeconds")
        try:
            timeout = float(timeout_text) if timeout_text else None
        except ValueError:
            raise bad_request(f'invalid timeoutSeconds "{timeout_text}"') from None
        bookmarks = _truthy(req.query, "allowWatchBookmarks")
        send_initial = _truthy(req.query, "sendInitialEvents")
        prefs = _accept(req.headers)
        include = _q(req.query, "includeObject", "Metadata")
        stream = self._watch_stream(rt, namespace, labels, fields, since, timeout, bookmarks, send_initial,
                                    prefs.table, include)
        return ApiResponse(200, [("content-type", JSON), ("cache-control", "no-cache, private")], b"", stream)

    def _event_bytes(self, rt: ResourceType, kind: str, entry: Entry, table_version: str | None,
                     include: str) -> bytes:
        if table_version:
            table = tables.table_bytes(rt.group, rt.plural, [entry], {"resourceVersion": str(entry.rv)}, include,
                                       self.clock(), table_version)
            return b'{"type":"' + kind.encode() + b'","object":' + table + b"}\n"
        return b'{"type":"' + kind.encode() + b'","object":' + entry.raw + b"}\n"

    def _bookmark(self, rt: ResourceType, rv: int, initial_end: bool = False) -> bytes:
        meta: dict[str, Any] = {"resourceVersion": str(rv), "creationTimestamp": None}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return dumps({"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.group_version,
                                                     "metadata": meta}}) + b"\n"

    async def _watch_stream(self, rt: ResourceType, namespace: str, labels: LabelSelector, fields: FieldSelector,
                            since: int | None, timeout: float | None, bookmarks: bool, send_initial: bool,
                            table_version: str | None, include: str) -> AsyncIterator[bytes]:
        store = self.store
        ns = namespace or fields.exact("metadata.namespace") or ""

        def matches(obj: dict[str, Any] | None) -> bool:
            if obj is None:
                return False
            meta = obj["metadata"]
            if ns and meta.get("namespace", "") != ns:
                return False
            return labels.matches(meta.get("labels")) and fields.matches(obj)

        initial: list[Entry] = []
        try:
            if since is None or send_initial:
                with store._lock:
                    entries, rv = store.list_entries(rt.group, rt.plural, ns or None)
                    watcher = store.watch(rt.group, rt.plural, rv)
                initial = [e for e in entries if matches(e.obj)]
            else:
                watcher = store.watch(rt.group, rt.plural, since)
        except Gone as exc:
            status = status_dict(410, "Expired", str(exc))
            yield dumps({"type": "ERROR", "object": status}) + b"\n"
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        last_rv = store.resource_version
        try:
            for entry in initial:
                yield self._event_bytes(rt, "ADDED", entry, table_version, include)
            if send_initial and bookmarks:
                yield self._bookmark(rt, last_rv, initial_end=True)
            pending: list[Event] = list(watcher.backlog)
            watcher.backlog = []
            while True:
                for event in pending:
                    last_rv = event.rv
                    now_match = matches(event.obj)
                    if event.type == "DELETED":
                        if now_match:
                            yield self._event_bytes(rt, "DELETED", event.entry, table_version, include)
                        continue
                    was_match = matches(event.prev.obj) if event.prev is not None else False
                    if event.type == "ADDED":
                        kind = "ADDED" if now_match else ""
                    elif now_match:
                        kind = "MODIFIED" if was_match else "ADDED"
                    else:
                        kind = "DELETED" if was_match else ""
                    if kind:
                        yield self._event_bytes(rt, kind, event.entry, table_version, include)
                pending = []
                if watcher.overflowed:
                    return
                wait = self.bookmark_seconds if bookmarks else None
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    wait = remaining if wait is None else min(wait, remaining)
                event = await watcher.next(wait)
                if event is None:
                    if bookmarks and (deadline is None or deadline - time.monotonic() > 0):
                        yield self._bookmark(rt, max(last_rv, store.resource_version))
                    continue
                pending.append(event)
                while not watcher._waker.queue.empty():
                    pending.append(watcher._waker.queue.get_nowait())
        finally:
            watcher.close()

    # ------------------------------------------------------------------ logs

    def _logs(self, req: ApiRequest, rt: ResourceType, namespace: str, name: str) -> ApiResponse:
        pod = self._entry(rt, namespace, name).obj
        containers = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
        init = [c.get("name", "") for c in (pod.get("spec") or {}).get("initContainers") or []]
        container = _q(req.query, "container")
        if not container:
            default = ((pod["metadata"].get("annotations") or {}).get("kubectl.kubernetes.io/default-container"))
            if default:
                container = default
            elif len(containers) == 1:
                container = containers[0]
            else:
                choices = " ".join(containers)
                raise bad_request(f"a container name must be specified for pod {name}, choose one of: [{choices}]")
        if container not in containers and container not in init:
            raise bad_request(f"container {container} is not valid for pod {name}")
        tail_text = _q(req.query, "tailLines")
        limit_text = _q(req.query, "limitBytes")
        try:
            tail = int(tail_text) if tail_text else None
            limit_bytes = int(limit_text) if limit_text else None
        except ValueError:
            raise bad_request("tailLines and limitBytes must be integers") from None
        if (tail is not None and tail < 0) or (limit_bytes is not None and limit_bytes < 1):
            raise ApiError(422, "Invalid", f'PodLogOptions "{name}" is invalid: tailLines/limitBytes out of range')
        timestamps = _truthy(req.query, "timestamps")
        if _truthy(req.query, "previous"):
            raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
        since_text = _q(req.query, "sinceSeconds")
        since_stamp = ""
        if since_text:
            try:
                since_seconds = int(since_text)
            except ValueError:
                raise bad_request(f'invalid sinceSeconds "{since_text}"') from None
            if since_seconds < 1:
                raise ApiError(422, "Invalid", f'PodLogOptions "{name}" is invalid: sinceSeconds: Invalid value: '
                               f"{since_seconds}: must be greater than 0")
            since_stamp = datetime.fromtimestamp(self.clock() - since_seconds, UTC).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ")
        follow = _truthy(req.query, "follow")

        def fmt(stamp: str, line: str) -> bytes:
            return (f"{stamp} {line}\n" if timestamps else f"{line}\n").encode()

        headers = [("content-type", "text/plain")]

        def select(lines: list[tuple[str, str]]) -> bytes:
            if since_stamp:
                lines = [(stamp, line) for stamp, line in lines if stamp >= since_stamp]
            if tail is not None:
                lines = lines[-tail:] if tail else []
            initial = b"".join(fmt(s, line) for s, line in lines)
            return initial[:limit_bytes] if limit_bytes is not None else initial

        if not follow:
            return ApiResponse(200, headers, select(self.store.read_logs(namespace, name, container)))
        return ApiResponse(200, headers, b"", self._follow_logs(namespace, name, container, select, fmt, limit_bytes))

    async def _follow_logs(self, namespace: str, pod: str, container: str,
                           select: Callable[[list[tuple[str, str]]], bytes], fmt: Callable[[str, str], bytes],
                           limit_bytes: int | None) -> AsyncIterator[bytes]:
        # Subscribing happens on the first iteration, so a response dropped unread leaks nothing; the lines
        # logged so far and the subscription are taken together, so no line is lost or repeated.
        store = self.store
        with store._lock:
            lines = store.read_logs(namespace, pod, container)
            follower = store.follow_logs(namespace, pod)
        sent = 0
        ticks = 0
        try:
            initial = select(lines)
            if initial:
                sent += len(initial)
                yield initial
            while limit_bytes is None or sent < limit_bytes:
                item = await follower.next(self.log_tick_seconds)
                if item is None:
                    if store.get_entry("", "pods", namespace, pod) is None:
                        return
                    ticks += 1
                    store.append_log(namespace, pod, f"{pod} heartbeat {ticks}", container)
                    continue
                name, stamp, line = item
                if name != container:
                    continue
                chunk = fmt(stamp, line)
                if limit_bytes is not None:
                    chunk = chunk[: limit_bytes - sent]
                sent += len(chunk)
                yield chunk
        finally:
            follower.close()

    # ------------------------------------------------------------------ write helpers

    def _decode_body(self, req: ApiRequest, allow_yaml: bool = True) -> Any:
        media = _media_type(req.headers)
        body = req.body
        if not body.strip():
            raise bad_request("the body of the request is empty")
        if media in ("application/yaml", "application/x-yaml", "text/yaml") and allow_yaml:
            return load_yaml(body)
        if media == "application/vnd.kubernetes.protobuf":
            try:
                return protobuf.decode_object(body)
            except protobuf.UnsupportedKind as exc:
                raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                               f"accepted media types include: {ACCEPTED_BODIES} ({exc})") from None
            except (protobuf.ProtobufError, UnicodeDecodeError) as exc:
                raise bad_request(f"error decoding protobuf body: {exc}") from None
        if media not in ("application/json", "", "*/*"):
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                           f"accepted media types include: {ACCEPTED_BODIES}")
        try:
            return loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_request(f"couldn't get version/kind; json parse error: {exc}") from None

    def _check_object(self, rt: ResourceType, obj: Any, namespace: str) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise bad_request("the body of the request must be a JSON object")
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if not kind:  # the endpoint names the kind (the apiserver's decoder defaults it the same way)
            kind = obj["kind"] = rt.kind
        if api_version and api_version != rt.group_version:
            raise bad_request(f"the API version in the data ({api_version}) does not match the expected API "
                              f"version ({rt.group_version})")
        if kind != rt.kind:
            raise bad_request(f"the object provided is unrecognized (must be of type {rt.kind}): "
                              f"kind {kind!r} (body of kind {kind})")
        obj["apiVersion"] = rt.group_version
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if rt.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and namespace and body_ns != namespace:
                raise bad_request("the namespace of the provided object does not match the namespace sent on "
                                  "the request")
            meta["namespace"] = namespace or body_ns
        else:
            meta.pop("namespace", None)
        for key in ("labels", "annotations"):
            value = meta.get(key)
            if value is not None and (not isinstance(value, dict)
                                      or not all(isinstance(v, str) for v in value.values())):
                raise invalid(rt, str(meta.get("name", "")), [(f"metadata.{key}", "Invalid value: must be a map of "
                                                               "string keys to string values")])
        return obj

    def _field_validation(self, req: ApiRequest, rt: ResourceType, obj: dict[str, Any]) -> list[str]:
        """Unknown top-level fields of built-in kinds: 400 under ``fieldValidation=Strict``, else warnings."""
        known = KIND_FIELDS.get(rt.kind)
        mode = _q(req.query, "fieldValidation", "Warn")
        if known is None or mode == "Ignore":
            return []
        unknown = sorted(k for k in obj if k not in known)
        if unknown and mode == "Strict":
            fields = ", ".join(f'unknown field "{k}"' for k in unknown)
            raise bad_request(f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: strict '
                              f"decoding error: {fields}")
        warnings = _WARNINGS.get()
        for key in unknown:
            obj.pop(key, None)
            if warnings is not None and mode == "Warn":
                warnings.append(f'unknown field \\"{key}\\"')
        return [f'unknown field "{k}"' for k in unknown]

    def _validate(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        name = meta.get("name")
        causes: list[tuple[str, str]] = []
        if not isinstance(name, str) or not name:
            causes.append(("metadata.name", "Required value: name or generateName is required"))
        else:
            pattern = DNS1123_LABEL if rt.plural in ("namespaces", "services") else DNS1123_SUBDOMAIN
            if len(name) > 253 or not pattern.match(name):
                causes.append(("metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must '
                               "consist of lower case alphanumeric characters, '-' or '.', and must start and "
                               "end with an alphanumeric character"))
        labels = meta.get("labels") or {}
        for key, value in labels.items():
            try:
                parse_label_selector(f"{key}={value}" if value else f"{key}")
            except SelectorError:
                causes.append(("metadata.labels", f'Invalid value: "{value}": invalid label {key}={value}'))
        if rt.group == "" and rt.plural == "pods":
            containers = (obj.get("spec") or {}).get("containers")
            if not isinstance(containers, list) or not containers:
                causes.append(("spec.containers", "Required value"))
            else:
                for i, c in enumerate(containers):
                    if not isinstance(c, dict) or not c.get("name"):
                        causes.append((f"spec.containers[{i}].name", "Required value"))
                    elif not c.get("image"):
                        causes.append((f"spec.containers[{i}].image", "Required value"))
        if rt.group == "apps" and rt.plural == "deployments":
            spec = obj.get("spec") or {}
            if not (spec.get("selector") or {}).get("matchLabels") and not (spec.get("selector") or {}).get(
                    "matchExpressions"):
                causes.append(("spec.selector", "Required value"))
            template_containers = ((spec.get("template") or {}).get("spec") or {}).get("containers")
            if not template_containers:
                causes.append(("spec.template.spec.containers", "Required value"))
        if causes:
            raise invalid(rt, str(name or ""), causes)

    def _defaults(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        """What defaulting and the (absent) controllers would have set on a new object."""
        gr = (rt.group, rt.plural)
        if gr == ("", "pods"):
            spec = obj.setdefault("spec", {})
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("serviceAccountName", "default")
            spec.setdefault("serviceAccount", spec["serviceAccountName"])
            spec.setdefault("nodeName", "sandbox-node-1")
            for c in spec.get("containers") or []:
                c.setdefault("imagePullPolicy", "Always" if str(c.get("image", "")).endswith(":latest") else
                             "IfNotPresent")
                c.setdefault("terminationMessagePath", "/dev/termination-log")
                c.setdefault("terminationMessagePolicy", "File")
            if "status" not in obj or not obj["status"]:
                started = now_rfc3339()
                obj["status"] = {
                    "phase": "Running",
                    "conditions": [{"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": started}
                                   for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
                    "containerStatuses": [{"name": c.get("name", ""), "image": c.get("image", ""), "imageID": "",
                                           "ready": True, "started": True, "restartCount": 0,
                                           "state": {"running": {"startedAt": started}}, "lastState": {}}
                                          for c in spec.get("containers") or []],
                    "hostIP": "192.168.49.2",
                    "podIP": (ip := self.pod_addresses.allocate()),
                    "podIPs": [{"ip": ip}],
                    "qosClass": "BestEffort",
                    "startTime": started,
                }
        elif gr == (CRD_GROUP, CRD_PLURAL):
            obj["status"] = crd_status(obj, now_rfc3339())
        elif gr == ("", "namespaces"):
            obj["spec"] = obj.get("spec") or {}
            obj["spec"].setdefault("finalizers", ["kubernetes"])
            obj["status"] = {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif gr == ("", "services"):
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            if not spec.get("clusterIP"):
                self._next_cluster_ip += 1
                ip = f"10.96.{self._next_cluster_ip // 250}.{self._next_cluster_ip % 250 + 1}"
                spec["clusterIP"] = ip
                spec["clusterIPs"] = [ip]
            for p in spec.get("ports") or []:
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")
                    p.setdefault("targetPort", p.get("port"))
            obj.setdefault("status", {"loadBalancer": {}})
        elif gr == ("", "secrets"):
            obj.setdefault("type", "Opaque")
            string_data = obj.pop("stringData", None)
            if isinstance(string_data, dict):
                data = obj.setdefault("data", {})
                for key, value in string_data.items():
                    data[key] = base64.b64encode(str(value).encode()).decode()
        elif gr == ("apps", "deployments"):
            spec = obj.setdefault("spec", {})
            spec.setdefault("replicas", 1)
            if not spec.get("strategy"):
                spec["strategy"] = {"type": "RollingUpdate",
                                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            replicas = spec.get("replicas") or 0
            obj["status"] = {"replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas,
                             "availableReplicas": replicas}

    def _manager(self, req: ApiRequest, default: str) -> str:
        manager = _q(req.query, "fieldManager")
        if manager:
            return manager
        agent = req.headers.get("user-agent", "")
        return agent.split("/", 1)[0] if agent else default

    def _set_managed(self, req: ApiRequest, rt: ResourceType, obj: dict[str, Any], manager: str, operation: str,
                     fields_source: Any, previous: dict[str, Any] | None,
                     subresource: str = "") -> None:
        """Record an Update in managedFields: on create the manager owns what it sent; on update and patch
        it owns the fields whose values it changed (plus what it owned before), and those fields leave
        their other owners, like the apiserver's field manager."""
        entries = [dict(e) for e in (previous or {}).get("metadata", {}).get("managedFields") or []]
        mine = next((e for e in entries if e.get("manager") == manager and e.get("operation") == operation
                     and e.get("subresource", "") == subresource), None)
        if previous is None:
            fields = patches.fields_v1(fields_source)
        else:
            changed = patches.changed_paths(previous, obj)
            fields = patches.paths_to_fields(changed, mine.get("fieldsV1") if mine else None)
            for entry in entries:
                if entry is mine:
                    continue
                owned = copy.deepcopy(entry.get("fieldsV1") or {})
                for path in changed:
                    patches.remove_path(owned, path)
                entry["fieldsV1"] = owned
        entries = [e for e in entries if e is not mine and patches.leaf_paths(e.get("fieldsV1") or {})]
        entry: dict[str, Any] = {"manager": manager, "operation": operation, "apiVersion": rt.group_version,
                                 "time": now_rfc3339(), "fieldsType": "FieldsV1", "fieldsV1": fields}
        if subresource:
            entry["subresource"] = subresource
        if patches.leaf_paths(fields):
            entries.append(entry)
        obj["metadata"]["managedFields"] = entries

    def _dry_run(self, req: ApiRequest) -> bool:
        values = req.query.get("dryRun") or []
        for value in values:
            if value != "All":
                raise bad_request(f'Invalid dry run value: "{value}": valid values are "All"')
        return bool(values)

    def _check_namespace(self, rt: ResourceType, namespace: str) -> None:
        if rt.namespaced and self.store.get_entry("", "namespaces", None, namespace) is None:
            ns_rt = self.catalog.get("", "v1", "namespaces")
            assert ns_rt is not None
            raise not_found(ns_rt, namespace)

    def _created(self, req: ApiRequest, rt: ResourceType, obj: dict[str, Any], status: int) -> ApiResponse:
        """Store a new, validated object (or pretend to, for dryRun) and render it."""
        dry = self._dry_run(req)
        self._validate(rt, obj)
        self._check_namespace(rt, obj["metadata"].get("namespace", ""))
        self._defaults(rt, obj)
        if dry:
            if self.store.get_entry(rt.group, rt.plural, obj["metadata"].get("namespace"), obj["metadata"]["name"]):
                raise self._already_exists(rt, obj["metadata"]["name"])
            return self._render_one(req, rt, Entry(obj, self.store.resource_version), status)
        try:
            entry = self.store.create(rt.group, rt.plural, obj)
        except AlreadyExists:
            raise self._already_exists(rt, obj["metadata"]["name"]) from None
        if (rt.group, rt.plural) == ("", "pods"):
            self._pod_started_events(entry.obj)
        entry = self._after_write(rt, entry)
        return self._render_one(req, rt, entry, status)

    def _serve_crds(self) -> None:
        """Serve the kinds of every stored CRD (beside the built-in resources): a new catalog and new
        discovery documents, so clients see them at once (kubectl re-reads discovery on a no-match)."""
        builtin = self._builtin
        extra: dict[tuple[str, str, str], ResourceType] = {}
        for crd in self.store.list_objects(CRD_GROUP, CRD_PLURAL):
            for rt in crd_resource_types(crd):
                key = (rt.group, rt.version, rt.plural)
                if builtin.get(*key) is None and key not in extra:
                    extra[key] = rt
        if not extra and self.catalog is builtin:
            return
        for rt in extra.values():
            self.store.add_resource_type(rt)
        self.catalog = Catalog(builtin.resources + tuple(extra.values())) if extra else builtin
        self.docs = DiscoveryDocs(self.catalog)

    def _after_write(self, rt: ResourceType, entry: Entry) -> Entry:
        """Run the controllers a write concerns; answer with the object as they left it."""
        if (rt.group, rt.plural) == (CRD_GROUP, CRD_PLURAL):
            self._serve_crds()
            return entry
        if (rt.group, rt.plural) != ("apps", "deployments"):
            return entry
        meta = entry.obj["metadata"]
        self.deployments.reconcile(meta["namespace"], meta["name"])
        return self.store.get_entry(rt.group, rt.plural, meta["namespace"], meta["name"]) or entry

    def _collect_owned(self, rt: ResourceType, deleted: Entry) -> None:
        """Garbage collection of what a deleted Deployment / ReplicaSet owned (background propagation);
        a deleted pod of a ReplicaSet is replaced (the controller keeps the replica count)."""
        if (rt.group, rt.plural) in (("apps", "deployments"), ("apps", "replicasets")):
            meta = deleted.obj["metadata"]
            collect_garbage(self.store, meta.get("namespace", ""), meta.get("uid", ""))
        elif (rt.group, rt.plural) == ("", "pods"):
            self.deployments.pod_deleted(deleted.obj)
        elif (rt.group, rt.plural) == (CRD_GROUP, CRD_PLURAL):
            self._delete_custom_objects(deleted.obj)
            self._serve_crds()

    def _delete_custom_objects(self, crd: dict[str, Any]) -> None:
        """A deleted CRD takes its objects with it (the apiextensions controller's cleanup)."""
        for rt in crd_resource_types(crd):
            if self._builtin.get(rt.group, rt.version, rt.plural) is not None:
                continue
            for obj in self.store.list_objects(rt.group, rt.plural):
                meta = obj["metadata"]
                with contextlib.suppress(NotFound):
                    self.store.delete(rt.group, rt.plural, meta.get("namespace"), meta["name"])

    def _controller_pod(self, pod: dict[str, Any]) -> None:
        pod_rt = self.catalog.get("", "v1", "pods")
        assert pod_rt is not None
        self._defaults(pod_rt, pod)
        try:
            entry = self.store.create("", "pods", pod)
        except AlreadyExists:
            return
        self._pod_started_events(entry.obj)

    def _pod_started_events(self, pod: dict[str, Any]) -> None:
        """The events the scheduler and kubelet would record for a new pod (``kubectl describe`` shows them)."""
        meta = pod["metadata"]
        node = (pod.get("spec") or {}).get("nodeName", "sandbox-node-1")
        involved = {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "namespace": meta["namespace"],
                    "uid": meta.get("uid", ""), "resourceVersion": meta.get("resourceVersion", "")}
        stamp = now_rfc3339()
        records = [("Scheduled", f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}",
                    {"component": "default-scheduler"}, None)]
        for c in (pod.get("spec") or {}).get("containers") or []:
            records.append(("Started", f"Started container {c.get('name', '')}", {"component": "kubelet", "host": node},
                            f"spec.containers{{{c.get('name', '')}}}"))
        for reason, message, source, field_path in records:
            event = {"apiVersion": "v1", "kind": "Event",
                     "metadata": {"name": f"{meta['name']}.{random.getrandbits(64):016x}", "namespace": meta["namespace"]},
                     "involvedObject": dict(involved, fieldPath=field_path) if field_path else involved,
                     "reason": reason, "message": message, "type": "Normal", "count": 1, "source": source,
                     "firstTimestamp": stamp, "lastTimestamp": stamp, "reportingComponent": source["component"]}
            try:
                self.store.create("", "events", event)
            except AlreadyExists:
                continue

    @staticmethod
    def _already_exists(rt: ResourceType, name: str) -> ApiError:
        return ApiError(409, "AlreadyExists", f'{_qualified(rt, "", "")} "{name}" already exists',
                        _details(name, rt.group, rt.plural))

    @staticmethod
    def _apply_conflict(rt: ResourceType, name: str, conflicts: list[tuple[str, tuple[str, ...]]]) -> ApiError:
        """The apiserver's server-side apply conflict (kubectl adds its --force-conflicts advice)."""
        version = rt.group_version
        if len(conflicts) == 1:
            owner, path = conflicts[0]
            message = f'Apply failed with 1 conflict: conflict with "{owner}" using {version}: {patches.format_path(path)}'
        else:
            owners = sorted({owner for owner, _ in conflicts})
            lines = "".join(f"\n- {patches.format_path(path)}" for _, path in conflicts)
            who = ", ".join(f'"{o}"' for o in owners)
            message = f"Apply failed with {len(conflicts)} conflicts: conflicts with {who} using {version}:{lines}"
        details = _details(name, rt.group, rt.plural)
        details["causes"] = [{"reason": "FieldManagerConflict", "message": f'conflict with "{owner}" using {version}',
                              "field": patches.format_path(path)} for owner, path in conflicts]
        return ApiError(409, "Conflict", message, details)

    @staticmethod
    def _conflict(rt: ResourceType, name: str) -> ApiError:
        return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {_qualified(rt, "", "")} "{name}": the '
                        "object has been modified; please apply your changes to the latest version and try again",
                        _details(name, rt.group, rt.plural))

    # ------------------------------------------------------------------ create

    def _create(self, req: ApiRequest, rt: ResourceType, namespace: str) -> ApiResponse:
        obj = self._check_object(rt, self._decode_body(req), namespace)
        self._field_validation(req, rt, obj)
        meta = obj["metadata"]
        for key in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "generation"):
            meta.pop(key, None)
        obj.pop("status", None) if rt.plural not in ("pods", "nodes", "events") else None
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{_random_suffix()}"
        self._set_managed(req, rt, obj, self._manager(req, "unknown"), "Update", obj, None)
        return self._created(req, rt, obj, 201)

    # ------------------------------------------------------------------ update

    def _save(self, req: ApiRequest, rt: ResourceType, current: Entry, new: dict[str, Any], sub: str,
              precondition: str | None) -> ApiResponse:
        """Write ``new`` over ``current`` keeping immutable metadata; status rules per subresource."""
        old = current.obj
        meta = new["metadata"]
        meta["name"] = old["metadata"]["name"]
        if rt.namespaced:
            meta["namespace"] = old["metadata"].get("namespace")
        for key in ("uid", "creationTimestamp"):
            if old["metadata"].get(key) is not None:
                meta[key] = old["metadata"][key]
        has_status = "status" in rt.subresources
        if sub == "status":
            status = new.get("status")
            new = {k: copy.deepcopy(v) for k, v in old.items() if k != "status"}
            new["metadata"] = dict(new["metadata"], managedFields=meta.get("managedFields",
                                                                         old["metadata"].get("managedFields")))
            if status is not None:
                new["status"] = status
        elif has_status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        if rt.group == "apps" and rt.plural == "deployments" and sub != "status":
            replicas = (new.get("spec") or {}).get("replicas", 1) or 0
            new["status"] = {"replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas,
                             "availableReplicas": replicas}
        self._validate(rt, new)
        if self._dry_run(req):
            if precondition and precondition != old["metadata"].get("resourceVersion"):
                raise self._conflict(rt, meta["name"])
            new["metadata"]["resourceVersion"] = old["metadata"].get("resourceVersion")
            return self._render_one(req, rt, Entry(new, current.rv))
        try:
            entry = self.store.update(rt.group, rt.plural, new, precondition)
        except Conflict:
            raise self._conflict(rt, meta["name"]) from None
        except NotFound:
            raise not_found(rt, meta["name"]) from None
        return self._render_one(req, rt, self._after_write(rt, entry))

    def _update(self, req: ApiRequest, rt: ResourceType, namespace: str, name: str, sub: str) -> ApiResponse:
        if not name:
            raise METHOD_NOT_ALLOWED
        if sub and sub != "status":
            raise METHOD_NOT_ALLOWED
        obj = self._check_object(rt, self._decode_body(req), namespace)
        self._field_validation(req, rt, obj)
        body_name = obj["metadata"].get("name")
        if body_name and body_name != name:
            raise bad_request(f"the name of the object ({body_name}) does not match the name on the URL ({name})")
        obj["metadata"]["name"] = name
        current = self._entry(rt, namespace, name)
        precondition = obj["metadata"].get("resourceVersion") or None
        if not obj["metadata"].get("managedFields"):
            self._set_managed(req, rt, obj, self._manager(req, "unknown"), "Update", obj, current.obj, sub)
        return self._save(req, rt, current, obj, sub, precondition)

    # ------------------------------------------------------------------ patch

    def _patch(self, req: ApiRequest, rt: ResourceType, namespace: str, name: str, sub: str) -> ApiResponse:
        if not name or (sub and sub != "status"):
            raise METHOD_NOT_ALLOWED
        media = _media_type(req.headers)
        if media not in PATCH_TYPES or (media == "application/strategic-merge-patch+json" and not rt.builtin):
            accepted = [t for t in PATCH_TYPES if rt.builtin or "strategic" not in t]
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                           f"accepted media types include: {', '.join(accepted)}")
        if media == "application/apply-patch+yaml":
            return self._apply(req, rt, namespace, name, sub)
        try:
            document = loads(req.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_request(f"error decoding patch: {exc}") from None
        current = self._entry(rt, namespace, name)
        try:
            if media == "application/json-patch+json":
                if not isinstance(document, list):
                    raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
                patched = patches.json_patch(current.obj, document)
            elif media == "application/merge-patch+json":
                if not isinstance(document, dict):
                    raise bad_request("merge patch must be a JSON object")
                patched = patches.merge_patch(current.obj, document)
            else:
                if not isinstance(document, dict):
                    raise bad_request("strategic merge patch must be a JSON object")
                patched = patches.strategic_merge_patch(current.obj, document)
        except patches.PatchError as exc:
            raise ApiError(422, "Invalid", str(exc)) from None
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
            raise ApiError(422, "Invalid", f'{rt.kind} "{name}" is invalid: the patch removed the object metadata')
        patched = copy.deepcopy(patched)
        if patched.get("kind") != rt.kind or patched.get("apiVersion") != rt.group_version:
            raise bad_request(f"the patch may not change the kind or apiVersion of a {rt.kind}")
        self._field_validation(req, rt, patched)
        meta = patched["metadata"]
        if meta.get("name") != name or (rt.namespaced and meta.get("namespace") != namespace):
            raise bad_request("the patch may not change the name or namespace of the object")
        precondition = meta.get("resourceVersion")
        if precondition == current.obj["metadata"].get("resourceVersion"):
            precondition = None
        elif precondition is not None:
            raise self._conflict(rt, name)
        self._set_managed(req, rt, patched, self._manager(req, "unknown"), "Update", document
                          if isinstance(document, dict) else {}, current.obj, sub)
        return self._save(req, rt, current, patched, sub, None)

    def _apply(self, req: ApiRequest, rt: ResourceType, namespace: str, name: str, sub: str) -> ApiResponse:
        manager = _q(req.query, "fieldManager")
        if not manager:
            raise bad_request("PATCH /apply requests require a fieldManager parameter (fieldManager is required "
                              "for apply patch)")
        applied = load_yaml(req.body)
        applied = self._check_object(rt, applied, namespace)
        self._field_validation(req, rt, applied)
        meta = applied["metadata"]
        if meta.get("name") and meta["name"] != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        meta["name"] = name
        precondition = meta.pop("resourceVersion", None)
        for key in ("managedFields", "uid", "creationTimestamp", "generation"):
            meta.pop(key, None)
        current = self.store.get_entry(rt.group, rt.plural, namespace, name)
        fields = patches.fields_v1(applied)
        entry = {"manager": manager, "operation": "Apply", "apiVersion": rt.group_version,
                 "time": now_rfc3339(), "fieldsType": "FieldsV1", "fieldsV1": fields}
        if sub:
            entry["subresource"] = sub
        if current is None:
            if sub:
                raise not_found(rt, name)
            new = copy.deepcopy(applied)
            new["metadata"]["managedFields"] = [entry]
            return self._created(req, rt, new, 201)
        if precondition and precondition != current.obj["metadata"].get("resourceVersion"):
            raise self._conflict(rt, name)
        managed = current.obj["metadata"].get("managedFields") or []
        previous_fields = next((m.get("fieldsV1") for m in managed if m.get("manager") == manager
                                and m.get("operation") == "Apply" and m.get("subresource", "") == sub), None)
        live = {k: v for k, v in current.obj.items()}
        live_meta = dict(current.obj["metadata"])
        live_meta.pop("managedFields", None)
        live["metadata"] = live_meta
        others = [copy.deepcopy(m) for m in managed if not (m.get("manager") == manager
                                                              and m.get("operation") == "Apply"
                                                              and m.get("subresource", "") == sub)]
        conflicts = patches.apply_conflicts(live, applied, fields, others)
        # the client-side-apply owner hands its fields over without conflicts (kubectl's upgrade path)
        blocking = [c for c in conflicts if c[0] not in ("kubectl-client-side-apply", "before-first-apply")]
        if blocking and not _truthy(req.query, "force"):
            raise self._apply_conflict(rt, name, blocking)
        for owner, path in conflicts:  # forced: the applier takes the fields over
            for other in others:
                if other.get("manager") == owner:
                    patches.remove_path(other.get("fieldsV1") or {}, path)
        others = [m for m in others if patches.leaf_paths(m.get("fieldsV1") or {})]
        merged = copy.deepcopy(patches.apply_merge(live, applied, previous_fields))
        merged["metadata"]["managedFields"] = others + [entry]
        return self._save(req, rt, current, merged, sub, None)

    # ------------------------------------------------------------------ scale

    @staticmethod
    def _scale_of(obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        spec = obj.get("spec") or {}
        match = (spec.get("selector") or {}).get("matchLabels") or {}
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                             if k in meta},
                "spec": {"replicas": spec.get("replicas", 1)},
                "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                           "selector": ",".join(f"{k}={v}" for k, v in sorted(match.items()))}}

    def _scale(self, req: ApiRequest, rt: ResourceType, namespace: str, name: str, verb: str) -> ApiResponse:
        """``deployments/scale`` (autoscaling/v1 Scale): read and write ``spec.replicas``."""
        current = self._entry(rt, namespace, name)
        scale = self._scale_of(current.obj)
        if verb == "get":
            return _json_response(200, scale)
        if verb not in ("update", "patch"):
            raise METHOD_NOT_ALLOWED
        if verb == "update":
            new_scale = self._decode_body(req)
        else:
            media = _media_type(req.headers)
            try:
                document = loads(req.body)
                if media == "application/json-patch+json":
                    new_scale = patches.json_patch(scale, document)
                elif media in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                    new_scale = patches.merge_patch(scale, document)
                else:
                    raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                                   "accepted media types include: application/json-patch+json, "
                                   "application/merge-patch+json, application/strategic-merge-patch+json")
            except (ValueError, UnicodeDecodeError) as exc:
                raise bad_request(f"error decoding patch: {exc}") from None
            except patches.PatchError as exc:
                raise ApiError(422, "Invalid", str(exc)) from None
        replicas = ((new_scale or {}).get("spec") or {}).get("replicas") if isinstance(new_scale, dict) else None
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, "Invalid", f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                           f"{replicas!r}: must be greater than or equal to 0")
        precondition = ((new_scale.get("metadata") or {}).get("resourceVersion") or None) if verb == "update" else None
        new = copy.deepcopy(current.obj)
        new["spec"]["replicas"] = replicas
        response = self._save(req, rt, current, new, "", precondition)
        return _json_response(200, self._scale_of(json.loads(response.body)))

    # ------------------------------------------------------------------ delete

    def _delete_options(self, req: ApiRequest) -> dict[str, Any]:
        if not req.body.strip():
            return {}
        try:
            options = loads(req.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_request(f"couldn't decode DeleteOptions: {exc}") from None
        if not isinstance(options, dict):
            raise bad_request("DeleteOptions must be a JSON object")
        policy = options.get("propagationPolicy")
        if policy is not None and policy not in ("Orphan", "Background", "Foreground"):
            raise ApiError(422, "Invalid", f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: '
                           f'Unsupported value: "{policy}": supported values: "Foreground", "Background", "Orphan"')
        return options

    def _delete(self, req: ApiRequest, rt: ResourceType, namespace: str, name: str) -> ApiResponse:
        options = self._delete_options(req)
        if (rt.group, rt.plural) == ("", "namespaces") and name in PROTECTED_NAMESPACES:
            raise ApiError(403, "Forbidden", f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                           _details(name, "", "namespaces"))
        policy = _q(req.query, "propagationPolicy")
        if policy and policy not in ("Orphan", "Background", "Foreground"):
            raise bad_request(f'invalid propagationPolicy "{policy}"')
        pre = options.get("preconditions") or {}
        current = self._entry(rt, namespace, name)
        dry = self._dry_run(req) or options.get("dryRun") == ["All"]
        if dry:
            entry = current
        else:
            try:
                entry = self.store.delete(rt.group, rt.plural, namespace, name,
                                          pre.get("uid") if isinstance(pre, dict) else None,
                                          pre.get("resourceVersion") if isinstance(pre, dict) else None)
            except NotFound:
                raise not_found(rt, name) from None
            except Conflict:
                uid = pre.get("uid") if isinstance(pre, dict) else None
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {_qualified(rt, "", "")} "{name}": '
                               f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
                               f"{current.obj['metadata'].get('uid')}", _details(name, rt.group, rt.plural)) from None
            self._collect_owned(rt, entry)
        if rt.plural in ("pods", "namespaces") and rt.group == "":
            return self._render_one(req, rt, entry)
        details = _details(name, rt.group, rt.plural)
        details["uid"] = entry.obj["metadata"].get("uid")
        return _json_response(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                    "details": details})

    def _delete_collection(self, req: ApiRequest, rt: ResourceType, namespace: str) -> ApiResponse:
        self._delete_options(req)
        labels, fields = self._selectors(req, rt)
        entries, _ = self._matching(rt, namespace, labels, fields)
        dry = self._dry_run(req)
        deleted: list[bytes] = []
        for entry in entries:
            if dry:
                deleted.append(entry.raw)
                continue
            meta = entry.obj["metadata"]
            try:
                gone = self.store.delete(rt.group, rt.plural, meta.get("namespace"), meta["name"])
            except NotFound:
                continue
            self._collect_owned(rt, gone)
            deleted.append(gone.raw)
        head = dumps({"kind": rt.list_kind_name, "apiVersion": rt.group_version,
                      "metadata": {"resourceVersion": str(self.store.resource_version)}})[:-1]
        return ApiResponse(200, [("content-type", JSON)], head + b',"items":[' + b",".join(deleted) + b"]}")

    # ------------------------------------------------------------------ reviews

    def _review(self, req: ApiRequest, rt: ResourceType) -> ApiResponse:
        if _media_type(req.headers) == "application/vnd.kubernetes.protobuf":
            from sandbox.authz import ReviewError, decode_review_protobuf

            try:
                body: Any = decode_review_protobuf(req.body)
            except (ReviewError, UnicodeDecodeError) as exc:
                raise bad_request(f"error decoding protobuf body: {exc}") from None
        else:
            body = self._decode_body(req)
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a JSON object")
        kind = body.get("kind")
        if kind and kind != rt.kind:
            raise bad_request(f"the object provided is unrecognized (must be of type {rt.kind}): kind {kind!r}")
        api_version = body.get("apiVersion")
        if api_version and api_version != rt.group_version:
            raise bad_request(f"the API version in the data ({api_version}) does not match the expected API "
                              f"version ({rt.group_version})")
        body.setdefault("kind", rt.kind)
        body.setdefault("apiVersion", rt.group_version)
        try:
            result = self.reviews.review(rt.plural, body, req.user)
        except ValueError as exc:  # sandbox.authz.ReviewError and friends: the review body is wrong
            raise bad_request(f"{rt.kind}: {exc}") from None
        result.setdefault("kind", rt.kind)
        result.setdefault("apiVersion", rt.group_version)
        result.setdefault("metadata", {"creationTimestamp": None})
        return _json_response(201, result)

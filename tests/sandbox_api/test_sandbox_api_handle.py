"""``Api.handle`` called directly (no sockets): discovery, CRUD, list/watch, patch/apply, logs, Status."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sandbox.api import Api
from sandbox.store import Store
from sandbox.types import ApiRequest, ApiResponse, RequestAttributes, StreamTarget, UserInfo

USER = UserInfo("alice", ("devs", "system:authenticated"))
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"


class Recorder:
    """Allows everything except what ``deny`` names; records every attribute set."""

    def __init__(self, deny: set[tuple[str, str]] | None = None) -> None:
        self.seen: list[RequestAttributes] = []
        self.deny = deny or set()

    def authorize(self, attrs: RequestAttributes) -> tuple[bool, str]:
        self.seen.append(attrs)
        key = (attrs.verb, attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "") or attrs.path)
        return (key not in self.deny, "")


class Reviews:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], UserInfo]] = []

    def review(self, resource: str, body: dict[str, Any], user: UserInfo) -> dict[str, Any]:
        self.calls.append((resource, body, user))
        return dict(body, status={"allowed": True, "reason": "test"})


@pytest.fixture
def api() -> Api:
    return Api(Store.with_seed_data(), Recorder(), Reviews(), log_tick_seconds=0.05, bookmark_seconds=0.05)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def req(method: str, path: str, query: dict[str, str] | None = None, body: Any = b"",
        content_type: str = "application/json", accept: str = "application/json", user: UserInfo = USER) -> ApiRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"accept": accept, "user-agent": "kubectl/v1.37.0 (linux/amd64)"}
    if raw:
        headers["content-type"] = content_type
    return ApiRequest(method, path, {k: [v] for k, v in (query or {}).items()}, headers, raw, user)


def call(api: Api, *args: Any, **kwargs: Any) -> tuple[int, Any]:
    resp = run(api.handle(req(*args, **kwargs)))
    assert resp.stream is None
    ctype = dict(resp.headers).get("content-type", "")
    return resp.status, json.loads(resp.body) if "json" in ctype else resp.body


def assert_status(body: dict[str, Any], code: int, reason: str, message: str | None = None) -> None:
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == code and body["reason"] == reason
    if message is not None:
        assert body["message"] == message


POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "new", "labels": {"app": "new"}},
       "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


# ------------------------------------------------------------------------------------------ discovery


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/api", "APIVersions"), ("/apis", "APIGroupList"), ("/api/v1", "APIResourceList"),
     ("/apis/apps/v1", "APIResourceList"), ("/apis/example.kubegate.dev/v1", "APIResourceList"),
     ("/apis/rbac.authorization.k8s.io", "APIGroup")],
)
def test_discovery_documents(api: Api, path: str, kind: str) -> None:
    status, body = call(api, "GET", path)
    assert status == 200 and body["kind"] == kind


def test_resource_list_advertises_scope_verbs_short_names_and_subresources(api: Api) -> None:
    _, core = call(api, "GET", "/api/v1")
    by_name = {r["name"]: r for r in core["resources"]}
    assert by_name["pods"]["namespaced"] is True and by_name["pods"]["shortNames"] == ["po"]
    assert "all" in by_name["pods"]["categories"]
    assert by_name["nodes"]["namespaced"] is False
    assert {"pods/log", "pods/exec", "pods/attach", "pods/portforward", "pods/status"} <= set(by_name)
    _, custom = call(api, "GET", "/apis/example.kubegate.dev/v1")
    widget = custom["resources"][0]
    assert (widget["name"], widget["kind"], widget["shortNames"], widget["namespaced"]) == (
        "widgets", "Widget", ["wg"], True)
    assert set(widget["verbs"]) >= {"get", "list", "watch", "create", "update", "patch", "delete"}


def test_aggregated_discovery_only_when_asked(api: Api) -> None:
    accept = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
              "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json")
    resp = run(api.handle(req("GET", "/apis", accept=accept)))
    assert dict(resp.headers)["content-type"].startswith("application/json;g=apidiscovery.k8s.io;v=v2")
    groups = {item["metadata"]["name"] for item in json.loads(resp.body)["items"]}
    assert {"apps", "rbac.authorization.k8s.io", "example.kubegate.dev"} <= groups


def test_version_and_openapi(api: Api) -> None:
    _, version = call(api, "GET", "/version")
    assert version["major"] == "1" and version["gitVersion"].startswith("v1.")
    _, index = call(api, "GET", "/openapi/v3")
    url = index["paths"]["api/v1"]["serverRelativeURL"]
    status, doc = call(api, "GET", url.split("?")[0])
    assert status == 200
    patch_ops = [p["patch"] for p in doc["paths"].values() if "patch" in p]
    pod_patch = next(op for op in patch_ops if op["x-kubernetes-group-version-kind"]["kind"] == "Pod")
    assert any(p["name"] == "fieldValidation" for p in pod_patch["parameters"])
    proto = run(api.handle(req("GET", "/openapi/v2", accept="application/com.github.proto-openapi.spec.v2@v1.0+protobuf")))
    assert proto.status == 200 and proto.body.startswith(b"\x0a\x032.0")  # Document.swagger = "2.0"
    assert b"x-kubernetes-group-version-kind" in proto.body and b"dryRun" in proto.body
    _, v2 = call(api, "GET", "/openapi/v2")
    pod_patch = v2["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert pod_patch["x-kubernetes-group-version-kind"] == {"group": "", "kind": "Pod", "version": "v1"}


@pytest.mark.parametrize("path", ["/apis/nope/v1", "/api/v2/pods", "/api/v1/gizmos", "/api/v1/namespaces/dev/pods/x/y/z",
                                  "/apis/apps/v1/namespaces/dev/deployments/web/log", "/random"])
def test_unknown_paths_are_404_status(api: Api, path: str) -> None:
    status, body = call(api, "GET", path)
    assert status == 404
    assert_status(body, 404, "NotFound", "the server could not find the requested resource")


# ------------------------------------------------------------------------------------------ reads


def test_get_and_not_found_wording(api: Api) -> None:
    status, pod = call(api, "GET", "/api/v1/namespaces/dev/pods/web-1")
    assert status == 200 and pod["kind"] == "Pod" and pod["metadata"]["namespace"] == "dev"
    status, body = call(api, "GET", "/api/v1/namespaces/dev/pods/nope")
    assert_status(body, 404, "NotFound", 'pods "nope" not found')
    assert body["details"] == {"name": "nope", "kind": "pods"}
    _, body = call(api, "GET", "/apis/apps/v1/namespaces/dev/deployments/nope")
    assert body["message"] == 'deployments.apps "nope" not found'


def test_list_all_namespaces_and_one(api: Api) -> None:
    _, all_pods = call(api, "GET", "/api/v1/pods")
    namespaces = {p["metadata"]["namespace"] for p in all_pods["items"]}
    assert {"default", "dev", "prod", "kube-system"} <= namespaces
    assert all_pods["kind"] == "PodList" and int(all_pods["metadata"]["resourceVersion"]) > 0
    _, dev = call(api, "GET", "/api/v1/namespaces/dev/pods")
    assert [p["metadata"]["name"] for p in dev["items"]] == ["db-0", "web-1", "web-2"]


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ({"labelSelector": "app=web"}, ["web-1", "web-2"]),
        ({"labelSelector": "tier in (backend)"}, ["db-0"]),
        ({"labelSelector": "app,app notin (web)"}, ["db-0"]),
        ({"fieldSelector": "metadata.name=web-2"}, ["web-2"]),
        ({"fieldSelector": "status.phase=Running,metadata.name!=web-1"}, ["db-0", "web-2"]),
        ({"fieldSelector": "spec.nodeName=elsewhere"}, []),
    ],
)
def test_list_selectors(api: Api, query: dict[str, str], names: list[str]) -> None:
    _, body = call(api, "GET", "/api/v1/namespaces/dev/pods", query)
    assert [p["metadata"]["name"] for p in body["items"]] == names


@pytest.mark.parametrize("query", [{"labelSelector": "app in (web"}, {"fieldSelector": "spec.bogus=1"},
                                   {"limit": "ten"}, {"continue": "%%%"}])
def test_bad_list_parameters_are_400(api: Api, query: dict[str, str]) -> None:
    status, body = call(api, "GET", "/api/v1/namespaces/dev/pods", query)
    assert status == 400
    assert_status(body, 400, "BadRequest")


def test_pagination_with_limit_and_continue(api: Api) -> None:
    for i in range(7):
        call(api, "POST", "/api/v1/namespaces/dev/configmaps",
             body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"page-{i}"}})
    seen: list[str] = []
    query = {"limit": "3"}
    pages = 0
    while True:
        _, body = call(api, "GET", "/api/v1/namespaces/dev/configmaps", query)
        pages += 1
        seen += [c["metadata"]["name"] for c in body["items"]]
        token = body["metadata"].get("continue")
        if not token:
            break
        assert body["metadata"]["remainingItemCount"] == 9 - len(seen)
        query = {"limit": "3", "continue": token}
    _, everything = call(api, "GET", "/api/v1/namespaces/dev/configmaps")
    assert seen == [c["metadata"]["name"] for c in everything["items"]] and len(seen) == 9 and pages == 3


def test_table_for_pods_has_apiserver_columns(api: Api) -> None:
    _, table = call(api, "GET", "/api/v1/namespaces/dev/pods", accept=TABLE)
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    columns = [(c["name"], c["priority"]) for c in table["columnDefinitions"]]
    assert columns[:5] == [("Name", 0), ("Ready", 0), ("Status", 0), ("Restarts", 0), ("Age", 0)]
    row = table["rows"][0]
    assert row["cells"][:4] == ["db-0", "1/1", "Running", "0"]
    assert row["object"]["kind"] == "PartialObjectMetadata" and row["object"]["metadata"]["name"] == "db-0"
    _, single = call(api, "GET", "/apis/example.kubegate.dev/v1/namespaces/dev/widgets/gear", accept=TABLE)
    assert [c["name"] for c in single["columnDefinitions"]] == ["Name", "Age"]
    assert single["rows"][0]["cells"][0] == "gear"


def test_only_protobuf_accepted_is_406(api: Api) -> None:
    status, body = call(api, "GET", "/api/v1/namespaces/dev/pods/web-1", accept="application/vnd.kubernetes.protobuf")
    assert status == 406


# ------------------------------------------------------------------------------------------ writes


def test_create_assigns_metadata_and_defaults(api: Api) -> None:
    before = api.store.resource_version
    status, pod = call(api, "POST", "/api/v1/namespaces/dev/pods", body=POD)
    assert status == 201
    meta = pod["metadata"]
    assert meta["namespace"] == "dev" and meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
    assert int(meta["resourceVersion"]) == before + 1
    assert pod["status"]["phase"] == "Running" and pod["spec"]["restartPolicy"] == "Always"
    assert meta["managedFields"][0]["manager"] == "kubectl"
    status, body = call(api, "POST", "/api/v1/namespaces/dev/pods", body=POD)
    assert_status(body, 409, "AlreadyExists", 'pods "new" already exists')


def test_create_generate_name_and_missing_kind_defaults(api: Api) -> None:
    status, cm = call(api, "POST", "/api/v1/namespaces/dev/configmaps", body={"metadata": {"generateName": "gen-"}})
    assert status == 201 and cm["kind"] == "ConfigMap" and cm["metadata"]["name"].startswith("gen-")


@pytest.mark.parametrize(
    ("path", "body", "code", "reason", "message_part"),
    [
        ("/api/v1/namespaces/dev/pods", b"{not json", 400, "BadRequest", "json parse error"),
        ("/api/v1/namespaces/dev/pods", [1, 2], 400, "BadRequest", "JSON object"),
        ("/api/v1/namespaces/dev/pods", dict(POD, apiVersion="apps/v1"), 400, "BadRequest",
         "does not match the expected API version"),
        ("/api/v1/namespaces/dev/pods", dict(POD, kind="ConfigMap"), 400, "BadRequest", "must be of type Pod"),
        ("/api/v1/namespaces/dev/pods", dict(POD, metadata={"name": "x", "namespace": "prod"}), 400, "BadRequest",
         "does not match the namespace"),
        ("/api/v1/namespaces/dev/pods", dict(POD, metadata={"name": "Bad_Name"}), 422, "Invalid",
         'Pod "Bad_Name" is invalid: metadata.name'),
        ("/api/v1/namespaces/dev/pods", dict(POD, spec={}), 422, "Invalid", "spec.containers: Required value"),
        ("/api/v1/namespaces/dev/pods", dict(POD, metadata={}), 422, "Invalid", "metadata.name: Required value"),
        ("/api/v1/namespaces/ghost/pods", POD, 404, "NotFound", 'namespaces "ghost" not found'),
        ("/api/v1/namespaces/dev/pods/new", POD, 405, "MethodNotAllowed", None),
    ],
)
def test_bad_creates_answer_status(api: Api, path: str, body: Any, code: int, reason: str,
                                   message_part: str | None) -> None:
    status, answer = call(api, "POST", path, body=body)
    assert status == code
    assert_status(answer, code, reason)
    if message_part:
        assert message_part in answer["message"]


def test_yaml_body_and_unsupported_media_type(api: Api) -> None:
    text = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-yaml}\ndata: {a: b}\n"
    status, cm = call(api, "POST", "/api/v1/namespaces/dev/configmaps", body=text, content_type="application/yaml")
    assert status == 201 and cm["data"] == {"a": "b"}
    status, body = call(api, "POST", "/api/v1/namespaces/dev/configmaps", body=text, content_type="text/csv")
    assert_status(body, 415, "UnsupportedMediaType")
    status, body = call(api, "POST", "/api/v1/namespaces/dev/configmaps", body=b"a: [", content_type="application/yaml")
    assert_status(body, 400, "BadRequest")


def test_oversized_body_is_413() -> None:
    small = Api(Store.with_seed_data(), Recorder(), Reviews(), max_body_bytes=100)
    status, body = call(small, "POST", "/api/v1/namespaces/dev/configmaps", body={"data": {"x": "y" * 200}})
    assert_status(body, 413, "RequestEntityTooLarge")


def test_update_conflicts_on_stale_resource_version(api: Api) -> None:
    _, cm = call(api, "GET", "/api/v1/namespaces/dev/configmaps/app-config")
    stale = json.loads(json.dumps(cm))
    cm["data"]["LOG_LEVEL"] = "warn"
    status, updated = call(api, "PUT", "/api/v1/namespaces/dev/configmaps/app-config", body=cm)
    assert status == 200 and updated["data"]["LOG_LEVEL"] == "warn"
    assert int(updated["metadata"]["resourceVersion"]) > int(cm["metadata"]["resourceVersion"])
    assert updated["metadata"]["uid"] == cm["metadata"]["uid"]
    status, body = call(api, "PUT", "/api/v1/namespaces/dev/configmaps/app-config", body=stale)
    assert_status(body, 409, "Conflict", 'Operation cannot be fulfilled on configmaps "app-config": the object has '
                  "been modified; please apply your changes to the latest version and try again")
    status, body = call(api, "PUT", "/api/v1/namespaces/dev/configmaps/other", body=cm)
    assert_status(body, 400, "BadRequest", "the name of the object (app-config) does not match the name on the URL (other)")
    status, body = call(api, "PUT", "/api/v1/namespaces/dev/configmaps/ghost",
                        body={"kind": "ConfigMap", "metadata": {"name": "ghost"}})
    assert_status(body, 404, "NotFound", 'configmaps "ghost" not found')


def test_generation_moves_with_spec_only_and_status_subresource(api: Api) -> None:
    path = "/apis/apps/v1/namespaces/dev/deployments/web"
    _, dep = call(api, "GET", path)
    gen = dep["metadata"]["generation"]
    _, same = call(api, "PATCH", path, body={"metadata": {"labels": {"x": "1"}}},
                   content_type="application/merge-patch+json")
    assert same["metadata"]["generation"] == gen
    _, scaled = call(api, "PATCH", path, body={"spec": {"replicas": 5}}, content_type="application/merge-patch+json")
    assert scaled["metadata"]["generation"] == gen + 1
    _, pod = call(api, "PATCH", "/api/v1/namespaces/dev/pods/web-1/status", body={"status": {"phase": "Failed"}},
                  content_type="application/merge-patch+json")
    assert pod["status"]["phase"] == "Failed"
    _, pod = call(api, "PATCH", "/api/v1/namespaces/dev/pods/web-1", body={"status": {"phase": "Pending"}},
                  content_type="application/merge-patch+json")
    assert pod["status"]["phase"] == "Failed"  # the main resource ignores status changes


@pytest.mark.parametrize(
    ("content_type", "patch", "check"),
    [
        ("application/merge-patch+json", {"metadata": {"labels": {"app": None, "m": "1"}}},
         lambda p: p["metadata"]["labels"] == {"tier": "frontend", "env": "dev", "m": "1"}),
        ("application/json-patch+json", [{"op": "replace", "path": "/spec/containers/0/image", "value": "nginx:2"}],
         lambda p: p["spec"]["containers"][0]["image"] == "nginx:2"),
        ("application/strategic-merge-patch+json",
         {"spec": {"containers": [{"name": "sidecar", "image": "envoy"}]}},
         lambda p: [c["name"] for c in p["spec"]["containers"]] == ["main", "sidecar"]),
    ],
)
def test_patch_types(api: Api, content_type: str, patch: Any, check: Any) -> None:
    status, pod = call(api, "PATCH", "/api/v1/namespaces/dev/pods/web-1", body=patch, content_type=content_type)
    assert status == 200 and check(pod)


@pytest.mark.parametrize(
    ("path", "content_type", "body", "code", "reason"),
    [
        ("/api/v1/namespaces/dev/pods/web-1", "application/json-patch+json", b"[{", 400, "BadRequest"),
        ("/api/v1/namespaces/dev/pods/web-1", "application/json-patch+json", {"op": "add"}, 400, "BadRequest"),
        ("/api/v1/namespaces/dev/pods/web-1", "application/json-patch+json",
         [{"op": "remove", "path": "/spec/nothing"}], 422, "Invalid"),
        ("/api/v1/namespaces/dev/pods/web-1", "application/merge-patch+json", [1], 400, "BadRequest"),
        ("/api/v1/namespaces/dev/pods/web-1", "application/merge-patch+json",
         {"metadata": {"name": "renamed"}}, 400, "BadRequest"),
        ("/api/v1/namespaces/dev/pods/web-1", "application/merge-patch+json",
         {"metadata": {"resourceVersion": "1"}}, 409, "Conflict"),
        ("/api/v1/namespaces/dev/pods/web-1", "application/json", {"a": 1}, 415, "UnsupportedMediaType"),
        ("/apis/example.kubegate.dev/v1/namespaces/dev/widgets/gear", "application/strategic-merge-patch+json",
         {"spec": {"size": 1}}, 415, "UnsupportedMediaType"),
        ("/api/v1/namespaces/dev/pods/ghost", "application/merge-patch+json", {"a": 1}, 404, "NotFound"),
        ("/api/v1/namespaces/dev/pods/web-1", "application/apply-patch+yaml", b"kind: Pod", 400, "BadRequest"),
    ],
)
def test_bad_patches_answer_status(api: Api, path: str, content_type: str, body: Any, code: int, reason: str) -> None:
    status, answer = call(api, "PATCH", path, body=body, content_type=content_type)
    assert status == code
    assert_status(answer, code, reason)


def test_server_side_apply_creates_then_merges_and_tracks_managers(api: Api) -> None:
    path = "/apis/example.kubegate.dev/v1/namespaces/dev/widgets/sprocket"
    first = (b"apiVersion: example.kubegate.dev/v1\nkind: Widget\nmetadata:\n  name: sprocket\n  labels: {a: '1'}\n"
             b"spec:\n  size: 1\n  color: red\n")
    status, obj = call(api, "PATCH", path, {"fieldManager": "kubectl", "force": "false"}, body=first,
                       content_type="application/apply-patch+yaml")
    assert status == 201 and obj["spec"] == {"size": 1, "color": "red"}
    assert obj["metadata"]["managedFields"][0]["operation"] == "Apply"
    call(api, "PATCH", path, body={"spec": {"owner": "other"}}, content_type="application/merge-patch+json")
    second = b"apiVersion: example.kubegate.dev/v1\nkind: Widget\nmetadata:\n  name: sprocket\nspec:\n  size: 2\n"
    status, obj = call(api, "PATCH", path, {"fieldManager": "kubectl"}, body=second,
                       content_type="application/apply-patch+yaml")
    assert status == 200
    assert obj["spec"] == {"size": 2, "owner": "other"}
    assert "labels" not in obj["metadata"] or "a" not in obj["metadata"]["labels"]
    managers = {(m["manager"], m["operation"]) for m in obj["metadata"]["managedFields"]}
    assert ("kubectl", "Apply") in managers and ("kubectl", "Update") in managers


def test_dry_run_changes_nothing(api: Api) -> None:
    before = api.store.resource_version
    status, _ = call(api, "POST", "/api/v1/namespaces/dev/pods", {"dryRun": "All"}, body=POD)
    assert status == 201
    status, _ = call(api, "DELETE", "/api/v1/namespaces/dev/pods/web-1", {"dryRun": "All"})
    assert status == 200
    assert api.store.resource_version == before
    assert api.store.get_object("", "pods", "dev", "new") is None


def test_delete_returns_object_or_status_and_cascades_namespaces(api: Api) -> None:
    status, pod = call(api, "DELETE", "/api/v1/namespaces/dev/pods/web-1", body={"propagationPolicy": "Background"})
    assert status == 200 and pod["kind"] == "Pod"
    status, body = call(api, "DELETE", "/api/v1/namespaces/dev/pods/web-1")
    assert_status(body, 404, "NotFound", 'pods "web-1" not found')
    status, body = call(api, "DELETE", "/api/v1/namespaces/dev/configmaps/app-config")
    assert status == 200 and body["status"] == "Success" and body["details"]["name"] == "app-config"
    status, body = call(api, "DELETE", "/api/v1/namespaces/dev/configmaps/kube-root-ca.crt", body=b"{nope")
    assert_status(body, 400, "BadRequest")
    status, body = call(api, "DELETE", "/api/v1/namespaces/dev/configmaps/kube-root-ca.crt",
                        body={"preconditions": {"uid": "not-the-uid"}})
    assert_status(body, 409, "Conflict")
    status, ns = call(api, "DELETE", "/api/v1/namespaces/dev")
    assert status == 200 and ns["kind"] == "Namespace"
    _, pods = call(api, "GET", "/api/v1/namespaces/dev/pods")
    assert pods["items"] == []
    _, all_pods = call(api, "GET", "/api/v1/pods")
    assert "dev" not in {p["metadata"]["namespace"] for p in all_pods["items"]}


@pytest.mark.parametrize("name", ["default", "kube-system"])
def test_system_namespaces_may_not_be_deleted(api: Api, name: str) -> None:
    status, body = call(api, "DELETE", f"/api/v1/namespaces/{name}")
    assert_status(body, 403, "Forbidden", f'namespaces "{name}" is forbidden: this namespace may not be deleted')
    assert api.store.get_object("", "namespaces", None, name) is not None


def test_delete_collection_with_selector(api: Api) -> None:
    status, body = call(api, "DELETE", "/api/v1/namespaces/dev/pods", {"labelSelector": "app=web"})
    assert status == 200 and sorted(p["metadata"]["name"] for p in body["items"]) == ["web-1", "web-2"]
    _, left = call(api, "GET", "/api/v1/namespaces/dev/pods")
    assert [p["metadata"]["name"] for p in left["items"]] == ["db-0"]


def test_method_not_allowed(api: Api) -> None:
    status, body = call(api, "PUT", "/api/v1/namespaces/dev/pods", body=POD)
    assert_status(body, 405, "MethodNotAllowed")
    status, body = call(api, "DELETE", "/api/v1/namespaces", {})
    assert status == 405


# ------------------------------------------------------------------------------------------ authorization


def test_authorizer_sees_apiserver_attributes(api: Api) -> None:
    rec: Recorder = api.authorizer  # type: ignore[assignment]
    call(api, "GET", "/api/v1/namespaces/dev/pods")
    assert run(api.handle(req("GET", "/api/v1/pods", {"watch": "true"}))).stream is not None
    call(api, "GET", "/api/v1/namespaces/dev/pods/web-1/log")
    call(api, "PATCH", "/apis/apps/v1/namespaces/dev/deployments/web/status", body={},
         content_type="application/merge-patch+json")
    call(api, "GET", "/version")
    got = [(a.verb, a.api_group, a.resource, a.subresource, a.namespace, a.name, a.resource_request, a.path)
           for a in rec.seen]
    assert got == [
        ("list", "", "pods", "", "dev", "", True, ""),
        ("watch", "", "pods", "", "", "", True, ""),
        ("get", "", "pods", "log", "dev", "web-1", True, ""),
        ("patch", "apps", "deployments", "status", "dev", "web", True, ""),
        ("get", "", "", "", "", "", False, "/version"),
    ]


@pytest.mark.parametrize(
    ("method", "path", "deny", "message"),
    [
        ("GET", "/api/v1/namespaces/dev/pods", ("list", "pods"),
         'pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "dev"'),
        ("GET", "/api/v1/namespaces/dev/secrets/db-credentials", ("get", "secrets"),
         'secrets "db-credentials" is forbidden: User "alice" cannot get resource "secrets" in API group "" in the '
         'namespace "dev"'),
        ("GET", "/api/v1/nodes", ("list", "nodes"),
         'nodes is forbidden: User "alice" cannot list resource "nodes" in API group "" at the cluster scope'),
        ("DELETE", "/apis/apps/v1/namespaces/prod/deployments/web", ("delete", "deployments"),
         'deployments.apps "web" is forbidden: User "alice" cannot delete resource "deployments" in API group '
         '"apps" in the namespace "prod"'),
        ("GET", "/api/v1/namespaces/dev/pods/web-1/log", ("get", "pods/log"),
         'pods "web-1" is forbidden: User "alice" cannot get resource "pods/log" in API group "" in the namespace '
         '"dev"'),
        ("GET", "/version", ("get", "/version"), 'forbidden: User "alice" cannot get path "/version"'),
    ],
)
def test_forbidden_wording(method: str, path: str, deny: tuple[str, str], message: str) -> None:
    api = Api(Store.with_seed_data(), Recorder({deny}), Reviews())
    status, body = call(api, method, path)
    assert status == 403
    assert_status(body, 403, "Forbidden", message)


def test_reviews_are_delegated_with_the_user(api: Api) -> None:
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"verb": "get", "resource": "pods", "namespace": "dev"}}}
    status, body = call(api, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body=review)
    assert status == 201 and body["status"]["allowed"] is True
    resource, sent, user = api.reviews.calls[0]  # type: ignore[attr-defined]
    assert resource == "selfsubjectaccessreviews" and sent["spec"] == review["spec"] and user == USER
    status, body = call(api, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    assert status == 201 and api.reviews.calls[-1][0] == "selfsubjectreviews"  # type: ignore[attr-defined]
    status, _ = call(api, "GET", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
    assert status == 405


# ------------------------------------------------------------------------------------------ streams


def test_resolve_stream(api: Api) -> None:
    target = api.resolve_stream(req("POST", "/api/v1/namespaces/dev/pods/web-1/exec", {"command": "ls"}))
    assert isinstance(target, StreamTarget)
    assert (target.kind, target.namespace, target.pod["metadata"]["name"]) == ("exec", "dev", "web-1")
    rec: Recorder = api.authorizer  # type: ignore[assignment]
    assert (rec.seen[-1].verb, rec.seen[-1].subresource) == ("create", "exec")
    missing = api.resolve_stream(req("GET", "/api/v1/namespaces/dev/pods/ghost/portforward"))
    assert isinstance(missing, ApiResponse) and missing.status == 404
    denied = Api(api.store, Recorder({("create", "pods/attach")}), Reviews()).resolve_stream(
        req("GET", "/api/v1/namespaces/dev/pods/web-1/attach"))
    assert isinstance(denied, ApiResponse) and denied.status == 403
    status, body = call(api, "POST", "/api/v1/namespaces/dev/pods/web-1/exec")
    assert_status(body, 400, "BadRequest", "Upgrade request required")


async def _collect_lines(stream: AsyncIterator[bytes], count: int) -> list[bytes]:
    lines: list[bytes] = []
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            lines.append(line)
        if len(lines) >= count:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    return lines


def test_logs_tail_timestamps_container_and_errors(api: Api) -> None:
    status, body = call(api, "GET", "/api/v1/namespaces/dev/pods/web-1/log", {"tailLines": "2"})
    assert status == 200 and body == b"web-1 listening\nweb-1 ready\n"
    _, stamped = call(api, "GET", "/api/v1/namespaces/dev/pods/web-1/log", {"timestamps": "true", "tailLines": "1"})
    stamp, line = stamped.decode().rstrip("\n").split(" ", 1)
    assert line == "web-1 ready" and stamp.endswith("Z") and "T" in stamp
    status, body = call(api, "GET", "/api/v1/namespaces/dev/pods/web-1/log", {"container": "nope"})
    assert_status(body, 400, "BadRequest", "container nope is not valid for pod web-1")
    status, body = call(api, "GET", "/api/v1/namespaces/dev/pods/ghost/log")
    assert_status(body, 404, "NotFound", 'pods "ghost" not found')


def test_follow_logs_streams_appended_lines(api: Api) -> None:
    async def scenario() -> list[bytes]:
        resp = await api.handle(req("GET", "/api/v1/namespaces/dev/pods/web-1/log", {"follow": "true",
                                                                                   "tailLines": "1"}))
        assert resp.stream is not None
        first = await resp.stream.__anext__()
        api.store.append_log("dev", "web-1", "from attach")
        return [first.rstrip(b"\n"), *await _collect_lines(resp.stream, 2)]

    lines = run(scenario())
    assert lines[0] == b"web-1 ready" and lines[1] == b"from attach"
    assert lines[2].startswith(b"web-1 heartbeat")  # a followed pod keeps producing lines


# ------------------------------------------------------------------------------------------ watch


async def _watch(api: Api, path: str, query: dict[str, str], count: int, action: Any = None,
                 accept: str = "application/json") -> list[dict[str, Any]]:
    resp = await api.handle(req("GET", path, dict(query, watch="true"), accept=accept))
    assert resp.status == 200 and resp.stream is not None
    stream = resp.stream
    out: list[dict[str, Any]] = []
    buffer = b""
    if action is not None:
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0)
        action()
        chunks: list[bytes] = [await first]
    else:
        chunks = []
    try:
        while True:
            for chunk in chunks:
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    out.append(json.loads(line))
            if len(out) >= count:
                return out
            try:
                chunks = [await asyncio.wait_for(stream.__anext__(), 5)]
            except StopAsyncIteration:
                return out
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


def test_watch_from_now_sends_initial_state_then_changes(api: Api) -> None:
    def change() -> None:
        api.store.put_object("", "configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                                "metadata": {"name": "late", "namespace": "dev"}})

    events = run(_watch(api, "/api/v1/namespaces/dev/configmaps", {}, 3, change))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "app-config"), ("ADDED", "kube-root-ca.crt"), ("ADDED", "late")]


def test_watch_resumes_from_resource_version_and_filters_selectors(api: Api) -> None:
    start = api.store.resource_version
    call(api, "PATCH", "/api/v1/namespaces/dev/pods/web-1", body={"metadata": {"labels": {"app": "moved"}}},
         content_type="application/merge-patch+json")
    call(api, "PATCH", "/api/v1/namespaces/dev/pods/db-0", body={"metadata": {"labels": {"x": "1"}}},
         content_type="application/merge-patch+json")
    call(api, "PATCH", "/api/v1/namespaces/dev/pods/web-2", body={"metadata": {"labels": {"x": "1"}}},
         content_type="application/merge-patch+json")
    call(api, "DELETE", "/api/v1/namespaces/dev/pods/web-2")
    events = run(_watch(api, "/api/v1/namespaces/dev/pods", {"resourceVersion": str(start),
                                                            "labelSelector": "app=web"}, 3))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("DELETED", "web-1"),  # left the selector
        ("MODIFIED", "web-2"),
        ("DELETED", "web-2"),
    ]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > start


def test_watch_too_old_resource_version_is_410_expired() -> None:
    store = Store.with_seed_data()
    store._history_size = 3
    api = Api(store, Recorder(), Reviews())
    old = store.resource_version
    for i in range(5):
        store.put_object("", "configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                            "metadata": {"name": f"c{i}", "namespace": "dev"}})
    events = run(_watch(api, "/api/v1/configmaps", {"resourceVersion": str(old)}, 1))
    assert events[0]["type"] == "ERROR"
    assert_status(events[0]["object"], 410, "Expired")
    assert events[0]["object"]["message"].startswith(f"too old resource version: {old}")
    recent = run(_watch(api, "/api/v1/configmaps", {"resourceVersion": str(store.resource_version - 1)}, 1))
    assert recent[0]["type"] == "ADDED" and recent[0]["object"]["metadata"]["name"] == "c4"


def test_watch_bookmarks_timeout_and_legacy_path(api: Api) -> None:
    events = run(_watch(api, "/api/v1/watch/namespaces/dev/pods",
                        {"resourceVersion": str(api.store.resource_version), "allowWatchBookmarks": "true",
                         "timeoutSeconds": "5"}, 1))
    assert events[0]["type"] == "BOOKMARK"
    assert events[0]["object"]["kind"] == "Pod" and events[0]["object"]["metadata"]["resourceVersion"]
    ended = run(_watch(api, "/api/v1/namespaces/dev/pods",
                       {"resourceVersion": str(api.store.resource_version), "timeoutSeconds": "0"}, 99))
    assert ended == []


def test_watch_send_initial_events_ends_with_marked_bookmark(api: Api) -> None:
    events = run(_watch(api, "/api/v1/namespaces/dev/pods", {"sendInitialEvents": "true",
                                                            "allowWatchBookmarks": "true",
                                                            "resourceVersionMatch": "NotOlderThan"}, 4))
    assert [e["type"] for e in events] == ["ADDED", "ADDED", "ADDED", "BOOKMARK"]
    assert events[3]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_watch_events_as_tables(api: Api) -> None:
    events = run(_watch(api, "/api/v1/namespaces/dev/pods", {"fieldSelector": "metadata.name=web-1"}, 1,
                        accept=TABLE))
    obj = events[0]["object"]
    assert obj["kind"] == "Table" and obj["rows"][0]["cells"][0] == "web-1"


def test_watch_is_woken_by_writes_from_another_thread(api: Api) -> None:
    import threading

    def change() -> None:
        threading.Thread(target=api.store.put_object, args=("", "configmaps", {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "threaded", "namespace": "dev"}})).start()

    events = run(_watch(api, "/api/v1/namespaces/dev/configmaps",
                        {"resourceVersion": str(api.store.resource_version)}, 1, change))
    assert events[0]["object"]["metadata"]["name"] == "threaded"


# ------------------------------------------------------------------------------------------ protobuf bodies


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _ld(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _vi(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    return b"k8s\x00" + _ld(1, _ld(1, api_version.encode()) + _ld(2, kind.encode())) + _ld(2, raw) + _ld(3, b"") + _ld(4, b"")


def _meta(name: str, labels: dict[str, str]) -> bytes:
    entries = b"".join(_ld(11, _ld(1, k.encode()) + _ld(2, v.encode())) for k, v in labels.items())
    # zero values as go-protobuf writes them: they must not show up in the JSON object
    return _ld(1, name.encode()) + _ld(2, b"") + _ld(3, b"") + _vi(7, 0) + _ld(8, b"") + entries


def test_protobuf_bodies_as_kubectl_create_sends_them(api: Api) -> None:
    cm = _envelope("v1", "ConfigMap", _ld(1, _meta("pb-config", {"app": "pb"}))
                   + _ld(2, _ld(1, b"key") + _ld(2, b"value")) + _ld(3, _ld(1, b"bin") + _ld(2, b"\x00\x01")))
    status, body = call(api, "POST", "/api/v1/namespaces/dev/configmaps", body=cm,
                        content_type="application/vnd.kubernetes.protobuf")
    assert status == 201
    assert body["metadata"]["name"] == "pb-config" and body["metadata"]["labels"] == {"app": "pb"}
    assert body["data"] == {"key": "value"} and body["binaryData"] == {"bin": "AAE="}
    assert "generateName" not in body["metadata"]

    container = _ld(1, b"nginx") + _ld(2, b"nginx:1.27") + _ld(6, _vi(3, 80) + _ld(4, b"TCP"))
    template = _ld(1, _meta("", {"app": "pb"})) + _ld(2, _ld(2, container))
    strategy = _ld(1, b"RollingUpdate") + _ld(2, _ld(1, _vi(1, 1) + _ld(3, b"30%")) + _ld(2, _vi(1, 0) + _vi(2, 2)))
    spec = _vi(1, 0) + _ld(2, _ld(1, _ld(1, b"app") + _ld(2, b"pb"))) + _ld(3, template) + _ld(4, strategy)
    dep = _envelope("apps/v1", "Deployment", _ld(1, _meta("pb-deploy", {})) + _ld(2, spec))
    status, body = call(api, "POST", "/apis/apps/v1/namespaces/dev/deployments", body=dep,
                        content_type="application/vnd.kubernetes.protobuf")
    assert status == 201
    assert body["spec"]["replicas"] == 0
    assert body["spec"]["selector"] == {"matchLabels": {"app": "pb"}}
    assert body["spec"]["template"]["spec"]["containers"] == [
        {"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]
    assert body["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": "30%", "maxSurge": 2}


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"k8s\x00\x0a\xff", 400), (b"not-protobuf", 400),
     (b"k8s\x00" + _ld(1, _ld(1, b"v1") + _ld(2, b"Gizmo")) + _ld(2, b""), 415)],
)
def test_bad_protobuf_bodies(api: Api, body: bytes, code: int) -> None:
    status, answer = call(api, "POST", "/api/v1/namespaces/dev/configmaps", body=body,
                          content_type="application/vnd.kubernetes.protobuf")
    assert status == code and answer["kind"] == "Status"


def test_deployment_scale_subresource(api: Api) -> None:
    path = "/apis/apps/v1/namespaces/dev/deployments/web/scale"
    status, scale = call(api, "GET", path)
    assert status == 200 and scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"] == {"replicas": 2} and scale["status"]["selector"] == "app=web"
    status, scale = call(api, "PATCH", path, body={"spec": {"replicas": 5}}, content_type="application/merge-patch+json")
    assert status == 200 and scale["spec"]["replicas"] == 5
    _, dep = call(api, "GET", "/apis/apps/v1/namespaces/dev/deployments/web")
    assert dep["spec"]["replicas"] == 5
    scale["spec"]["replicas"] = 1
    status, updated = call(api, "PUT", path, body=scale)
    assert status == 200 and updated["spec"]["replicas"] == 1
    status, body = call(api, "PUT", path, body=scale)  # its resourceVersion is stale now
    assert_status(body, 409, "Conflict")
    status, body = call(api, "PATCH", path, body={"spec": {"replicas": -1}}, content_type="application/merge-patch+json")
    assert_status(body, 422, "Invalid")


def test_field_validation_modes(api: Api) -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "typo"}, "datta": {"a": "b"}}
    status, answer = call(api, "POST", "/api/v1/namespaces/dev/configmaps", {"fieldValidation": "Strict"}, body=body)
    assert_status(answer, 400, "BadRequest", 'ConfigMap in version "v1" cannot be handled as a ConfigMap: strict '
                  'decoding error: unknown field "datta"')
    resp = run(api.handle(req("POST", "/api/v1/namespaces/dev/configmaps", {"fieldValidation": "Warn"}, body=body)))
    assert resp.status == 201 and "datta" not in json.loads(resp.body)
    assert ("warning", '299 - "unknown field \\"datta\\""') in resp.headers
    widget = {"apiVersion": "example.kubegate.dev/v1", "kind": "Widget", "metadata": {"name": "free"}, "extra": 1}
    status, created = call(api, "POST", "/apis/example.kubegate.dev/v1/namespaces/dev/widgets",
                           {"fieldValidation": "Strict"}, body=widget)
    assert status == 201 and created["extra"] == 1  # custom resources keep unknown fields


def test_logs_previous_and_since(api: Api) -> None:
    status, body = call(api, "GET", "/api/v1/namespaces/dev/pods/web-1/log", {"previous": "true"})
    assert_status(body, 400, "BadRequest", 'previous terminated container "main" in pod "web-1" not found')
    status, body = call(api, "GET", "/api/v1/namespaces/dev/pods/web-1/log", {"sinceSeconds": "3600"})
    assert status == 200 and body.count(b"\n") == 3
    status, body = call(api, "GET", "/api/v1/namespaces/dev/pods/web-1/log", {"sinceSeconds": "0"})
    assert_status(body, 422, "Invalid")


def test_widget_crd_is_served(api: Api) -> None:
    status, crd = call(api, "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.kubegate.dev")
    assert status == 200 and crd["spec"]["names"]["shortNames"] == ["wg"] and crd["spec"]["scope"] == "Namespaced"


def test_server_side_apply_conflicts_and_force(api: Api) -> None:
    path = "/api/v1/namespaces/dev/configmaps/owned"
    call(api, "POST", "/api/v1/namespaces/dev/configmaps", {"fieldManager": "kubectl-create"},
         body={"metadata": {"name": "owned"}, "data": {"a": "b", "keep": "x"}})
    applied = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: owned}\ndata: {a: c, keep: x}\n"
    status, body = call(api, "PATCH", path, {"fieldManager": "kubectl"}, body=applied,
                        content_type="application/apply-patch+yaml")
    assert_status(body, 409, "Conflict", 'Apply failed with 1 conflict: conflict with "kubectl-create" using v1: .data.a')
    assert body["details"]["causes"] == [{"reason": "FieldManagerConflict", "message":
                                          'conflict with "kubectl-create" using v1', "field": ".data.a"}]
    status, body = call(api, "PATCH", path, {"fieldManager": "kubectl", "force": "true"}, body=applied,
                        content_type="application/apply-patch+yaml")
    assert status == 200 and body["data"] == {"a": "c", "keep": "x"}
    owners = {m["manager"]: m["fieldsV1"] for m in body["metadata"]["managedFields"]}
    assert "f:a" not in owners["kubectl-create"]["f:data"] and "f:keep" in owners["kubectl-create"]["f:data"]
    status, body = call(api, "PATCH", path, {"fieldManager": "kubectl"}, body=applied,
                        content_type="application/apply-patch+yaml")
    assert status == 200  # now the applier owns .data.a: no conflict any more


def test_update_managers_own_the_fields_they_changed(api: Api) -> None:
    call(api, "POST", "/api/v1/namespaces/dev/configmaps", {"fieldManager": "creator"},
         body={"metadata": {"name": "shared"}, "data": {"a": "1", "b": "2"}})
    status, cm = call(api, "PATCH", "/api/v1/namespaces/dev/configmaps/shared", {"fieldManager": "editor"},
                      body={"data": {"a": "changed", "b": "2"}}, content_type="application/merge-patch+json")
    owners = {m["manager"]: m["fieldsV1"] for m in cm["metadata"]["managedFields"]}
    assert owners["editor"] == {"f:data": {"f:a": {}}}
    assert set(owners["creator"]["f:data"]) - {"."} == {"f:b"}
    status, cm = call(api, "PATCH", "/api/v1/namespaces/dev/configmaps/shared", {"fieldManager": "creator"},
                      body={"data": {"b": "2"}}, content_type="application/merge-patch+json")
    assert {m["manager"] for m in cm["metadata"]["managedFields"]} == {"creator", "editor"}  # no-op kept owners


def test_new_pods_get_scheduler_and_kubelet_events(api: Api) -> None:
    status, pod = call(api, "POST", "/api/v1/namespaces/dev/pods", body=POD)
    assert status == 201
    selector = f"involvedObject.name=new,involvedObject.namespace=dev,involvedObject.uid={pod['metadata']['uid']}"
    _, events = call(api, "GET", "/api/v1/namespaces/dev/events", {"fieldSelector": selector})
    assert [(e["reason"], e["message"]) for e in events["items"]] in (
        [("Scheduled", "Successfully assigned dev/new to sandbox-node-1"), ("Started", "Started container c")],
        [("Started", "Started container c"), ("Scheduled", "Successfully assigned dev/new to sandbox-node-1")])


def test_openapi_v3_schemas_describe_built_in_kinds(api: Api) -> None:
    _, doc = call(api, "GET", "/openapi/v3/api/v1")
    pod = next(s for s in doc["components"]["schemas"].values()
               if s["x-kubernetes-group-version-kind"][0]["kind"] == "Pod")
    containers = pod["properties"]["spec"]["properties"]["containers"]
    assert containers["type"] == "array" and containers["x-kubernetes-patch-merge-key"] == "name"
    assert {"name", "image", "ports", "env"} <= set(containers["items"]["properties"])
    patch_types = set(doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]["requestBody"]["content"])
    assert "application/strategic-merge-patch+json" not in patch_types  # kubectl uses its compiled-in types


def test_more_workload_kinds_are_served(api: Api) -> None:
    _, groups = call(api, "GET", "/apis")
    names = [g["name"] for g in groups["groups"]]
    assert {"batch", "networking.k8s.io", "policy", "coordination.k8s.io"} <= set(names)
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
           "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "b"}]}}}}
    status, created = call(api, "POST", "/apis/batch/v1/namespaces/dev/jobs", body=job)
    assert status == 201 and created["metadata"]["generation"] == 1
    _, table = call(api, "GET", "/apis/batch/v1/namespaces/dev/jobs", accept=TABLE)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Status", "Completions", "Duration", "Age"]
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "db"}}}}
    call(api, "POST", "/apis/apps/v1/namespaces/dev/statefulsets", body=sts)
    status, scale = call(api, "PATCH", "/apis/apps/v1/namespaces/dev/statefulsets/db/scale",
                         body={"spec": {"replicas": 3}}, content_type="application/merge-patch+json")
    assert status == 200 and scale["spec"]["replicas"] == 3 and scale["status"]["selector"] == "app=db"


def test_deployments_written_through_the_api_get_replicasets_and_pods(api: Api) -> None:
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop"},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "shop"}},
                    "template": {"metadata": {"labels": {"app": "shop"}},
                                 "spec": {"containers": [{"name": "c", "image": "shop:1"}]}}}}
    status, created = call(api, "POST", "/apis/apps/v1/namespaces/dev/deployments", body=dep)
    assert status == 201 and created["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"

    def pods() -> list[dict[str, Any]]:
        return call(api, "GET", "/api/v1/namespaces/dev/pods", {"labelSelector": "app=shop"})[1]["items"]

    first = pods()
    assert len(first) == 2 and all(p["status"]["phase"] == "Running" for p in first)
    rs_name = first[0]["metadata"]["ownerReferences"][0]["name"]
    assert rs_name.startswith("shop-") and first[0]["metadata"]["name"].startswith(rs_name + "-")
    call(api, "PATCH", "/apis/apps/v1/namespaces/dev/deployments/shop/scale", body={"spec": {"replicas": 3}},
         content_type="application/merge-patch+json")
    assert len(pods()) == 3
    status, rolled = call(api, "PATCH", "/apis/apps/v1/namespaces/dev/deployments/shop", body={
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "shop:2"}]}}}},
        content_type="application/strategic-merge-patch+json")
    assert rolled["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert {p["spec"]["containers"][0]["image"] for p in pods()} == {"shop:2"}
    _, replicasets = call(api, "GET", "/apis/apps/v1/namespaces/dev/replicasets")
    assert sorted(rs["spec"]["replicas"] for rs in replicasets["items"]) == [0, 3]
    call(api, "DELETE", "/apis/apps/v1/namespaces/dev/deployments/shop")
    assert pods() == [] and call(api, "GET", "/apis/apps/v1/namespaces/dev/replicasets")[1]["items"] == []

"""Property: whatever arrives, ``Api.handle`` answers; errors are Status bodies, never a 500 or an exception."""

from __future__ import annotations

import asyncio
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.api import Api
from sandbox.store import Store
from sandbox.types import ApiRequest, RequestAttributes, UserInfo


class Allow:
    def authorize(self, attrs: RequestAttributes) -> tuple[bool, str]:
        return True, ""


class Reviews:
    def review(self, resource: str, body: dict, user: UserInfo) -> dict:
        return dict(body, status={"allowed": True})


SEGMENTS = ["api", "apis", "v1", "v2", "apps", "namespaces", "dev", "prod", "ghost", "pods", "web-1", "log", "status",
            "scale", "exec", "watch", "deployments", "web", "configmaps", "example.kubegate.dev", "widgets", "gear",
            "nodes", "authorization.k8s.io", "selfsubjectaccessreviews", "", "..", "%00", "Bad_Name", "openapi", "v3"]
PREFIXES = ["/api/v1", "/apis/apps/v1", "/apis/example.kubegate.dev/v1", "/apis/authorization.k8s.io/v1", "", "/api"]
QUERY_KEYS = ["watch", "labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "timeoutSeconds",
              "follow", "tailLines", "dryRun", "fieldManager", "fieldValidation", "container", "sinceSeconds"]
CONTENT_TYPES = ["application/json", "application/yaml", "application/merge-patch+json", "application/json-patch+json",
                 "application/strategic-merge-patch+json", "application/apply-patch+yaml",
                 "application/vnd.kubernetes.protobuf", "text/plain", ""]
JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                           st.sampled_from(["kind", "apiVersion", "metadata", "name", "spec", "op", "path", "value",
                                            "labels", "containers", "$patch", "namespace", "data"]), inner,
                           max_size=4), max_leaves=12)
BODIES = st.one_of(st.binary(max_size=64), JSONISH.map(lambda v: json.dumps(v).encode()), st.just(b""))

API = Api(Store.with_seed_data(), Allow(), Reviews(), log_tick_seconds=0.01, bookmark_seconds=0.01)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
    prefix=st.sampled_from(PREFIXES),
    segments=st.lists(st.sampled_from(SEGMENTS), max_size=6),
    query=st.dictionaries(st.sampled_from(QUERY_KEYS), st.text(max_size=12), max_size=3),
    content_type=st.sampled_from(CONTENT_TYPES),
    body=BODIES,
)
def test_any_request_gets_an_answer(method: str, prefix: str, segments: list[str], query: dict[str, str],
                                    content_type: str, body: bytes) -> None:
    path = prefix + "/" + "/".join(segments)
    req = ApiRequest(method, path, {k: [v] for k, v in query.items()}, {"content-type": content_type,
                                                                           "accept": "application/json"},
                     body, UserInfo("fuzz"))

    async def one() -> None:
        resp = await API.handle(req)
        assert resp.status < 500, (path, resp.body)
        if resp.stream is not None:
            try:
                await asyncio.wait_for(resp.stream.__anext__(), 0.5)
            except (StopAsyncIteration, TimeoutError):
                pass
            await resp.stream.aclose()  # type: ignore[attr-defined]
        elif resp.status >= 400:
            status = json.loads(resp.body)
            assert status["kind"] == "Status" and status["code"] == resp.status and status["reason"]

    asyncio.run(one())


def test_hostile_bodies_are_refused_with_400() -> None:
    cases = [
        (b"[" * 200_000, "application/json"),  # nesting deeper than the decoder's recursion limit
        (b'{"kind":"ConfigMap","metadata":{"name":"x"},"data":{"a":NaN}}', "application/json"),
        (b"a: &x [1, 2]\nb: *x\n", "application/yaml"),  # aliases (expansion bombs) are refused
        (b"kind: ConfigMap\nmetadata: {name: x}\nbinaryData: {b: !!binary aGk=}\n", "application/yaml"),
        (b"a: " + b"[" * 100_000, "application/yaml"),
    ]
    for body, content_type in cases:
        req = ApiRequest("POST", "/api/v1/namespaces/dev/configmaps", {}, {"content-type": content_type}, body,
                         UserInfo("fuzz"))
        resp = asyncio.run(API.handle(req))
        assert resp.status == 400, (body[:40], resp.body)
        assert json.loads(resp.body)["reason"] == "BadRequest"


def test_yaml_timestamps_stay_strings() -> None:
    body = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dated}\ndata: {day: 2024-01-02}\n"
    req = ApiRequest("POST", "/api/v1/namespaces/prod/configmaps", {}, {"content-type": "application/yaml"}, body,
                     UserInfo("fuzz"))
    resp = asyncio.run(API.handle(req))
    assert resp.status == 201 and json.loads(resp.body)["data"] == {"day": "2024-01-02"}

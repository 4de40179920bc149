"""The Store on its own: bookkeeping metadata, cascades, history, loading, subscriptions' lifetimes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from sandbox.api import Api
from sandbox.store import AlreadyExists, Conflict, Gone, NotFound, Store
from sandbox.types import ApiRequest, UserInfo


def cm(name: str, ns: str = "dev", **data: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": data}


def test_resource_versions_increase_and_metadata_is_kept() -> None:
    store = Store.with_seed_data()
    first = store.put_object("", "configmaps", cm("a", x="1"))
    second = store.put_object("", "configmaps", cm("a", x="2"))
    assert int(second["metadata"]["resourceVersion"]) == int(first["metadata"]["resourceVersion"]) + 1
    assert second["metadata"]["uid"] == first["metadata"]["uid"]
    assert second["metadata"]["creationTimestamp"] == first["metadata"]["creationTimestamp"]
    entry = store.get_entry("", "configmaps", "dev", "a")
    assert entry is not None and json.loads(entry.raw) == entry.obj
    with pytest.raises(AlreadyExists):
        store.create("", "configmaps", cm("a"))
    with pytest.raises(NotFound):
        store.update("", "configmaps", cm("ghost"))
    with pytest.raises(Conflict):
        store.update("", "configmaps", cm("a"), precondition_rv=first["metadata"]["resourceVersion"])


def test_cluster_scoped_objects_drop_namespace() -> None:
    store = Store()
    node = store.put_object("", "nodes", {"apiVersion": "v1", "kind": "Node",
                                          "metadata": {"name": "n", "namespace": "ignored"}})
    assert "namespace" not in node["metadata"]
    assert store.get_object("", "nodes", None, "n") is node


def test_namespace_deletion_deletes_its_contents_and_logs() -> None:
    store = Store.with_seed_data()
    assert store.read_logs("dev", "web-1", "main")
    store.delete("", "namespaces", None, "dev")
    for group, resource in (("", "pods"), ("", "configmaps"), ("", "secrets"), ("apps", "deployments"),
                            ("example.kubegate.dev", "widgets")):
        assert store.list_objects(group, resource, "dev") == []
    assert store.list_objects("", "pods", "prod")
    assert store.read_logs("dev", "web-1", "main") == []


def test_history_floor_raises_gone() -> None:
    store = Store(history=2)
    start = store.resource_version

    async def scenario() -> None:
        for i in range(4):
            store.put_object("", "configmaps", cm(f"c{i}", ns="default"))
        with pytest.raises(Gone):
            store.watch("", "configmaps", start)
        watcher = store.watch("", "configmaps", store.resource_version - 2)
        assert [e.obj["metadata"]["name"] for e in watcher.backlog] == ["c2", "c3"]
        watcher.close()

    asyncio.run(scenario())


def test_load_yaml_files(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: one}}\n"
                    "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: prod}\nspec: {}\n")
    store = Store()
    loaded = store.load_yaml_files([good])
    assert [o["metadata"]["name"] for o in loaded] == ["one", "d"]
    assert store.get_object("", "configmaps", "default", "one") is not None
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v9\nkind: Gizmo\nmetadata: {name: x}\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        store.load_yaml_files([bad])
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [")
    with pytest.raises(ValueError, match="broken.yaml"):
        store.load_yaml_files([broken])


class _Allow:
    def authorize(self, attrs: object) -> tuple[bool, str]:
        return True, ""


def test_clients_going_away_release_their_subscriptions() -> None:
    store = Store.with_seed_data()
    api = Api(store, _Allow(), None, log_tick_seconds=0.05)  # type: ignore[arg-type]
    user = UserInfo("u")

    async def scenario() -> None:
        watch = await api.handle(ApiRequest("GET", "/api/v1/pods", {"watch": ["1"]}, {}, b"", user))
        logs = await api.handle(ApiRequest("GET", "/api/v1/namespaces/dev/pods/web-1/log", {"follow": ["true"]},
                                           {}, b"", user))
        assert watch.stream is not None and logs.stream is not None
        await watch.stream.__anext__()
        await logs.stream.__anext__()
        assert store.watcher_count("", "pods") == 1
        assert len(store._log_followers[("dev", "web-1")]) == 1
        await watch.stream.aclose()  # type: ignore[attr-defined]
        await logs.stream.aclose()  # type: ignore[attr-defined]
        assert store.watcher_count("", "pods") == 0
        assert ("dev", "web-1") not in store._log_followers

    asyncio.run(scenario())


def test_follow_ends_when_the_pod_is_deleted() -> None:
    store = Store.with_seed_data()
    api = Api(store, _Allow(), None, log_tick_seconds=0.02)  # type: ignore[arg-type]

    async def scenario() -> list[bytes]:
        resp = await api.handle(ApiRequest("GET", "/api/v1/namespaces/dev/pods/db-0/log", {"follow": ["true"]},
                                           {}, b"", UserInfo("u")))
        assert resp.stream is not None
        first = await resp.stream.__anext__()
        store.delete("", "pods", "dev", "db-0")
        rest = [chunk async for chunk in resp.stream]
        return [first, *rest]

    chunks = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert chunks[0].startswith(b"db-0 starting")


def test_streams_dropped_unread_hold_no_subscription() -> None:
    store = Store.with_seed_data()
    api = Api(store, _Allow(), None)  # type: ignore[arg-type]
    user = UserInfo("u")

    async def scenario() -> None:
        watch = await api.handle(ApiRequest("GET", "/api/v1/pods", {"watch": ["1"]}, {}, b"", user))
        logs = await api.handle(ApiRequest("GET", "/api/v1/namespaces/dev/pods/web-1/log", {"follow": ["1"]},
                                           {}, b"", user))
        assert store.watcher_count("", "pods") == 0 and not store._log_followers
        await watch.stream.aclose()  # type: ignore[union-attr]
        await logs.stream.aclose()  # type: ignore[union-attr]
        assert store.watcher_count("", "pods") == 0 and not store._log_followers

    asyncio.run(scenario())

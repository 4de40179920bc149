"""Label/field selectors and patch algorithms, table-driven."""

from __future__ import annotations

import pytest

from sandbox.patch import (
    PatchError,
    PatchTestFailed,
    apply_merge,
    fields_v1,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from sandbox.selectors import SelectorError, parse_field_selector, parse_label_selector

LABELS = {"app": "web", "tier": "frontend", "replicas": "3"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app!=web", False),
        ("app=db", False),
        ("missing!=x", True),
        ("app", True),
        ("!app", False),
        ("!missing", True),
        ("app in (web, db)", True),
        ("app in (db)", False),
        ("app notin (db)", True),
        ("missing notin (db)", True),
        ("missing in (db)", False),
        ("app=web,tier=frontend", True),
        ("app=web,tier=backend", False),
        ("tier in (frontend,backend),app", True),
        ("replicas>2", True),
        ("replicas<2", False),
        (" app = web ", True),
    ],
)
def test_label_selector_matches_like_apimachinery(selector: str, expected: bool) -> None:
    assert parse_label_selector(selector).matches(LABELS) is expected


@pytest.mark.parametrize(
    "selector",
    ["app=", "app in ()", "app in (a", "a b", "app=web,", "=x", "app=in valid", "x>y", "Ünïcode=1", "a)"],
)
def test_bad_label_selectors_raise(selector: str) -> None:
    if selector == "app=":  # empty value is allowed: matches an empty label value
        assert parse_label_selector(selector).matches({"app": ""})
        return
    with pytest.raises(SelectorError):
        parse_label_selector(selector)


POD = {"metadata": {"name": "web-1", "namespace": "dev"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("metadata.name=web-1", True),
        ("metadata.name==web-1", True),
        ("metadata.name!=web-1", False),
        ("metadata.namespace=dev,status.phase=Running", True),
        ("status.phase!=Running", False),
        ("spec.nodeName=n1", True),
        ("spec.nodeName=", False),
    ],
)
def test_field_selector_matches(selector: str, expected: bool) -> None:
    assert parse_field_selector(selector, "", "pods").matches(POD) is expected


def test_field_selector_rejects_unsupported_fields_with_apiserver_wording() -> None:
    with pytest.raises(SelectorError, match="field label not supported: spec.foo"):
        parse_field_selector("spec.foo=x", "", "pods")
    with pytest.raises(SelectorError, match='"spec.size" is not a known field selector'):
        parse_field_selector("spec.size=1", "example.kubegate.dev", "widgets", custom=True)
    with pytest.raises(SelectorError):
        parse_field_selector("nonsense", "", "pods")


def test_field_selector_exact_value_for_fast_paths() -> None:
    sel = parse_field_selector("metadata.name=a,metadata.namespace!=b", "", "pods")
    assert sel.exact("metadata.name") == "a"
    assert sel.exact("metadata.namespace") is None


# ------------------------------------------------------------------------------------------ patches


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": 1}, {"a": 2}, {"a": 2}),
        ({"a": 1, "b": 2}, {"a": None}, {"b": 2}),
        ({"a": {"x": 1, "y": 2}}, {"a": {"y": None, "z": 3}}, {"a": {"x": 1, "z": 3}}),
        ({"l": [1, 2]}, {"l": [3]}, {"l": [3]}),
        ({"a": 1}, {"a": {"b": 1}}, {"a": {"b": 1}}),
    ],
)
def test_merge_patch_rfc7386(target: dict, patch: dict, expected: dict) -> None:
    original = dict(target)
    assert merge_patch(target, patch) == expected
    assert target == original


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        ([{"op": "add", "path": "/b", "value": 2}], {"a": 1, "l": [1, 2], "b": 2}),
        ([{"op": "add", "path": "/l/-", "value": 3}], {"a": 1, "l": [1, 2, 3]}),
        ([{"op": "add", "path": "/l/0", "value": 0}], {"a": 1, "l": [0, 1, 2]}),
        ([{"op": "remove", "path": "/a"}], {"l": [1, 2]}),
        ([{"op": "replace", "path": "/l/1", "value": 9}], {"a": 1, "l": [1, 9]}),
        ([{"op": "move", "from": "/a", "path": "/b"}], {"b": 1, "l": [1, 2]}),
        ([{"op": "copy", "from": "/a", "path": "/b"}], {"a": 1, "b": 1, "l": [1, 2]}),
        ([{"op": "test", "path": "/a", "value": 1}, {"op": "remove", "path": "/l"}], {"a": 1}),
    ],
)
def test_json_patch_rfc6902(ops: list, expected: dict) -> None:
    doc = {"a": 1, "l": [1, 2]}
    assert json_patch(doc, ops) == expected
    assert doc == {"a": 1, "l": [1, 2]}


@pytest.mark.parametrize(
    "ops",
    [
        {"op": "add"},
        [{"op": "add", "path": "/x/y", "value": 1}],
        [{"op": "remove", "path": "/nope"}],
        [{"op": "replace", "path": "/nope", "value": 1}],
        [{"op": "add", "path": "/l/7", "value": 1}],
        [{"op": "add", "path": "a", "value": 1}],
        [{"op": "frobnicate", "path": "/a"}],
        [{"path": "/a"}],
        ["not an op"],
    ],
)
def test_invalid_json_patches_raise(ops: object) -> None:
    with pytest.raises(PatchError):
        json_patch({"a": 1, "l": [1]}, ops)


def test_json_patch_test_failure_is_distinguished() -> None:
    with pytest.raises(PatchTestFailed):
        json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}])


POD_SPEC = {
    "spec": {
        "containers": [
            {"name": "main", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "side", "image": "busybox:1"},
        ],
        "volumes": [{"name": "v1", "emptyDir": {}}],
    }
}


def test_strategic_merge_merges_containers_by_name() -> None:
    patch = {"spec": {"containers": [{"name": "side", "image": "busybox:2"}, {"name": "new", "image": "x"}],
                      "$setElementOrder/containers": [{"name": "main"}, {"name": "side"}, {"name": "new"}]}}
    result = strategic_merge_patch(POD_SPEC, patch)
    assert [(c["name"], c["image"]) for c in result["spec"]["containers"]] == [
        ("main", "nginx:1"), ("side", "busybox:2"), ("new", "x")]
    assert "$setElementOrder/containers" not in result["spec"]
    assert POD_SPEC["spec"]["containers"][1]["image"] == "busybox:1"


def test_strategic_merge_directives() -> None:
    deleted = strategic_merge_patch(POD_SPEC, {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}})
    assert [c["name"] for c in deleted["spec"]["containers"]] == ["main"]
    replaced = strategic_merge_patch(POD_SPEC, {"spec": {"containers": [{"name": "only", "image": "y"},
                                                                        {"$patch": "replace"}]}})
    assert replaced["spec"]["containers"] == [{"name": "only", "image": "y"}]
    nested = strategic_merge_patch(POD_SPEC, {"spec": {"containers": [{"name": "main", "env": [{"name": "B",
                                                                                               "value": "2"}]}]}})
    assert nested["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    removed = strategic_merge_patch(POD_SPEC, {"spec": {"volumes": None}})
    assert "volumes" not in removed["spec"]
    retained = strategic_merge_patch({"s": {"a": 1, "b": 2}}, {"s": {"$retainKeys": ["a", "c"], "c": 3}})
    assert retained == {"s": {"a": 1, "c": 3}}
    with pytest.raises(PatchError):
        strategic_merge_patch(POD_SPEC, {"spec": {"$patch": "explode"}})
    with pytest.raises(PatchError):
        strategic_merge_patch(POD_SPEC, {"spec": {"containers": [{"image": "no-name"}]}})


def test_server_side_apply_removes_fields_the_manager_stopped_applying() -> None:
    first = {"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": 1, "y": 2,
                                                                     "containers": [{"name": "c1", "image": "i"}]}}
    live = {"metadata": {"name": "o", "labels": {"a": "1", "b": "2", "other": "kept"}},
            "spec": {"x": 1, "y": 2, "z": "owned-by-someone-else", "containers": [{"name": "c1", "image": "i"}]}}
    second = {"metadata": {"labels": {"a": "1"}}, "spec": {"x": 5, "containers": [{"name": "c2", "image": "j"}]}}
    merged = apply_merge(live, second, fields_v1(first))
    assert merged["metadata"] == {"name": "o", "labels": {"a": "1", "other": "kept"}}
    assert merged["spec"] == {"x": 5, "z": "owned-by-someone-else", "containers": [{"name": "c2", "image": "j"}]}


def test_fields_v1_shape() -> None:
    fields = fields_v1({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "1"}},
                        "spec": {"containers": [{"name": "c", "image": "i"}]}})
    assert fields == {"f:metadata": {"f:labels": {"f:a": {}}},
                      "f:spec": {".": {}, "f:containers": {'k:{"name":"c"}': {".": {}, "f:name": {}, "f:image": {}}}}}


def test_changed_paths_matches_its_definition_on_seed_objects() -> None:
    import copy

    from sandbox.patch import changed_paths, leaf_paths, value_at
    from sandbox.seed import seed_objects

    def definition(old: dict, new: dict) -> list:
        return sorted(p for p in leaf_paths(fields_v1(new)) if value_at(old, p) != value_at(new, p))

    for obj in seed_objects():
        new = copy.deepcopy(obj)
        new["metadata"].setdefault("labels", {})["touched"] = "yes"
        if isinstance(new.get("spec"), dict):
            new["spec"]["extra"] = {"list": [1, 2], "empty": {}}
            if "containers" in new["spec"]:
                new["spec"]["containers"][0]["image"] = "changed"
                new["spec"]["containers"].append({"name": "added", "image": "i", "ports": [{"containerPort": 1}]})
        assert sorted(changed_paths(obj, new)) == definition(obj, new), obj["kind"]
        assert sorted(changed_paths({}, new)) == definition({}, new), obj["kind"]
        assert changed_paths(obj, obj) == []

"""Incremental list / Table / watch filters: same output whatever the chunking, fail closed."""

from __future__ import annotations

import gzip
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rbac.filtering import ListFilter, WatchFilter, filtering_query, json_accept_header


def allows_dev(namespace: str, name: str) -> bool:
    return namespace == "dev" and not name.startswith("secret")


def pod(name: str, ns: str, **extra: object) -> dict:
    return {
        "metadata": {"name": name, "namespace": ns},
        "spec": {"note": 'tricky "}]{[\\ \u00e9 text', **extra},
    }


PODS = [
    pod("a", "dev"),
    pod("b", "prod"),
    pod("c", "dev", nested={"l": [1, {"x": "]"}]}),
    pod("secret-d", "dev"),
    pod("e", "dev"),
]
VISIBLE = [p for p in PODS if allows_dev(p["metadata"]["namespace"], p["metadata"]["name"])]


def pod_list(items: list[dict], compact: bool = False) -> bytes:
    doc = {
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "42", "continue": ""},
        "items": items,
    }
    return json.dumps(doc, separators=(",", ":") if compact else None, ensure_ascii=False).encode()


def run(f: ListFilter | WatchFilter, chunks: list[bytes]) -> bytes:
    return b"".join(f.feed(c) for c in chunks) + f.close()


@pytest.mark.parametrize("compact", [True, False])
def test_list_split_at_every_byte_position(compact: bool) -> None:
    body = pod_list(PODS, compact)
    for k in range(len(body) + 1):
        out = json.loads(run(ListFilter(allows_dev), [body[:k], body[k:]]))
        assert out["items"] == VISIBLE, k
        assert out["metadata"] == {"resourceVersion": "42", "continue": ""} and out["kind"] == "PodList"


def test_list_one_byte_at_a_time_and_counters() -> None:
    body = pod_list(PODS)
    f = ListFilter(allows_dev)
    out = run(f, [body[i : i + 1] for i in range(len(body))])
    assert json.loads(out)["items"] == VISIBLE
    assert (f.passed, f.dropped) == (3, 2)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=30))
def test_list_any_chunking_gives_the_same_output(sizes: list[int]) -> None:
    body = pod_list(PODS)
    chunks, pos = [], 0
    for s in sizes:
        chunks.append(body[pos : pos + s])
        pos += s
    chunks.append(body[pos:])
    assert run(ListFilter(allows_dev), chunks) == run(ListFilter(allows_dev), [body])


def test_empty_and_all_dropped_lists_stay_valid_json() -> None:
    assert json.loads(run(ListFilter(allows_dev), [pod_list([])]))["items"] == []
    assert (
        json.loads(run(ListFilter(allows_dev), [pod_list([pod("x", "prod"), pod("y", "prod")])]))["items"]
        == []
    )
    assert json.loads(run(ListFilter(allows_dev), [pod_list([pod("x", "prod"), pod("y", "dev")])]))[
        "items"
    ] == [pod("y", "dev")]


def test_unparsable_or_nameless_items_are_dropped_at_every_split() -> None:
    body = (
        b'{"kind":"PodList","items":[{"metadata":{"name":"a","namespace":"dev"}},{"metadata":{"name":"b","namespace":"dev"},"bad":tru},'
        b'{"metadata":{"namespace":"dev"}},{"metadata":{"name":5,"namespace":"dev"}},42,"str",null,[1],{"x":"\\q"},'
        b'{"metadata":{"name":"c","namespace":"dev"}}]}'
    )
    for k in range(len(body) + 1):
        out = json.loads(run(ListFilter(allows_dev), [body[:k], body[k:]]))
        assert [i["metadata"]["name"] for i in out["items"]] == ["a", "c"], k


def test_bytes_of_kept_items_are_passed_unchanged_even_invalid_utf8() -> None:
    item = b'{"metadata":{"name":"a","namespace":"dev"},"blob":"\xff\xfe \xc3\xa9 \\u00e9"}'
    body = b'{"items":[' + item + b"]}"
    for k in range(len(body) + 1):
        assert run(ListFilter(allows_dev), [body[:k], body[k:]]) == body, k


def test_a_large_item_in_small_chunks() -> None:
    big = pod("a", "dev", blob="x" * 300_000)
    body = pod_list([pod("z", "prod"), big, pod("b", "dev")], compact=True)
    out = run(ListFilter(allows_dev), [body[i : i + 1000] for i in range(0, len(body), 1000)])
    assert json.loads(out)["items"] == [big, pod("b", "dev")]


def test_items_key_only_at_top_level_and_non_lists_pass_unchanged() -> None:
    body = b'{"kind":"X","metadata":{"items":[1,2]},"spec":{"items":["a"]},"items":[{"metadata":{"name":"z","namespace":"prod"}}],"after":{"items":[3]}}'
    out = json.loads(run(ListFilter(allows_dev), [body]))
    assert out == {
        "kind": "X",
        "metadata": {"items": [1, 2]},
        "spec": {"items": ["a"]},
        "items": [],
        "after": {"items": [3]},
    }
    status = b'{"kind":"Status","apiVersion":"v1","status":"Failure","code":410}'
    assert run(ListFilter(allows_dev), [status[:7], status[7:]]) == status


def test_truncated_list_yields_no_more_items() -> None:
    body = pod_list(PODS)
    cut = body.index(b'"e"')  # inside the last visible item
    out = run(ListFilter(allows_dev), [body[:cut]])
    assert b'"e"' not in out and out.count(b'"name"') == 2  # a, c: the incomplete item is withheld


def table(rows: list[dict], columns: bool = True) -> dict:
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": "7"},
        "columnDefinitions": [{"name": "Name", "type": "string", "format": "name"}] if columns else [],
        "rows": rows,
    }


def row(name: str, ns: str) -> dict:
    return {
        "cells": [name, "1/1"],
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns},
        },
    }


def test_table_rows_filtered_at_every_split() -> None:
    body = json.dumps(
        table([row("a", "dev"), row("b", "prod"), {"cells": ["no-object"]}, row("c", "dev")])
    ).encode()
    for k in range(len(body) + 1):
        out = json.loads(run(ListFilter(allows_dev), [body[:k], body[k:]]))
        assert [r["cells"][0] for r in out["rows"]] == ["a", "c"], k
        assert out["columnDefinitions"][0]["name"] == "Name"


def event(etype: str, obj: dict) -> bytes:
    return json.dumps({"type": etype, "object": obj}).encode() + b"\n"


def test_watch_events_one_by_one() -> None:
    stream = (
        event("ADDED", pod("a", "dev"))
        + event("ADDED", pod("b", "prod"))
        + event("BOOKMARK", {"kind": "Pod", "metadata": {"resourceVersion": "9"}})
        + b'{"type":"MODIFIED","object":{"metadata":{"name":"x"\n'
        + event("ERROR", {"kind": "Status", "code": 410})
        + event("DELETED", pod("secret-z", "dev"))
        + event("MODIFIED", pod("c", "dev"))
    )
    expected = [("ADDED", "a"), ("BOOKMARK", None), ("ERROR", None), ("MODIFIED", "c")]
    for k in range(len(stream) + 1):
        f = WatchFilter(allows_dev)
        out = run(f, [stream[:k], stream[k:]])
        events = [json.loads(line) for line in out.splitlines()]
        assert [(e["type"], e["object"].get("metadata", {}).get("name")) for e in events] == expected, k
    assert (f.passed, f.dropped) == (4, 3)


def test_watch_of_tables_filters_rows_and_keeps_column_definitions() -> None:
    stream = (
        event("ADDED", table([row("a", "dev")]))
        + event("ADDED", table([row("b", "prod")], columns=False))
        + event("MODIFIED", table([row("c", "dev"), row("d", "prod")], columns=False))
    )
    out = [json.loads(line) for line in run(WatchFilter(allows_dev), [stream]).splitlines()]
    assert [[r["cells"][0] for r in e["object"]["rows"]] for e in out] == [["a"], ["c"]]
    first = event("ADDED", table([row("b", "prod")]))  # hidden row, but the first event carries the columns
    (kept,) = [json.loads(line) for line in run(WatchFilter(allows_dev), [first]).splitlines()]
    assert kept["object"]["rows"] == [] and kept["object"]["columnDefinitions"]


def test_watch_last_event_without_newline_is_handled_at_close() -> None:
    data = event("ADDED", pod("a", "dev")).rstrip(b"\n")
    f = WatchFilter(allows_dev)
    assert f.feed(data) == b"" and json.loads(f.close())["object"]["metadata"]["name"] == "a"


def test_accept_and_query_rewrites_for_filtering() -> None:
    assert json_accept_header("application/vnd.kubernetes.protobuf, application/json") == "application/json"
    table_accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
    assert json_accept_header(table_accept) == table_accept.replace(",", ", ")
    assert (
        json_accept_header("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io")
        == "application/json"
    )
    assert json_accept_header(None) == "application/json"
    assert filtering_query("includeObject=None&limit=500") == "limit=500"
    assert filtering_query("?limit=500&watch=1") == "limit=500&watch=1"


def test_gzip_bodies_are_filtered_and_stay_gzip() -> None:
    body = gzip.compress(pod_list(PODS))
    for k in range(0, len(body) + 1, 7):
        out = run(ListFilter(allows_dev), [body[:k], body[k:]])
        assert out[:2] == b"\x1f\x8b", k
        assert json.loads(gzip.decompress(out))["items"] == VISIBLE, k


def test_non_json_bodies_yield_nothing() -> None:
    protobuf = b"k8s\x00\n\x0f\n\x02v1\x12\x07PodList\x12\x00" + b"\x1a" * 20
    assert run(ListFilter(allows_dev), [protobuf]) == b""
    assert run(ListFilter(allows_dev), [b"  [1, 2]"]) == b""
    corrupt = b"\x1f\x8b" + b"\x00" * 30
    assert gzip.decompress(run(ListFilter(allows_dev), [corrupt])) == b""  # a valid, empty gzip stream
    truncated = gzip.compress(pod_list(PODS))[:-30]
    plain = gzip.decompress(run(ListFilter(allows_dev), [truncated]))
    assert b'"prod"' not in plain and b'"secret-d"' not in plain


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
items = st.builds(
    lambda name, ns, extra: {"metadata": {"name": name, "namespace": ns}, "extra": extra},
    st.text(alphabet='ab-"\\]}é', min_size=1, max_size=5),
    st.sampled_from(["dev", "prod"]),
    json_values,
)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(items, max_size=6),
    st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=12),
    st.booleans(),
)
def test_filter_equals_a_reference_filter(item_list, sizes, ascii_only):
    def allows(ns: str, name: str) -> bool:
        return ns == "dev" and "b" not in name

    body = json.dumps({"kind": "List", "metadata": {}, "items": item_list}, ensure_ascii=ascii_only).encode()
    chunks, pos = [], 0
    for s in sizes:
        chunks.append(body[pos : pos + s])
        pos += s
    chunks.append(body[pos:])
    out = json.loads(run(ListFilter(allows), chunks))
    assert out["items"] == [i for i in item_list if allows(i["metadata"]["namespace"], i["metadata"]["name"])]


def test_a_big_list_is_streamed_not_buffered() -> None:
    many = [pod(f"p{i}", "dev" if i % 3 else "prod", pad="x" * 500) for i in range(3000)]  # ~2 MB
    body = pod_list(many, compact=True)
    f = ListFilter(allows_dev)
    largest_item = max(len(json.dumps(p)) for p in many)
    out = []
    for i in range(0, len(body), 65536):
        out.append(f.feed(body[i : i + 65536]))
        assert f.buffered <= 2 * largest_item  # never more than the element cut by the chunk boundary
        if i > 4 * 65536:
            assert sum(map(len, out)) > 0  # output flows while input arrives
    out.append(f.close())
    assert len(json.loads(b"".join(out))["items"]) == 2000


def test_a_list_filter_fed_a_watch_stream_or_a_single_object_yields_nothing() -> None:
    # fail closed when the upstream answered something else than the List the decision expected
    # (e.g. a watch for ?watch=yes that was taken for a list)
    events = b"".join(
        json.dumps({"type": "ADDED", "object": {"kind": "Pod", "metadata": {"name": n, "namespace": "prod"}}}).encode()
        + b"\n"
        for n in ("x", "y")
    )
    assert run(ListFilter(allows_dev), [events]) == b""
    assert run(ListFilter(allows_dev), [events[:20], events[20:]]) == b""
    pod = b'{"kind":"Pod","metadata":{"name":"x","namespace":"prod"}}'
    assert run(ListFilter(allows_dev), [pod]) == b""
    null_items = b'{"kind":"PodList","metadata":{},"items":null}'
    assert run(ListFilter(allows_dev), [null_items]) == null_items


def test_what_precedes_the_items_is_held_within_a_bound(monkeypatch) -> None:
    import rbac.filtering

    monkeypatch.setattr(rbac.filtering, "_MAX_PREFIX", 1000)
    f = ListFilter(allows_dev)
    out = f.feed(b'{"kind":"Pod","spec":"' + b"x" * 600)
    out += f.feed(b"y" * 600)
    assert out == b"" and f.buffered <= 1000  # past the bound: not a list, dropped, nothing held
    assert f.feed(b'","items":[{"metadata":{"name":"a","namespace":"dev"}}]}') + f.close() == b""

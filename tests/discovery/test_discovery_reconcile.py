"""Reconcile is a pure function: desired records vs current records → create / update / delete."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discovery.reconcile import reconcile
from discovery.store import ClusterRecord


def rec(name: str, origin: str = "aws", group: str = "prod", **labels: str) -> ClusterRecord:
    return ClusterRecord(name=name, origin=origin, discovery_group=group, labels=dict(labels),
                         spec={"endpoint": f"https://{name}.example"})


def current_of(*records: ClusterRecord) -> dict[str, ClusterRecord]:
    return {r.name: r for r in records}


@pytest.mark.parametrize(
    ("desired", "current", "create", "update", "delete"),
    [
        ([rec("a")], [], ["a"], [], []),
        ([rec("a")], [rec("a")], [], [], []),
        ([rec("a", env="x")], [rec("a", env="y")], [], ["a"], []),
        ([], [rec("a")], [], [], ["a"]),
        ([rec("b")], [rec("a")], ["b"], [], ["a"]),
        # another origin / another group / the CLI's clusters are never touched
        ([], [rec("a", origin="azure"), rec("b", group="dev"), rec("c", origin="kube_cluster", group="")], [], [], []),
    ],
    ids=["create", "unchanged", "update", "delete", "create+delete", "others-untouched"],
)
def test_reconcile_table(desired, current, create, update, delete):
    plan = reconcile(desired, current_of(*current), origin="aws", group="prod")
    assert [r.name for r in plan.create] == create
    assert [r.name for r in plan.update] == update
    assert list(plan.delete) == delete


def test_a_failed_fetch_is_not_an_empty_list():
    plan = reconcile([], current_of(rec("a"), rec("b")), origin="aws", group="prod", complete=False)
    assert plan.delete == ()
    assert plan.kept == ("a", "b")
    assert plan.empty


def test_a_name_taken_by_another_group_is_a_conflict_not_an_overwrite():
    plan = reconcile([rec("shared")], current_of(rec("shared", group="dev")), origin="aws", group="prod")
    assert plan.empty
    assert "shared" in plan.conflicts[0] and "dev" in plan.conflicts[0]


def apply(plan, state: dict[str, ClusterRecord]) -> None:
    for r in (*plan.create, *plan.update):
        state[r.name] = r
    for name in plan.delete:
        del state[name]


def test_two_discovery_groups_leave_each_other_alone():
    state: dict[str, ClusterRecord] = {}
    prod_cloud = [rec("p1"), rec("p2")]
    dev_cloud = [rec("d1", group="dev")]
    for _ in range(3):  # interleaved runs, as two services polling the same store would do
        apply(reconcile(prod_cloud, state, origin="aws", group="prod"), state)
        apply(reconcile(dev_cloud, state, origin="aws", group="dev"), state)
    assert sorted(state) == ["d1", "p1", "p2"]
    # dev's cloud loses its cluster: only dev's record goes
    apply(reconcile([], state, origin="aws", group="dev"), state)
    assert sorted(state) == ["p1", "p2"]


def test_two_instances_of_one_group_converge():
    state: dict[str, ClusterRecord] = {"old": rec("old")}
    cloud = [rec("a", env="1"), rec("b")]
    first = reconcile(cloud, state, origin="aws", group="prod")
    apply(first, state)
    second = reconcile(cloud, state, origin="aws", group="prod")  # the other instance, same cloud view
    assert not first.empty and second.empty
    assert sorted(state) == ["a", "b"]


def test_a_desired_record_of_another_owner_is_a_programming_error():
    with pytest.raises(ValueError):
        reconcile([rec("a", group="dev")], {}, origin="aws", group="prod")


# ---- properties ------------------------------------------------------------------------------------

owners = st.sampled_from([("aws", "prod"), ("aws", "dev"), ("azure", "prod"), ("kube_cluster", "")])
records = st.lists(
    st.builds(lambda n, owner, v: rec(f"c{n}", owner[0], owner[1], v=str(v)),
              st.integers(0, 12), owners, st.integers(0, 2)),
    max_size=15,
)


@settings(max_examples=150, deadline=None)
@given(current_list=records, desired_list=records, complete=st.booleans())
def test_reconcile_properties(current_list, desired_list, complete):
    current = {r.name: r for r in current_list}
    desired = [r for r in desired_list if (r.origin, r.discovery_group) == ("aws", "prod")]
    state = dict(current)
    plan = reconcile(desired, state, origin="aws", group="prod", complete=complete)
    apply(plan, state)
    others_before = {n: r for n, r in current.items() if (r.origin, r.discovery_group) != ("aws", "prod")}
    others_after = {n: r for n, r in state.items() if (r.origin, r.discovery_group) != ("aws", "prod")}
    assert others_after == others_before  # never touches another origin or group
    first_by_name = {}
    for r in sorted(desired, key=lambda r: r.name):
        first_by_name.setdefault(r.name, r)
    for name, r in first_by_name.items():
        if name not in others_before:
            assert state[name] == r  # every desired cluster it may own is there, as desired
    if not complete:
        assert all(n in state for n in current)  # a partial run deletes nothing
    else:
        ours = {n for n, r in state.items() if (r.origin, r.discovery_group) == ("aws", "prod")}
        assert ours == set(first_by_name) - set(others_before)
    assert reconcile(desired, state, origin="aws", group="prod", complete=complete).empty  # converged

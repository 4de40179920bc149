"""`kubegate clusters setup`'s translation of kubegate roles to Kubernetes RBAC (pure, table-driven)."""

from __future__ import annotations

from kubegate.upstream_rbac import rbac_object_name, role_objects, subject_for_username
from rbac.roles import parse_roles_yaml

ROLE = """
kind: role
version: v8
metadata: {name: Ops_Team}
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_groups: ['{{internal.kubernetes_groups}}', ops, 'system:masters']
    kubernetes_users: [robot]
    kubernetes_resources:
      - {kind: pods, api_group: '', namespace: web, name: '*', verbs: [get, exec, portforward]}
      - {kind: deployments, api_group: apps, namespace: web, name: frontend, verbs: ['*']}
      - {kind: 'config*', api_group: '*', namespace: '*', name: '*', verbs: [list]}
      - {kind: pods, api_group: '', namespace: 'team-*', name: '*', verbs: [get]}
      - {kind: namespaces, name: tools, verbs: ['*']}
"""


def test_rules_bindings_and_notes():
    [role] = parse_roles_yaml(ROLE)
    plan = role_objects([role], {"kubernetes_groups": ["sre"]})
    by_key = {(o["kind"], o["metadata"].get("namespace")): o for o in plan.objects}
    name = rbac_object_name("Ops_Team")
    assert name == "kubegate-role-ops-team"
    web = by_key[("Role", "web")]
    assert web["metadata"]["name"] == name
    assert web["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods/exec", "pods/attach"], "verbs": ["create", "get"]},
        {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create", "get"]},
        {"apiGroups": ["apps"], "resources": ["deployments", "deployments/*"], "verbs": ["*"],
         "resourceNames": ["frontend"]},
    ]
    assert by_key[("Role", "tools")]["rules"] == [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
    assert by_key[("ClusterRole", None)]["rules"] == [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["list"]}]
    subjects = by_key[("RoleBinding", "web")]["subjects"]
    assert [(s["kind"], s["name"]) for s in subjects] == [("Group", "sre"), ("Group", "ops"), ("User", "robot")]
    assert "role Ops_Team: kind 'config*' is a pattern: bound as '*'" in plan.notes
    assert "role Ops_Team: namespace 'team-*' is a pattern: not bound" in plan.notes
    assert "role Ops_Team: group 'system:masters' is built into Kubernetes: not bound" in plan.notes


def test_a_template_without_traits_is_noted_not_bound():
    [role] = parse_roles_yaml(ROLE)
    plan = role_objects([role], {})
    binding = next(o for o in plan.objects if o["kind"] == "RoleBinding")
    assert [s["name"] for s in binding["subjects"]] == ["ops", "robot"]
    assert any("'{{internal.kubernetes_groups}}' has no value without --traits" in n for n in plan.notes)


def test_upstream_subjects():
    assert subject_for_username("system:serviceaccount:kube-system:kubegate") == {
        "kind": "ServiceAccount", "name": "kubegate", "namespace": "kube-system"}
    assert subject_for_username("arn:aws:iam::1:role/kubegate")["kind"] == "User"

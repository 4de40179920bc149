"""Role files: loading, v7 → v8 conversion, validation errors naming file/role/field, hot reload."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rbac.roles import (
    ResourceRule,
    RoleError,
    RoleSet,
    RoleWatcher,
    expand_templates,
    load_roles_dir,
    parse_duration,
    parse_roles_yaml,
)

V8 = """
kind: role
version: v8
metadata: {name: dev-access}
spec:
  options: {max_session_ttl: 8h}
  allow:
    kubernetes_labels: {env: [dev, staging], team: '*'}
    kubernetes_resources:
      - {kind: pods, api_group: '', namespace: dev, name: '*', verbs: [get, list, watch, exec]}
      - {kind: namespaces, name: dev, verbs: ['*']}
      - {kind: deployments, api_group: apps, namespace: dev, name: 'web-*', verbs: [get]}
    kubernetes_groups: ['{{internal.kubernetes_groups}}', developers]
    kubernetes_users: []
    logins: [root]            # a Teleport SSH key: accepted, ignored
  deny:
    kubernetes_resources: [{kind: secrets, api_group: '', namespace: '*', name: '*', verbs: ['*']}]
"""


def test_v8_role_loads_as_written() -> None:
    (role,) = parse_roles_yaml(V8, "roles.yaml")
    assert role.name == "dev-access" and role.version == "v8" and role.source_version == "v8"
    assert role.max_session_ttl == 8 * 3600
    assert role.allow.kubernetes_labels == {"env": ("dev", "staging"), "team": ("*",)}
    assert role.allow.kubernetes_resources[0] == ResourceRule(
        "pods", "", "dev", "*", ("get", "list", "watch", "exec")
    )
    assert role.allow.kubernetes_resources[1] == ResourceRule("namespaces", "", "", "dev", ("*",))
    assert role.allow.kubernetes_groups == ("{{internal.kubernetes_groups}}", "developers")
    assert role.deny.kubernetes_resources == (ResourceRule("secrets", "", "*", "*", ("*",)),)


def test_v7_role_is_converted_like_teleport() -> None:
    (role,) = parse_roles_yaml(
        """
kind: role
version: v7
metadata: {name: old}
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources:
      - {kind: pod, namespace: dev, name: '*', verbs: [get]}
      - {kind: deployment, namespace: dev, name: web, verbs: ['*']}
      - {kind: kube_node, namespace: ignored, name: '*', verbs: [get]}
      - {kind: namespace, name: team-a, verbs: [get, list]}
      - {kind: namespace, name: '*', verbs: [list]}
      - {kind: widgets, namespace: dev, name: '*', verbs: [get]}
"""
    )
    assert role.source_version == "v7"
    assert list(role.allow.kubernetes_resources) == [
        ResourceRule("pods", "", "dev", "*", ("get",)),
        ResourceRule("deployments", "apps", "dev", "web", ("*",)),
        ResourceRule("nodes", "", "", "*", ("get",)),  # v7 ignored namespace for cluster-wide kinds
        ResourceRule("*", "*", "team-a", "*", ("get", "list")),  # namespace → everything inside it
        ResourceRule("*", "*", "^.+$", "*", ("list",)),
        ResourceRule("widgets", "*", "dev", "*", ("get",)),  # unknown singular: any group
        ResourceRule("namespaces", "", "", "team-a", ("get", "list")),
        ResourceRule("namespaces", "", "", "^.+$", ("list",)),
    ]


@pytest.mark.parametrize("version", ["v7", "v8"])
def test_labels_without_resources_grant_everything_like_teleport(version: str) -> None:
    (role,) = parse_roles_yaml(
        f"kind: role\nversion: {version}\nmetadata: {{name: r}}\nspec:\n  allow: {{kubernetes_labels: {{env: dev}}}}\n"
        "  deny: {kubernetes_labels: {env: prod}}\n"
    )
    assert role.allow.kubernetes_resources[0] == ResourceRule("*", "*", "*", "*", ("*",))
    assert role.deny.kubernetes_resources == ()  # deny has no default
    (no_labels,) = parse_roles_yaml(
        "kind: role\nversion: v8\nmetadata: {name: r}\nspec: {allow: {kubernetes_groups: [g]}}\n"
    )
    assert no_labels.allow.kubernetes_resources == ()


def test_v7_wildcard_kind_adds_cluster_wide_kinds() -> None:
    (role,) = parse_roles_yaml(
        """
kind: role
version: v7
metadata: {name: w}
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources: [{kind: '*', namespace: dev, name: '*', verbs: [get]}]
"""
    )
    kinds = [r.kind for r in role.allow.kubernetes_resources]
    assert kinds[0] == "*" and {
        "nodes",
        "persistentvolumes",
        "clusterroles",
        "clusterrolebindings",
        "certificatesigningrequests",
    } <= set(kinds)
    assert all(r.namespace == "" for r in role.allow.kubernetes_resources[1:])


def _role_with(
    resource: str = "{kind: pods, api_group: '', namespace: dev, name: '*', verbs: [get]}",
    extra: str = "",
    labels: str = "{env: dev}",
) -> str:
    return f"""
kind: role
version: v8
metadata: {{name: broken-role}}
spec:
  allow:
    kubernetes_labels: {labels}
    kubernetes_resources: [{resource}]
{extra}
"""


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        (
            _role_with("{kind: pods, api_group: '', namespace: dev, name: '*', verbs: [read]}"),
            "spec.allow.kubernetes_resources[0].verbs",
            "unknown verb 'read'",
        ),
        (
            _role_with("{kind: pods, api_group: '', namespace: dev, name: '*', verbs: ['*', get]}"),
            "spec.allow.kubernetes_resources[0].verbs",
            "cannot be combined",
        ),
        (
            _role_with("{kind: deployments, namespace: dev, name: '*', verbs: [get]}"),
            "spec.allow.kubernetes_resources[0].api_group",
            "api_group is required",
        ),
        (
            _role_with("{kind: pod, api_group: '*', namespace: dev, name: '*', verbs: [get]}"),
            "spec.allow.kubernetes_resources[0].kind",
            "plural 'pods'",
        ),
        (
            _role_with("{kind: pods, api_group: '', namespace: '^dev($', name: '*', verbs: [get]}"),
            "spec.allow.kubernetes_resources[0].namespace",
            "invalid regular expression",
        ),
        (
            _role_with("{kind: pods, api_group: '', name: '*', verbs: [get]}"),
            "spec.allow.kubernetes_resources[0].namespace",
            "namespace is required",
        ),
        (
            _role_with("{kind: pods, api_group: '', namespace: dev, name: '*', verbs: []}"),
            "spec.allow.kubernetes_resources[0].verbs",
            "at least one verb",
        ),
        (
            _role_with("{kind: pods, api_group: '', namespace: dev, nmae: x, verbs: [get]}"),
            "spec.allow.kubernetes_resources[0].nmae",
            "unknown key",
        ),
        (_role_with(labels="{'*': dev}"), "spec.allow.kubernetes_labels.*", "only '*': '*'"),
        (
            _role_with(labels="{env: '^(dev$'}"),
            "spec.allow.kubernetes_labels.env",
            "invalid regular expression",
        ),
        (
            _role_with(extra="  options: {max_session_ttl: forever}"),
            "spec.options.max_session_ttl",
            "invalid duration",
        ),
        (_role_with(extra="  options: {max_ttl: 1h}"), "spec.options.max_ttl", "unknown key"),
        (
            _role_with(extra="  deny: {kubernetes_labels_expression: 'x'}"),
            "spec.deny.kubernetes_labels_expression",
            "not supported",
        ),
        (_role_with(extra="  allowed: {}"), "spec.allowed", "unknown key"),
        (_role_with().replace("version: v8", "version: v5"), "version", "'v7' or 'v8'"),
        (_role_with().replace("kind: role", "kind: user"), "kind", "must be 'role'"),
        (
            _role_with(extra="    kubernetes_groups: ['{{email.domain(external.email)}}']")
            .replace("\n  allow:", "\n  allow:", 1)
            .replace("    kubernetes_groups", "  deny:\n    kubernetes_groups"),
            "spec.deny.kubernetes_groups",
            "unsupported template",
        ),
    ],
)
def test_validation_errors_name_file_role_and_field(text: str, field: str, message: str) -> None:
    with pytest.raises(RoleError) as info:
        parse_roles_yaml(text, "/roles/broken.yaml")
    err = info.value
    assert err.file == "/roles/broken.yaml"
    assert err.field == field
    assert message in str(err)
    if field not in ("version", "kind"):
        assert err.role == "broken-role"
    assert "/roles/broken.yaml" in str(err) and field in str(err)


def test_invalid_yaml_names_the_file() -> None:
    with pytest.raises(RoleError, match="broken.yaml.*invalid YAML"):
        parse_roles_yaml("kind: role\n  bad: [", "broken.yaml")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("8h", 28800),
        ("30m", 1800),
        ("1h30m", 5400),
        ("90s", 90),
        ("8h0m0s", 28800),
        ("1d", 86400),
        ("1.5h", 5400),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "8", "h", "8x", "1h 30m", 8, True, None])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_trait_templates_expand_per_value_and_drop_missing() -> None:
    traits = {"kubernetes_groups": ("g1", "g2"), "team": ("a",), "empty": ()}
    assert expand_templates(["{{internal.kubernetes_groups}}", "static", "team-{{external.team}}-x", "{{external.missing}}", "{{internal.empty}}"], traits) == [
        "g1", "g2", "static", "team-a-x",
    ]  # fmt: skip
    assert expand_templates(["{{external.team}}"], {"team": ("{{internal.kubernetes_groups}}",)}) == [
        "{{internal.kubernetes_groups}}"
    ]


def test_template_functions_like_teleport() -> None:
    traits = {"email": ("Alice.B@example.com", "Bob <bob@x.io>", "not-an-address"), "team": ("team-a", "ops")}
    assert expand_templates(["{{email.local(external.email)}}"], traits) == ["Alice.B", "bob"]
    assert expand_templates(['u-{{ external["team"] }}'], traits) == ["u-team-a", "u-ops"]
    # regexp.replace keeps only the values the expression matches; $1 / ${1} are Go-style groups
    assert expand_templates(['{{regexp.replace(external.team, "^team-(.*)$", "grp-$1")}}'], traits) == [
        "grp-a"
    ]
    assert expand_templates(['{{regexp.replace(external.team, "^team-(?P<t>.*)$", "${t}!")}}'], traits) == [
        "a!"
    ]
    assert expand_templates(['{{regexp.replace(email.local(external.email), "\\\\.", "-")}}'], traits) == [
        "Alice-B"
    ]


@pytest.mark.parametrize(
    "template",
    ["{{email.domain(external.email)}}", "{{external}}", "{{internal.x extra}}", '{{regexp.replace(external.x, "(")}}',
     '{{regexp.replace(external.x, "(", "y")}}', "{{email.local(external.email}}"],
)  # fmt: skip
def test_unsupported_templates_are_load_errors(template: str) -> None:
    text = _role_with(extra=f"  deny:\n    kubernetes_users: ['{template}']")
    with pytest.raises(RoleError, match="unsupported template") as info:
        parse_roles_yaml(text, "t.yaml")
    assert info.value.field == "spec.deny.kubernetes_users"


def write(path: Path, text: str) -> None:
    path.write_text(text)


def test_load_roles_dir_reads_every_yaml_file_and_multi_document_files(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", V8)
    write(
        tmp_path / "b.yml",
        _role_with().replace("broken-role", "viewer")
        + "---\n"
        + _role_with().replace("broken-role", "other"),
    )
    write(tmp_path / "notes.txt", "not a role")
    roles = load_roles_dir(tmp_path)
    assert roles.names() == ["dev-access", "other", "viewer"]
    assert roles.get("dev-access").max_session_ttl == 28800
    assert roles.get("nope") is None
    assert [r.name for r in roles.for_names(["viewer", "unknown", "other"])] == ["viewer", "other"]


def test_duplicate_role_names_refuse_both_files_naming_each_other(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", V8)
    write(tmp_path / "b.yaml", V8)
    write(tmp_path / "c.yaml", _role_with().replace("broken-role", "viewer"))
    roles = load_roles_dir(tmp_path)
    assert roles.names() == ["viewer"]
    assert sorted(roles.refused) == [str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]
    a = roles.refused[str(tmp_path / "a.yaml")]
    assert "duplicate role name (also defined in" in str(a) and "b.yaml" in str(a)
    assert a.role == "dev-access" and a.field == "metadata.name"


def test_one_bad_file_is_refused_naming_file_and_key_and_the_others_load(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", V8)
    write(tmp_path / "bad.yaml", V8.replace("dev-access", "broken").replace("verbs: [get, list, watch, exec]",
                                                                          "verbs: [get, everything]"))
    write(tmp_path / "garbage.yaml", "kind: role\n  version: [\n")
    roles = load_roles_dir(tmp_path)
    assert roles.names() == ["dev-access"]
    bad = roles.refused[str(tmp_path / "bad.yaml")]
    assert bad.file == str(tmp_path / "bad.yaml") and bad.role == "broken"
    assert bad.field == "spec.allow.kubernetes_resources[0].verbs" and "unknown verb 'everything'" in str(bad)
    assert "invalid YAML" in str(roles.refused[str(tmp_path / "garbage.yaml")])


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _bump(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_watcher_applies_changes_after_the_check_interval(tmp_path: Path) -> None:
    clock = FakeClock()
    write(tmp_path / "a.yaml", V8)
    reloaded: list[RoleSet] = []
    w = RoleWatcher(tmp_path, clock, min_check_interval=5, on_reload=reloaded.append)
    assert w.current().names() == ["dev-access"]

    _bump(tmp_path / "b.yaml", _role_with().replace("broken-role", "viewer"))  # added
    assert w.current().names() == ["dev-access"]  # not yet checked: interval not over
    clock.now += 5
    assert w.current().names() == ["dev-access", "viewer"]

    _bump(tmp_path / "a.yaml", V8.replace("8h", "1h"))  # changed
    clock.now += 5
    assert w.current().get("dev-access").max_session_ttl == 3600

    (tmp_path / "b.yaml").unlink()  # removed
    clock.now += 5
    assert w.current().names() == ["dev-access"]
    assert w.reloads == 3 and len(reloaded) == 3 and w.errors == []


def test_watcher_refuses_a_broken_file_keeps_the_others_and_reports_it_once(tmp_path: Path) -> None:
    clock = FakeClock()
    write(tmp_path / "a.yaml", V8)
    write(tmp_path / "b.yaml", _role_with().replace("broken-role", "viewer"))
    seen: list[RoleError] = []
    reloaded: list[RoleSet] = []
    w = RoleWatcher(tmp_path, clock, min_check_interval=0, on_error=seen.append, on_reload=reloaded.append)
    assert w.current().names() == ["dev-access", "viewer"]
    _bump(tmp_path / "a.yaml", V8.replace("verbs: [get, list, watch, exec]", "verbs: [get, everything]"))
    # the broken file's role is no longer served (a broken edit never widens access); the other stays
    assert w.current().names() == ["viewer"]
    assert len(seen) == 1 and "unknown verb 'everything'" in str(seen[0]) and seen[0].file.endswith("a.yaml")
    assert w.errors == seen and w.last_error is seen[0] and list(w.refused) == [str(tmp_path / "a.yaml")]
    assert reloaded[-1].refused == w.refused
    _bump(tmp_path / "b.yaml", _role_with().replace("broken-role", "viewer").replace("8h", "1h"))
    assert w.current().get("viewer") is not None
    assert len(seen) == 1  # reported once per version of the file, not on every reload or request
    _bump(tmp_path / "a.yaml", V8.replace("8h", "2h"))  # fixed
    assert w.current().get("dev-access").max_session_ttl == 7200 and w.last_error is None and not w.refused


def test_watcher_first_load_of_a_dir_with_only_bad_files_serves_nothing(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "kind: role\nversion: v9\nmetadata: {name: x}\n")
    seen: list[RoleError] = []
    w = RoleWatcher(tmp_path, FakeClock(), on_error=seen.append)
    assert len(w.current()) == 0 and len(w.errors) == 1 and seen == w.errors
    assert seen[0].field == "version"


def test_watcher_first_load_of_a_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(RoleError, match="does not exist"):
        RoleWatcher(tmp_path / "nope", FakeClock())
    w = RoleWatcher(tmp_path / "nope", FakeClock(), initial_ok=False)
    assert len(w.current()) == 0 and len(w.errors) == 1

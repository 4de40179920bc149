"""kubegate's roles end to end: real kubectl 1.37 → kubegate → sandbox cluster, one proxy per module.

The issue's rbac scenarios: a viewer lists everywhere but execs nowhere; a dev role execs in dev only;
a deny on secrets wins over '*' allows; a pod-name-restricted role sees only its pods in `get` and in
`get -w`; `--as` within the allowed set works and outside it is refused; a role edit applies without a
restart; `kubectl auth can-i` answers from kubegate's roles.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

MASTERS = "    kubernetes_groups: ['system:masters']\n"


def role(name: str, rules: str, extra: str = "", deny: str = "") -> str:
    return (
        f"kind: role\nversion: v8\nmetadata: {{name: {name}}}\nspec:\n  allow:\n    kubernetes_labels: {{'*': '*'}}\n"
        f"    kubernetes_resources: {rules}\n{MASTERS}{extra}"
        + (f"  deny:\n    kubernetes_resources: {deny}\n" if deny else "")
    )


ROLES = {
    "viewer": role(
        "viewer", "[{kind: '*', api_group: '*', namespace: '*', name: '*', verbs: [get, list, watch]}]"
    ),
    "dev": role(
        "dev", "[{kind: pods, api_group: '', namespace: dev, name: '*', verbs: [get, list, watch, exec]}]"
    ),
    "no-secrets": role(
        "no-secrets",
        "[{kind: '*', api_group: '*', namespace: '*', name: '*', verbs: ['*']}]",
        deny="[{kind: secrets, api_group: '', namespace: '*', name: '*', verbs: ['*']}]",
    ),
    "web-only": role(
        "web-only", "[{kind: pods, api_group: '', namespace: '*', name: 'web-*', verbs: [get, list, watch]}]"
    ),
    "two-users": role(
        "two-users",
        "[{kind: pods, api_group: '', namespace: dev, name: '*', verbs: [get, list]}]",
        "    kubernetes_users: [reader, writer]\n",
    ),
    "flip": role("flip", "[{kind: pods, api_group: '', namespace: dev, name: '*', verbs: [get]}]"),
    "everything": role(
        "everything", "[{kind: '*', api_group: '*', namespace: '*', name: '*', verbs: ['*']}]"
    ),
}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from proxy.testing import cluster_for_sandbox, running_proxy
    from rbac import RoleWatcher
    from sandbox.testing import running_sandbox

    base = tmp_path_factory.mktemp("rbac-e2e")
    roles_dir = base / "roles"
    roles_dir.mkdir()
    for name, text in ROLES.items():
        (roles_dir / f"{name}.yaml").write_text(text)
    watcher = RoleWatcher(roles_dir, time.monotonic, min_check_interval=0)
    with running_sandbox(base / "sandbox") as sb:
        with running_proxy(base / "proxy", clusters=[cluster_for_sandbox(sb)], roles=watcher) as px:
            yield {"sb": sb, "px": px, "roles_dir": roles_dir, "configs": {}}


def kube(
    env: dict, kubectl: str, user: str, roles: list[str], *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    key = (user, tuple(roles))
    if key not in env["configs"]:
        env["configs"][key] = env["px"].kubeconfig(user, roles, ["sandbox"])
    return subprocess.run(
        [kubectl, "--kubeconfig", str(env["configs"][key]), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def names_in(out: str) -> set[tuple[str, str]]:
    return {(line.split()[0], line.split()[1]) for line in out.strip().splitlines()[1:] if line.strip()}


def test_viewer_lists_everywhere_but_execs_nowhere(env, kubectl_new):
    res = kube(env, kubectl_new, "vera", ["viewer"], "get", "pods", "-A")
    assert res.returncode == 0, res.stderr
    assert {("dev", "db-0"), ("prod", "api-0"), ("kube-system", "coredns-0")} <= names_in(res.stdout)
    res = kube(env, kubectl_new, "vera", ["viewer"], "exec", "-n", "dev", "web-1", "--", "echo", "hi")
    assert res.returncode != 0
    assert 'kubegate role(s) of user "vera" do not allow "exec" on pods in namespace "dev"' in res.stderr


def test_dev_execs_in_dev_but_not_in_prod(env, kubectl_new):
    res = kube(env, kubectl_new, "dan", ["dev"], "exec", "-n", "dev", "web-1", "--", "echo", "inside-dev")
    assert res.returncode == 0 and res.stdout == "inside-dev\n", res.stderr
    res = kube(env, kubectl_new, "dan", ["dev"], "exec", "-n", "prod", "web-1", "--", "echo", "x")
    # kubectl GETs the pod before exec: that is already refused
    assert (
        res.returncode != 0 and 'pods "web-1" is forbidden' in res.stderr and 'namespace "prod"' in res.stderr
    )


def test_deny_on_secrets_wins_over_star_allows(env, kubectl_new):
    res = kube(env, kubectl_new, "sam", ["no-secrets", "viewer"], "get", "secrets", "-A")
    assert res.returncode != 0
    assert 'secrets is forbidden: a deny rule of kubegate role "no-secrets"' in res.stderr
    res = kube(
        env,
        kubectl_new,
        "sam",
        ["no-secrets", "viewer"],
        "get",
        "secret",
        "db-credentials",
        "-n",
        "dev",
        "-o",
        "json",
    )
    assert res.returncode != 0 and 'deny rule of kubegate role "no-secrets"' in res.stderr
    res = kube(env, kubectl_new, "sam", ["no-secrets", "viewer"], "get", "configmaps", "-A")
    assert res.returncode == 0 and ("dev", "app-config") in names_in(res.stdout)


def test_name_restricted_role_sees_only_its_pods(env, kubectl):
    res = kube(env, kubectl, "wes", ["web-only"], "get", "pods", "-A")
    assert res.returncode == 0, res.stderr
    seen = names_in(res.stdout)  # (the watch test adds web-<n> pods: only web-* may ever show)
    assert {("dev", "web-1"), ("dev", "web-2"), ("prod", "web-1")} <= seen
    assert all(name.startswith("web-") for _, name in seen), seen
    res = kube(env, kubectl, "wes", ["web-only"], "get", "pods", "-n", "dev", "-o", "json")
    assert res.returncode == 0, res.stderr
    names = [p["metadata"]["name"] for p in json.loads(res.stdout)["items"]]
    assert {"web-1", "web-2"} <= set(names) and all(n.startswith("web-") for n in names), names
    res = kube(env, kubectl, "wes", ["web-only"], "get", "pod", "db-0", "-n", "dev")
    assert res.returncode != 0 and 'pods "db-0" is forbidden' in res.stderr


def test_name_restricted_watch_shows_only_its_pods(env, kubectl):
    from sandbox.seed import make_pod

    key = ("wes", ("web-only",))
    if key not in env["configs"]:
        env["configs"][key] = env["px"].kubeconfig("wes", ["web-only"], ["sandbox"])
    proc = subprocess.Popen(
        [kubectl, "--kubeconfig", str(env["configs"][key]), "get", "pods", "-n", "dev", "-w", "--no-headers"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        while len(lines) < 2:  # the initial list: web-1, web-2
            lines.append(proc.stdout.readline())
        suffix = kubectl.rsplit("-", 1)[-1].replace(".", "")  # one pair of new pods per kubectl version
        store = env["sb"].store
        store.put_object("", "pods", make_pod("dev", f"db-{suffix}", {"app": "db"}))  # hidden: created first
        store.put_object("", "pods", make_pod("dev", f"web-{suffix}", {"app": "web"}))
        deadline = time.monotonic() + 20
        while not any(line.startswith(f"web-{suffix}") for line in lines) and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        names = [line.split()[0] for line in lines if line.strip()]
        assert f"web-{suffix}" in names, (names, proc.stderr.read() if proc.poll() is not None else "")
        assert all(n.startswith("web-") for n in names), names
    finally:
        proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_impersonation_choice_within_the_allowed_set(env, kubectl_new):
    # A choice within the allowed set works (this first call also fills kubectl's discovery cache:
    # without one, kubectl 1.37 reports a refused discovery only as "Forbidden: unknown").
    res = kube(
        env,
        kubectl_new,
        "tia",
        ["two-users"],
        "get",
        "pods",
        "-n",
        "dev",
        "--as",
        "reader",
        "--as-group",
        "system:masters",
    )
    assert res.returncode == 0, res.stderr
    assert "web-1" in res.stdout and "db-0" in res.stdout
    res = kube(env, kubectl_new, "tia", ["two-users"], "get", "pods", "-n", "dev")
    assert res.returncode != 0 and "choose one with --as" in res.stderr
    res = kube(env, kubectl_new, "tia", ["two-users"], "get", "pods", "-n", "dev", "--as", "root")
    assert res.returncode != 0 and 'impersonating user "root" is not allowed' in res.stderr


def test_role_edit_applies_without_restart(env, kubectl_new):
    res = kube(env, kubectl_new, "fay", ["flip"], "get", "configmaps", "-n", "dev")
    assert res.returncode != 0 and "forbidden" in res.stderr
    path: Path = env["roles_dir"] / "flip.yaml"
    path.write_text(
        role("flip", "[{kind: configmaps, api_group: '', namespace: dev, name: '*', verbs: [get, list]}]")
    )
    res = kube(env, kubectl_new, "fay", ["flip"], "get", "configmaps", "-n", "dev")
    assert res.returncode == 0 and "app-config" in res.stdout, res.stderr
    path.write_text(
        "kind: role\nversion: v8\nmetadata: {name: flip}\nspec: {allow: {kubernetes_resources: [{kind: pods, verbs: [fly]}]}}\n"
    )
    # broken edit: the file is refused on its own, so its role is no longer served (a broken edit
    # never leaves the old grant in place), while the other files' roles keep working
    res = kube(env, kubectl_new, "fay", ["flip"], "get", "configmaps", "-n", "dev")
    assert res.returncode != 0 and 'cluster "sandbox" not found' in res.stderr, res.stderr
    res = kube(env, kubectl_new, "dan", ["dev"], "get", "pods", "-n", "dev")
    assert res.returncode == 0, res.stderr


def test_auth_can_i_answers_from_kubegate_roles(env, kubectl_new):
    def can_i(*args: str) -> str:
        return kube(env, kubectl_new, "dan", ["dev"], "auth", "can-i", *args).stdout.strip()

    assert can_i("create", "pods", "--subresource=exec", "-n", "dev") == "yes"
    assert can_i("create", "pods", "--subresource=exec", "-n", "prod").startswith("no")
    assert can_i("list", "pods", "-n", "dev") == "yes"
    assert can_i("delete", "pods", "-n", "dev").startswith(
        "no - kubegate"
    )  # system:masters upstream, kubegate says no
    assert re.match(r"no\b", can_i("get", "secrets", "-n", "dev"))


def can_i_list(env: dict, kubectl: str, user: str, roles: list[str]) -> tuple[list[list[str]], str]:
    """``kubectl auth can-i --list -n dev`` → (table rows split on 2+ spaces, stderr)."""
    res = kube(env, kubectl, user, roles, "auth", "can-i", "--list", "-n", "dev")
    assert res.returncode == 0, res.stderr
    rows = [re.split(r"\s{2,}", line.strip()) for line in res.stdout.strip().splitlines()[1:]]
    return rows, res.stderr


def test_can_i_list_describes_a_wildcard_role_as_wildcards_each_rule_once(env, kubectl):
    rows, stderr = can_i_list(env, kubectl, "root", ["everything"])
    assert ["*.*", "[]", "[]", "[*]"] in rows, rows
    assert "incomplete" not in stderr, stderr
    urls = [r[0] for r in rows if r[0].startswith("[/")]  # non-resource rows: the first column is empty
    assert urls and len(urls) == len(set(urls)), rows  # each non-resource URL once
    assert "[/version]" in urls and "[/api/*]" in urls and "[*]" not in urls


def test_can_i_list_says_why_it_may_be_incomplete(env, kubectl):
    rows, stderr = can_i_list(env, kubectl, "sam", ["no-secrets"])
    assert ["*.*", "[]", "[]", "[*]"] in rows, rows
    assert 'the list may be incomplete: kubegate role "no-secrets" denies * on secrets' in stderr, stderr
    rows, stderr = can_i_list(env, kubectl, "dan", ["dev"])
    assert ["pods", "[]", "[]", "[get list watch exec]"] not in rows  # kubegate verbs are written as RBAC's
    assert ["pods", "[]", "[]", "[get list watch]"] in rows, rows
    assert ["pods/exec", "[]", "[]", "[get create]"] in rows, rows
    assert not any(r[0].startswith("secrets") for r in rows)
    assert "incomplete" not in stderr, stderr

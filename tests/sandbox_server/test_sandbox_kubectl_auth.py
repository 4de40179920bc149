"""kubectl 1.37 and 1.20 against the sandbox directly: auth can-i (incl. --list), auth whoami,
--as / --as-group allowed and refused, 401 without credentials, token authentication; over HTTP/2
(kubectl's default) and HTTP/1.1 (client-go's DISABLE_HTTP2)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.testing import RunningSandbox, running_sandbox
from sandbox.tls import write_kubeconfig

pytestmark = pytest.mark.e2e
RBAC = "rbac.authorization.k8s.io"


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    with running_sandbox(tmp_path_factory.mktemp("kubectl-auth")) as sandbox:
        store = sandbox.store
        store.put_object(
            RBAC,
            "rolebindings",
            {
                "apiVersion": f"{RBAC}/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "alice-view", "namespace": "dev"},
                "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "view"},
                "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "alice"}],
            },
        )
        store.put_object(
            RBAC,
            "clusterroles",
            {
                "apiVersion": f"{RBAC}/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "impersonate-alice"},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["users"],
                        "resourceNames": ["alice"],
                        "verbs": ["impersonate"],
                    },
                    {
                        "apiGroups": [""],
                        "resources": ["groups"],
                        "resourceNames": ["dev"],
                        "verbs": ["impersonate"],
                    },
                ],
            },
        )
        store.put_object(
            RBAC,
            "clusterrolebindings",
            {
                "apiVersion": f"{RBAC}/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "carol-impersonates"},
                "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "impersonate-alice"},
                "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "carol"}],
            },
        )
        yield sandbox


@pytest.fixture(scope="module")
def kubeconfigs(sb: RunningSandbox) -> dict[str, Path]:
    return {
        "admin": sb.admin_kubeconfig,
        "alice": sb.client_kubeconfig("alice", ["dev"]),
        "carol": sb.client_kubeconfig("carol", []),
        "token": sb.token_kubeconfig("tina", ["system:masters"]),
        "badtoken": write_kubeconfig(
            sb.state_dir / "bad.kubeconfig", sb.url, sb.ca_pem_path, user="x", token="wrong"
        ),
    }


@pytest.fixture(params=["h2", "http1.1"])
def protocol(request: pytest.FixtureRequest) -> str:
    return request.param


def run(kubectl: str, kubeconfig: Path, protocol: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if protocol == "http1.1":
        env["DISABLE_HTTP2"] = "1"
    return subprocess.run(
        # Each kubectl version gets its own discovery cache inside this test's sandbox state.
        [
            kubectl,
            "--kubeconfig",
            str(kubeconfig),
            "--request-timeout=20s",
            "--cache-dir",
            str(kubeconfig.parent / f"cache-{Path(kubectl).name}"),
            *args,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_requests_use_the_asked_protocol(sb, kubeconfigs, kubectl, protocol) -> None:
    before = dict(sb.server.requests_by_protocol)
    assert run(kubectl, kubeconfigs["admin"], protocol, "get", "ns").returncode == 0
    after = sb.server.requests_by_protocol
    version = "2" if protocol == "h2" else "1.1"
    assert after.get(version, 0) > before.get(version, 0)


def test_auth_can_i(sb, kubeconfigs, kubectl, protocol) -> None:
    admin = run(kubectl, kubeconfigs["admin"], protocol, "auth", "can-i", "delete", "nodes")
    assert (admin.returncode, admin.stdout.strip()) == (0, "yes")
    yes = run(kubectl, kubeconfigs["alice"], protocol, "auth", "can-i", "list", "pods", "-n", "dev")
    assert (yes.returncode, yes.stdout.strip()) == (0, "yes")
    no = run(kubectl, kubeconfigs["alice"], protocol, "auth", "can-i", "list", "pods", "-n", "prod")
    assert (no.returncode, no.stdout.strip()) == (1, "no")
    sub = run(kubectl, kubeconfigs["alice"], protocol, "auth", "can-i", "create", "pods/exec", "-n", "dev")
    assert sub.stdout.strip() == "no"


def test_auth_can_i_list(sb, kubeconfigs, kubectl, protocol) -> None:
    out = run(kubectl, kubeconfigs["alice"], protocol, "auth", "can-i", "--list", "-n", "dev")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:2] == ["Resources", "Non-Resource"]
    pods = [line for line in lines if line.startswith("pods ")]
    assert pods and "[get list watch]" in pods[0]
    assert any("selfsubjectaccessreviews.authorization.k8s.io" in line for line in lines)
    prod = run(kubectl, kubeconfigs["alice"], protocol, "auth", "can-i", "--list", "-n", "prod")
    assert not any(line.startswith("pods ") for line in prod.stdout.splitlines())


def test_auth_whoami(sb, kubeconfigs, kubectl_new, protocol) -> None:
    out = run(
        kubectl_new, kubeconfigs["alice"], protocol, "auth", "whoami", "-o", "jsonpath={.status.userInfo}"
    )
    assert out.returncode == 0, out.stderr
    assert '"username":"alice"' in out.stdout and '"groups":["dev","system:authenticated"]' in out.stdout
    tok = run(
        kubectl_new,
        kubeconfigs["token"],
        protocol,
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    )
    assert tok.stdout == "tina"
    acting = run(
        kubectl_new,
        kubeconfigs["admin"],
        protocol,
        "auth",
        "whoami",
        "--as",
        "alice",
        "--as-group",
        "dev",
        "-o",
        "jsonpath={.status.userInfo.groups}",
    )
    assert acting.stdout == '["dev","system:authenticated"]'
    with_uid = run(
        kubectl_new,
        kubeconfigs["admin"],
        protocol,
        "auth",
        "whoami",
        "--as",
        "alice",
        "--as-uid",
        "u-42",
        "-o",
        "jsonpath={.status.userInfo.uid}",
    )
    assert (with_uid.returncode, with_uid.stdout) == (0, "u-42")


def test_impersonation_allowed(sb, kubeconfigs, kubectl, protocol) -> None:
    as_alice = run(
        kubectl, kubeconfigs["carol"], protocol, "get", "pods", "-n", "dev", "--as", "alice", "-o", "name"
    )
    assert as_alice.returncode == 0, as_alice.stderr
    assert "pod/web-1" in as_alice.stdout.split()
    can = run(
        kubectl,
        kubeconfigs["carol"],
        protocol,
        "auth",
        "can-i",
        "list",
        "pods",
        "-n",
        "prod",
        "--as",
        "alice",
        "--as-group",
        "dev",
    )
    assert can.stdout.strip() == "no"  # judged as alice: no rights in prod


def test_impersonation_refused(sb, kubeconfigs, kubectl, protocol) -> None:
    # Discovery is refused too when impersonation is; client-go's discovery then reports only
    # "Forbidden: unknown". With discovery cached (as after any earlier command), kubectl shows the
    # apiserver's message from the request itself, which is what this test pins down.
    for who in ("alice", "carol"):
        assert run(
            kubectl, kubeconfigs[who], protocol, "get", "pods", "-n", "dev", "-o", "name"
        ).returncode in (0, 1)
    user = run(kubectl, kubeconfigs["alice"], protocol, "get", "pods", "-n", "dev", "--as", "bob")
    assert user.returncode == 1
    assert (
        'Error from server (Forbidden): users "bob" is forbidden: User "alice" cannot impersonate resource '
        '"users" in API group "" at the cluster scope'
    ) in user.stderr
    group = run(
        kubectl,
        kubeconfigs["carol"],
        protocol,
        "get",
        "pods",
        "-n",
        "dev",
        "--as",
        "alice",
        "--as-group",
        "system:masters",
    )
    assert group.returncode == 1
    assert (
        'groups "system:masters" is forbidden: User "carol" cannot impersonate resource "groups" in API group '
        '"" at the cluster scope'
    ) in group.stderr


def test_unknown_token_is_unauthorized(sb, kubeconfigs, kubectl, protocol) -> None:
    out = run(kubectl, kubeconfigs["badtoken"], protocol, "get", "pods")
    assert out.returncode == 1
    # "(Unauthorized)" or, when discovery met the 401 first, "(the server has asked for the client to
    # provide credentials)": both are kubectl's rendering of a 401 Status.
    assert "error: You must be logged in to the server (" in out.stderr


def test_no_credentials_is_401_for_the_python_client(sb) -> None:
    # kubectl prompts for a user name when a kubeconfig has no credentials; the Python client does not.
    from kubernetes import client

    config = client.Configuration()
    config.host = sb.url
    config.ssl_ca_cert = str(sb.ca_pem_path)
    with client.ApiClient(config) as api_client:
        with pytest.raises(client.ApiException) as info:
            client.CoreV1Api(api_client).list_namespaced_pod("dev")
    assert info.value.status == 401
    assert '"reason":"Unauthorized"' in info.value.body


def test_token_authentication(sb, kubeconfigs, kubectl, protocol) -> None:
    out = run(kubectl, kubeconfigs["token"], protocol, "get", "pods", "-n", "dev", "-o", "name")
    assert out.returncode == 0, out.stderr
    assert "pod/web-1" in out.stdout.split()

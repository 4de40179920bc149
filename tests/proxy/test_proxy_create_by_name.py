"""Creates under roles restricted to certain object names (issue 4): a create names its object in the
body only, so when the decision without the body is a denial the proxy buffers the (bounded) body,
decides with the object's name, and forwards the buffered body. Everything else keeps streaming."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from proxy.policy import RbacPolicy, object_name
from proxy.protobuf import MAGIC

MAKER_ROLE = """
kind: role
version: v8
metadata: {name: maker}
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources:
      - {kind: configmaps, api_group: '', namespace: dev, name: '*', verbs: [get, list]}
      - {kind: configmaps, api_group: '', namespace: dev, name: 'allowed-*', verbs: [create, update, patch, delete]}
    kubernetes_groups: ['system:masters']
"""


# --- the name of the object in a body, whatever its format ---------------------------------------------------


def _pb_field(number: int, payload: bytes) -> bytes:
    length = len(payload)
    varint = b""
    while True:
        byte = length & 0x7F
        length >>= 7
        varint += bytes([byte | (0x80 if length else 0)])
        if not length:
            break
    return bytes([number << 3 | 2]) + varint + payload


def _protobuf_configmap(name: str) -> bytes:
    meta = _pb_field(1, name.encode()) + _pb_field(3, b"dev")  # ObjectMeta{name, namespace}
    raw = _pb_field(1, meta) + _pb_field(2, _pb_field(1, b"key") + _pb_field(2, b"value"))
    type_meta = _pb_field(1, b"v1") + _pb_field(2, b"ConfigMap")
    return MAGIC + _pb_field(1, type_meta) + _pb_field(2, raw) + _pb_field(3, b"") + _pb_field(4, b"")


@pytest.mark.parametrize(
    ("body", "name"),
    [
        (b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"allowed-1","namespace":"dev"}}', "allowed-1"),
        (b'  {"metadata": {"name": "spaced"}}', "spaced"),
        (b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\n  namespace: dev\n", "from-yaml"),
        (_protobuf_configmap("from-protobuf"), "from-protobuf"),
        (_protobuf_configmap("x" * 300), "x" * 300),  # a two-byte length varint
        (b'{"metadata":{"generateName":"allowed-"}}', ""),  # the server picks the name: unknown here
        (b'{"metadata":{"name":7}}', ""),
        (b'{"metadata":', ""),
        (b"- a\n- b\n", ""),
        (b"key: [unclosed\n", ""),
        (MAGIC + b"\xff\xff", ""),
        (b"", ""),
    ],
)
def test_object_name_is_read_from_json_yaml_and_protobuf_bodies(body: bytes, name: str) -> None:
    assert object_name(body) == name


class _Roles:
    def __init__(self, directory: Path) -> None:
        from rbac import load_roles_dir

        self.roles = load_roles_dir(str(directory))

    def current(self):
        return self.roles


def _maker_policy(tmp_path: Path) -> RbacPolicy:
    roles_dir = tmp_path / "roles"
    roles_dir.mkdir()
    (roles_dir / "maker.yaml").write_text(MAKER_ROLE)
    return RbacPolicy(_Roles(roles_dir))


@pytest.mark.parametrize(
    ("body", "allowed"),
    [
        (None, False),
        (b'{"metadata":{"name":"allowed-cm"}}', True),
        (b"metadata: {name: allowed-cm}\n", True),
        (_protobuf_configmap("allowed-cm"), True),
        (b'{"metadata":{"name":"other"}}', False),
        (b'{"metadata":{"generateName":"allowed-"}}', False),
        (b"not an object", False),
    ],
)
def test_a_name_restricted_create_is_decided_on_the_name_in_its_body(tmp_path, body, allowed) -> None:
    from discovery.model import Cluster
    from rbac import ResourceCatalog
    from rbac.identity import Identity

    policy = _maker_policy(tmp_path)
    verdict = policy.decide(
        Identity(user="mia", roles=("maker",)), Cluster(name="c", labels={}, server="https://127.0.0.1:1"),
        "POST", "/api/v1/namespaces/dev/configmaps", "", [], ResourceCatalog.builtin(), body=body,
    )
    assert verdict.allowed is allowed
    assert verdict.verb == "create"
    name = object_name(body or b"")
    assert verdict.name == name
    if not allowed:
        assert verdict.status == 403
        message = json.loads(verdict.body)["message"]
        assert message.startswith(f'configmaps "{name}" is forbidden' if name else "configmaps is forbidden"), message


# --- kubectl through the proxy -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def maker_gate(sandbox, tmp_path_factory):
    """A proxy of its own (the maker role) in front of the session's sandbox."""
    from proxy.testing import cluster_for_sandbox, running_proxy
    from rbac import RoleWatcher

    base = tmp_path_factory.mktemp("maker")
    roles_dir = base / "roles"
    roles_dir.mkdir()
    (roles_dir / "maker.yaml").write_text(MAKER_ROLE)
    with running_proxy(base / "proxy", clusters=[cluster_for_sandbox(sandbox)], roles=RoleWatcher(str(roles_dir), time.time)) as px:
        yield px


def _manifest(path: Path, name: str, data_size: int = 10) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "dev"},
        "data": {"payload": "x" * data_size},
    }))
    return path


def _run(kubectl: str, kubeconfig: Path, wire: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, **({"DISABLE_HTTP2": "1"} if wire == "http1" else {}))
    return subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), *args], capture_output=True, timeout=60, env=env)


@pytest.mark.e2e
def test_kubectl_creates_and_applies_allowed_names_and_is_refused_others_by_name(
    maker_gate, sandbox, kubectl, wire, tmp_path
):
    kubeconfig = maker_gate.kubeconfig("mia", ["maker"], ["sandbox"])
    tag = uuid.uuid4().hex[:8]

    created = _run(kubectl, kubeconfig, wire, "create", "-f", str(_manifest(tmp_path / "a.json", f"allowed-c-{tag}")))
    assert created.returncode == 0, created.stderr.decode()
    assert sandbox.store.get_object("", "configmaps", "dev", f"allowed-c-{tag}") is not None

    applied = _run(kubectl, kubeconfig, wire, "apply", "-f", str(_manifest(tmp_path / "b.json", f"allowed-a-{tag}")))
    assert applied.returncode == 0, applied.stderr.decode()
    stored = sandbox.store.get_object("", "configmaps", "dev", f"allowed-a-{tag}")
    assert stored is not None and stored["data"]["payload"] == "x" * 10  # the buffered body went upstream

    for verb in ("create", "apply"):
        forbidden = f"secret-{verb}-{tag}"
        refused = _run(kubectl, kubeconfig, wire, verb, "-f", str(_manifest(tmp_path / f"{verb}.json", forbidden)))
        err = refused.stderr.decode()
        assert refused.returncode != 0
        assert "Forbidden" in err and f'configmaps "{forbidden}" is forbidden' in err, err
        assert sandbox.store.get_object("", "configmaps", "dev", forbidden) is None

    denied = [e for e in maker_gate.audit_events if e.get("name") == f"secret-create-{tag}"]
    assert denied and denied[-1]["code"] == 403 and denied[-1]["verb"] == "create"


@pytest.mark.e2e
def test_a_create_body_larger_than_one_h2_window_is_buffered_decided_and_forwarded_whole(
    maker_gate, sandbox, kubectl_new, wire, tmp_path
):
    kubeconfig = maker_gate.kubeconfig("mia", ["maker"], ["sandbox"])
    name = f"allowed-big-{uuid.uuid4().hex[:8]}"
    size = 1_500_000  # over the proxy's 1 MiB h2 stream window and its HTTP/1.1 read high-water mark
    created = _run(kubectl_new, kubeconfig, wire, "create", "-f", str(_manifest(tmp_path / "big.json", name, size)))
    assert created.returncode == 0, created.stderr.decode()
    stored = sandbox.store.get_object("", "configmaps", "dev", name)
    assert stored is not None and len(stored["data"]["payload"]) == size

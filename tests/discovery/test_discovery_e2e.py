"""End to end: kube_cluster resources → discovery service → registry → a real kubegate proxy → kubectl.

Each test runs the sandbox API server(s) (``sandbox.testing.running_sandbox``) and the proxy
(``proxy.testing.running_proxy``) in-process; the discovery service runs on the proxy's event loop and
feeds the very registry the proxy reads, as ``kubegate start`` wires it.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from certs.access import visible_clusters
from discovery.registry import ClusterRegistry
from discovery.service import DiscoveryService
from kubegate.cli import main as kubegate
from proxy.testing import running_proxy
from rbac.identity import Identity
from rbac.roles import RoleWatcher, load_roles_dir
from sandbox.testing import running_sandbox

pytestmark = pytest.mark.e2e

WATCH_INTERVAL = 0.1

ROLES = {
    "prod-access": {"env": "prod"},
    "dev-access": {"env": "dev"},
    "everything": {"*": "*"},
}


def write_roles(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, labels in ROLES.items():
        (directory / f"{name}.yaml").write_text(yaml.safe_dump({
            "kind": "role", "version": "v8", "metadata": {"name": name},
            "spec": {"allow": {
                "kubernetes_labels": labels,
                "kubernetes_groups": ["system:masters"],
                "kubernetes_resources": [{"kind": "*", "api_group": "*", "namespace": "*", "name": "*",
                                          "verbs": ["*"]}],
            }},
        }))
    return directory


def kube_cluster_doc(name: str, labels: dict, sandbox) -> str:
    kubeconfig = Path(sandbox.admin_kubeconfig).read_bytes()
    return yaml.safe_dump({"kind": "kube_cluster", "version": "v3", "metadata": {"name": name, "labels": labels},
                           "spec": {"kubeconfig": base64.b64encode(kubeconfig).decode()}})


class Harness:
    def __init__(self, tmp_path: Path, px, registry: ClusterRegistry, service: DiscoveryService) -> None:
        self.tmp_path, self.px, self.registry, self.service = tmp_path, px, registry, service
        self.clusters_dir = tmp_path / "clusters.d"
        self.config = tmp_path / "kubegate.yaml"
        self.config.write_text(yaml.safe_dump({"version": "v1", "state_dir": str(tmp_path / "state"),
                                               "kubernetes_service": {"clusters_dir": str(self.clusters_dir)}}))

    def wait_for(self, predicate, what: str, timeout: float = 10.0) -> None:
        """Wait on the registry's own notifications (runs on the proxy loop), not on a fixed sleep."""
        async def wait() -> None:
            changed = asyncio.Event()
            unsubscribe = self.registry.subscribe(lambda name, c: changed.set())
            try:
                while not predicate():
                    changed.clear()
                    await asyncio.wait_for(changed.wait(), timeout)
            finally:
                unsubscribe()

        try:
            self.px.call(wait, timeout=timeout + 1)
        except TimeoutError:
            raise AssertionError(f"timed out waiting until {what}") from None


def start(tmp_path: Path):
    registry = ClusterRegistry()
    roles = RoleWatcher(write_roles(tmp_path / "roles"), time.monotonic)
    (tmp_path / "clusters.d").mkdir()
    service = DiscoveryService(registry, store_dir=tmp_path / "state" / "clusters",
                               clusters_dir=str(tmp_path / "clusters.d"), watch_interval=WATCH_INTERVAL,
                               health=False)
    return registry, roles, service


def not_found(result: subprocess.CompletedProcess) -> bool:
    """kubectl failed with the proxy's 404 Status (unknown and invisible clusters look the same)."""
    return result.returncode != 0 and "(NotFound)" in result.stderr


def kubectl_run(kubectl: str, kubeconfig: Path, *args: str, context: str | None = None):
    cmd = [kubectl, "--kubeconfig", str(kubeconfig), *(["--context", context] if context else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_a_dropped_kube_cluster_file_is_reachable_with_kubectl_and_a_label_change_hides_it(tmp_path, kubectl_new):
    registry, roles, service = start(tmp_path)
    with running_sandbox(tmp_path / "sb") as sb, \
            running_proxy(tmp_path / "px", clusters=registry, roles=roles) as px:
        h = Harness(tmp_path, px, registry, service)
        px.call(service.start)
        try:
            kubeconfig = px.kubeconfig("alice", ["prod-access"], clusters=["east"])
            before = kubectl_run(kubectl_new, kubeconfig, "get", "namespaces")
            assert not_found(before), before.stderr

            started = time.monotonic()
            (h.clusters_dir / "east.yaml").write_text(kube_cluster_doc("east", {"env": "prod"}, sb))
            h.wait_for(lambda: registry.get("east") is not None, "east is served")
            assert time.monotonic() - started < 10 * WATCH_INTERVAL + 2
            ok = kubectl_run(kubectl_new, kubeconfig, "get", "namespaces", "-o", "name")
            assert ok.returncode == 0, ok.stderr
            assert "namespace/default" in ok.stdout

            # relabel: alice's role (env: prod) no longer sees it → the same 404 as an unknown cluster
            (h.clusters_dir / "east.yaml").write_text(kube_cluster_doc("east", {"env": "dev"}, sb))
            h.wait_for(lambda: getattr(registry.get("east"), "labels", {}).get("env") == "dev", "east relabelled")
            hidden = kubectl_run(kubectl_new, kubeconfig, "get", "namespaces")
            assert not_found(hidden), hidden.stderr
        finally:
            px.call(service.stop)


def test_clusters_rm_ends_in_flight_streams_cleanly(tmp_path, kubectl_new):
    registry, roles, service = start(tmp_path)
    with running_sandbox(tmp_path / "sb") as sb, \
            running_proxy(tmp_path / "px", clusters=registry, roles=roles) as px:
        h = Harness(tmp_path, px, registry, service)
        px.call(service.start)
        try:
            resource = tmp_path / "west.yaml"
            resource.write_text(kube_cluster_doc("west", {"env": "prod"}, sb))
            assert kubegate(["clusters", "add", "-f", str(resource), "-c", str(h.config)]) == 0
            h.wait_for(lambda: registry.get("west") is not None, "west is served")
            kubeconfig = px.kubeconfig("bob", ["everything"], clusters=["west"])
            watch = subprocess.Popen([kubectl_new, "--kubeconfig", str(kubeconfig), "get", "configmaps", "-A",
                                      "--watch", "-o", "name"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
            try:
                assert watch.stdout.readline().strip()  # the initial list arrived: the watch is in flight
                assert kubegate(["clusters", "rm", "west", "-c", str(h.config)]) == 0
                h.wait_for(lambda: registry.get("west") is None, "west is removed")
                watch.wait(timeout=20)  # the proxy ended the stream: kubectl's watch returns
            finally:
                if watch.poll() is None:
                    watch.kill()
                    watch.wait()
            assert px.stats()["streams"] == []
            after = kubectl_run(kubectl_new, kubeconfig, "get", "namespaces")
            assert not_found(after), after.stderr
        finally:
            px.call(service.stop)


def test_two_sandbox_clusters_two_users_see_different_contexts(tmp_path, kubectl_new):
    registry, roles, service = start(tmp_path)
    with running_sandbox(tmp_path / "sb1") as sb1, running_sandbox(tmp_path / "sb2") as sb2, \
            running_proxy(tmp_path / "px", clusters=registry, roles=roles) as px:
        h = Harness(tmp_path, px, registry, service)
        (h.clusters_dir / "prod.yaml").write_text(kube_cluster_doc("prod-1", {"env": "prod"}, sb1))
        (h.clusters_dir / "dev.yaml").write_text(kube_cluster_doc("dev-1", {"env": "dev"}, sb2))
        px.call(service.start)
        try:
            role_set = load_roles_dir(tmp_path / "roles")
            contexts = {}
            for user, role in (("pat", "prod-access"), ("dana", "dev-access")):
                identity = Identity(user=user, roles=(role,))
                contexts[user] = visible_clusters(identity, role_set, registry.list())
            assert contexts == {"pat": ["prod-1"], "dana": ["dev-1"]}
            # kubegate kubeconfig for each: its only context works, the other cluster is a 404
            for user, role, other in (("pat", "prod-access", "dev-1"), ("dana", "dev-access", "prod-1")):
                kubeconfig = px.kubeconfig(user, [role], clusters=[*contexts[user], other])
                own = kubectl_run(kubectl_new, kubeconfig, "get", "ns", "default", "-o", "name",
                                  context=contexts[user][0])
                assert own.returncode == 0 and own.stdout.strip() == "namespace/default", own.stderr
                denied = kubectl_run(kubectl_new, kubeconfig, "get", "ns", context=other)
                assert not_found(denied), denied.stderr
        finally:
            px.call(service.stop)

"""Certificates through the real proxy to the sandbox cluster, with kubectl 1.37:
a bot's kubeconfigs keep working across two renewals; locks by serial and by user cut it off."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest

from certs.bot import renew_if_due
from certs.ca import CertificateAuthority
from certs.locks import LockList
from rbac.identity import Identity
from rbac.roles import RoleWatcher

pytestmark = pytest.mark.e2e

ROLE = """\
kind: role
version: v8
metadata: {name: deployer}
spec:
  allow:
    kubernetes_labels: {team: ci}
    kubernetes_groups: [system:masters]
    kubernetes_resources:
      - {kind: pods, api_group: '', namespace: '*', name: '*', verbs: [get, list, watch]}
"""


def kubectl_json(kubectl: str, kubeconfig: Path, *args: str) -> tuple[int, dict | None, str]:
    done = subprocess.run(
        [kubectl, "--kubeconfig", str(kubeconfig), *args, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, json.loads(done.stdout) if done.returncode == 0 else None, done.stderr


def test_bot_through_proxy_across_renewals_and_locks(tmp_path: Path, clock, kubectl_new: str) -> None:
    sandbox_testing = pytest.importorskip("sandbox.testing")
    proxy_testing = pytest.importorskip("proxy.testing")
    (tmp_path / "roles").mkdir()
    (tmp_path / "roles" / "deployer.yaml").write_text(ROLE)
    roles = RoleWatcher(tmp_path / "roles", time.time)
    locks = LockList(tmp_path / "locks")
    ca = CertificateAuthority.create_in_memory()  # wall clock: the proxy's handshake checks validity
    with sandbox_testing.running_sandbox(tmp_path / "sandbox") as sb:
        cluster = proxy_testing.cluster_for_sandbox(sb, "ci-cluster", labels={"team": "ci"})
        with proxy_testing.running_proxy(
            tmp_path / "proxy", clusters=[cluster], roles=roles, locks=locks, ca=ca
        ) as px:
            dest = tmp_path / "bot"
            serials: list[str] = []

            def clusters_for(identity: Identity) -> list[str]:
                return ["ci-cluster"]

            for _round in range(3):
                result = renew_if_due(
                    "ci",
                    ["deployer"],
                    dest,
                    timedelta(hours=1),
                    timedelta(minutes=20),
                    ca,
                    clusters_for,
                    clock,
                    server_url=f"127.0.0.1:{px.port}",
                )
                assert result.renewed
                serials.append(result.serial)
                for kubeconfig in (dest / "kubeconfig-exec", dest / "kubeconfig"):
                    code, pods, err = kubectl_json(kubectl_new, kubeconfig, "get", "pods", "-n", "default")
                    assert code == 0, (kubeconfig.name, err)
                    assert pods is not None and pods["kind"] == "List" and pods["items"], pods
                clock.now = max(clock.now, result.next_due)  # the bot's clock reaches the due time
            assert len(set(serials)) == 3
            users = {event.get("user") for event in px.audit_events}
            assert "bot-ci" in users, px.audit_events[:1]

            # lock the current certificate by serial: refused at the next request
            locks.lock_serial(serials[-1], reason="rotated out")
            code, _, err = kubectl_json(kubectl_new, dest / "kubeconfig-exec", "get", "pods", "-n", "default")
            assert code != 0 and "rotated out" in err
            # a renewal gives a new serial that is not locked
            renewed = renew_if_due(
                "ci",
                ["deployer"],
                dest,
                timedelta(hours=1),
                timedelta(minutes=20),
                ca,
                clusters_for,
                clock,
                server_url=f"127.0.0.1:{px.port}",
            )
            assert renewed.renewed
            code, _, err = kubectl_json(kubectl_new, dest / "kubeconfig", "get", "pods", "-n", "default")
            assert code == 0, err
            # lock the bot itself: every certificate refused
            locks.lock_user("bot-ci", reason="compromised runner")
            code, _, err = kubectl_json(kubectl_new, dest / "kubeconfig", "get", "pods", "-n", "default")
            assert code != 0 and "compromised runner" in err


def test_locked_user_is_cut_off_mid_watch(tmp_path: Path, kubectl_new: str) -> None:
    """`kubectl get pods -w` through the proxy ends soon after `users lock` writes the lock file."""
    sandbox_testing = pytest.importorskip("sandbox.testing")
    proxy_testing = pytest.importorskip("proxy.testing")
    (tmp_path / "roles").mkdir()
    (tmp_path / "roles" / "deployer.yaml").write_text(ROLE)
    roles = RoleWatcher(tmp_path / "roles", time.time)
    reader = LockList(tmp_path / "locks")  # the proxy's
    ca = CertificateAuthority.create_in_memory()
    with sandbox_testing.running_sandbox(tmp_path / "sandbox") as sb:
        cluster = proxy_testing.cluster_for_sandbox(sb, "ci-cluster", labels={"team": "ci"})
        with proxy_testing.running_proxy(
            tmp_path / "proxy", clusters=[cluster], roles=roles, locks=reader, ca=ca
        ) as px:
            kubeconfig = px.kubeconfig("alice", ["deployer"], clusters=["ci-cluster"])
            watch = subprocess.Popen(
                [
                    kubectl_new,
                    "--kubeconfig",
                    str(kubeconfig),
                    "get",
                    "pods",
                    "-n",
                    "default",
                    "-w",
                    "-o",
                    "name",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                assert watch.stdout is not None
                first = watch.stdout.readline()  # the watch is established once the first pod is listed
                assert first.startswith("pod/"), first
                LockList(tmp_path / "locks").lock_user(
                    "alice", reason="offboarded"
                )  # another process's write
                watch.wait(timeout=30)
            finally:
                if watch.poll() is None:
                    watch.kill()
                    watch.wait()
            assert watch.returncode is not None
            code, _, err = kubectl_json(kubectl_new, kubeconfig, "get", "pods", "-n", "default")
            assert code != 0 and "offboarded" in err

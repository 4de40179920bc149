"""Shared-state pieces that need no etcd: config validation of ``backend:``, ``kubegate roles`` with the
local backend (a roles directory stays possible for one host), listener safety against a foreign
process, and the shared CA's key handling."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.local import LocalBackend
from certs.ca import CAError
from certs.shared_ca import sync_ca
from kubegate.config import ConfigError, config_from_mapping
from kubegate.preflight import bind_problem

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def test_backend_etcd_needs_endpoints_and_well_formed_ones():
    with pytest.raises(ConfigError) as err:
        config_from_mapping({"backend": {"type": "etcd"}}, source_name="kubegate.yaml")
    assert "kubegate.yaml: backend.endpoints: must list at least one etcd endpoint" in str(err.value)
    with pytest.raises(ConfigError) as err:
        config_from_mapping({"backend": {"type": "etcd", "endpoints": ["etcd:2379/x"], "prefix": "kg"}},
                            source_name="kubegate.yaml")
    assert "backend.endpoints[0]" in str(err.value) and "backend.prefix" in str(err.value)
    cfg = config_from_mapping({"backend": {"type": "etcd", "endpoints": ["https://10.0.0.1:2379"],
                                           "stale_grace": "30s"}})
    assert (cfg.backend.stale_grace, cfg.backend.prefix) == (30.0, "/kubegate/")


def test_roles_apply_ls_rm_with_the_local_backend_use_the_roles_directory(tmp_path):
    (tmp_path / "roles").mkdir()
    (tmp_path / "kubegate.yaml").write_text("version: v1\nauth: {roles_dir: ./roles}\n")
    role = tmp_path / "ops.yaml"
    role.write_text("kind: role\nversion: v8\nmetadata: {name: ops}\nspec:\n  allow:\n"
                    "    kubernetes_labels: {'*': '*'}\n")

    def kubegate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kubegate", "roles", *args, "-c", "kubegate.yaml"],
                              cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=60)

    assert kubegate("apply", "-f", str(role)).stdout == "role ops created\n"
    assert (tmp_path / "roles" / "ops.yaml").is_file()
    assert kubegate("ls").stdout == "ops\n"
    role.write_text("kind: role\nversion: v8\nmetadata: {name: ops}\nspec: {allow: {verbs: x}}\n")
    refused = kubegate("apply", "-f", str(role))
    assert refused.returncode == 1 and "ops" in refused.stderr, "an invalid role is refused before storing"
    assert kubegate("rm", "ops").stdout == "role ops removed\n"
    assert kubegate("ls").stdout == "no roles\n"


def test_an_address_served_by_a_foreign_process_is_refused_naming_its_pid():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = ("import socket,time;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEPORT,1);"
            f"s.bind(('127.0.0.1',{port}));s.listen();print('up',flush=True);time.sleep(60)")
    other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "up\n"
        problem = bind_problem("127.0.0.1", port)
        assert problem is not None
        assert f"127.0.0.1:{port} is already served by another process" in problem
        assert f"(pid {other.pid})" in problem
    finally:
        other.kill()
        other.wait(5)
    started = time.monotonic()
    assert bind_problem("127.0.0.1", port) is None  # free again
    assert time.monotonic() - started < 5


def test_the_shared_ca_is_stored_encrypted_and_adopted_only_with_the_same_key_file(tmp_path):
    backend = LocalBackend(tmp_path / "backend")
    key = tmp_path / "ca.key"
    key.write_bytes(os.urandom(32))
    ca, how = sync_ca(backend, tmp_path / "a" / "ca", str(key))
    assert how == "stored"
    stored = backend.get("ca/bundle").value
    assert b"PRIVATE KEY" not in stored, "the CA key is never stored in clear"
    adopted, how = sync_ca(backend, tmp_path / "b" / "ca", str(key))
    assert how == "adopted" and adopted.cert_pem == ca.cert_pem
    assert sync_ca(backend, tmp_path / "b" / "ca", str(key))[1] == "current"
    wrong = tmp_path / "wrong.key"
    wrong.write_text(os.urandom(32).hex())
    with pytest.raises(CAError, match="does not decrypt"):
        sync_ca(backend, tmp_path / "c" / "ca", str(wrong))
    with pytest.raises(CAError, match="ca_key_file is required"):
        sync_ca(backend, tmp_path / "d" / "ca", None)


def test_a_replica_asked_nothing_before_etcd_went_down_serves_the_last_known_lock_list(tmp_path):
    """The replica watched the list but served no request until the whole etcd went away: within
    ``stale_grace`` it answers from its watched copy as the others do (a lock stays in force, everyone
    else passes), not "cannot be read, refusing everyone"; after ``stale_grace`` it fails closed."""
    from backend.etcd import EtcdBackend
    from backend.testing import EtcdCluster
    from certs.locks import StateUnavailable
    from certs.shared_locks import SharedLockList
    from rbac.identity import Identity

    alice, mallory = Identity("alice", ("dev",)), Identity("mallory", ("dev",))
    with EtcdCluster(tmp_path / "etcd", members=1) as etcd:
        SharedLockList(EtcdBackend(etcd.endpoints, prefix="/locks-test/")).lock_user("mallory", reason="left")
        clock = [0.0]
        replica = SharedLockList(EtcdBackend(etcd.endpoints, prefix="/locks-test/", timeout=0.5), watch=True,
                                 stale_grace=30, monotonic=lambda: clock[0])
        try:
            assert replica.cache is not None and replica.cache.loaded and replica.cache.healthy
            etcd.stop_all()
            deadline = time.monotonic() + 30
            while replica.cache.healthy and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not replica.cache.healthy
            clock[0] = replica.cache.unreachable_since or 0.0  # the outage has just begun
            assert replica.is_locked(alice) is None
            assert "left" in (replica.is_locked(mallory) or "")
            clock[0] += 31  # past stale_grace: fail closed
            assert isinstance(replica.is_locked(alice), StateUnavailable)
        finally:
            replica.stop()

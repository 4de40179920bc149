"""The discovery service keeps a running registry in step with its sources, and the ``kubegate
clusters`` CLI changes what a running service serves (through the store directory)."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from pathlib import Path

import yaml

from discovery.eks import FetchResult
from discovery.registry import ClusterRegistry
from discovery.service import DiscoveryService, _Fetcher
from discovery.store import ClusterRecord, ClusterStore
from kubegate.cli import main as kubegate
from sandbox.testing import running_sandbox

CA_DATA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()


def kube_cluster(name: str, labels: dict, server: str = "https://10.0.0.1:6443", dynamic: dict | None = None,
                 kubeconfig_text: str | None = None) -> dict:
    kc = kubeconfig_text or yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority-data": CA_DATA}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
    })
    spec = {"kubeconfig": base64.b64encode(kc.encode()).decode()}
    if dynamic:
        spec["dynamic_labels"] = dynamic
    return {"kind": "kube_cluster", "version": "v3", "metadata": {"name": name, "labels": labels}, "spec": spec}


class Events:
    """Registry notifications as an awaitable queue (no sleeps: tests wait for the event itself)."""

    def __init__(self, registry: ClusterRegistry) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        registry.subscribe(lambda name, c: loop.call_soon_threadsafe(self.queue.put_nowait, (name, c)))

    async def next(self, name: str, *, removed: bool = False, timeout: float = 10.0):
        async def wait():
            while True:
                got, cluster = await self.queue.get()
                if got == name and (cluster is None) == removed:
                    return cluster
        return await asyncio.wait_for(wait(), timeout)


def service(tmp_path: Path, registry: ClusterRegistry, **kw) -> DiscoveryService:
    (tmp_path / "clusters.d").mkdir(exist_ok=True)
    kw.setdefault("health", False)
    return DiscoveryService(registry, store_dir=tmp_path / "state" / "clusters",
                            clusters_dir=str(tmp_path / "clusters.d"), watch_interval=0.02, **kw)


def write_config(tmp_path: Path, **kubernetes_service) -> Path:
    (tmp_path / "clusters.d").mkdir(exist_ok=True)
    cfg = {"version": "v1", "state_dir": str(tmp_path / "state"),
           "kubernetes_service": {"clusters_dir": str(tmp_path / "clusters.d"), **kubernetes_service}}
    path = tmp_path / "kubegate.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_dropped_kube_cluster_file_is_served_and_a_label_change_unregisters_it(tmp_path):
    async def main():
        registry = ClusterRegistry([{"env": "prod"}])
        events = Events(registry)
        svc = service(tmp_path, registry)
        await svc.start()
        try:
            path = tmp_path / "clusters.d" / "east.yaml"
            path.write_text(yaml.safe_dump(kube_cluster("east", {"env": "prod"})))
            cluster = await events.next("east")
            assert registry.get("east") is cluster and cluster.server == "https://10.0.0.1:6443"
            path.write_text(yaml.safe_dump(kube_cluster("east", {"env": "dev"})))
            await events.next("east", removed=True)
            assert registry.get("east") is None and registry.peek("east") is not None
        finally:
            await svc.stop()

    asyncio.run(main())


def test_broken_files_are_reported_and_the_others_keep_working(tmp_path):
    async def main():
        registry = ClusterRegistry()
        svc = service(tmp_path, registry)
        d = tmp_path / "clusters.d"
        (d / "good.yaml").write_text(yaml.safe_dump(kube_cluster("good", {})))
        (d / "broken.yaml").write_text("kind: kube_cluster\nmetadata: [")
        (d / "nob64.yaml").write_text(yaml.safe_dump({**kube_cluster("nob64", {}), "spec": {"kubeconfig": "@@@"}}))
        await svc.start()
        await svc.stop()
        assert [c.name for c in registry.list()] == ["good"]
        errors = [e for errs in svc.errors.values() for e in errs]
        assert any("broken.yaml" in e and "YAML" in e for e in errors)
        assert any("nob64.yaml" in e and "'nob64'" in e and "base64" in e for e in errors)

    asyncio.run(main())


def test_kubeconfig_files_are_watched_and_errors_clear_when_a_file_is_fixed(tmp_path):
    def kubeconfig(*names: str) -> str:
        return yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": n, "cluster": {"server": f"https://{n}:6443"}} for n in names],
            "contexts": [{"name": n, "context": {"cluster": n, "user": "u"}} for n in names],
            "users": [{"name": "u", "user": {"token": "t"}}],
        })

    async def main():
        registry = ClusterRegistry()
        events = Events(registry)
        kc = tmp_path / "kubeconfig"
        kc.write_text(kubeconfig("one"))
        svc = service(tmp_path, registry, kubeconfig_files=[str(kc)])
        await svc.start()
        try:
            assert [c.name for c in registry.list()] == ["one"]
            kc.write_text(kubeconfig("one", "two"))
            await events.next("two")
            bad = tmp_path / "clusters.d" / "bad.yaml"
            bad.write_text("{{{")
            await asyncio.wait_for(_until(lambda: f"dir:{bad}" in svc.errors), 10)
            bad.write_text(yaml.safe_dump(kube_cluster("fixed", {})))
            await events.next("fixed")
            await asyncio.wait_for(_until(lambda: f"dir:{bad}" not in svc.errors), 10)
            kc.write_text(kubeconfig("two"))
            await events.next("one", removed=True)
        finally:
            await svc.stop()

    asyncio.run(main())


def test_cli_add_and_rm_reach_a_running_service(tmp_path, capsys):
    cfg = write_config(tmp_path)
    resource_file = tmp_path / "new.yaml"
    resource_file.write_text(yaml.safe_dump(kube_cluster("cli-one", {"team": "a"})))

    async def main():
        registry = ClusterRegistry()
        events = Events(registry)
        svc = service(tmp_path, registry)
        await svc.start()
        try:
            assert await asyncio.to_thread(kubegate, ["clusters", "add", "-f", str(resource_file), "-c", str(cfg)]) == 0
            cluster = await events.next("cli-one")
            assert cluster.labels == {"team": "a"} and registry.source_of("cli-one") == "store"
            assert await asyncio.to_thread(kubegate, ["clusters", "rm", "cli-one", "-c", str(cfg)]) == 0
            await events.next("cli-one", removed=True)
        finally:
            await svc.stop()

    asyncio.run(main())
    out = capsys.readouterr().out
    assert "cluster cli-one added" in out and "cluster cli-one removed" in out


def test_cli_add_refuses_bad_files_naming_them(tmp_path, capsys):
    cfg = write_config(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**kube_cluster("x", {}), "spec": {"kubeconfig": "not-base64!"}}))
    assert kubegate(["clusters", "add", "-f", str(bad), "-c", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "'x'" in err and "base64" in err
    assert ClusterStore(tmp_path / "state" / "clusters").load_all() == ({}, [])
    assert kubegate(["clusters", "rm", "nope", "-c", str(cfg)]) == 1


def test_cli_ls_and_show_list_every_source_with_origin_labels_and_selection(tmp_path, capsys):
    cfg = write_config(tmp_path, resources=[{"labels": {"env": "prod"}}])
    (tmp_path / "clusters.d" / "f.yaml").write_text(yaml.safe_dump(kube_cluster(
        "from-dir", {"env": "prod"}, dynamic={"arch": {"command": ["uname", "-m"], "period": "1h"}})))
    f = tmp_path / "add.yaml"
    f.write_text(yaml.safe_dump(kube_cluster("from-cli", {"env": "dev"})))
    assert kubegate(["clusters", "add", "-f", str(f), "-c", str(cfg)]) == 0
    ClusterStore(tmp_path / "state" / "clusters").put(ClusterRecord(
        name="eks-1", origin="aws", discovery_group="g", labels={"kubegate.dev/origin": "aws"},
        spec={"endpoint": "https://eks.example"}))
    capsys.readouterr()
    assert kubegate(["clusters", "ls", "-o", "json", "-c", str(cfg)]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["clusters"]}
    assert rows["from-dir"]["origin"] == "kube_cluster" and rows["from-dir"]["served"] is True
    assert rows["from-dir"]["dynamic_labels"] == ["arch"]
    assert rows["from-cli"]["served"] is False and rows["from-cli"]["labels"] == {"env": "dev"}
    assert rows["eks-1"]["origin"] == "aws" and rows["eks-1"]["health"] == "unknown"
    assert kubegate(["clusters", "ls", "-c", str(cfg)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["NAME", "ORIGIN", "HEALTH", "SERVED"]
    assert any(line.split()[:4] == ["from-dir", "kube_cluster", "unknown", "yes"] for line in table)
    assert kubegate(["clusters", "show", "from-cli", "-c", str(cfg)]) == 0
    shown = capsys.readouterr().out
    assert "env=dev" in shown and "token" not in shown
    # a discovered cluster is not removed by accident
    assert kubegate(["clusters", "rm", "eks-1", "-c", str(cfg)]) == 1
    assert "--force" in capsys.readouterr().err


def test_dynamic_labels_of_a_resource_reach_the_registry(tmp_path):
    async def main():
        registry = ClusterRegistry([{"arch": "^(x86_64|aarch64|arm64)$", "env": "prod"}])
        events = Events(registry)
        svc = service(tmp_path, registry)
        (tmp_path / "clusters.d" / "d.yaml").write_text(yaml.safe_dump(kube_cluster(
            "dyn", {"env": "prod"}, dynamic={"arch": {"command": ["uname", "-m"], "period": "1h"}})))
        await svc.start()
        try:
            assert registry.get("dyn") is None  # not selected until its dynamic label is known
            cluster = await events.next("dyn")
            assert cluster.labels["arch"] in ("x86_64", "aarch64", "arm64")
        finally:
            await svc.stop()

    asyncio.run(main())


def aws_record(name: str, group: str) -> ClusterRecord:
    return ClusterRecord(name=name, origin="aws", discovery_group=group,
                         labels={"kubegate.dev/origin": "aws", "kubegate.dev/discovery-group": group},
                         spec={"cluster_name": name, "region": "us-east-1", "endpoint": f"https://{name}.eks",
                               "ca_data": CA_DATA})


def test_two_discovery_groups_sharing_a_store_leave_each_other_alone(tmp_path):
    clouds = {"prod": [aws_record("p1", "prod"), aws_record("p2", "prod")], "dev": [aws_record("d1", "dev")]}

    async def main():
        registry = ClusterRegistry()
        svcs = {g: service(tmp_path, registry if g == "prod" else ClusterRegistry(), discovery_group=g, cloud=False)
                for g in clouds}
        fetchers = {g: _Fetcher("aws", lambda g=g: FetchResult(tuple(clouds[g]), complete=True)) for g in clouds}
        for g in ("prod", "dev", "prod", "dev"):
            await svcs[g].run_discovery_once(fetchers[g])
        await svcs["prod"].sync_local()  # what its store watcher does every watch interval
        assert sorted(c.name for c in registry.list()) == ["d1", "p1", "p2"]
        clouds["dev"] = []  # dev's cluster is gone from its cloud
        plan = await svcs["dev"].run_discovery_once(fetchers["dev"])
        assert plan.delete == ("d1",)
        await svcs["prod"].sync_local()
        assert sorted(c.name for c in registry.list()) == ["p1", "p2"]
        # a second instance of group prod converges: nothing left to do
        twin = service(tmp_path, ClusterRegistry(), discovery_group="prod", cloud=False)
        assert (await twin.run_discovery_once(fetchers["prod"])).empty

    asyncio.run(main())


def test_a_failed_fetch_deletes_nothing_and_backs_off(tmp_path):
    async def main():
        registry = ClusterRegistry()
        svc = service(tmp_path, registry, discovery_group="g", poll_interval=300, rng=random.Random(1))
        good = _Fetcher("aws", lambda: FetchResult((aws_record("keep", "g"),), complete=True))
        await svc.run_discovery_once(good)

        def boom():
            raise RuntimeError("throttled")

        failing = _Fetcher("aws", boom)
        assert await svc.run_discovery_once(failing) is None
        partial = _Fetcher("aws", lambda: FetchResult((), complete=False, errors=("region x: denied",)))
        plan = await svc.run_discovery_once(partial)
        assert plan.delete == () and plan.kept == ("keep",)
        assert registry.get("keep") is not None
        delays = []
        for _ in range(7):
            delays.append(svc.next_delay(partial))
            partial.failures += 1
        assert delays == [10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]
        ok = _Fetcher("aws", lambda: FetchResult((), complete=True))
        assert 270 <= svc.next_delay(ok) <= 330  # poll interval ± 10 % jitter

    asyncio.run(main())


def test_health_of_real_clusters_is_recorded_and_shown_by_ls(tmp_path, capsys):
    with running_sandbox(tmp_path / "sb") as sb:
        nobody = sb.client_kubeconfig("nobody", [])
        (tmp_path / "clusters.d").mkdir()
        admin_kc = Path(sb.admin_kubeconfig).read_text()
        for name, text in (("admin", admin_kc), ("weak", Path(nobody).read_text())):
            (tmp_path / "clusters.d" / f"{name}.yaml").write_text(yaml.safe_dump(kube_cluster(name, {}, kubeconfig_text=text)))
        wrong_name = yaml.safe_load(admin_kc)
        wrong_name["clusters"][0]["cluster"]["tls-server-name"] = "not-the-sandbox.example"
        (tmp_path / "clusters.d" / "tls.yaml").write_text(yaml.safe_dump(kube_cluster("tls", {}, kubeconfig_text=yaml.safe_dump(wrong_name))))
        closed = yaml.safe_load(admin_kc)
        closed["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
        (tmp_path / "clusters.d" / "down.yaml").write_text(yaml.safe_dump(kube_cluster("down", {}, kubeconfig_text=yaml.safe_dump(closed))))
        cfg = write_config(tmp_path)

        async def main():
            registry = ClusterRegistry()
            svc = service(tmp_path, registry, health=True, health_timeout=2.0)
            await svc.start()
            try:
                await asyncio.wait_for(_until(lambda: svc.health.rounds >= 1), 20)
            finally:
                await svc.stop()
            return {c.name: (c.health, c.health_detail) for c in registry.list()}

        health = asyncio.run(main())
    assert health["admin"] == ("healthy", "")
    assert health["weak"] == ("unhealthy", "impersonation not permitted: cannot impersonate users, groups, "
                                           "serviceaccounts (see `kubegate clusters setup weak`)")
    assert health["tls"][0] == "unhealthy" and health["tls"][1].startswith("tls:")
    assert health["down"][0] == "unhealthy" and health["down"][1].startswith("unreachable:")
    assert kubegate(["clusters", "ls", "-o", "json", "-c", str(cfg)]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["clusters"]}
    assert rows["admin"]["health"] == "healthy" and rows["weak"]["health"] == "unhealthy"


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.02)



def test_from_config_wires_every_source_of_a_validated_config(tmp_path):
    from kubegate.config import load_config

    (tmp_path / "clusters.d").mkdir()
    (tmp_path / "clusters.d" / "a.yaml").write_text(yaml.safe_dump(kube_cluster("from-dir", {"env": "prod"})))
    path = tmp_path / "kubegate.yaml"
    path.write_text(yaml.safe_dump({
        "version": "v1", "state_dir": str(tmp_path / "state"),
        "kubernetes_service": {"clusters_dir": str(tmp_path / "clusters.d"), "resources": [{"labels": {"env": "prod"}}]},
        "discovery_service": {"enabled": True, "discovery_group": "east", "poll_interval": "2m",
                              "aws": [{"types": ["eks"], "regions": ["us-east-1"], "tags": {"env": "prod"},
                                       "assume_role_arn": "arn:aws:iam::1:role/r", "external_id": "x"}]},
    }))
    cfg = load_config(str(path))
    registry = ClusterRegistry([dict(r.labels) for r in cfg.kubernetes_service.resources])
    svc = DiscoveryService.from_config(cfg, registry, health=False)
    assert svc.group == "east" and svc.poll_interval == 120
    assert [f.origin for f in svc.fetchers] == ["aws"]
    assert svc.external_ids == {"arn:aws:iam::1:role/r": "x"}
    assert svc.store.directory == tmp_path / "state" / "clusters"
    assert DiscoveryService.from_config(cfg, registry, cloud=False, health=False).fetchers == []
    asyncio.run(svc.sync_local())
    assert [c.name for c in registry.list()] == ["from-dir"]


def test_cli_add_never_replaces_a_discovered_cluster(tmp_path, capsys):
    cfg = write_config(tmp_path)
    ClusterStore(tmp_path / "state" / "clusters").put(aws_record("taken", "g"))
    f = tmp_path / "taken.yaml"
    f.write_text(yaml.safe_dump(kube_cluster("taken", {})))
    assert kubegate(["clusters", "add", "-f", str(f), "-c", str(cfg)]) == 1
    assert "origin aws" in capsys.readouterr().err
    assert ClusterStore(tmp_path / "state" / "clusters").get("taken").origin == "aws"
    assert kubegate(["clusters", "rm", "taken", "--force", "-c", str(cfg)]) == 0

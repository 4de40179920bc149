"""Discovery micro-benchmarks with a registry of 1,000 clusters.

    .venv/bin/python -m benchmarks.discovery_bench [--clusters N] [--quick] [--json]

- lookup: ``ClusterRegistry.get(name)`` — what the proxy calls on every request (ns per call, best of
  several rounds), a miss, and ``list()`` (cached snapshot);
- reconcile (pure): 1,000 desired vs 1,000 current EKS-style records, unchanged and with 10 % changed
  / 5 % new / 5 % gone;
- full discovery run through the service: an empty store → 1,000 records written (atomic file per
  record) → the store re-read and 1,000 clusters built into the registry; then an incremental run with
  10 changed records; then idle watcher passes (right after changes: one stat per record file; once
  the directory has settled: its mtime only);
- registry feed: ``replace_source`` of 1,000 unchanged clusters, and a selection change over 1,000.

Pure CPU + local files (a temp dir), no network; figures depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from discovery.eks import FetchResult
from discovery.model import Cluster
from discovery.reconcile import reconcile
from discovery.registry import ClusterRegistry
from discovery.service import DiscoveryService, _Fetcher
from discovery.store import ClusterRecord

CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n" + b"A" * 900 + b"\n-----END CERTIFICATE-----\n").decode()


def record(i: int, group: str = "bench", version: int = 0) -> ClusterRecord:
    name = f"eks-{i:05d}"
    return ClusterRecord(
        name=name, origin="aws", discovery_group=group,
        labels={"kubegate.dev/origin": "aws", "kubegate.dev/region": f"region-{i % 17}",
                "kubegate.dev/account-id": "123456789012", "kubegate.dev/discovery-group": group,
                "env": ("prod", "dev", "staging")[i % 3], "team": f"team-{i % 40}", "version": str(version)},
        spec={"cluster_name": name, "region": f"region-{i % 17}", "endpoint": f"https://{name}.eks.example",
              "ca_data": CA, "account_id": "123456789012", "arn": f"arn:aws:eks:r:123456789012:cluster/{name}",
              "assume_role_arn": None},
    )


def best(fn: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_lookup(n: int, rounds: int) -> dict[str, float]:
    reg = ClusterRegistry([{"env": ["prod", "dev", "staging"]}])
    for i in range(n):
        reg.upsert(Cluster(name=f"c-{i:05d}", labels={"env": ("prod", "dev", "staging")[i % 3]},
                           server=f"https://c{i}.example"), "bench")
    names = [f"c-{i:05d}" for i in range(n)] * (100_000 // n + 1)
    names = names[:100_000]
    get = reg.get

    def hits() -> None:
        for name in names:
            get(name)

    def misses() -> None:
        for _ in range(100_000):
            get("no-such-cluster")

    reg.list()
    return {
        "get_hit_ns": best(hits, rounds) / len(names) * 1e9,
        "get_miss_ns": best(misses, rounds) / 100_000 * 1e9,
        "list_cached_us": best(lambda: [reg.list() for _ in range(100)], rounds) / 100 * 1e6,
    }


def bench_reconcile(n: int, rounds: int) -> dict[str, float]:
    current = {r.name: r for r in (record(i) for i in range(n))}
    same = [record(i) for i in range(n)]
    changed = [record(i, version=1 if i % 10 == 0 else 0) for i in range(n // 20, n + n // 20)]
    plan = reconcile(changed, current, origin="aws", group="bench")
    return {
        "unchanged_ms": best(lambda: reconcile(same, current, origin="aws", group="bench"), rounds) * 1e3,
        "changed_ms": best(lambda: reconcile(changed, current, origin="aws", group="bench"), rounds) * 1e3,
        "changed_plan": {"create": len(plan.create), "update": len(plan.update), "delete": len(plan.delete)},
    }


def bench_service(n: int) -> dict[str, float]:
    async def main() -> dict[str, float]:
        with tempfile.TemporaryDirectory() as tmp:
            registry = ClusterRegistry()
            svc = DiscoveryService(registry, store_dir=f"{tmp}/clusters", discovery_group="bench", health=False,
                                   cloud=False)
            desired = [record(i) for i in range(n)]
            fetcher = _Fetcher("aws", lambda: FetchResult(tuple(desired), complete=True))
            t = time.perf_counter()
            plan = await svc.run_discovery_once(fetcher)
            full = time.perf_counter() - t
            assert plan is not None and len(plan.create) == n and len(registry) == n
            for i in range(0, n, n // 10):
                desired[i] = record(i, version=2)
            t = time.perf_counter()
            plan = await svc.run_discovery_once(fetcher)
            incremental = time.perf_counter() - t
            assert plan is not None and len(plan.update) == 10
            t = time.perf_counter()
            plan = await svc.run_discovery_once(fetcher)
            noop = time.perf_counter() - t
            t = time.perf_counter()
            await svc.sync_local()
            idle = time.perf_counter() - t
            await asyncio.sleep(2.1)  # the store directory's mtime is now old enough to be trusted
            await svc.sync_local()
            t = time.perf_counter()
            for _ in range(100):
                await svc.sync_local()
            settled = (time.perf_counter() - t) / 100
            return {"full_run_1000_new_s": full, "run_10_changed_s": incremental, "run_nothing_changed_s": noop,
                    "idle_watch_pass_ms": idle * 1e3, "settled_watch_pass_ms": settled * 1e3}

    return asyncio.run(main())


def bench_feed(n: int, rounds: int) -> dict[str, float]:
    reg = ClusterRegistry()
    clusters = [Cluster(name=f"c-{i:05d}", labels={"env": ("prod", "dev")[i % 2]}, server=f"https://c{i}.example")
                for i in range(n)]
    reg.replace_source("bench", clusters)
    copies = [dataclasses.replace(c) for c in clusters]
    flips = [[{"env": "prod"}], [{"*": "*"}]]
    state = {"k": 0}

    def flip() -> None:
        state["k"] ^= 1
        reg.set_selectors(flips[state["k"]])

    return {
        "replace_source_unchanged_ms": best(lambda: reg.replace_source("bench", copies), rounds) * 1e3,
        "set_selectors_ms": best(flip, rounds) * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else 7
    results = {
        "machine": {"python": sys.version.split()[0], "platform": platform.platform()},
        "clusters": args.clusters,
        "lookup": bench_lookup(args.clusters, rounds),
        "reconcile": bench_reconcile(args.clusters, rounds),
        "service": bench_service(args.clusters),
        "feed": bench_feed(args.clusters, rounds),
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    lk, rc, sv, fd = results["lookup"], results["reconcile"], results["service"], results["feed"]
    print(f"discovery benchmarks, {args.clusters} clusters (python {results['machine']['python']})")
    print(f"  registry.get (per request)        {lk['get_hit_ns']:8.1f} ns   miss {lk['get_miss_ns']:.1f} ns")
    print(f"  registry.list (cached snapshot)   {lk['list_cached_us']:8.1f} µs")
    print(f"  reconcile, nothing changed        {rc['unchanged_ms']:8.2f} ms")
    print(f"  reconcile, 10%/5%/5% upd/new/gone {rc['changed_ms']:8.2f} ms   plan {rc['changed_plan']}")
    print(f"  discovery run, 1000 new → served  {sv['full_run_1000_new_s']:8.3f} s  (store writes + build + registry)")
    print(f"  discovery run, 10 changed         {sv['run_10_changed_s']:8.3f} s")
    print(f"  discovery run, nothing changed    {sv['run_nothing_changed_s']:8.3f} s")
    print(f"  watcher pass, fresh changes       {sv['idle_watch_pass_ms']:8.2f} ms  (stat every record file)")
    print(f"  watcher pass, settled store       {sv['settled_watch_pass_ms']:8.2f} ms  (directory mtime only)")
    print(f"  replace_source 1000 unchanged     {fd['replace_source_unchanged_ms']:8.2f} ms")
    print(f"  selection change over 1000        {fd['set_selectors_ms']:8.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

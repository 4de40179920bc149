"""rbac micro-benchmarks: decision time per request, and response filtering throughput.

    .venv/bin/python -m benchmarks.rbac_bench [--quick] [--json]

- decision: ``parse_request`` + ``decide`` per request (µs, best of several rounds of N calls) for a
  realistic identity (3 roles out of 25 loaded, trait templates, a deny rule), over typical requests;
- filtering: a 5,000-item JSON PodList (realistic ~2 KB pods) fed in 64 KiB chunks through
  ``ListFilter`` with half of the items visible (MB/s of input), the same gzip-compressed, as a
  Table, and as a watch stream of 5,000 events; plus the baseline ``json.loads`` of the whole list.

Pure CPU work, no I/O; timed with process CPU time (best of several rounds), so a busy machine
skews the figures less than wall-clock time would; still compare only within one run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

from rbac import ImpersonationRequest, ResourceCatalog, RoleSet, decide, parse_request
from rbac.filtering import ListFilter, WatchFilter
from rbac.identity import Identity
from rbac.roles import parse_roles_yaml

CHUNK = 64 * 1024


def _roles() -> RoleSet:
    docs = []
    for i in range(22):
        docs.append(
            f"""
kind: role
version: v8
metadata: {{name: team-{i}}}
spec:
  allow:
    kubernetes_labels: {{env: [dev, staging], team: 'team-{i}'}}
    kubernetes_resources:
      - {{kind: pods, api_group: '', namespace: 'team-{i}-*', name: '*', verbs: [get, list, watch, exec]}}
      - {{kind: deployments, api_group: apps, namespace: 'team-{i}-*', name: '*', verbs: ['*']}}
    kubernetes_groups: [team-{i}]
"""
        )
    docs.append(
        """
kind: role
version: v8
metadata: {name: dev-access}
spec:
  allow:
    kubernetes_labels: {env: [dev, staging], team: '*'}
    kubernetes_resources:
      - {kind: pods, api_group: '', namespace: dev, name: '*', verbs: [get, list, watch, exec]}
      - {kind: namespaces, name: dev, verbs: ['*']}
    kubernetes_groups: ['{{internal.kubernetes_groups}}', developers]
  deny:
    kubernetes_resources: [{kind: secrets, api_group: '', namespace: '*', name: '*', verbs: ['*']}]
"""
    )
    docs.append(
        """
kind: role
version: v8
metadata: {name: viewer}
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources: [{kind: '*', api_group: '*', namespace: '*', name: '*', verbs: [get, list, watch]}]
    kubernetes_groups: [view]
"""
    )
    docs.append(
        """
kind: role
version: v8
metadata: {name: web-pods}
spec:
  allow:
    kubernetes_labels: {env: '*'}
    kubernetes_resources: [{kind: pods, api_group: '', namespace: '*', name: '^web-[0-9]+$', verbs: [get, list, watch]}]
"""
    )
    return RoleSet(parse_roles_yaml("---\n".join(docs)))


# (label, who, method, path, query); who: "alice" holds 3 of the 25 roles, "wes" only a name-restricted one
REQUESTS = [
    ("get pod", "alice", "GET", "/api/v1/namespaces/dev/pods/web-1", ""),
    ("list pods (ns)", "alice", "GET", "/api/v1/namespaces/dev/pods", "limit=500"),
    ("watch pods (all ns)", "alice", "GET", "/api/v1/pods", "watch=1&allowWatchBookmarks=true"),
    ("exec", "alice", "POST", "/api/v1/namespaces/dev/pods/web-1/exec", "command=sh&stdin=true&tty=true"),
    ("denied: secrets", "alice", "GET", "/api/v1/namespaces/dev/secrets/s", ""),
    ("patch deployment", "alice", "PATCH", "/apis/apps/v1/namespaces/dev/deployments/web", ""),
    ("discovery /apis/apps/v1", "alice", "GET", "/apis/apps/v1", ""),
    ("list pods, name-restricted", "wes", "GET", "/api/v1/pods", "limit=500"),
]


def _best(fn: Callable[[], Any], n: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - t0) / n)
    return best


def bench_decisions(n: int, rounds: int) -> list[dict[str, Any]]:
    roles = _roles()
    catalog = ResourceCatalog.builtin()
    identities = {
        "alice": Identity("alice", ("dev-access", "viewer", "web-pods"), {"kubernetes_groups": ("g1", "g2")}),
        "wes": Identity("wes", ("web-pods",)),
    }
    labels = {"env": "dev", "team": "a", "region": "eu-west-1"}
    imp = ImpersonationRequest()
    out = []
    for label, who, method, path, query in REQUESTS:
        identity = identities[who]

        def parse_only(method: str = method, path: str = path, query: str = query) -> None:
            parse_request(method, path, query, catalog)

        def full(
            method: str = method, path: str = path, query: str = query, identity: Identity = identity
        ) -> None:
            decide(identity, roles, "c1", labels, parse_request(method, path, query, catalog), imp)

        d = decide(identity, roles, "c1", labels, parse_request(method, path, query, catalog), imp)
        out.append(
            {
                "request": label,
                "allowed": d.allowed,
                "filtered": d.filter is not None,
                "parse_us": _best(parse_only, n, rounds) * 1e6,
                "parse_and_decide_us": _best(full, n, rounds) * 1e6,
            }
        )
    return out


def _pod(i: int) -> dict[str, Any]:
    ns = "dev" if i % 2 == 0 else "prod"
    name = f"web-{i}"
    return {
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"5f1c2a9e-{i:04d}-4c1b-9a57-0242ac120002",
            "resourceVersion": str(100000 + i),
            "creationTimestamp": "2026-11-22T05:00:00Z",
            "labels": {"app": "web", "pod-template-hash": "7d9f8c6b5", "tier": "frontend"},
            "annotations": {
                "kubectl.kubernetes.io/restartedAt": "2026-11-21T10:00:00Z",
                "note": 'quote " and \\ slash',
            },
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web-7d9f8c6b5",
                    "uid": "abc",
                    "controller": True,
                }
            ],
        },
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "registry.example.com/web:1.2.3",
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "env": [{"name": f"VAR_{k}", "value": f"value-{k}-{i}"} for k in range(8)],
                    "resources": {
                        "limits": {"cpu": "500m", "memory": "256Mi"},
                        "requests": {"cpu": "100m", "memory": "128Mi"},
                    },
                    "volumeMounts": [
                        {
                            "name": "kube-api-access",
                            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                            "readOnly": True,
                        }
                    ],
                }
            ],
            "nodeName": f"node-{i % 7}",
            "restartPolicy": "Always",
            "serviceAccountName": "default",
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }
            ],
        },
        "status": {
            "phase": "Running",
            "podIP": f"10.1.{i // 250}.{i % 250}",
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": "2026-11-22T05:00:01Z"}
                for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            "containerStatuses": [
                {
                    "name": "web",
                    "ready": True,
                    "restartCount": 0,
                    "image": "registry.example.com/web:1.2.3",
                    "started": True,
                }
            ],
        },
    }


def _chunks(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def _throughput(make: Callable[[], Any], data: bytes, rounds: int) -> tuple[float, int]:
    chunks = _chunks(data)
    best = float("inf")
    out_len = 0
    for _ in range(rounds):
        f = make()
        t0 = time.process_time()
        out_len = sum(len(f.feed(c)) for c in chunks) + len(f.close())
        best = min(best, time.process_time() - t0)
    return len(data) / best / 1e6, out_len


def bench_filtering(items: int, rounds: int) -> list[dict[str, Any]]:
    def allows(ns: str, name: str) -> bool:
        return ns == "dev"

    pods = [_pod(i) for i in range(items)]
    plist = json.dumps(
        {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": pods}
    ).encode()
    table = json.dumps(
        {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": "1"},
            "columnDefinitions": [
                {"name": n, "type": "string"} for n in ("Name", "Ready", "Status", "Restarts", "Age")
            ],
            "rows": [
                {
                    "cells": [p["metadata"]["name"], "1/1", "Running", 0, "5m"],
                    "object": {
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": p["metadata"],
                    },
                }
                for p in pods
            ],
        }
    ).encode()
    watch = b"".join(json.dumps({"type": "ADDED", "object": p}).encode() + b"\n" for p in pods)
    results = []
    for label, make, data in (
        ("PodList", lambda: ListFilter(allows), plist),
        ("PodList, gzip (MB/s of JSON)", lambda: ListFilter(allows), gzip.compress(plist, 1)),
        ("Table", lambda: ListFilter(allows), table),
        ("watch events", lambda: WatchFilter(allows), watch),
    ):
        mbps, out_len = _throughput(make, data, rounds)
        if "gzip" in label:  # report the rate of the JSON it carries, not of the (32x smaller) gzip bytes
            mbps *= len(plist) / len(data)
        results.append(
            {"body": label, "items": items, "bytes": len(data), "out_bytes": out_len, "MB_per_s": mbps}
        )
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        json.loads(plist)
        best = min(best, time.process_time() - t0)
    results.append(
        {
            "body": "baseline json.loads(PodList)",
            "items": items,
            "bytes": len(plist),
            "out_bytes": 0,
            "MB_per_s": len(plist) / best / 1e6,
        }
    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    n, rounds = (500, 3) if args.quick else (5000, 5)
    decisions = bench_decisions(n, rounds)
    filtering = bench_filtering(5000, 2 if args.quick else 4)
    if args.json:
        print(
            json.dumps(
                {
                    "python": sys.version.split()[0],
                    "machine": platform.machine(),
                    "decisions": decisions,
                    "filtering": filtering,
                },
                indent=2,
            )
        )
        return 0
    print(f"python {sys.version.split()[0]} on {platform.machine()}")
    print(f"{'request':34} {'allowed':>8} {'filter':>7} {'parse µs':>9} {'parse+decide µs':>16}")
    for row in decisions:
        print(
            f"{row['request']:34} {row['allowed']!s:>8} {row['filtered']!s:>7} {row['parse_us']:9.1f} {row['parse_and_decide_us']:16.1f}"
        )
    print()
    print(f"{'filtering (5,000 items, half visible)':40} {'MB in':>8} {'MB out':>8} {'MB/s':>8}")
    for row in filtering:
        print(
            f"{row['body']:40} {row['bytes'] / 1e6:8.2f} {row['out_bytes'] / 1e6:8.2f} {row['MB_per_s']:8.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

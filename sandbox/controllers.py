"""A deliberately small deployment controller and garbage collector, run synchronously after API writes.

Deployments written through the API get a ReplicaSet per pod template (``<name>-<template hash>``,
``deployment.kubernetes.io/revision`` annotations, older ReplicaSets scaled to zero) and the ReplicaSet's
pods (``<replicaset>-<suffix>``, owned by it, running at once). Deleting a Deployment or ReplicaSet
deletes what it owns; deleting a pod a ReplicaSet owns makes the ReplicaSet create a replacement.
Objects loaded as seed data are left alone (no controller saw them being written).
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
from collections.abc import Callable
from typing import Any

from sandbox.store import AlreadyExists, NotFound, Store

REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
SAFE = "bcdfghjklmnpqrstvwxz2456789"  # the apimachinery "safe" alphabet used in generated names


def template_hash(template: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(SAFE[b % len(SAFE)] for b in digest[:10])


def _owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def _owner_ref(owner: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


class DeploymentController:
    def __init__(self, store: Store, create_pod: Callable[[dict[str, Any]], None]) -> None:
        self.store = store
        self.create_pod = create_pod

    def reconcile(self, namespace: str, name: str) -> None:
        store = self.store
        with store._lock:
            dep = store.get_object("apps", "deployments", namespace, name)
            if dep is None:
                return
            spec = dep.get("spec") or {}
            template = copy.deepcopy(spec.get("template") or {})
            replicas = int(spec.get("replicas", 1) or 0)
            digest = template_hash(template)
            rs_name = f"{name}-{digest}"
            uid = dep["metadata"]["uid"]
            owned = [rs for rs in store.list_objects("apps", "replicasets", namespace) if _owned_by(rs, uid)]
            revisions = [int((rs["metadata"].get("annotations") or {}).get(REVISION, "0") or 0) for rs in owned]
            current = next((rs for rs in owned if rs["metadata"]["name"] == rs_name), None)
            for rs in owned:
                if rs is not current and (rs.get("spec") or {}).get("replicas", 0):
                    self._scale_replicaset(rs, 0)
            if current is None:
                revision = max(revisions, default=0) + 1
                labels = dict((template.get("metadata") or {}).get("labels") or {}, **{HASH_LABEL: digest})
                template.setdefault("metadata", {})["labels"] = labels
                selector = copy.deepcopy(spec.get("selector") or {})
                selector.setdefault("matchLabels", {})[HASH_LABEL] = digest
                current = {
                    "apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": rs_name, "namespace": namespace, "labels": labels,
                                 "annotations": {REVISION: str(revision),
                                                 "deployment.kubernetes.io/desired-replicas": str(replicas)},
                                 "ownerReferences": [_owner_ref(dep)]},
                    "spec": {"replicas": replicas, "selector": selector, "template": template},
                }
                try:
                    current = store.create("apps", "replicasets", current).obj
                except AlreadyExists:
                    current = store.get_object("apps", "replicasets", namespace, rs_name)
                    assert current is not None
            else:
                revision = int((current["metadata"].get("annotations") or {}).get(REVISION, "1") or 1)
            self._scale_replicaset(current, replicas)
            annotations = dep["metadata"].get("annotations") or {}
            status = {"observedGeneration": dep["metadata"].get("generation", 1), "replicas": replicas,
                      "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
                      "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                                     {"type": "Progressing", "status": "True",
                                      "reason": "NewReplicaSetAvailable",
                                      "message": f'ReplicaSet "{rs_name}" has successfully progressed.'}]}
            if annotations.get(REVISION) != str(revision) or dep.get("status") != status:
                new = copy.deepcopy(dep)
                new["metadata"].setdefault("annotations", {})[REVISION] = str(revision)
                new["status"] = status
                store.update("apps", "deployments", new)

    def pod_deleted(self, pod: dict[str, Any]) -> None:
        """A pod went away: the ReplicaSet that owned it (if any, and still there) makes up its replica
        count again, as the ReplicaSet controller does (kubectl delete pod → a new pod appears)."""
        namespace = pod["metadata"].get("namespace", "")
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") != "ReplicaSet" or not ref.get("controller"):
                continue
            with self.store._lock:
                rs = self.store.get_object("apps", "replicasets", namespace, ref.get("name", ""))
                if rs is None or rs["metadata"].get("uid") != ref.get("uid"):
                    continue
                self._scale_replicaset(rs, int((rs.get("spec") or {}).get("replicas", 0) or 0))

    def _scale_replicaset(self, rs: dict[str, Any], replicas: int) -> None:
        store = self.store
        namespace = rs["metadata"]["namespace"]
        uid = rs["metadata"]["uid"]
        pods = [p for p in store.list_objects("", "pods", namespace) if _owned_by(p, uid)]
        template = (rs.get("spec") or {}).get("template") or {}
        for _ in range(replicas - len(pods)):
            suffix = "".join(random.choices(SAFE, k=5))
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": f"{rs['metadata']['name']}-{suffix}", "namespace": namespace,
                                "generateName": f"{rs['metadata']['name']}-",
                                "labels": dict((template.get("metadata") or {}).get("labels") or {}),
                                "ownerReferences": [_owner_ref(rs)]},
                   "spec": copy.deepcopy(template.get("spec") or {})}
            self.create_pod(pod)
        if len(pods) > replicas:
            doomed = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True)
            for pod in doomed[: len(pods) - replicas]:
                try:
                    store.delete("", "pods", namespace, pod["metadata"]["name"])
                except NotFound:
                    pass
        if (rs.get("spec") or {}).get("replicas") != replicas or (rs.get("status") or {}).get("replicas") != replicas:
            latest = store.get_object("apps", "replicasets", namespace, rs["metadata"]["name"])
            if latest is not None:
                new = copy.deepcopy(latest)
                new["spec"]["replicas"] = replicas
                new["status"] = {"replicas": replicas, "fullyLabeledReplicas": replicas, "readyReplicas": replicas,
                                 "availableReplicas": replicas,
                                 "observedGeneration": new["metadata"].get("generation", 1)}
                store.update("apps", "replicasets", new)


class PodAddresses:
    """Pod IPs from 10.244.1.0 - 10.244.254.255 (the seed's pods use 10.244.0.x), each unique among the
    stored pods: the next address after the last one given out that no pod holds (as a node's IPAM
    hands them out), wrapping around when the range is used up."""

    SIZE = 254 * 256

    def __init__(self, store: Store) -> None:
        self.store = store
        self._next = 0

    def allocate(self) -> str:
        used = {(pod.get("status") or {}).get("podIP") for pod in self.store.list_objects("", "pods")}
        for _ in range(self.SIZE):
            n = self._next
            self._next = (n + 1) % self.SIZE
            address = f"10.244.{1 + n // 256}.{n % 256}"
            if n % 256 not in (0, 255) and address not in used:
                return address
        raise RuntimeError("the sandbox's pod network 10.244.0.0/16 is full")


def collect_garbage(store: Store, namespace: str, owner_uid: str) -> None:
    """Delete what an owner (by uid) owned in its namespace: ReplicaSets first (and their pods), then pods."""
    for rs in store.list_objects("apps", "replicasets", namespace):
        if _owned_by(rs, owner_uid):
            try:
                gone = store.delete("apps", "replicasets", namespace, rs["metadata"]["name"])
            except NotFound:
                continue
            collect_garbage(store, namespace, gone.obj["metadata"]["uid"])
    for pod in store.list_objects("", "pods", namespace):
        if _owned_by(pod, owner_uid):
            try:
                store.delete("", "pods", namespace, pod["metadata"]["name"])
            except NotFound:
                pass


__all__ = ["DeploymentController", "PodAddresses", "collect_garbage", "template_hash"]

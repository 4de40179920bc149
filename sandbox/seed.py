"""The sandbox's seed data: a small, realistic cluster (namespaces default/dev/prod/kube-system)."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

from sandbox.resources import CUSTOM_GROUP

NODE_NAME = "sandbox-node-1"
NAMESPACES = ("default", "dev", "prod", "kube-system")


def _ts() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def pod_uid(namespace: str, name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox.kubegate.dev/pods/{namespace}/{name}"))


def make_pod(namespace: str, name: str, labels: dict[str, str], image: str = "nginx:1.27",
             container: str = "main", ip: str = "10.244.0.10", phase: str = "Running",
             ports: list[int] | None = None) -> dict[str, Any]:
    started = _ts()
    spec_container: dict[str, Any] = {
        "name": container,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    if ports:
        spec_container["ports"] = [{"containerPort": p, "protocol": "TCP"} for p in ports]
    running = phase == "Running"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels), "uid": pod_uid(namespace, name)},
        "spec": {
            "containers": [spec_container],
            "dnsPolicy": "ClusterFirst",
            "enableServiceLinks": True,
            "nodeName": NODE_NAME,
            "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0,
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "securityContext": {},
            "serviceAccount": "default",
            "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 30,
        },
        "status": {
            "conditions": [
                {"type": t, "status": "True" if running or t == "PodScheduled" else "False",
                 "lastProbeTime": None, "lastTransitionTime": started}
                for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            "containerStatuses": [{
                "name": container,
                "image": image,
                "imageID": f"docker.io/library/{image}@sha256:{'0' * 64}",
                "containerID": f"containerd://{name.encode().hex():0<64}"[:77],
                "ready": running,
                "started": running,
                "restartCount": 0,
                "state": {"running": {"startedAt": started}} if running
                else {"waiting": {"reason": "ContainerCreating"}},
                "lastState": {},
            }],
            "hostIP": "192.168.49.2",
            "hostIPs": [{"ip": "192.168.49.2"}],
            "phase": phase,
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "qosClass": "BestEffort",
            "startTime": started,
        },
    }


def seed_objects() -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = []
    for ns in NAMESPACES:
        objs.append({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        })
    objs.append({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE_NAME, "labels": {
            "kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "node-role.kubernetes.io/control-plane": ""}},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "192.168.49.2"}, {"type": "Hostname", "address": NODE_NAME}],
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status", "lastHeartbeatTime": _ts(),
                            "lastTransitionTime": _ts()}],
            "nodeInfo": {"kubeletVersion": "v1.37.0", "kubeProxyVersion": "", "operatingSystem": "linux",
                         "architecture": "amd64", "containerRuntimeVersion": "containerd://2.0.0",
                         "kernelVersion": "6.1.0", "osImage": "kubegate sandbox",
                         "machineID": "", "systemUUID": "", "bootID": ""},
        },
    })
    for ns in NAMESPACES:
        objs.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}})
        objs.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": "kube-root-ca.crt", "namespace": ns},
                     "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nsandbox\n-----END CERTIFICATE-----\n"}})
    objs.append({"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": "kubernetes", "namespace": "default",
                              "labels": {"component": "apiserver", "provider": "kubernetes"}},
                 "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                          "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
                          "sessionAffinity": "None"},
                 "status": {"loadBalancer": {}}})
    pods = [
        ("default", "hello", {"app": "hello"}, "busybox:1.36", "10.244.0.5"),
        ("dev", "web-1", {"app": "web", "tier": "frontend", "env": "dev"}, "nginx:1.27", "10.244.0.11"),
        ("dev", "web-2", {"app": "web", "tier": "frontend", "env": "dev"}, "nginx:1.27", "10.244.0.12"),
        ("dev", "db-0", {"app": "db", "tier": "backend", "env": "dev"}, "postgres:16", "10.244.0.13"),
        ("prod", "web-1", {"app": "web", "tier": "frontend", "env": "prod"}, "nginx:1.27", "10.244.0.21"),
        ("prod", "api-0", {"app": "api", "tier": "backend", "env": "prod"}, "ghcr.io/example/api:2.3", "10.244.0.22"),
        ("kube-system", "coredns-0", {"k8s-app": "kube-dns"}, "registry.k8s.io/coredns/coredns:v1.11.3", "10.244.0.2"),
    ]
    for ns, name, labels, image, ip in pods:
        objs.append(make_pod(ns, name, labels, image=image, ip=ip, ports=[80] if labels.get("app") == "web" else None))
    objs.append(widget_crd())
    for endpoints in (_endpoints("default", "kubernetes", [("192.168.49.2", None)], 6443, "https"),
                      _endpoints("dev", "web", [("10.244.0.11", "web-1"), ("10.244.0.12", "web-2")], 80, "http"),
                      _endpoints("prod", "web", [("10.244.0.21", "web-1")], 80, "http")):
        objs.append(endpoints)
        objs.append(_endpoint_slice(endpoints))
    for ns in ("dev", "prod"):
        objs.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": "app-config", "namespace": ns, "labels": {"app": "web"}},
                     "data": {"LOG_LEVEL": "debug" if ns == "dev" else "info", "FEATURE_X": "on"}})
        objs.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                     "metadata": {"name": "db-credentials", "namespace": ns, "labels": {"app": "db"}},
                     "data": {"username": _b64("app"), "password": _b64(f"{ns}-s3cret")}})
        objs.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": "web", "namespace": ns, "labels": {"app": "web"}},
                     "spec": {"type": "ClusterIP", "clusterIP": f"10.96.{1 if ns == 'dev' else 2}.10",
                              "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80}],
                              "selector": {"app": "web"}, "sessionAffinity": "None"},
                     "status": {"loadBalancer": {}}})
        objs.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "deployer", "namespace": ns}})
        objs.append({"apiVersion": "apps/v1", "kind": "Deployment",
                     "metadata": {"name": "web", "namespace": ns, "labels": {"app": "web"}},
                     "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                              "strategy": {"type": "RollingUpdate",
                                           "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                              "template": {"metadata": {"labels": {"app": "web", "tier": "frontend"}},
                                           "spec": {"containers": [{"name": "main", "image": "nginx:1.27",
                                                                    "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}},
                     "status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2,
                                "availableReplicas": 2}})
        objs.append({"apiVersion": f"{CUSTOM_GROUP}/v1", "kind": "Widget",
                     "metadata": {"name": "gear", "namespace": ns, "labels": {"app": "web"}},
                     "spec": {"size": 3, "color": "blue"}})
    objs.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                 "metadata": {"name": "default-token", "namespace": "default"},
                 "data": {"token": _b64("sandbox-token")}})
    objs.append({"apiVersion": "v1", "kind": "Event",
                 "metadata": {"name": "web-1.scheduled", "namespace": "dev"},
                 "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "web-1", "namespace": "dev",
                                    "uid": pod_uid("dev", "web-1")},
                 "reason": "Scheduled", "message": f"Successfully assigned dev/web-1 to {NODE_NAME}",
                 "type": "Normal", "count": 1, "firstTimestamp": _ts(), "lastTimestamp": _ts(),
                 "source": {"component": "default-scheduler"}, "reportingComponent": "default-scheduler"})
    objs.append({"apiVersion": "v1", "kind": "Event",
                 "metadata": {"name": "web-1.started", "namespace": "dev"},
                 "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "web-1", "namespace": "dev",
                                    "uid": pod_uid("dev", "web-1"), "fieldPath": "spec.containers{main}"},
                 "reason": "Started", "message": "Started container main",
                 "type": "Normal", "count": 1, "firstTimestamp": _ts(), "lastTimestamp": _ts(),
                 "source": {"component": "kubelet", "host": NODE_NAME}, "reportingComponent": "kubelet"})
    return objs


def _endpoints(namespace: str, name: str, addresses: list[tuple[str, str | None]], port: int,
               port_name: str) -> dict[str, Any]:
    """What the endpoints controller keeps for a service (its ready pods' addresses)."""
    subset_addresses = []
    for ip, pod in addresses:
        address: dict[str, Any] = {"ip": ip}
        if pod:
            address["nodeName"] = NODE_NAME
            address["targetRef"] = {"kind": "Pod", "namespace": namespace, "name": pod, "uid": pod_uid(namespace, pod)}
        subset_addresses.append(address)
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": namespace},
            "subsets": [{"addresses": subset_addresses, "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]}]}


def _endpoint_slice(endpoints: dict[str, Any]) -> dict[str, Any]:
    """The EndpointSlice mirroring an Endpoints object (kubectl >= 1.2x describes services from slices)."""
    meta = endpoints["metadata"]
    subset = endpoints["subsets"][0]
    slice_endpoints = []
    for address in subset["addresses"]:
        entry: dict[str, Any] = {"addresses": [address["ip"]],
                                 "conditions": {"ready": True, "serving": True, "terminating": False}}
        if "targetRef" in address:
            entry["targetRef"] = address["targetRef"]
            entry["nodeName"] = address["nodeName"]
        slice_endpoints.append(entry)
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{meta['name']}-sandbox", "namespace": meta["namespace"],
                         "labels": {"kubernetes.io/service-name": meta["name"],
                                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "endpoints": slice_endpoints, "ports": subset["ports"]}


def widget_crd() -> dict[str, Any]:
    """The CustomResourceDefinition a real cluster would hold for the served ``widgets`` resource."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{CUSTOM_GROUP}"},
        "spec": {
            "group": CUSTOM_GROUP,
            "names": {"kind": "Widget", "listKind": "WidgetList", "plural": "widgets", "singular": "widget",
                      "shortNames": ["wg"], "categories": ["all"]},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": True, "storage": True,
                          "schema": {"openAPIV3Schema": {"type": "object",
                                                         "x-kubernetes-preserve-unknown-fields": True}}}],
        },
        "status": {"acceptedNames": {"kind": "Widget", "plural": "widgets"}, "storedVersions": ["v1"],
                   "conditions": [{"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                                   "message": "the initial names have been accepted"}]},
    }


def seed_logs() -> list[tuple[str, str, list[str]]]:
    out = []
    for ns, name in (("default", "hello"), ("dev", "web-1"), ("dev", "web-2"), ("dev", "db-0"),
                     ("prod", "web-1"), ("prod", "api-0"), ("kube-system", "coredns-0")):
        out.append((ns, name, [f"{name} starting", f"{name} listening", f"{name} ready"]))
    return out

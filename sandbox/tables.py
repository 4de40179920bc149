"""Server-side printing: ``meta.k8s.io/v1 Table`` columns and rows like the apiserver's printers."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

Column = tuple[str, str, str, int]  # name, type, format, priority
RowFn = Callable[[dict[str, Any], float], list[Any]]


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    s = int(seconds)
    if s < 60 * 2:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = hours // 24
        return f"{days // 365}y{days % 365}d" if days % 365 else f"{days // 365}y"
    return f"{hours // 24 // 365}y"


@lru_cache(maxsize=8192)
def _parse_rfc3339(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value[:19]).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _parse_ts(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    return _parse_rfc3339(value)


def age(obj: dict[str, Any], now: float) -> str:
    created = _parse_ts((obj.get("metadata") or {}).get("creationTimestamp"))
    return "<unknown>" if created is None else human_duration(now - created)


def _name(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _pod_row(obj: dict[str, Any], now: float) -> list[Any]:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    containers = spec.get("containers") or []
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount", 0) or 0) for c in statuses)
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for c in statuses:
        state = c.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            reason = state["terminated"].get("reason") or "Completed"
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Terminating"
    gates = spec.get("readinessGates") or []
    return [_name(obj), f"{ready}/{len(containers)}", reason, str(restarts), age(obj, now),
            status.get("podIP") or "<none>", spec.get("nodeName") or "<none>",
            status.get("nominatedNodeName") or "<none>",
            f"{len(gates)}/{len(gates)}" if gates else "<none>"]


def _service_ports(spec: dict[str, Any]) -> str:
    parts = []
    for p in spec.get("ports") or []:
        text = f"{p.get('port')}"
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        parts.append(f"{text}/{p.get('protocol', 'TCP')}")
    return ",".join(parts) or "<none>"


def _selector(sel: Any) -> str:
    if not isinstance(sel, dict) or not sel:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(sel.items()))


def _node_status(obj: dict[str, Any]) -> str:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            ready = "Ready" if c.get("status") == "True" else "NotReady"
            if (obj.get("spec") or {}).get("unschedulable"):
                ready += ",SchedulingDisabled"
            return ready
    return "Unknown"


def _node_roles(obj: dict[str, Any]) -> str:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    return ",".join(roles) or "<none>"


def _event_object(obj: dict[str, Any]) -> str:
    inv = obj.get("involvedObject") or {}
    return f"{str(inv.get('kind', '')).lower()}/{inv.get('name', '')}"


def _event_last_seen(obj: dict[str, Any], now: float) -> str:
    ts = _parse_ts(obj.get("lastTimestamp") or obj.get("eventTime"))
    return "<unknown>" if ts is None else human_duration(now - ts)


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def _binding_role(obj: dict[str, Any]) -> str:
    ref = obj.get("roleRef") or {}
    return f"{ref.get('kind', '')}/{ref.get('name', '')}"


def _subjects(obj: dict[str, Any], kind: str) -> str:
    names = [s.get("name", "") if kind != "ServiceAccount" else f"{s.get('namespace', '')}/{s.get('name', '')}"
             for s in obj.get("subjects") or [] if s.get("kind") == kind]
    return ", ".join(names)


N = ("Name", "string", "name", 0)
AGE = ("Age", "string", "", 0)

PRINTERS: dict[tuple[str, str], tuple[list[Column], RowFn]] = {
    ("", "pods"): (
        [N, ("Ready", "string", "", 0), ("Status", "string", "", 0), ("Restarts", "string", "", 0), AGE,
         ("IP", "string", "", 1), ("Node", "string", "", 1), ("Nominated Node", "string", "", 1),
         ("Readiness Gates", "string", "", 1)],
        _pod_row,
    ),
    ("", "namespaces"): (
        [N, ("Status", "string", "", 0), AGE],
        lambda o, now: [_name(o), (o.get("status") or {}).get("phase", "Active"), age(o, now)],
    ),
    ("", "configmaps"): (
        [N, ("Data", "integer", "", 0), AGE],
        lambda o, now: [_name(o), len(o.get("data") or {}) + len(o.get("binaryData") or {}), age(o, now)],
    ),
    ("", "secrets"): (
        [N, ("Type", "string", "", 0), ("Data", "integer", "", 0), AGE],
        lambda o, now: [_name(o), o.get("type", "Opaque"), len(o.get("data") or {}), age(o, now)],
    ),
    ("", "services"): (
        [N, ("Type", "string", "", 0), ("Cluster-IP", "string", "", 0), ("External-IP", "string", "", 0),
         ("Port(s)", "string", "", 0), AGE, ("Selector", "string", "", 1)],
        lambda o, now: [_name(o), (o.get("spec") or {}).get("type", "ClusterIP"),
                        (o.get("spec") or {}).get("clusterIP") or "<none>",
                        ",".join((o.get("spec") or {}).get("externalIPs") or []) or "<none>",
                        _service_ports(o.get("spec") or {}), age(o, now),
                        _selector((o.get("spec") or {}).get("selector"))],
    ),
    ("", "serviceaccounts"): (
        [N, ("Secrets", "string", "", 0), AGE],
        lambda o, now: [_name(o), str(len(o.get("secrets") or [])), age(o, now)],
    ),
    ("", "nodes"): (
        [N, ("Status", "string", "", 0), ("Roles", "string", "", 0), AGE, ("Version", "string", "", 0),
         ("Internal-IP", "string", "", 1), ("OS-Image", "string", "", 1)],
        lambda o, now: [_name(o), _node_status(o), _node_roles(o), age(o, now),
                        ((o.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", ""),
                        next((a.get("address") for a in (o.get("status") or {}).get("addresses") or []
                              if a.get("type") == "InternalIP"), "<none>"),
                        ((o.get("status") or {}).get("nodeInfo") or {}).get("osImage", "")],
    ),
    ("", "events"): (
        [("Last Seen", "string", "", 0), ("Type", "string", "", 0), ("Reason", "string", "", 0),
         ("Object", "string", "", 0), ("Message", "string", "", 0), ("Name", "string", "name", 1)],
        lambda o, now: [_event_last_seen(o, now), o.get("type", ""), o.get("reason", ""), _event_object(o),
                        o.get("message", ""), _name(o)],
    ),
    ("apps", "deployments"): (
        [N, ("Ready", "string", "", 0), ("Up-to-date", "integer", "", 0), ("Available", "integer", "", 0), AGE,
         ("Containers", "string", "", 1), ("Images", "string", "", 1), ("Selector", "string", "", 1)],
        lambda o, now: [
            _name(o),
            f"{(o.get('status') or {}).get('readyReplicas', 0)}/{(o.get('spec') or {}).get('replicas', 1)}",
            (o.get("status") or {}).get("updatedReplicas", 0), (o.get("status") or {}).get("availableReplicas", 0),
            age(o, now),
            ",".join(c.get("name", "") for c in ((((o.get("spec") or {}).get("template") or {}).get("spec") or {})
                                                 .get("containers") or [])),
            ",".join(c.get("image", "") for c in ((((o.get("spec") or {}).get("template") or {}).get("spec") or {})
                                                  .get("containers") or [])),
            _selector(((o.get("spec") or {}).get("selector") or {}).get("matchLabels")),
        ],
    ),
    ("apps", "replicasets"): (
        [N, ("Desired", "integer", "", 0), ("Current", "integer", "", 0), ("Ready", "integer", "", 0), AGE],
        lambda o, now: [_name(o), _spec(o).get("replicas", 1), _status(o).get("replicas", 0),
                        _status(o).get("readyReplicas", 0), age(o, now)],
    ),
    ("", "replicationcontrollers"): (
        [N, ("Desired", "integer", "", 0), ("Current", "integer", "", 0), ("Ready", "integer", "", 0), AGE],
        lambda o, now: [_name(o), _spec(o).get("replicas", 1), _status(o).get("replicas", 0),
                        _status(o).get("readyReplicas", 0), age(o, now)],
    ),
    ("apps", "statefulsets"): (
        [N, ("Ready", "string", "", 0), AGE],
        lambda o, now: [_name(o), f"{_status(o).get('readyReplicas', 0)}/{_spec(o).get('replicas', 1)}", age(o, now)],
    ),
    ("apps", "daemonsets"): (
        [N, ("Desired", "integer", "", 0), ("Current", "integer", "", 0), ("Ready", "integer", "", 0),
         ("Up-to-date", "integer", "", 0), ("Available", "integer", "", 0), ("Node Selector", "string", "", 0), AGE],
        lambda o, now: [_name(o), _status(o).get("desiredNumberScheduled", 0),
                        _status(o).get("currentNumberScheduled", 0), _status(o).get("numberReady", 0),
                        _status(o).get("updatedNumberScheduled", 0), _status(o).get("numberAvailable", 0),
                        _selector(((_spec(o).get("template") or {}).get("spec") or {}).get("nodeSelector")),
                        age(o, now)],
    ),
    ("batch", "jobs"): (
        [N, ("Status", "string", "", 0), ("Completions", "string", "", 0), ("Duration", "string", "", 0), AGE],
        lambda o, now: [_name(o), "Complete" if _status(o).get("succeeded") else "Running",
                        f"{_status(o).get('succeeded', 0)}/{_spec(o).get('completions', 1)}", "", age(o, now)],
    ),
    ("batch", "cronjobs"): (
        [N, ("Schedule", "string", "", 0), ("Timezone", "string", "", 0), ("Suspend", "boolean", "", 0),
         ("Active", "integer", "", 0), ("Last Schedule", "string", "", 0), AGE],
        lambda o, now: [_name(o), _spec(o).get("schedule", ""), _spec(o).get("timeZone") or "<none>",
                        bool(_spec(o).get("suspend", False)), len(_status(o).get("active") or []), "<none>",
                        age(o, now)],
    ),
    ("networking.k8s.io", "ingresses"): (
        [N, ("Class", "string", "", 0), ("Hosts", "string", "", 0), ("Address", "string", "", 0),
         ("Ports", "string", "", 0), AGE],
        lambda o, now: [_name(o), _spec(o).get("ingressClassName") or "<none>",
                        ",".join(r.get("host", "*") for r in _spec(o).get("rules") or []) or "*", "",
                        "80, 443" if _spec(o).get("tls") else "80", age(o, now)],
    ),
    ("", "persistentvolumeclaims"): (
        [N, ("Status", "string", "", 0), ("Volume", "string", "", 0), ("Capacity", "string", "", 0),
         ("Access Modes", "string", "", 0), ("StorageClass", "string", "", 0), AGE],
        lambda o, now: [_name(o), _status(o).get("phase", "Pending"), _spec(o).get("volumeName", ""),
                        ((_status(o).get("capacity") or {}).get("storage", "")),
                        ",".join(_status(o).get("accessModes") or []), _spec(o).get("storageClassName") or "<unset>",
                        age(o, now)],
    ),
    ("", "endpoints"): (
        [N, ("Endpoints", "string", "", 0), AGE],
        lambda o, now: [_name(o), ",".join(f"{a.get('ip')}:{p.get('port')}" for sub in o.get("subsets") or []
                                           for a in sub.get("addresses") or [] for p in sub.get("ports") or [])
                        or "<none>", age(o, now)],
    ),
    ("discovery.k8s.io", "endpointslices"): (
        [N, ("AddressType", "string", "", 0), ("Ports", "string", "", 0), ("Endpoints", "string", "", 0), AGE],
        lambda o, now: [_name(o), o.get("addressType", ""),
                        ",".join(str(p.get("port")) for p in o.get("ports") or []) or "<unset>",
                        ",".join(a for e in o.get("endpoints") or [] for a in e.get("addresses") or []) or "<unset>",
                        age(o, now)],
    ),
    ("coordination.k8s.io", "leases"): (
        [N, ("Holder", "string", "", 0), AGE],
        lambda o, now: [_name(o), _spec(o).get("holderIdentity", ""), age(o, now)],
    ),
    ("apiextensions.k8s.io", "customresourcedefinitions"): (
        [N, ("Created At", "string", "date", 0)],
        lambda o, now: [_name(o), (o.get("metadata") or {}).get("creationTimestamp", "")],
    ),
    ("rbac.authorization.k8s.io", "roles"): (
        [N, ("Created At", "string", "date", 0)],
        lambda o, now: [_name(o), (o.get("metadata") or {}).get("creationTimestamp", "")],
    ),
    ("rbac.authorization.k8s.io", "clusterroles"): (
        [N, ("Created At", "string", "date", 0)],
        lambda o, now: [_name(o), (o.get("metadata") or {}).get("creationTimestamp", "")],
    ),
    ("rbac.authorization.k8s.io", "rolebindings"): (
        [N, ("Role", "string", "", 0), AGE, ("Users", "string", "", 1), ("Groups", "string", "", 1),
         ("ServiceAccounts", "string", "", 1)],
        lambda o, now: [_name(o), _binding_role(o), age(o, now), _subjects(o, "User"), _subjects(o, "Group"),
                        _subjects(o, "ServiceAccount")],
    ),
    ("rbac.authorization.k8s.io", "clusterrolebindings"): (
        [N, ("Role", "string", "", 0), AGE, ("Users", "string", "", 1), ("Groups", "string", "", 1),
         ("ServiceAccounts", "string", "", 1)],
        lambda o, now: [_name(o), _binding_role(o), age(o, now), _subjects(o, "User"), _subjects(o, "Group"),
                        _subjects(o, "ServiceAccount")],
    ),
}

DEFAULT_PRINTER: tuple[list[Column], RowFn] = ([N, AGE], lambda o, now: [_name(o), age(o, now)])

_DESCRIPTIONS = {
    "Name": "Name must be unique within a namespace. Is required when creating resources, although some "
            "resources may allow a client to request the generation of an appropriate name automatically.",
    "Age": "CreationTimestamp is a timestamp representing the server time when this object was created.",
}


def column_definitions(group: str, resource: str) -> list[dict[str, Any]]:
    columns, _ = PRINTERS.get((group, resource), DEFAULT_PRINTER)
    return [{"name": n, "type": t, "format": f, "description": _DESCRIPTIONS.get(n, n), "priority": p}
            for n, t, f, p in columns]


def partial_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata") or {}}


def table_row(group: str, resource: str, obj: dict[str, Any], include_object: str, now: float) -> dict[str, Any]:
    _, row_fn = PRINTERS.get((group, resource), DEFAULT_PRINTER)
    row: dict[str, Any] = {"cells": row_fn(obj, now)}
    if include_object == "Object":
        row["object"] = obj
    elif include_object != "None":
        row["object"] = partial_metadata(obj)
    return row


def table_bytes(group: str, resource: str, entries: list[Any], list_meta: dict[str, Any], include_object: str,
                now: float, api_version: str = "meta.k8s.io/v1") -> bytes:
    """The serialized Table of store entries (``.obj``, ``.raw``, ``.partial_raw``), reusing their cached
    JSON for the row objects."""
    _, row_fn = PRINTERS.get((group, resource), DEFAULT_PRINTER)
    rows: list[bytes] = []
    for entry in entries:
        cells = _dumps(row_fn(entry.obj, now))
        if include_object == "Object":
            rows.append(b'{"cells":' + cells + b',"object":' + entry.raw + b"}")
        elif include_object == "None":
            rows.append(b'{"cells":' + cells + b"}")
        else:
            rows.append(b'{"cells":' + cells + b',"object":' + entry.partial_raw + b"}")
    head = _dumps({"kind": "Table", "apiVersion": api_version, "metadata": list_meta,
                   "columnDefinitions": column_definitions(group, resource)})
    return head[:-1] + b',"rows":[' + b",".join(rows) + b"]}"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def table(group: str, resource: str, objects: list[dict[str, Any]], list_meta: dict[str, Any],
          include_object: str = "Metadata", now: float | None = None, headers: bool = True) -> dict[str, Any]:
    when = datetime.now(UTC).timestamp() if now is None else now
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": column_definitions(group, resource) if headers else [],
        "rows": [table_row(group, resource, o, include_object, when) for o in objects],
    }

"""Decoding of Kubernetes protobuf request bodies (``application/vnd.kubernetes.protobuf``) into the
JSON-shaped dicts the API works on.

kubectl >= 1.3x sends objects it builds with typed clients (``kubectl create namespace / configmap /
secret / serviceaccount / deployment / role / rolebinding / service ...``) as protobuf. Protobuf is not
self-describing: the field numbers below come from the Kubernetes ``generated.proto`` files for the
kinds the sandbox serves. Fields not listed are skipped. Responses are always JSON (those clients
also accept ``application/json``).

Envelope: ``b"k8s\\x00"`` + ``runtime.Unknown{typeMeta{apiVersion=1, kind=2}=1, raw=2,
contentEncoding=3, contentType=4}``; ``raw`` is the object message. The wire reading and the envelope
are :mod:`proxy.protocol.protobuf_wire`'s (shared with the proxy and the review decoder).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from proxy.protocol.protobuf_wire import MAGIC, ProtobufError, fields, unwrap

__all__ = ["KINDS", "MAGIC", "ProtobufError", "Schema", "UnsupportedKind", "decode_message", "decode_object"]


class UnsupportedKind(ProtobufError):
    pass


# A schema maps a field number to (json name, type, repeated). Types: "string", "bytes", "int", "bool",
# "time", "quantity", "intorstr", "map", "mapbytes", "mapquantity", or a nested schema (dict).
Schema = dict[int, tuple[str, Any, bool]]

TIME: Schema = {}
OWNER_REF: Schema = {1: ("kind", "string", False), 3: ("name", "string", False), 4: ("uid", "string", False),
                     5: ("apiVersion", "string", False), 6: ("controller", "bool", False),
                     7: ("blockOwnerDeletion", "bool", False)}
OBJECT_META: Schema = {
    1: ("name", "string", False), 2: ("generateName", "string", False), 3: ("namespace", "string", False),
    5: ("uid", "string", False), 6: ("resourceVersion", "string", False), 7: ("generation", "int", False),
    8: ("creationTimestamp", "time", False), 11: ("labels", "map", False), 12: ("annotations", "map", False),
    13: ("ownerReferences", OWNER_REF, True), 14: ("finalizers", "string", True),
}
LABEL_SELECTOR: Schema = {
    1: ("matchLabels", "map", False),
    2: ("matchExpressions", {1: ("key", "string", False), 2: ("operator", "string", False),
                             3: ("values", "string", True)}, True),
}
LOCAL_REF: Schema = {1: ("name", "string", False)}
OBJECT_REF: Schema = {1: ("kind", "string", False), 2: ("namespace", "string", False), 3: ("name", "string", False),
                      4: ("uid", "string", False), 5: ("apiVersion", "string", False),
                      6: ("resourceVersion", "string", False), 7: ("fieldPath", "string", False)}
CONTAINER_PORT: Schema = {1: ("name", "string", False), 2: ("hostPort", "int", False),
                          3: ("containerPort", "int", False), 4: ("protocol", "string", False),
                          5: ("hostIP", "string", False)}
KEY_SELECTOR: Schema = {1: ("localObjectReference", LOCAL_REF, False), 2: ("key", "string", False),
                        3: ("optional", "bool", False)}
ENV_VAR: Schema = {1: ("name", "string", False), 2: ("value", "string", False),
                   3: ("valueFrom", {1: ("fieldRef", {1: ("apiVersion", "string", False),
                                                       2: ("fieldPath", "string", False)}, False),
                                     3: ("configMapKeyRef", KEY_SELECTOR, False),
                                     4: ("secretKeyRef", KEY_SELECTOR, False)}, False)}
RESOURCES: Schema = {1: ("limits", "mapquantity", False), 2: ("requests", "mapquantity", False)}
VOLUME_MOUNT: Schema = {1: ("name", "string", False), 2: ("readOnly", "bool", False),
                        3: ("mountPath", "string", False), 4: ("subPath", "string", False)}
CONTAINER: Schema = {
    1: ("name", "string", False), 2: ("image", "string", False), 3: ("command", "string", True),
    4: ("args", "string", True), 5: ("workingDir", "string", False), 6: ("ports", CONTAINER_PORT, True),
    7: ("env", ENV_VAR, True), 8: ("resources", RESOURCES, False), 9: ("volumeMounts", VOLUME_MOUNT, True),
    13: ("terminationMessagePath", "string", False), 14: ("imagePullPolicy", "string", False),
    16: ("stdin", "bool", False), 17: ("stdinOnce", "bool", False), 18: ("tty", "bool", False),
    20: ("terminationMessagePolicy", "string", False),
}
VOLUME: Schema = {1: ("name", "string", False),
                  2: ("volumeSource", {2: ("emptyDir", {1: ("medium", "string", False)}, False),
                                       6: ("secret", {1: ("secretName", "string", False)}, False),
                                       19: ("configMap", {1: ("localObjectReference", LOCAL_REF, False)}, False)},
                      False)}
TOLERATION: Schema = {1: ("key", "string", False), 2: ("operator", "string", False), 3: ("value", "string", False),
                      4: ("effect", "string", False), 5: ("tolerationSeconds", "int", False)}
POD_SPEC: Schema = {
    1: ("volumes", VOLUME, True), 2: ("containers", CONTAINER, True), 3: ("restartPolicy", "string", False),
    4: ("terminationGracePeriodSeconds", "int", False), 5: ("activeDeadlineSeconds", "int", False),
    6: ("dnsPolicy", "string", False), 7: ("nodeSelector", "map", False), 8: ("serviceAccountName", "string", False),
    9: ("serviceAccount", "string", False), 10: ("nodeName", "string", False), 11: ("hostNetwork", "bool", False),
    14: ("securityContext", {}, False), 15: ("imagePullSecrets", LOCAL_REF, True), 16: ("hostname", "string", False),
    17: ("subdomain", "string", False), 19: ("schedulerName", "string", False),
    20: ("initContainers", CONTAINER, True), 21: ("automountServiceAccountToken", "bool", False),
    22: ("tolerations", TOLERATION, True), 24: ("priorityClassName", "string", False),
}
POD_TEMPLATE: Schema = {1: ("metadata", OBJECT_META, False), 2: ("spec", POD_SPEC, False)}
DEPLOYMENT: Schema = {
    1: ("metadata", OBJECT_META, False),
    2: ("spec", {
        1: ("replicas", "int", False), 2: ("selector", LABEL_SELECTOR, False), 3: ("template", POD_TEMPLATE, False),
        4: ("strategy", {1: ("type", "string", False),
                         2: ("rollingUpdate", {1: ("maxUnavailable", "intorstr", False),
                                               2: ("maxSurge", "intorstr", False)}, False)}, False),
        5: ("minReadySeconds", "int", False), 6: ("revisionHistoryLimit", "int", False),
        7: ("paused", "bool", False), 9: ("progressDeadlineSeconds", "int", False)}, False),
}
POLICY_RULE: Schema = {1: ("verbs", "string", True), 2: ("apiGroups", "string", True),
                       3: ("resources", "string", True), 4: ("resourceNames", "string", True),
                       5: ("nonResourceURLs", "string", True)}
BINDING: Schema = {
    1: ("metadata", OBJECT_META, False),
    2: ("subjects", {1: ("kind", "string", False), 2: ("apiGroup", "string", False), 3: ("name", "string", False),
                     4: ("namespace", "string", False)}, True),
    3: ("roleRef", {1: ("apiGroup", "string", False), 2: ("kind", "string", False), 3: ("name", "string", False)},
        False),
}
SERVICE_PORT: Schema = {1: ("name", "string", False), 2: ("protocol", "string", False), 3: ("port", "int", False),
                        4: ("targetPort", "intorstr", False), 5: ("nodePort", "int", False)}

KINDS: dict[str, Schema] = {
    "Namespace": {1: ("metadata", OBJECT_META, False), 2: ("spec", {1: ("finalizers", "string", True)}, False)},
    "ConfigMap": {1: ("metadata", OBJECT_META, False), 2: ("data", "map", False),
                  3: ("binaryData", "mapbytes", False), 4: ("immutable", "bool", False)},
    "Secret": {1: ("metadata", OBJECT_META, False), 2: ("data", "mapbytes", False), 3: ("type", "string", False),
               4: ("stringData", "map", False), 5: ("immutable", "bool", False)},
    "ServiceAccount": {1: ("metadata", OBJECT_META, False), 2: ("secrets", OBJECT_REF, True),
                       3: ("imagePullSecrets", LOCAL_REF, True), 4: ("automountServiceAccountToken", "bool", False)},
    "Service": {1: ("metadata", OBJECT_META, False),
                2: ("spec", {1: ("ports", SERVICE_PORT, True), 2: ("selector", "map", False),
                             3: ("clusterIP", "string", False), 4: ("type", "string", False),
                             5: ("externalIPs", "string", True), 7: ("sessionAffinity", "string", False),
                             11: ("externalName", "string", False)}, False)},
    "Pod": {1: ("metadata", OBJECT_META, False), 2: ("spec", POD_SPEC, False)},
    "Deployment": DEPLOYMENT,
    "Role": {1: ("metadata", OBJECT_META, False), 2: ("rules", POLICY_RULE, True)},
    "ClusterRole": {1: ("metadata", OBJECT_META, False), 2: ("rules", POLICY_RULE, True)},
    "RoleBinding": BINDING,
    "ClusterRoleBinding": BINDING,
}
# fields whose zero value is meaningful (pointers in the Go types)
KEEP_ZERO = frozenset({"replicas", "containerPort", "port"})


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _text(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise ProtobufError("expected a length-delimited string")
    return value.decode("utf-8")


def _scalar(kind: str, value: int | bytes) -> Any:
    if kind == "string":
        return _text(value)
    if kind == "bytes":
        return base64.b64encode(value if isinstance(value, bytes) else b"").decode()
    if kind == "int":
        if isinstance(value, bytes):
            raise ProtobufError("expected a varint")
        return _signed(value)
    if kind == "bool":
        return bool(value)
    if kind == "quantity":
        return next((_text(v) for n, v in fields(value) if n == 1), "") if isinstance(value, bytes) else ""
    if kind == "time":
        if not isinstance(value, bytes):
            raise ProtobufError("expected a Time message")
        seconds = next((_signed(v) for n, v in fields(value) if n == 1 and isinstance(v, int)), 0)
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if seconds else None
    if kind == "intorstr":
        if not isinstance(value, bytes):
            raise ProtobufError("expected an IntOrString message")
        parts = dict(fields(value))
        if parts.get(1, 0) == 1:
            return _text(parts.get(3, b""))
        return _signed(parts.get(2, 0)) if isinstance(parts.get(2, 0), int) else 0
    raise ProtobufError(f"unknown scalar type {kind}")


def _map_entry(value: int | bytes, kind: str) -> tuple[str, Any]:
    if not isinstance(value, bytes):
        raise ProtobufError("expected a map entry")
    key, val = "", "" if kind == "map" else b""
    for number, item in fields(value):
        if number == 1:
            key = _text(item)
        elif number == 2:
            val = item  # type: ignore[assignment]
    if kind == "map":
        return key, _text(val) if val != "" else ""
    if kind == "mapbytes":
        return key, base64.b64encode(val if isinstance(val, bytes) else b"").decode()
    return key, _scalar("quantity", val if isinstance(val, bytes) else b"")


def decode_message(data: bytes, schema: Schema) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for number, value in fields(data):
        spec = schema.get(number)
        if spec is None:
            continue
        name, kind, repeated = spec
        if kind in ("map", "mapbytes", "mapquantity"):
            key, val = _map_entry(value, kind)
            obj.setdefault(name, {})[key] = val
            continue
        if isinstance(kind, dict):
            if not isinstance(value, bytes):
                raise ProtobufError(f"field {name}: expected a message")
            decoded: Any = decode_message(value, kind)
            if name in ("localObjectReference", "volumeSource"):  # inlined Go structs
                obj.update(decoded)
                continue
        else:
            decoded = _scalar(kind, value)
        if repeated:
            obj.setdefault(name, []).append(decoded)
        elif decoded in ("", 0, False, None) and name not in KEEP_ZERO:
            continue
        else:
            obj[name] = decoded
    return obj


def decode_object(body: bytes) -> dict[str, Any]:
    """A protobuf-encoded object as a JSON-shaped dict (apiVersion and kind from the envelope)."""
    envelope = unwrap(body)
    api_version, kind = envelope.api_version, envelope.kind
    schema = KINDS.get(kind)
    if schema is None:
        raise UnsupportedKind(f"no protobuf decoding for kind {kind!r}")
    obj = {"apiVersion": api_version, "kind": kind}
    obj.update(decode_message(envelope.raw, schema))
    return obj

"""Discovery documents (legacy and aggregated) and the minimal OpenAPI documents kubectl needs.

All documents depend only on the catalog, so they are built once and served as cached bytes.

OpenAPI: kubectl >= 1.27 checks ``/openapi/v3`` to learn whether the server validates fields itself
(``fieldValidation`` query parameter on the PATCH operation of the kind); when it does, kubectl skips
client-side schema validation. kubectl 1.20 fetches ``/openapi/v2`` as protobuf and only looks
schemas up by kind: an empty ``Document`` (zero bytes) is a valid answer that makes it skip
validation and fall back to its compiled-in types for strategic merge patches.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from proxy.protocol.protobuf_wire import length_delimited as _field  # a length-delimited field
from sandbox import protobuf
from sandbox.patch import MERGE_KEYS
from sandbox.resources import CATALOG, GROUP_ORDER, Catalog, ResourceType

SERVER_VERSION = {
    "major": "1",
    "minor": "37",
    "emulationMajor": "1",
    "emulationMinor": "37",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "36",
    "gitVersion": "v1.37.0-kubegate-sandbox",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}

SERVER_ADDRESS = [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]
AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
# what clients ask for is spelled with "@", which is no valid media type: the answer uses "."
OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _api_resource(rt: ResourceType, sub: str = "") -> dict[str, Any]:
    if sub:
        if sub == "scale":
            return {"name": f"{rt.plural}/scale", "singularName": "", "namespaced": rt.namespaced,
                    "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}
        verbs = {"status": ["get", "patch", "update"], "log": ["get"],
                 "exec": ["create", "get"], "attach": ["create", "get"], "portforward": ["create", "get"]}[sub]
        kind = {"log": "Pod", "exec": "PodExecOptions", "attach": "PodAttachOptions",
                "portforward": "PodPortForwardOptions"}.get(sub, rt.kind)
        return {"name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced, "kind": kind,
                "verbs": verbs}
    doc: dict[str, Any] = {"name": rt.plural, "singularName": rt.singular_name, "namespaced": rt.namespaced,
                           "kind": rt.kind, "verbs": list(rt.verbs)}
    if rt.short_names:
        doc["shortNames"] = list(rt.short_names)
    if rt.categories:
        doc["categories"] = list(rt.categories)
    if not rt.virtual:
        doc["storageVersionHash"] = hashlib.sha256(f"{rt.group}/{rt.version}/{rt.kind}".encode()).digest()[:8].hex()
    return doc


def _ordered_groups(catalog: Catalog) -> list[str]:
    groups = [g for g in catalog.group_versions if g]
    return sorted(groups, key=lambda g: (GROUP_ORDER.index(g) if g in GROUP_ORDER else len(GROUP_ORDER), g))


class DiscoveryDocs:
    def __init__(self, catalog: Catalog = CATALOG) -> None:
        self.catalog = catalog
        self.version = _dumps(SERVER_VERSION)
        self.api_versions = _dumps({"kind": "APIVersions", "versions": ["v1"],
                                    "serverAddressByClientCIDRs": SERVER_ADDRESS})
        groups = []
        for group in _ordered_groups(catalog):
            versions = catalog.group_versions[group]
            gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
            groups.append({"name": group, "versions": gvs, "preferredVersion": gvs[0]})
        self.api_groups = _dumps({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        self._groups = {g["name"]: _dumps({"kind": "APIGroup", "apiVersion": "v1", **g}) for g in groups}
        self._resource_lists: dict[tuple[str, str], bytes] = {}
        for group, versions in catalog.group_versions.items():
            for version in versions:
                resources: list[dict[str, Any]] = []
                for rt in catalog.in_group_version(group, version):
                    resources.append(_api_resource(rt))
                    resources.extend(_api_resource(rt, sub) for sub in rt.subresources)
                gv = f"{group}/{version}" if group else version
                self._resource_lists[(group, version)] = _dumps(
                    {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
        self.aggregated_core = _dumps(self._aggregated(core=True))
        self.aggregated_apis = _dumps(self._aggregated(core=False))
        self.openapi_v3_index, self._openapi_v3 = self._build_openapi_v3()
        self.openapi_v2_json = _dumps(self._openapi_v2())
        self.openapi_v2_protobuf = _openapi_v2_protobuf(self._openapi_v2())

    def group(self, name: str) -> bytes | None:
        return self._groups.get(name)

    def resource_list(self, group: str, version: str) -> bytes | None:
        return self._resource_lists.get((group, version))

    def openapi_v3(self, gv_path: str) -> bytes | None:
        return self._openapi_v3.get(gv_path)

    # -------------------------------------------------------------- aggregated discovery (apidiscovery v2)

    def _aggregated(self, core: bool) -> dict[str, Any]:
        items = []
        groups = [""] if core else _ordered_groups(self.catalog)
        for group in groups:
            versions = []
            for version in self.catalog.group_versions.get(group, []):
                resources = []
                for rt in self.catalog.in_group_version(group, version):
                    res: dict[str, Any] = {
                        "resource": rt.plural, "singularResource": rt.singular_name,
                        "scope": "Namespaced" if rt.namespaced else "Cluster",
                        "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
                        "verbs": list(rt.verbs),
                    }
                    if rt.short_names:
                        res["shortNames"] = list(rt.short_names)
                    if rt.categories:
                        res["categories"] = list(rt.categories)
                    subs = []
                    for sub in rt.subresources:
                        doc = _api_resource(rt, sub)
                        sub_group = doc.get("group", rt.group if sub == "status" else "")
                        sub_version = doc.get("version", rt.version if sub == "status" else "v1")
                        subs.append({"subresource": sub, "verbs": doc["verbs"],
                                     "responseKind": {"group": sub_group, "version": sub_version,
                                                      "kind": doc["kind"]}})
                    if subs:
                        res["subresources"] = subs
                    resources.append(res)
                versions.append({"version": version, "resources": resources, "freshness": "Current"})
            items.append({"metadata": {"name": group, "creationTimestamp": None}, "versions": versions})
        return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {},
                "items": items}

    # -------------------------------------------------------------- OpenAPI v2

    def _openapi_v2(self) -> dict[str, Any]:
        """PATCH operations with their kind and the ``dryRun`` / ``fieldValidation`` parameters (kubectl 1.20
        checks them before server dry-run and ``kubectl diff``); no schema definitions."""
        paths: dict[str, Any] = {}
        for rt in self.catalog.resources:
            if "patch" not in rt.verbs:
                continue
            prefix = f"/apis/{rt.group}/{rt.version}" if rt.group else f"/api/{rt.version}"
            path = (f"{prefix}/namespaces/{{namespace}}/{rt.plural}/{{name}}" if rt.namespaced
                    else f"{prefix}/{rt.plural}/{{name}}")
            paths[path] = {"patch": {
                "operationId": f"patch{rt.kind}",
                "parameters": [{"name": name, "in": "query", "type": "string", "uniqueItems": True}
                               for name in ("dryRun", "fieldManager", "fieldValidation", "force")],
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": rt.group, "kind": rt.kind, "version": rt.version},
            }}
        return {"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.37.0"}, "paths": paths,
                "definitions": {}}

    # -------------------------------------------------------------- OpenAPI v3

    def _build_openapi_v3(self) -> tuple[bytes, dict[str, bytes]]:
        docs: dict[str, bytes] = {}
        index: dict[str, Any] = {}
        for group, versions in self.catalog.group_versions.items():
            for version in versions:
                gv_path = f"apis/{group}/{version}" if group else f"api/{version}"
                body = _dumps(self._openapi_gv(group, version))
                digest = hashlib.sha512(body).hexdigest().upper()[:128]
                docs[gv_path] = body
                index[gv_path] = {"serverRelativeURL": f"/openapi/v3/{gv_path}?hash={digest}"}
        return _dumps({"paths": index}), docs

    def _openapi_gv(self, group: str, version: str) -> dict[str, Any]:
        paths: dict[str, Any] = {}
        schemas: dict[str, Any] = {}
        prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
        query_params = [
            {"name": name, "in": "query", "description": name, "schema": {"type": "string", "uniqueItems": True}}
            for name in ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")
        ]
        for rt in self.catalog.in_group_version(group, version):
            gvk = {"group": group, "version": version, "kind": rt.kind}
            schema_name = f"{group or 'core'}.{version}.{rt.kind}"
            schemas[schema_name] = {
                "type": "object",
                "description": f"{rt.kind} (kubegate sandbox)",
                "x-kubernetes-group-version-kind": [gvk],
            }
            if rt.builtin and rt.kind in protobuf.KINDS:
                schemas[schema_name]["properties"] = kind_properties(rt.kind)
            ref = {"$ref": f"#/components/schemas/{schema_name}"}
            ok = {"description": "OK", "content": {"application/json": {"schema": ref}}}
            if "patch" not in rt.verbs and "create" in rt.verbs:
                path = f"{prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{prefix}/{rt.plural}"
                paths[path] = {"post": {"operationId": f"create{rt.kind}", "parameters": query_params,
                                        "requestBody": {"content": {"*/*": {"schema": ref}}},
                                        "responses": {"201": ok}, "x-kubernetes-action": "post",
                                        "x-kubernetes-group-version-kind": gvk}}
                continue
            path = (f"{prefix}/namespaces/{{namespace}}/{rt.plural}/{{name}}" if rt.namespaced
                    else f"{prefix}/{rt.plural}/{{name}}")
            # strategic-merge-patch is left out on purpose: kubectl then computes strategic patches from
            # its compiled-in types instead of from these (property-less) schemas
            patch_body = {mt: {"schema": {"type": "object"}} for mt in (
                "application/apply-patch+yaml", "application/json-patch+json", "application/merge-patch+json")}
            paths[path] = {
                "get": {"operationId": f"read{rt.kind}", "responses": {"200": ok}, "x-kubernetes-action": "get",
                        "x-kubernetes-group-version-kind": gvk},
                "put": {"operationId": f"replace{rt.kind}", "parameters": query_params,
                        "requestBody": {"content": {"*/*": {"schema": ref}}}, "responses": {"200": ok},
                        "x-kubernetes-action": "put", "x-kubernetes-group-version-kind": gvk},
                "patch": {"operationId": f"patch{rt.kind}", "parameters": query_params,
                          "requestBody": {"content": patch_body}, "responses": {"200": ok},
                          "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk},
            }
        return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.37.0"}, "paths": paths,
                "components": {"schemas": schemas}}


_SCALARS: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "bytes": {"type": "string", "format": "byte"},
    "int": {"type": "integer", "format": "int64"},
    "bool": {"type": "boolean"},
    "time": {"type": "string", "format": "date-time"},
    "quantity": {"type": "string", "x-kubernetes-int-or-string": True},
    "intorstr": {"type": "string", "x-kubernetes-int-or-string": True},
    "map": {"type": "object", "additionalProperties": {"type": "string"}},
    "mapbytes": {"type": "object", "additionalProperties": {"type": "string", "format": "byte"}},
    "mapquantity": {"type": "object", "additionalProperties": {"type": "string", "x-kubernetes-int-or-string": True}},
}


def _properties(schema: protobuf.Schema) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for name, kind, repeated in schema.values():
        if isinstance(kind, dict):
            node: dict[str, Any] = {"type": "object", "description": name}
            sub = _properties(kind)
            if name in ("localObjectReference", "volumeSource"):  # inlined Go structs
                props.update(sub)
                continue
            if sub:
                node["properties"] = sub
        else:
            node = dict(_SCALARS[kind], description=name)
        if repeated:
            node.pop("description", None)
            node = {"type": "array", "description": name, "items": node}
            if name in MERGE_KEYS:
                node["x-kubernetes-patch-merge-key"] = MERGE_KEYS[name]
                node["x-kubernetes-patch-strategy"] = "merge"
                node["x-kubernetes-list-type"] = "map"
                node["x-kubernetes-list-map-keys"] = [MERGE_KEYS[name]]
        props[name] = node
    return props


def kind_properties(kind: str) -> dict[str, Any]:
    """Schema properties of a built-in kind, from the field tables the protobuf decoder uses (the fields the
    sandbox knows; enough for ``kubectl explain`` to walk)."""
    props = {"apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this "
                                                            "representation of an object."},
             "kind": {"type": "string", "description": "Kind is a string value representing the REST resource "
                                                      "this object represents."}}
    props.update(_properties(protobuf.KINDS[kind]))
    return props


def _openapi_v2_protobuf(doc: dict[str, Any]) -> bytes:
    """The gnostic ``openapi.v2.Document`` encoding of ``_openapi_v2()`` (field numbers of OpenAPIv2.proto:
    Document.swagger=1 info=2 paths=8; Paths.path=2; NamedPathItem name=1 value=2; PathItem.patch=8;
    Operation.operation_id=5 parameters=8 vendor_extension=13; ParametersItem.parameter=1;
    Parameter.non_body_parameter=2; NonBodyParameter.query_parameter_sub_schema=3;
    QueryParameterSubSchema in=2 name=4 type=6; NamedAny name=1 value=2; Any.yaml=2)."""
    items = []
    for path, item in doc["paths"].items():
        op = item["patch"]
        body = _field(5, op["operationId"])
        for param in op["parameters"]:
            query = _field(2, "query") + _field(4, param["name"]) + _field(6, param["type"])
            body += _field(8, _field(1, _field(2, _field(3, query))))
        gvk = op["x-kubernetes-group-version-kind"]
        yaml_text = f'group: "{gvk["group"]}"\nkind: {gvk["kind"]}\nversion: {gvk["version"]}\n'
        body += _field(13, _field(1, "x-kubernetes-group-version-kind") + _field(2, _field(2, yaml_text)))
        body += _field(13, _field(1, "x-kubernetes-action") + _field(2, _field(2, "patch\n")))
        items.append(_field(2, _field(1, path) + _field(2, _field(8, body))))
    info = _field(1, doc["info"]["title"]) + _field(2, doc["info"]["version"])
    return _field(1, doc["swagger"]) + _field(2, info) + _field(8, b"".join(items))


DOCS = DiscoveryDocs()

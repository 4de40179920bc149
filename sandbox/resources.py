"""The sandbox's resource catalog: what discovery advertises and what the API serves.

One ``ResourceType`` per (group, version, plural). Subresources are listed apart (``SUBRESOURCES``)
because discovery shows them as ``pods/status`` entries and RBAC names them ``pods/exec``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CRUD_VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)
READ_VERBS: tuple[str, ...] = ("get", "list", "watch")


@dataclass(frozen=True, slots=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...] = CRUD_VERBS
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    singular: str = ""
    # create-only virtual resources (reviews) are answered by the ReviewService, never stored
    virtual: bool = False
    # strategic merge patch is only understood for built-in kinds (the apiserver answers 415 for CRs)
    builtin: bool = True
    list_kind: str = ""
    subresources: tuple[str, ...] = field(default=())
    # metadata.generation is kept (and bumped on spec changes) only where the apiserver does it
    tracks_generation: bool = False

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular_name(self) -> str:
        return self.singular or self.kind.lower()

    @property
    def list_kind_name(self) -> str:
        return self.list_kind or f"{self.kind}List"


CUSTOM_GROUP = "example.kubegate.dev"

RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "Namespace", False, ("create", "delete", "get", "list", "patch", "update", "watch"),
                 ("ns",), subresources=("status",)),
    ResourceType("", "v1", "pods", "Pod", True, CRUD_VERBS, ("po",), ("all",),
                 subresources=("status", "log", "exec", "attach", "portforward"), tracks_generation=True),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, CRUD_VERBS, ("cm",)),
    ResourceType("", "v1", "secrets", "Secret", True, CRUD_VERBS),
    ResourceType("", "v1", "services", "Service", True, CRUD_VERBS, ("svc",), ("all",), subresources=("status",)),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, CRUD_VERBS, ("sa",)),
    ResourceType("", "v1", "events", "Event", True, CRUD_VERBS, ("ev",)),
    ResourceType("", "v1", "nodes", "Node", False, CRUD_VERBS, ("no",), subresources=("status",)),
    ResourceType("", "v1", "endpoints", "Endpoints", True, CRUD_VERBS, ("ep",), singular="endpoints"),
    ResourceType("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, CRUD_VERBS, ("pvc",),
                 subresources=("status",)),
    ResourceType("", "v1", "persistentvolumes", "PersistentVolume", False, CRUD_VERBS, ("pv",),
                 subresources=("status",)),
    ResourceType("", "v1", "resourcequotas", "ResourceQuota", True, CRUD_VERBS, ("quota",), subresources=("status",)),
    ResourceType("", "v1", "limitranges", "LimitRange", True, CRUD_VERBS, ("limits",)),
    ResourceType("", "v1", "replicationcontrollers", "ReplicationController", True, CRUD_VERBS, ("rc",), ("all",),
                 subresources=("status", "scale"), tracks_generation=True),
    ResourceType("apps", "v1", "deployments", "Deployment", True, CRUD_VERBS, ("deploy",), ("all",),
                 subresources=("status", "scale"), tracks_generation=True),
    ResourceType("apps", "v1", "replicasets", "ReplicaSet", True, CRUD_VERBS, ("rs",), ("all",),
                 subresources=("status", "scale"), tracks_generation=True),
    ResourceType("apps", "v1", "statefulsets", "StatefulSet", True, CRUD_VERBS, ("sts",), ("all",),
                 subresources=("status", "scale"), tracks_generation=True),
    ResourceType("apps", "v1", "daemonsets", "DaemonSet", True, CRUD_VERBS, ("ds",), ("all",),
                 subresources=("status",), tracks_generation=True),
    ResourceType("batch", "v1", "jobs", "Job", True, CRUD_VERBS, (), ("all",), subresources=("status",),
                 tracks_generation=True),
    ResourceType("batch", "v1", "cronjobs", "CronJob", True, CRUD_VERBS, ("cj",), ("all",), subresources=("status",),
                 tracks_generation=True),
    ResourceType("networking.k8s.io", "v1", "ingresses", "Ingress", True, CRUD_VERBS, ("ing",),
                 subresources=("status",), tracks_generation=True),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, CRUD_VERBS, ("netpol",),
                 tracks_generation=True),
    ResourceType("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, CRUD_VERBS, ("pdb",),
                 subresources=("status",), tracks_generation=True),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True, CRUD_VERBS),
    ResourceType("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True, CRUD_VERBS),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    ResourceType("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False,
                 ("create",), virtual=True),
    ResourceType("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "SelfSubjectRulesReview", False,
                 ("create",), virtual=True),
    ResourceType("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", False,
                 ("create",), virtual=True),
    ResourceType("authorization.k8s.io", "v1", "localsubjectaccessreviews", "LocalSubjectAccessReview", True,
                 ("create",), virtual=True),
    ResourceType("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", False,
                 ("create",), virtual=True),
    ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
                 CRUD_VERBS, ("crd", "crds"), ("api-extensions",), subresources=("status",), tracks_generation=True),
    ResourceType(CUSTOM_GROUP, "v1", "widgets", "Widget", True, CRUD_VERBS, ("wg",), ("all",), builtin=False,
                 tracks_generation=True),
)

# Top-level fields of the built-in kinds (strict field validation rejects others, like the apiserver).
KIND_FIELDS: dict[str, frozenset[str]] = {
    kind: frozenset(("apiVersion", "kind", "metadata", *extra)) for kind, extra in {
        "Namespace": ("spec", "status"),
        "Pod": ("spec", "status"),
        "ConfigMap": ("data", "binaryData", "immutable"),
        "Secret": ("data", "stringData", "type", "immutable"),
        "Service": ("spec", "status"),
        "ServiceAccount": ("secrets", "imagePullSecrets", "automountServiceAccountToken"),
        "Event": ("involvedObject", "reason", "message", "source", "firstTimestamp", "lastTimestamp", "count",
                  "type", "eventTime", "series", "action", "related", "reportingComponent", "reportingInstance"),
        "Node": ("spec", "status"),
        "Deployment": ("spec", "status"),
        "Role": ("rules",),
        "ClusterRole": ("rules", "aggregationRule"),
        "RoleBinding": ("subjects", "roleRef"),
        "ClusterRoleBinding": ("subjects", "roleRef"),
        "CustomResourceDefinition": ("spec", "status"),
        "Endpoints": ("subsets",),
        "EndpointSlice": ("addressType", "endpoints", "ports"),
    }.items()
}

# Preferred order of API groups in /apis (the apiserver lists them in a fixed priority order).
GROUP_ORDER: tuple[str, ...] = (
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "batch",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "apiextensions.k8s.io",
    CUSTOM_GROUP,
)


class Catalog:
    """Lookups by (group, plural), by (group, version, plural) and by kind."""

    def __init__(self, resources: tuple[ResourceType, ...] = RESOURCES) -> None:
        self.resources = resources
        self._by_gvr: dict[tuple[str, str, str], ResourceType] = {}
        self._by_gr: dict[tuple[str, str], ResourceType] = {}
        self._by_kind: dict[tuple[str, str], ResourceType] = {}
        for rt in resources:
            self._by_gvr[(rt.group, rt.version, rt.plural)] = rt
            self._by_gr.setdefault((rt.group, rt.plural), rt)
            self._by_kind[(rt.group_version, rt.kind)] = rt
        self.group_versions: dict[str, list[str]] = {}
        for rt in resources:
            versions = self.group_versions.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_gvr.get((group, version, plural))

    def by_group_resource(self, group: str, plural: str) -> ResourceType | None:
        return self._by_gr.get((group, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        return self._by_kind.get((api_version, kind))

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for rt in self.resources if rt.group == group and rt.version == version]

    def has_group_version(self, group: str, version: str) -> bool:
        return version in self.group_versions.get(group, ())

    def stored(self) -> list[ResourceType]:
        return [rt for rt in self.resources if not rt.virtual]


CATALOG = Catalog()

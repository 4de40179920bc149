"""The resource catalog of one cluster: what each (group, resource) is, from its discovery documents.

Built from the upstream's ``APIResourceList`` documents (``GET /api/v1``, ``GET /apis/<group>/<version>``;
CRDs appear there like built-in resources). The proxy fetches the documents (periodically and when a
request names a resource the catalog does not know) and passes the catalog to ``parse_request`` as a
value; this module only reads them. ``ResourceCatalog.builtin()`` is a fallback with the standard
Kubernetes resources, for use before the first discovery and in tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ResourceCatalog", "ResourceInfo"]


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    group: str  # "" = core
    version: str  # preferred (first seen) version
    plural: str  # the resource name in URLs, e.g. "pods"
    kind: str  # e.g. "Pod"
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    subresources: frozenset[str] = field(default_factory=frozenset)
    versions: tuple[str, ...] = ()

    @property
    def group_resource(self) -> str:
        """``pods`` for core, ``deployments.apps`` otherwise (the apiserver's spelling in messages)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


class ResourceCatalog:
    """Immutable lookup of resources by (group, plural), and by kind / singular / short name."""

    __slots__ = ("_by_key", "_by_alias")

    def __init__(self, resources: Iterable[ResourceInfo] = ()) -> None:
        self._by_key: dict[tuple[str, str], ResourceInfo] = {}
        self._by_alias: dict[str, list[ResourceInfo]] = {}
        for info in resources:
            key = (info.group, info.plural)
            old = self._by_key.get(key)
            if old is not None:
                info = ResourceInfo(
                    old.group, old.version, old.plural, old.kind, old.namespaced, old.singular or info.singular,
                    old.short_names or info.short_names, old.verbs or info.verbs,
                    old.subresources | info.subresources, old.versions + tuple(v for v in info.versions if v not in old.versions),
                )  # fmt: skip
            self._by_key[key] = info
        for info in self._by_key.values():
            aliases = {info.plural, info.kind.lower(), info.singular, *info.short_names}
            for alias in aliases:
                if alias:
                    self._by_alias.setdefault(alias.lower(), []).append(info)

    # --- construction -------------------------------------------------------------------------------

    @classmethod
    def from_discovery(cls, docs: Iterable[Mapping[str, Any]]) -> ResourceCatalog:
        """From ``APIResourceList`` documents (dicts as decoded from JSON). Malformed entries are skipped."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        order: list[tuple[str, str]] = []
        for doc in docs:
            if not isinstance(doc, Mapping):
                continue
            gv = doc.get("groupVersion")
            if not isinstance(gv, str) or not gv:
                continue
            group, _, version = gv.rpartition("/")
            resources = doc.get("resources")
            if not isinstance(resources, list):
                continue
            for res in resources:
                if not isinstance(res, Mapping) or not isinstance(res.get("name"), str):
                    continue
                name: str = res["name"]
                if "/" in name:
                    parent, _, sub = name.partition("/")
                    entry = found.setdefault((group, parent), {"subresources": set(), "versions": []})
                    entry["subresources"].add(sub)
                    continue
                key = (group, name)
                entry = found.setdefault(key, {"subresources": set(), "versions": []})
                if version not in entry["versions"]:
                    entry["versions"].append(version)
                if "kind" not in entry:
                    order.append(key)
                    entry.update(
                        kind=str(res.get("kind") or ""),
                        namespaced=bool(res.get("namespaced", False)),
                        singular=str(res.get("singularName") or ""),
                        short_names=tuple(s for s in res.get("shortNames") or () if isinstance(s, str)),
                        verbs=tuple(v for v in res.get("verbs") or () if isinstance(v, str)),
                    )
        infos = []
        for key in order:
            e = found[key]
            infos.append(
                ResourceInfo(
                    group=key[0],
                    version=e["versions"][0],
                    plural=key[1],
                    kind=e["kind"],
                    namespaced=e["namespaced"],
                    singular=e["singular"],
                    short_names=e["short_names"],
                    verbs=e["verbs"],
                    subresources=frozenset(e["subresources"]),
                    versions=tuple(e["versions"]),
                )  # fmt: skip
            )
        return cls(infos)

    @classmethod
    def builtin(cls) -> ResourceCatalog:
        """The standard Kubernetes resources (no CRDs): a fallback before discovery has run."""
        return _BUILTIN

    def merged(self, other: ResourceCatalog) -> ResourceCatalog:
        """A catalog with the resources of both (``self`` wins on conflicts)."""
        return ResourceCatalog(
            [*self._by_key.values(), *(i for k, i in other._by_key.items() if k not in self._by_key)]
        )

    # --- lookup -------------------------------------------------------------------------------------

    def get(self, group: str, plural: str, version: str | None = None) -> ResourceInfo | None:
        """The resource, or None; with ``version``, None unless the group serves it in that version."""
        info = self._by_key.get((group, plural))
        if info is not None and version is not None and version not in info.versions:
            return None
        return info

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self):  # noqa: ANN204
        return iter(self._by_key.values())

    def find(self, name: str, group: str | None = None) -> list[ResourceInfo]:
        """Resources whose plural, kind, singular or short name is ``name`` (case-insensitive)."""
        hits = self._by_alias.get(name.lower(), [])
        return [h for h in hits if group is None or h.group == group]

    def is_namespaced(self, group: str, plural: str) -> bool | None:
        info = self._by_key.get((group, plural))
        return None if info is None else info.namespaced


def _builtin() -> ResourceCatalog:
    # group/version | plural | Kind | N(amespaced)/C(luster) | short names | subresources
    table = """
v1|bindings|Binding|N||
v1|componentstatuses|ComponentStatus|C|cs|
v1|configmaps|ConfigMap|N|cm|
v1|endpoints|Endpoints|N|ep|
v1|events|Event|N|ev|
v1|limitranges|LimitRange|N|limits|
v1|namespaces|Namespace|C|ns|finalize,status
v1|nodes|Node|C|no|proxy,status
v1|persistentvolumeclaims|PersistentVolumeClaim|N|pvc|status
v1|persistentvolumes|PersistentVolume|C|pv|status
v1|pods|Pod|N|po|attach,binding,ephemeralcontainers,eviction,exec,log,portforward,proxy,resize,status
v1|podtemplates|PodTemplate|N||
v1|replicationcontrollers|ReplicationController|N|rc|scale,status
v1|resourcequotas|ResourceQuota|N|quota|status
v1|secrets|Secret|N||
v1|serviceaccounts|ServiceAccount|N|sa|token
v1|services|Service|N|svc|proxy,status
admissionregistration.k8s.io/v1|mutatingwebhookconfigurations|MutatingWebhookConfiguration|C||
admissionregistration.k8s.io/v1|validatingwebhookconfigurations|ValidatingWebhookConfiguration|C||
apiextensions.k8s.io/v1|customresourcedefinitions|CustomResourceDefinition|C|crd,crds|status
apiregistration.k8s.io/v1|apiservices|APIService|C||status
apps/v1|controllerrevisions|ControllerRevision|N||
apps/v1|daemonsets|DaemonSet|N|ds|status
apps/v1|deployments|Deployment|N|deploy|scale,status
apps/v1|replicasets|ReplicaSet|N|rs|scale,status
apps/v1|statefulsets|StatefulSet|N|sts|scale,status
authentication.k8s.io/v1|selfsubjectreviews|SelfSubjectReview|C||
authentication.k8s.io/v1|tokenreviews|TokenReview|C||
authorization.k8s.io/v1|localsubjectaccessreviews|LocalSubjectAccessReview|N||
authorization.k8s.io/v1|selfsubjectaccessreviews|SelfSubjectAccessReview|C||
authorization.k8s.io/v1|selfsubjectrulesreviews|SelfSubjectRulesReview|C||
authorization.k8s.io/v1|subjectaccessreviews|SubjectAccessReview|C||
autoscaling/v2|horizontalpodautoscalers|HorizontalPodAutoscaler|N|hpa|status
batch/v1|cronjobs|CronJob|N|cj|status
batch/v1|jobs|Job|N||status
certificates.k8s.io/v1|certificatesigningrequests|CertificateSigningRequest|C|csr|approval,status
coordination.k8s.io/v1|leases|Lease|N||
discovery.k8s.io/v1|endpointslices|EndpointSlice|N||
events.k8s.io/v1|events|Event|N|ev|
flowcontrol.apiserver.k8s.io/v1|flowschemas|FlowSchema|C||status
flowcontrol.apiserver.k8s.io/v1|prioritylevelconfigurations|PriorityLevelConfiguration|C||status
networking.k8s.io/v1|ingressclasses|IngressClass|C||
networking.k8s.io/v1|ingresses|Ingress|N|ing|status
networking.k8s.io/v1|networkpolicies|NetworkPolicy|N|netpol|
node.k8s.io/v1|runtimeclasses|RuntimeClass|C||
policy/v1|poddisruptionbudgets|PodDisruptionBudget|N|pdb|status
rbac.authorization.k8s.io/v1|clusterrolebindings|ClusterRoleBinding|C||
rbac.authorization.k8s.io/v1|clusterroles|ClusterRole|C||
rbac.authorization.k8s.io/v1|rolebindings|RoleBinding|N||
rbac.authorization.k8s.io/v1|roles|Role|N||
scheduling.k8s.io/v1|priorityclasses|PriorityClass|C|pc|
storage.k8s.io/v1|csidrivers|CSIDriver|C||
storage.k8s.io/v1|csinodes|CSINode|C||
storage.k8s.io/v1|storageclasses|StorageClass|C|sc|
storage.k8s.io/v1|volumeattachments|VolumeAttachment|C||status
"""
    infos = []
    for line in table.strip().splitlines():
        gv, plural, kind, scope, shorts, subs = line.split("|")
        group, _, version = gv.rpartition("/")
        infos.append(
            ResourceInfo(
                group=group,
                version=version,
                plural=plural,
                kind=kind,
                namespaced=scope == "N",
                singular=kind.lower(),
                short_names=tuple(s for s in shorts.split(",") if s),
                verbs=("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"),
                subresources=frozenset(s for s in subs.split(",") if s),
                versions=(version,),
            )  # fmt: skip
        )
    return ResourceCatalog(infos)


_BUILTIN = _builtin()

"""Azure AKS discovery and the AAD token for AKS clusters.

``AksFetcher.fetch()`` (blocking; the service runs it in a thread) talks to Azure Resource Manager through
azure-core's pipeline (bearer-token policy over an azure-identity credential — ``DefaultAzureCredential``
unless one is given — retries, user agent):

1. subscriptions: the matcher's, or all visible ones (``GET /subscriptions``) for ``'*'``;
2. managed clusters per subscription (or per resource group when the matcher names them), following
   ``nextLink``; keeps those whose location is in ``regions`` and whose tags match ``tags``;
3. ``POST …/listClusterUserCredential`` → a kubeconfig → the API server endpoint and CA (and, for
   local-account clusters, the static client credentials in that kubeconfig).

Records are labelled ``kubegate.dev/origin: azure``, ``kubegate.dev/region``,
``kubegate.dev/subscription-id``, ``kubegate.dev/resource-group``, ``kubegate.dev/discovery-group``,
``kubegate.dev/cloud-name`` plus the cluster's tags. Any failed call marks the run incomplete.

Authentication to the cluster: AAD-enabled clusters (``properties.aadProfile``, or a user kubeconfig
without static credentials, e.g. an ``exec: kubelogin``) get ``AadTokenProvider`` — an AAD access token
for the AKS server application scope ``6dae42f8-4368-4678-94ff-3960e28e3630/.default``, renewed five
minutes before it expires; local-account clusters use the static credentials of their user kubeconfig.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import yaml
from azure.core import PipelineClient
from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError
from azure.core.pipeline.policies import (
    BearerTokenCredentialPolicy,
    HeadersPolicy,
    RetryPolicy,
    UserAgentPolicy,
)
from azure.core.rest import HttpRequest

from discovery.credentials import RenewingTokenProvider
from discovery.errors import DiscoveryError, FetchError
from discovery.model import Cluster, StaticCredentials, UpstreamCredentials
from discovery.store import NAME_RE, ClusterRecord, cloud_cluster
from rbac.labels import labels_match

log = logging.getLogger(__name__)

ORIGIN = "azure"
AKS_SCOPE = "6dae42f8-4368-4678-94ff-3960e28e3630/.default"
ARM_ENDPOINT = "https://management.azure.com"
ARM_SCOPE = "https://management.azure.com/.default"
SUBSCRIPTIONS_API = "2020-01-01"
AKS_API = "2023-08-01"
AAD_REFRESH_MARGIN = 300.0


class AzureMatcherLike(Protocol):
    types: Sequence[str]
    subscriptions: Sequence[str]
    resource_groups: Sequence[str]
    regions: Sequence[str]
    tags: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class AzureMatcher:
    types: tuple[str, ...] = ("aks",)
    subscriptions: tuple[str, ...] = ("*",)
    resource_groups: tuple[str, ...] = ("*",)
    regions: tuple[str, ...] = ("*",)
    tags: Mapping[str, Any] = field(default_factory=lambda: {"*": "*"})


@dataclass(frozen=True, slots=True)
class FetchResult:
    records: tuple[ClusterRecord, ...]
    complete: bool
    errors: tuple[str, ...] = ()


def _default_credential() -> TokenCredential:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


class ArmClient:
    """The few ARM calls discovery needs, over azure-core's pipeline."""

    def __init__(
        self,
        credential: TokenCredential,
        *,
        endpoint: str = ARM_ENDPOINT,
        scope: str = ARM_SCOPE,
        retries: int = 2,
        **transport_kwargs: Any,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        policies = [
            HeadersPolicy({"Accept": "application/json"}),
            UserAgentPolicy(user_agent="kubegate-discovery"),
            RetryPolicy(retry_total=retries, retry_backoff_factor=0.2),
            BearerTokenCredentialPolicy(credential, scope),
        ]
        self._client: PipelineClient[Any, Any] = PipelineClient(
            base_url=self.endpoint, policies=policies, **transport_kwargs
        )

    def _call(self, method: str, url: str) -> dict[str, Any]:
        if url.startswith("/"):
            url = self.endpoint + url
        try:
            response = self._client.send_request(HttpRequest(method, url))
        except AzureError as exc:
            raise FetchError(f"azure: {method} {url}: {exc}") from None
        if response.status_code >= 400:
            raise FetchError(f"azure: {method} {url}: HTTP {response.status_code}: {response.text()[:300]}")
        try:
            body = response.json()
        except ValueError:
            raise FetchError(f"azure: {method} {url}: answer is not JSON") from None
        if not isinstance(body, dict):
            raise FetchError(f"azure: {method} {url}: answer is not a JSON object")
        return body

    def _pages(self, url: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        next_url: str | None = url
        while next_url:
            page = self._call("GET", next_url)
            items.extend(v for v in page.get("value") or [] if isinstance(v, dict))
            next_url = page.get("nextLink")
        return items

    def subscriptions(self) -> list[str]:
        return [s["subscriptionId"] for s in self._pages(f"/subscriptions?api-version={SUBSCRIPTIONS_API}")
                if s.get("subscriptionId")]

    def managed_clusters(self, subscription: str, resource_group: str | None) -> list[dict[str, Any]]:
        scope = f"/subscriptions/{quote(subscription)}"
        if resource_group:
            scope += f"/resourceGroups/{quote(resource_group)}"
        return self._pages(f"{scope}/providers/Microsoft.ContainerService/managedClusters?api-version={AKS_API}")

    def user_kubeconfig(self, cluster_id: str) -> bytes:
        body = self._call("POST", f"{cluster_id}/listClusterUserCredential?api-version={AKS_API}")
        for item in body.get("kubeconfigs") or []:
            if isinstance(item, dict) and item.get("value"):
                try:
                    return base64.b64decode(item["value"], validate=True)
                except ValueError:
                    raise FetchError(f"azure: {cluster_id}: kubeconfig is not base64") from None
        raise FetchError(f"azure: {cluster_id}: listClusterUserCredential returned no kubeconfig")


def _resource_group(cluster_id: str) -> str:
    parts = cluster_id.split("/")
    for i, part in enumerate(parts[:-1]):
        if part.lower() == "resourcegroups":
            return parts[i + 1]
    return ""


def _wanted(value: str, allowed: Sequence[str]) -> bool:
    return "*" in allowed or value.lower() in {a.lower() for a in allowed}


def _kubeconfig_endpoint(kubeconfig: bytes, where: str) -> tuple[str, str, dict[str, Any]]:
    """(server, CA data base64, the user's static credentials or {})."""
    try:
        doc = yaml.safe_load(kubeconfig)
    except yaml.YAMLError as exc:
        raise FetchError(f"{where}: user kubeconfig is not YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise FetchError(f"{where}: user kubeconfig is not a mapping")
    contexts = {c.get("name"): c.get("context") or {} for c in doc.get("contexts") or [] if isinstance(c, dict)}
    ctx = contexts.get(doc.get("current-context")) or next(iter(contexts.values()), {})
    clusters = {c.get("name"): c.get("cluster") or {} for c in doc.get("clusters") or [] if isinstance(c, dict)}
    users = {u.get("name"): u.get("user") or {} for u in doc.get("users") or [] if isinstance(u, dict)}
    kc = clusters.get(ctx.get("cluster")) or next(iter(clusters.values()), {})
    user = users.get(ctx.get("user")) or next(iter(users.values()), {})
    server = kc.get("server")
    if not isinstance(server, str) or not server.startswith("https://"):
        raise FetchError(f"{where}: user kubeconfig has no https server")
    static = {k: user[k] for k in ("client-certificate-data", "client-key-data", "token") if user.get(k)}
    return server, str(kc.get("certificate-authority-data") or ""), static


class AksFetcher:
    def __init__(self, matchers: Iterable[AzureMatcherLike], *, group: str, arm: ArmClient | None = None) -> None:
        self.matchers = list(matchers)
        self.group = group
        self._arm = arm

    @property
    def arm(self) -> ArmClient:
        if self._arm is None:
            self._arm = ArmClient(_default_credential())
        return self._arm

    def fetch(self) -> FetchResult:
        records: dict[str, ClusterRecord] = {}
        errors: list[str] = []
        for matcher in self.matchers:
            if "aks" not in matcher.types:
                continue
            try:
                subs = self.arm.subscriptions() if "*" in matcher.subscriptions else list(matcher.subscriptions)
            except FetchError as exc:
                errors.append(str(exc))
                continue
            groups: list[str | None] = [None] if "*" in matcher.resource_groups else list(matcher.resource_groups)
            for sub in subs:
                for rg in groups:
                    try:
                        for record in self._fetch_scope(sub, rg, matcher):
                            records.setdefault(record.name, record)
                    except FetchError as exc:
                        errors.append(str(exc))
        for error in errors:
            log.error("AKS discovery: %s (nothing will be deleted this run)", error)
        return FetchResult(tuple(records.values()), complete=not errors, errors=tuple(errors))

    def _fetch_scope(self, sub: str, rg: str | None, matcher: AzureMatcherLike) -> list[ClusterRecord]:
        out = []
        for mc in self.arm.managed_clusters(sub, rg):
            name, cid, location = mc.get("name"), mc.get("id"), str(mc.get("location") or "")
            if not isinstance(name, str) or not isinstance(cid, str):
                continue
            tags = {str(k): str(v) for k, v in (mc.get("tags") or {}).items()}
            if not _wanted(location, matcher.regions) or not labels_match(matcher.tags, tags):
                continue
            if not NAME_RE.match(name):
                log.warning("AKS cluster %r skipped: name unusable as a cluster name", name)
                continue
            props = mc.get("properties") or {}
            where = f"azure: cluster {name!r}"
            server, ca_data, static = _kubeconfig_endpoint(self.arm.user_kubeconfig(cid), where)
            aad = bool(props.get("aadProfile")) or not static
            resource_group = _resource_group(cid)
            labels = dict(tags)
            labels.update({
                "kubegate.dev/origin": ORIGIN,
                "kubegate.dev/region": location,
                "kubegate.dev/subscription-id": sub,
                "kubegate.dev/resource-group": resource_group,
                "kubegate.dev/discovery-group": self.group,
                "kubegate.dev/cloud-name": name,
            })
            spec: dict[str, Any] = {
                "id": cid, "subscription": sub, "resource_group": resource_group, "location": location,
                "endpoint": server, "ca_data": ca_data, "auth": "aad" if aad else "static",
            }
            if not aad:
                spec["static"] = static
            out.append(ClusterRecord(name=name, origin=ORIGIN, discovery_group=self.group, labels=labels, spec=spec))
        return out


class AadTokenProvider(RenewingTokenProvider):
    """``CredentialsProvider``: an AAD token for the AKS scope from a ``TokenCredential``, cached."""

    margin = AAD_REFRESH_MARGIN

    def __init__(
        self, credential: TokenCredential, scope: str = AKS_SCOPE, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(clock)
        self.credential, self.scope = credential, scope

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AadTokenProvider) and (other.credential is self.credential) and (
            other.scope == self.scope
        )

    __hash__ = None  # type: ignore[assignment]

    def _fetch(self) -> UpstreamCredentials:
        try:
            token = self.credential.get_token(self.scope)
        except Exception as exc:  # azure-identity raises several unrelated types
            raise DiscoveryError(f"cannot get an AAD token for {self.scope}: {exc}") from None
        return UpstreamCredentials(bearer_token=token.token, expires_at=float(token.expires_on))


def cluster_from_record(record: ClusterRecord, *, credential: TokenCredential | None = None) -> Cluster:
    def credentials(where: str) -> Any:
        if record.spec.get("auth") != "static":
            return AadTokenProvider(credential or _shared_default_credential())
        static = record.spec.get("static") or {}
        try:
            cert = base64.b64decode(static["client-certificate-data"]) if static.get("client-certificate-data") else None
            key = base64.b64decode(static["client-key-data"]) if static.get("client-key-data") else None
        except ValueError:
            raise DiscoveryError(f"{where}: static client credentials are not base64") from None
        return StaticCredentials(UpstreamCredentials(
            client_cert_pem=cert, client_key_pem=key, bearer_token=static.get("token") or None))

    return cloud_cluster(record, ORIGIN, credentials)


_default: TokenCredential | None = None
_default_lock = threading.Lock()


def _shared_default_credential() -> TokenCredential:
    global _default
    with _default_lock:
        if _default is None:
            _default = _default_credential()
        return _default

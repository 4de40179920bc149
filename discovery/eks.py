"""AWS EKS discovery and the EKS bearer token.

``EksFetcher.fetch()`` (blocking; the service runs it in a thread) lists and describes the EKS clusters of
every matcher's regions (``'*'``: the regions EC2 reports as enabled for the account), keeps those whose
tags match the matcher's ``tags`` selector (``rbac.labels.labels_match``), and returns one
``ClusterRecord`` per cluster labelled

    kubegate.dev/origin: aws, kubegate.dev/region, kubegate.dev/account-id,
    kubegate.dev/discovery-group, kubegate.dev/cloud-name, plus the cluster's AWS tags.

Any failed API call marks the result incomplete (``FetchResult.complete = False``) so that reconcile
deletes nothing. Credentials come from the standard AWS chain (``boto3.Session()``), optionally through
``sts:AssumeRole`` (``assume_role_arn`` / ``external_id``).

``EksTokenProvider`` is the ``CredentialsProvider`` for a discovered cluster: the token is a presigned
STS ``GetCallerIdentity`` URL whose signature covers the ``x-k8s-aws-id: <cluster name>`` header,
``"k8s-aws-v1." + base64url(url)`` without padding (the aws-iam-authenticator format). EKS accepts it
for 15 minutes after signing; kubegate marks it expiring after 14 and renews it one minute before that.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import boto3
import botocore.exceptions

from discovery.credentials import RenewingTokenProvider
from discovery.errors import DiscoveryError
from discovery.model import Cluster, UpstreamCredentials
from discovery.store import NAME_RE, ClusterRecord, cloud_cluster
from rbac.labels import labels_match

log = logging.getLogger(__name__)

ORIGIN = "aws"
TOKEN_PREFIX = "k8s-aws-v1."
CLUSTER_ID_HEADER = "x-k8s-aws-id"
PRESIGN_EXPIRES = 60  # X-Amz-Expires of the presigned URL (as aws-iam-authenticator)
TOKEN_LIFETIME = 14 * 60  # EKS accepts the token for 15 minutes after signing
ROLE_SESSION_NAME = "kubegate-discovery"
REGION_WORKERS = 8  # regions listed in parallel (boto3 clients are thread-safe)


class AwsMatcherLike(Protocol):
    types: Sequence[str]
    regions: Sequence[str]
    tags: Mapping[str, Any]
    assume_role_arn: str | None
    external_id: str | None


@dataclass(frozen=True, slots=True)
class AwsMatcher:
    types: tuple[str, ...] = ("eks",)
    regions: tuple[str, ...] = ("*",)
    tags: Mapping[str, Any] = field(default_factory=lambda: {"*": "*"})
    assume_role_arn: str | None = None
    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class FetchResult:
    records: tuple[ClusterRecord, ...]
    complete: bool
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AwsSessions:
    """How sessions and clients are made: the standard chain, or an explicit endpoint (tests: moto)."""

    endpoint_url: str | None = None
    base: Callable[[], boto3.Session] = boto3.Session

    def session(self, role_arn: str | None, external_id: str | None, region: str | None = None) -> boto3.Session:
        base = self.base()
        if not role_arn:
            return base
        kwargs: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": ROLE_SESSION_NAME}
        if external_id:
            kwargs["ExternalId"] = external_id
        sts = base.client("sts", region_name=region or base.region_name or "us-east-1",
                          endpoint_url=self.endpoint_url)
        creds = sts.assume_role(**kwargs)["Credentials"]
        return boto3.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )

    def client(self, session: boto3.Session, service: str, region: str) -> Any:
        return session.client(service, region_name=region, endpoint_url=self.endpoint_url)


def cluster_labels(name: str, region: str, account: str, group: str, tags: Mapping[str, str]) -> dict[str, str]:
    labels = {str(k): str(v) for k, v in tags.items()}
    labels.update({
        "kubegate.dev/origin": ORIGIN,
        "kubegate.dev/region": region,
        "kubegate.dev/account-id": account,
        "kubegate.dev/discovery-group": group,
        "kubegate.dev/cloud-name": name,
    })
    return labels


class EksFetcher:
    def __init__(self, matchers: Iterable[AwsMatcherLike], *, group: str, sessions: AwsSessions | None = None) -> None:
        self.matchers = list(matchers)
        self.group = group
        self.sessions = sessions or AwsSessions()

    def fetch(self) -> FetchResult:
        records: dict[str, ClusterRecord] = {}
        errors: list[str] = []
        for matcher in self.matchers:
            if "eks" not in matcher.types:
                continue
            try:
                session = self.sessions.session(matcher.assume_role_arn, matcher.external_id)
                regions = self._regions(session, matcher.regions)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                errors.append(f"aws: matcher role={matcher.assume_role_arn or '-'}: {exc}")
                continue
            with ThreadPoolExecutor(max_workers=min(REGION_WORKERS, max(1, len(regions)))) as pool:
                futures = [(region, pool.submit(self._fetch_region, session, region, matcher)) for region in regions]
                for region, future in futures:
                    try:
                        found = future.result()
                    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                        errors.append(f"aws: region {region}: {exc}")
                        continue
                    for record in found:
                        records.setdefault(record.name, record)
        for error in errors:
            log.error("EKS discovery: %s (nothing will be deleted this run)", error)
        return FetchResult(tuple(records.values()), complete=not errors, errors=tuple(errors))

    def _regions(self, session: boto3.Session, wanted: Sequence[str]) -> list[str]:
        if "*" not in wanted:
            return list(wanted)
        ec2 = self.sessions.client(session, "ec2", session.region_name or "us-east-1")
        return sorted(r["RegionName"] for r in ec2.describe_regions()["Regions"])

    def _fetch_region(self, session: boto3.Session, region: str, matcher: AwsMatcherLike) -> list[ClusterRecord]:
        eks = self.sessions.client(session, "eks", region)
        out = []
        for page in eks.get_paginator("list_clusters").paginate():
            for name in page.get("clusters", []):
                info = eks.describe_cluster(name=name)["cluster"]
                if info.get("status") not in (None, "ACTIVE", "UPDATING"):
                    continue
                tags = info.get("tags") or {}
                if not labels_match(matcher.tags, tags):
                    continue
                if not NAME_RE.match(name) or not info.get("endpoint"):
                    log.warning("EKS cluster %r in %s skipped: unusable name or no endpoint yet", name, region)
                    continue
                account = str(info.get("arn", "")).split(":")[4] if info.get("arn", "").count(":") >= 5 else ""
                out.append(ClusterRecord(
                    name=name,
                    origin=ORIGIN,
                    discovery_group=self.group,
                    labels=cluster_labels(name, region, account, self.group, tags),
                    spec={
                        "cluster_name": name,
                        "region": region,
                        "endpoint": info["endpoint"],
                        "ca_data": (info.get("certificateAuthority") or {}).get("data", ""),
                        "account_id": account,
                        "arn": info.get("arn", ""),
                        "assume_role_arn": matcher.assume_role_arn,
                    },
                ))
        return out


# ---- the EKS token ---------------------------------------------------------------------------------


def generate_eks_token(sts_client: Any, cluster_name: str) -> str:
    """``k8s-aws-v1.`` + base64url(presigned GetCallerIdentity URL signing ``x-k8s-aws-id``), no padding."""

    def add_cluster_header(request: Any, **_: Any) -> None:
        request.headers[CLUSTER_ID_HEADER] = cluster_name

    handler_id = f"kubegate-eks-{id(add_cluster_header)}"
    sts_client.meta.events.register("before-sign.sts.GetCallerIdentity", add_cluster_header, unique_id=handler_id)
    try:
        url = sts_client.generate_presigned_url(
            "get_caller_identity", Params={}, ExpiresIn=PRESIGN_EXPIRES, HttpMethod="GET"
        )
    finally:
        sts_client.meta.events.unregister("before-sign.sts.GetCallerIdentity", unique_id=handler_id)
    return TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


class EksTokenProvider(RenewingTokenProvider):
    """``CredentialsProvider`` for an EKS cluster (bearer token, renewed before it runs out)."""

    def __init__(
        self,
        cluster_name: str,
        region: str,
        *,
        assume_role_arn: str | None = None,
        external_id: str | None = None,
        sessions: AwsSessions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock)
        self.cluster_name, self.region = cluster_name, region
        self.assume_role_arn, self.external_id = assume_role_arn, external_id
        self.sessions = sessions or AwsSessions()

    def _key(self) -> tuple[Any, ...]:
        return (self.cluster_name, self.region, self.assume_role_arn, self.external_id, self.sessions)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EksTokenProvider) and self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def _fetch(self) -> UpstreamCredentials:
        now = self.clock()
        try:
            session = self.sessions.session(self.assume_role_arn, self.external_id, self.region)
            sts = self.sessions.client(session, "sts", self.region)
            token = generate_eks_token(sts, self.cluster_name)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise DiscoveryError(f"cluster {self.cluster_name!r}: cannot make an EKS token: {exc}") from None
        return UpstreamCredentials(bearer_token=token, expires_at=now + TOKEN_LIFETIME)


def cluster_from_record(
    record: ClusterRecord,
    *,
    sessions: AwsSessions | None = None,
    external_ids: Mapping[str, str] | None = None,
) -> Cluster:
    def credentials(where: str) -> EksTokenProvider:
        spec = record.spec
        role = spec.get("assume_role_arn")
        return EksTokenProvider(
            str(spec.get("cluster_name") or record.name),
            str(spec.get("region")),
            assume_role_arn=role,
            external_id=(external_ids or {}).get(role) if role else None,
            sessions=sessions,
        )

    return cloud_cluster(record, ORIGIN, credentials)

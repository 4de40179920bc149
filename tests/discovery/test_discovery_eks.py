"""EKS discovery against moto in SERVER mode: ``moto.server.ThreadedMotoServer`` listens on a random
loopback port and boto3 talks real HTTP to it through ``endpoint_url`` (no in-process mocking)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import urllib.parse
import urllib.request

import boto3
import pytest

from discovery.eks import (
    TOKEN_PREFIX,
    AwsMatcher,
    AwsSessions,
    EksFetcher,
    EksTokenProvider,
    cluster_from_record,
)
from discovery.reconcile import reconcile
from kubegate.demo import free_port

CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()


@pytest.fixture
def aws(monkeypatch, moto_url):
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_SESSION_TOKEN": "testing",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).read()
    return AwsSessions(endpoint_url=moto_url)


def create_cluster(moto_url: str, region: str, name: str, **tags: str) -> None:
    eks = boto3.client("eks", region_name=region, endpoint_url=moto_url)
    eks.create_cluster(
        name=name, roleArn="arn:aws:iam::123456789012:role/eks", tags=tags,
        resourcesVpcConfig={"subnetIds": ["subnet-1"]},
    )


def test_lists_and_describes_clusters_per_region_and_matches_tags(aws, moto_url):
    create_cluster(moto_url, "us-east-1", "prod-a", env="prod", team="x")
    create_cluster(moto_url, "eu-west-1", "prod-b", env="prod")
    create_cluster(moto_url, "eu-west-1", "dev-a", env="dev")
    fetcher = EksFetcher(
        [AwsMatcher(regions=("us-east-1", "eu-west-1"), tags={"env": ["prod", "^stag.*$"]})],
        group="g1", sessions=aws,
    )
    result = fetcher.fetch()
    assert result.complete and result.errors == ()
    by_name = {r.name: r for r in result.records}
    assert sorted(by_name) == ["prod-a", "prod-b"]
    a = by_name["prod-a"]
    assert a.labels["kubegate.dev/origin"] == "aws"
    assert a.labels["kubegate.dev/region"] == "us-east-1"
    assert a.labels["kubegate.dev/account-id"] == "123456789012"
    assert a.labels["kubegate.dev/discovery-group"] == "g1"
    assert a.labels["team"] == "x" and a.labels["env"] == "prod"
    assert a.spec["endpoint"].startswith("https://")
    assert a.origin == "aws" and a.discovery_group == "g1"


def test_all_regions_wildcard_uses_the_account_regions(aws, moto_url):
    create_cluster(moto_url, "ap-southeast-2", "far-away", env="prod")
    result = EksFetcher([AwsMatcher(regions=("*",), tags={"*": "*"})], group="", sessions=aws).fetch()
    assert result.complete
    assert [r.labels["kubegate.dev/region"] for r in result.records] == ["ap-southeast-2"]


def test_assume_role_is_used_for_discovery(aws, moto_url):
    create_cluster(moto_url, "us-east-1", "roled", env="prod")
    matcher = AwsMatcher(regions=("us-east-1",), assume_role_arn="arn:aws:iam::123456789012:role/disc",
                         external_id="xid")
    result = EksFetcher([matcher], group="", sessions=aws).fetch()
    assert [r.name for r in result.records] == ["roled"]
    assert result.records[0].spec["assume_role_arn"] == "arn:aws:iam::123456789012:role/disc"


def test_an_api_error_makes_the_run_incomplete_so_nothing_is_deleted(aws, moto_url):
    create_cluster(moto_url, "us-east-1", "keep-me", env="prod")
    good = EksFetcher([AwsMatcher(regions=("us-east-1",))], group="g", sessions=aws).fetch()
    current = {r.name: r for r in good.records}
    broken = EksFetcher([AwsMatcher(regions=("us-east-1", "no-such-region-1"))], group="g",
                        sessions=AwsSessions(endpoint_url="http://127.0.0.1:1"))  # nothing listens there
    result = broken.fetch()
    assert not result.complete and result.errors
    plan = reconcile(result.records, current, origin="aws", group="g", complete=result.complete)
    assert plan.delete == () and plan.kept == ("keep-me",)


def decode_token(token: str) -> str:
    assert token.startswith(TOKEN_PREFIX)
    body = token[len(TOKEN_PREFIX):]
    assert "=" not in body and "+" not in body and "/" not in body  # base64url, no padding
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


def test_eks_token_is_a_presigned_get_caller_identity_signing_the_cluster_header(aws):
    provider = EksTokenProvider("prod-a", "us-east-1", sessions=aws)
    creds = asyncio.run(provider.get())
    url = urllib.parse.urlsplit(decode_token(creds.bearer_token))
    query = urllib.parse.parse_qs(url.query)
    assert query["Action"] == ["GetCallerIdentity"]
    assert query["Version"] == ["2011-06-15"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["60"]
    assert "x-k8s-aws-id" in query["X-Amz-SignedHeaders"][0].split(";")
    assert "host" in query["X-Amz-SignedHeaders"][0].split(";")
    assert "/us-east-1/sts/aws4_request" in query["X-Amz-Credential"][0]
    assert creds.expires_at is not None


def test_eks_token_is_cached_and_renewed_before_15_minutes(aws):
    now = [1_000_000.0]
    provider = EksTokenProvider("c", "us-east-1", sessions=aws, clock=lambda: now[0])
    first = asyncio.run(provider.get())
    assert asyncio.run(provider.get()) is first
    assert first.expires_at - now[0] <= 15 * 60
    now[0] += 13 * 60 + 1  # within the renewal margin
    second = asyncio.run(provider.get())
    assert second is not first and second.expires_at > first.expires_at


def test_a_discovered_record_becomes_a_cluster_with_the_token_provider(aws, moto_url):
    create_cluster(moto_url, "us-east-1", "c1", env="prod")
    record = EksFetcher([AwsMatcher(regions=("us-east-1",))], group="", sessions=aws).fetch().records[0]
    record = dataclasses.replace(record, spec={**record.spec, "ca_data": CA})
    cluster = cluster_from_record(record, sessions=aws)
    assert cluster.origin == "aws" and cluster.server == record.spec["endpoint"].rstrip("/")
    assert cluster.ca_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert isinstance(cluster.credentials, EksTokenProvider)
    assert cluster.credentials == cluster_from_record(record, sessions=aws).credentials  # value-equal


def test_two_discovery_instances_in_different_groups_share_a_store_and_leave_each_other_alone(aws, moto_url, tmp_path):
    from discovery.registry import ClusterRegistry
    from discovery.service import DiscoveryService

    create_cluster(moto_url, "us-east-1", "team-a-1", team="a")
    create_cluster(moto_url, "us-east-1", "team-b-1", team="b")
    create_cluster(moto_url, "us-east-1", "team-b-2", team="b")
    store = tmp_path / "state" / "clusters"

    def instance(group: str, team: str, registry: ClusterRegistry) -> DiscoveryService:
        return DiscoveryService(registry, store_dir=store, discovery_group=group, health=False, aws_sessions=aws,
                                aws_matchers=[AwsMatcher(regions=("us-east-1",), tags={"team": team})])

    async def main():
        served = ClusterRegistry()  # what a proxy reading this store serves
        a, b = instance("group-a", "a", served), instance("group-b", "b", ClusterRegistry())
        b_twin = instance("group-b", "b", ClusterRegistry())
        await a.run_discovery_once(a.fetchers[0])
        await b.run_discovery_once(b.fetchers[0])
        assert (await b_twin.run_discovery_once(b_twin.fetchers[0])).empty  # same group: converged
        await a.sync_local()
        assert {c.name: c.discovery_group for c in served.list()} == {
            "team-a-1": "group-a", "team-b-1": "group-b", "team-b-2": "group-b"}
        assert isinstance(served.get("team-b-1").credentials, EksTokenProvider)
        boto3.client("eks", region_name="us-east-1", endpoint_url=moto_url).delete_cluster(name="team-b-2")
        plan_a = await a.run_discovery_once(a.fetchers[0])
        assert plan_a.empty  # group a never deletes group b's clusters
        plan_b = await b.run_discovery_once(b.fetchers[0])
        assert plan_b.delete == ("team-b-2",)
        await a.sync_local()
        assert sorted(c.name for c in served.list()) == ["team-a-1", "team-b-1"]

    asyncio.run(main())


@pytest.mark.e2e
def test_kubegate_start_with_eks_discovery_enabled_fills_the_store(aws, moto_url, tmp_path):
    """The product wiring: config → ``kubegate start`` → EKS poller (worker 0) → store → ``clusters ls``.
    boto3 in the child process reaches moto through the standard ``AWS_ENDPOINT_URL`` setting."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path


    root = Path(__file__).resolve().parents[2]
    create_cluster(moto_url, "us-east-1", "found-by-kubegate", env="prod")
    create_cluster(moto_url, "us-east-1", "ignored", env="dev")
    port, metrics_port = free_port(), free_port()
    (tmp_path / "kubegate.yaml").write_text(f"""
version: v1
state_dir: ./state
proxy: {{listen: 127.0.0.1:{port}, public_addr: 127.0.0.1:{port}, limits: {{shutdown_grace: 2s}}}}
metrics: {{listen: 127.0.0.1:{metrics_port}}}
auth: {{roles_dir: {root / "examples" / "roles"}}}
discovery_service:
  enabled: true
  discovery_group: e2e
  poll_interval: 10s
  aws: [{{types: [eks], regions: [us-east-1], tags: {{env: prod}}}}]
""")
    env = {**os.environ, "PYTHONPATH": str(root), "AWS_ENDPOINT_URL": moto_url}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    run = lambda *a: subprocess.run([sys.executable, "-m", "kubegate", *a], cwd=tmp_path, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=60)
    assert run("ca", "init", "-c", "kubegate.yaml").returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "kubegate", "start", "-c", "kubegate.yaml"], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    record = tmp_path / "state" / "clusters" / "found-by-kubegate.json"
    try:
        deadline = time.monotonic() + 30
        while not record.exists():  # an external process's file: nothing to await but the file itself
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no EKS record appeared"
            time.sleep(0.1)
        listed = run("clusters", "ls", "-o", "json", "-c", "kubegate.yaml")
        rows = {r["name"]: r for r in json.loads(listed.stdout)["clusters"]}
        assert set(rows) == {"found-by-kubegate"}
        row = rows["found-by-kubegate"]
        assert row["origin"] == "aws" and row["discovery_group"] == "e2e"
        assert row["labels"]["kubegate.dev/discovery-group"] == "e2e" and row["labels"]["env"] == "prod"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, proc.stderr.read()

"""Golden tests: the role files in golden/roles (Teleport-style, v7 and v8) against the expected
decisions in golden/cases.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rbac import ImpersonationRequest, ResourceCatalog, decide, load_roles_dir, parse_request
from rbac.identity import Identity

GOLDEN = Path(__file__).parent / "golden"
SPEC = yaml.safe_load((GOLDEN / "cases.yaml").read_text())
ROLES = load_roles_dir(GOLDEN / "roles")
CATALOG = ResourceCatalog.builtin().merged(
    ResourceCatalog.from_discovery(
        [
            {
                "groupVersion": "example.com/v1",
                "resources": [{"name": "widgets", "namespaced": True, "kind": "Widget"}],
            }
        ]
    )
)


def test_golden_roles_load() -> None:
    assert ROLES.names() == ["crd-operator", "dev-access", "legacy", "viewer", "web-pods"]
    assert ROLES.get("dev-access").max_session_ttl == 8 * 3600
    assert ROLES.get("viewer").max_session_ttl == 12 * 3600
    assert ROLES.get("legacy").source_version == "v7"


@pytest.mark.parametrize(
    "case",
    SPEC["cases"],
    ids=[f"{c['who']}@{c['cluster']} {c['req']} as={c.get('as')}" for c in SPEC["cases"]],
)
def test_golden_decision(case: dict) -> None:
    who = SPEC["identities"][case["who"]]
    identity = Identity(
        case["who"], tuple(who["roles"]), {k: tuple(v) for k, v in who.get("traits", {}).items()}
    )
    method, target = case["req"].split(" ", 1)
    path, _, query = target.partition("?")
    info = parse_request(method, path, query, CATALOG)
    imp = ImpersonationRequest(user=case.get("as"), groups=tuple(case.get("as_groups", ())))
    d = decide(identity, ROLES, case["cluster"], SPEC["clusters"][case["cluster"]], info, imp)
    assert d.status == case["status"], d.message
    assert d.allowed is (case["status"] == 200)
    if "user" in case:
        assert d.user == case["user"]
    if "groups" in case:
        assert list(d.groups) == case["groups"]
    if "filtered" in case:
        assert (d.filter is not None) is case["filtered"]
    if "message" in case:
        assert d.message == case["message"]
    if "message_contains" in case:
        assert case["message_contains"] in d.message
    if not d.allowed:
        body = json.loads(d.body)
        assert body["kind"] == "Status" and body["code"] == d.status and body["message"] == d.message

"""Status bodies decode like the apiserver's."""

from __future__ import annotations

import json

from rbac.status import forbidden, not_found, status_body, too_many_requests


def test_status_body_shape() -> None:
    obj = json.loads(status_body(400, "BadRequest", "bad thing"))
    assert obj == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "bad thing",
        "reason": "BadRequest",
        "code": 400,
    }


def test_forbidden_and_not_found_carry_details() -> None:
    obj = json.loads(forbidden('pods "web" is forbidden: no', name="web", kind="pods"))
    assert obj["code"] == 403 and obj["reason"] == "Forbidden"
    assert obj["details"] == {"name": "web", "kind": "pods"}
    obj = json.loads(not_found('cluster "c9" not found'))
    assert obj["code"] == 404 and obj["reason"] == "NotFound" and "details" not in obj


def test_too_many_requests_retry_after() -> None:
    obj = json.loads(too_many_requests("slow down", 3))
    assert obj["details"] == {"retryAfterSeconds": 3} and obj["code"] == 429

"""Kubernetes ``Status`` error bodies (``kind: Status, apiVersion: v1``), as the apiserver writes them.

The proxy answers every error of its own with one of these, so kubectl and client libraries print the
message instead of a decoding error. ``status_body`` is the general form; the helpers cover the cases
kubegate produces (reasons and codes as in apimachinery's ``StatusReason``).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "REASONS",
    "bad_request",
    "forbidden",
    "gone",
    "internal_error",
    "method_not_allowed",
    "not_found",
    "service_unavailable",
    "status_body",
    "status_dict",
    "timeout",
    "too_many_requests",
    "unauthorized",
]

# The reason apimachinery uses for each code kubegate answers with.
REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    502: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_dict(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``Status`` object as a dict (``status: Failure`` for codes >= 400, else ``Success``)."""
    obj: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "message": message,
        "reason": reason,
    }
    if details:
        obj["details"] = details
    obj["code"] = code
    return obj


def status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    """A Kubernetes ``Status`` JSON body (UTF-8 bytes, compact, newline-terminated like the apiserver)."""
    return json.dumps(status_dict(code, reason, message, details), separators=(",", ":")).encode() + b"\n"


def _details(name: str | None, group: str | None, kind: str | None) -> dict[str, Any] | None:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    if kind:
        details["kind"] = kind
    return details or None


def forbidden(
    message: str, *, name: str | None = None, group: str | None = None, kind: str | None = None
) -> bytes:
    """403 Forbidden. ``kind`` is the resource plural (the apiserver puts the resource there)."""
    return status_body(403, "Forbidden", message, _details(name, group, kind))


def not_found(
    message: str, *, name: str | None = None, group: str | None = None, kind: str | None = None
) -> bytes:
    """404 NotFound."""
    return status_body(404, "NotFound", message, _details(name, group, kind))


def bad_request(message: str) -> bytes:
    """400 BadRequest."""
    return status_body(400, "BadRequest", message)


def unauthorized(message: str = "Unauthorized") -> bytes:
    """401 Unauthorized."""
    return status_body(401, "Unauthorized", message)


def method_not_allowed(message: str) -> bytes:
    """405 MethodNotAllowed."""
    return status_body(405, "MethodNotAllowed", message)


def gone(message: str) -> bytes:
    """410 Expired (what a watch with a too-old resourceVersion gets)."""
    return status_body(410, "Expired", message)


def too_many_requests(message: str, retry_after_seconds: int | None = None) -> bytes:
    """429 TooManyRequests, with ``details.retryAfterSeconds`` when given."""
    details = {"retryAfterSeconds": retry_after_seconds} if retry_after_seconds is not None else None
    return status_body(429, "TooManyRequests", message, details)


def internal_error(message: str) -> bytes:
    """500 InternalError."""
    return status_body(500, "InternalError", message)


def service_unavailable(message: str) -> bytes:
    """503 ServiceUnavailable (e.g. the upstream cluster cannot be reached)."""
    return status_body(503, "ServiceUnavailable", message)


def timeout(message: str) -> bytes:
    """504 Timeout."""
    return status_body(504, "Timeout", message)

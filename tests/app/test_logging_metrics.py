"""Structured logs never carry secrets; the metrics listener answers /metrics, /healthz, /readyz."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket

from kubegate import logging as kglog
from kubegate.metrics_server import MetricsServer, handle_request


def _log_line(fmt: str, msg: str, **extra) -> str:
    stream = io.StringIO()
    kglog.configure("debug", fmt, stream)
    try:
        logging.getLogger("kubegate.test").info(msg, extra=extra)
    finally:
        for handler in list(logging.getLogger().handlers):
            if getattr(handler, "_kubegate", False):
                logging.getLogger().removeHandler(handler)
    return stream.getvalue()


def test_json_log_is_one_object_per_line_with_extra_fields():
    out = _log_line("json", "request failed", request_id="abc123", code=502, cluster="prod")
    assert out.count("\n") == 1
    record = json.loads(out)
    assert record["msg"] == "request failed"
    assert record["level"] == "info"
    assert record["logger"] == "kubegate.test"
    assert record["request_id"] == "abc123" and record["code"] == 502 and record["cluster"] == "prod"
    assert record["ts"].endswith("Z")


def test_secrets_are_redacted_by_field_name_and_in_text():
    key = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIAbc\n-----END EC PRIVATE KEY-----"
    out = _log_line("json", "upstream said Authorization: Bearer sekrit-token-123 with " + key,
                    token="sekrit-token-123", password="hunter2", client_key=key,
                    headers={"authorization": "Bearer xyz", "accept": "application/json"},
                    token_refreshes=3)
    assert "sekrit" not in out and "hunter2" not in out and "MHcCAQEEIAbc" not in out and "xyz" not in out
    record = json.loads(out)
    assert record["token"] == "<redacted>"
    assert record["headers"] == {"authorization": "<redacted>", "accept": "application/json"}
    assert record["token_refreshes"] == 3  # a count about tokens is not a secret


def test_text_format_is_one_line_with_key_values():
    out = _log_line("text", "listening", port=3026, secret="x")
    assert out.count("\n") == 1
    assert "listening" in out and "port=3026" in out and 'secret="<redacted>"' in out


def test_exceptions_are_logged_on_one_line():
    stream = io.StringIO()
    kglog.configure("info", "json", stream)
    try:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("kubegate.test").exception("failed")
    finally:
        for handler in list(logging.getLogger().handlers):
            if getattr(handler, "_kubegate", False):
                logging.getLogger().removeHandler(handler)
    assert stream.getvalue().count("\n") == 1
    assert json.loads(stream.getvalue())["error"] == "RuntimeError: boom"


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_handle_request_routes():
    ready = lambda: (True, "")  # noqa: E731
    not_ready = lambda: (False, "workers not ready: [1]")  # noqa: E731
    render = lambda: (b"kubegate_up 1\n", "text/plain; version=0.0.4")  # noqa: E731
    assert _status(handle_request("GET", "/healthz", not_ready, render)) == 200
    assert _status(handle_request("GET", "/readyz", ready, render)) == 200
    response = handle_request("GET", "/readyz", not_ready, render)
    assert _status(response) == 503 and b"workers not ready: [1]" in response
    response = handle_request("GET", "/metrics?x=1", ready, render)
    assert _status(response) == 200 and response.endswith(b"kubegate_up 1\n")
    assert _status(handle_request("GET", "/nope", ready, render)) == 404
    assert _status(handle_request("POST", "/metrics", ready, render)) == 405
    assert handle_request("HEAD", "/healthz", ready, render).endswith(b"\r\n\r\n")


def _fetch(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_metrics_server_serves_prometheus_text_over_a_real_socket():
    from prometheus_client import Counter

    counter = Counter("kubegate_test_metrics_server_hits", "test counter")
    counter.inc(7)
    state = {"ready": False}

    async def scenario() -> list[bytes]:
        server = MetricsServer("127.0.0.1", 0, lambda: (state["ready"], "starting"))
        await server.start()
        try:
            results = []
            for path, flip in (("/readyz", True), ("/readyz", False), ("/metrics", False)):
                results.append(await asyncio.to_thread(
                    _fetch, server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()))
                if flip:
                    state["ready"] = True
            results.append(await asyncio.to_thread(_fetch, server.port, b"garbage\r\n\r\n"))
            return results
        finally:
            await server.close()

    not_ready, ready, metrics, garbage = asyncio.run(scenario())
    assert _status(not_ready) == 503 and b"starting" in not_ready
    assert _status(ready) == 200
    assert _status(metrics) == 200
    assert b"kubegate_test_metrics_server_hits_total 7.0" in metrics
    assert _status(garbage) == 400

"""Header rewriting (pure): what the upstream receives and what the client gets back."""

from __future__ import annotations

import pytest

from proxy.headers import (
    REQUEST_ID_HEADER,
    connection_tokens,
    rewrite_request_headers,
    rewrite_response_headers,
)


def rewrite(headers, **kw):
    args = dict(user="alice", groups=("dev", "system:authenticated"), client_ip="10.0.0.7", upstream_authority="api:6443")
    args.update(kw)
    return rewrite_request_headers(headers, **args)


def names(headers):
    return [k for k, _ in headers]


def values(headers, name):
    return [v for k, v in headers if k == name]


@pytest.mark.parametrize(
    "dropped",
    [
        (b"authorization", b"Bearer stolen"),
        (b"impersonate-user", b"root"),
        (b"impersonate-group", b"system:masters"),
        (b"impersonate-uid", b"0"),
        (b"impersonate-extra-scopes", b"all"),
        (b"impersonate_user", b"root"),
        (b"x-remote-user", b"admin"),
        (b"x-remote-group", b"system:masters"),
        (b"x-remote-extra-scopes", b"all"),
        (b"x_remote_user", b"admin"),
        (b"connection", b"keep-alive"),
        (b"keep-alive", b"timeout=5"),
        (b"te", b"trailers"),
        (b"trailer", b"x-foo"),
        (b"transfer-encoding", b"chunked"),
        (b"upgrade", b"websocket"),
        (b"proxy-authorization", b"Basic Zm9v"),
        (b"proxy-connection", b"keep-alive"),
        (REQUEST_ID_HEADER, b"forged"),
        (b"cookie", b"session=1"),
        (b"content-length", b"12"),
    ],
)
def test_client_credentials_impersonation_and_hop_by_hop_headers_never_reach_the_upstream(dropped):
    out = rewrite([dropped, (b"accept", b"application/json")])
    assert dropped not in out
    assert (b"accept", b"application/json") in out


def test_impersonation_comes_only_from_the_decision_one_header_per_group():
    out = rewrite([(b"impersonate-user", b"root"), (b"impersonate-group", b"system:masters")])
    assert values(out, b"impersonate-user") == [b"alice"]
    assert values(out, b"impersonate-group") == [b"dev", b"system:authenticated"]


def test_names_listed_in_connection_are_hop_by_hop():
    out = rewrite([(b"connection", b"close, X-Secret-Hop"), (b"x-secret-hop", b"1"), (b"x-kept", b"2")])
    assert b"x-secret-hop" not in names(out)
    assert (b"x-kept", b"2") in out


@pytest.mark.parametrize("value", [b"keep-alive", b"Keep-Alive", b"close", b"keep-alive, x-secret-hop"])
def test_connection_is_dropped_and_only_the_fields_it_names_go_with_it(value):
    fields = [(b"connection", value), (b"x-secret-hop", b"1"), (b"keep-alive", b"timeout=5"), (b"x-kept", b"2")]
    named = b"x-secret-hop" in value
    out = rewrite(fields)
    assert (b"x-secret-hop" in names(out)) is not named and (b"x-kept", b"2") in out
    assert b"connection" not in names(out) and b"keep-alive" not in names(out)
    back = rewrite_response_headers(fields, request_id="r1")
    assert (b"x-secret-hop" in names(back)) is not named and (b"x-kept", b"2") in back
    assert b"connection" not in names(back) and b"keep-alive" not in names(back)


def test_host_is_the_upstream_authority_and_first():
    out = rewrite([(b"host", b"kubegate.example.com:3026"), (b"accept", b"*/*")])
    assert out[0] == (b"host", b"api:6443")
    assert values(out, b"host") == [b"api:6443"]


def test_x_forwarded_for_appends_the_client_address():
    assert values(rewrite([]), b"x-forwarded-for") == [b"10.0.0.7"]
    out = rewrite([(b"x-forwarded-for", b"1.2.3.4")])
    assert values(out, b"x-forwarded-for") == [b"1.2.3.4, 10.0.0.7"]


def test_upstream_bearer_token_replaces_the_clients_authorization():
    out = rewrite([(b"authorization", b"Bearer client")], bearer_token="kubegate-token")
    assert values(out, b"authorization") == [b"Bearer kubegate-token"]


def test_upgrade_requests_keep_connection_upgrade_and_the_protocol():
    headers = [
        (b"connection", b"Upgrade"),
        (b"upgrade", b"SPDY/3.1"),
        (b"x-stream-protocol-version", b"v4.channel.k8s.io"),
        (b"impersonate-user", b"root"),
    ]
    out = rewrite(headers, upgrade=True)
    assert values(out, b"connection") == [b"Upgrade"]
    assert values(out, b"upgrade") == [b"SPDY/3.1"]
    assert values(out, b"x-stream-protocol-version") == [b"v4.channel.k8s.io"]
    assert values(out, b"impersonate-user") == [b"alice"]


def test_upgrade_without_upgrade_header_is_a_bug_of_the_caller():
    with pytest.raises(ValueError):
        rewrite([(b"connection", b"Upgrade")], upgrade=True)


def test_accept_is_replaced_when_the_response_is_filtered():
    out = rewrite([(b"accept", b"application/vnd.kubernetes.protobuf")], accept=b"application/json")
    assert values(out, b"accept") == [b"application/json"]


def test_http2_upstream_gets_no_host_header():
    assert b"host" not in names(rewrite([(b"host", b"x")], http2=True))


def test_response_drops_hop_by_hop_and_adds_the_request_id():
    up = [
        (b"content-type", b"application/json"),
        (b"connection", b"keep-alive"),
        (b"transfer-encoding", b"chunked"),
        (b"keep-alive", b"timeout=5"),
        (REQUEST_ID_HEADER, b"from-upstream"),
        (b"audit-id", b"123"),
    ]
    out = rewrite_response_headers(up, request_id="r-1")
    assert out == [(b"content-type", b"application/json"), (b"audit-id", b"123"), (REQUEST_ID_HEADER, b"r-1")]


def test_response_of_an_upgrade_keeps_connection_and_upgrade():
    up = [(b"connection", b"Upgrade"), (b"upgrade", b"websocket"), (b"sec-websocket-accept", b"abc")]
    out = rewrite_response_headers(up, request_id="r", upgrade=True)
    assert out[:3] == up


def test_rewritten_body_loses_its_content_length():
    out = rewrite_response_headers([(b"content-length", b"10")], request_id="r", body_rewritten=True)
    assert b"content-length" not in names(out)


def test_connection_tokens_are_lower_case_and_trimmed():
    assert connection_tokens([(b"connection", b" Close ,X-Foo,, ")]) == {b"close", b"x-foo"}

"""Header rewriting between the client and the upstream API server (pure functions, no I/O).

Request side (client → upstream):
- the client's ``Authorization``, ``Cookie``, every ``Impersonate-*`` header and every ``X-Remote-*``
  header (the apiserver's request-header authentication: ``X-Remote-User`` / ``-Group`` / ``-Extra-*``
  would name the user outright to an upstream that trusts kubegate's certificate as a front proxy) are
  dropped, in any case and with ``_`` for ``-`` (``Impersonate_User``: some servers and proxies in front
  of an apiserver fold ``_`` into ``-``): kubegate speaks to the cluster with its own credentials and
  sets ``Impersonate-User`` / ``Impersonate-Group`` (one header per group) from the authorization
  decision — replaced, never appended. (Both client codecs lower-case names; request trailers are never
  forwarded: neither codec passes them on.)
- ``Content-Length`` is dropped: the upstream connection frames the body itself;
- hop-by-hop headers (``Connection`` and the names it lists, ``Keep-Alive``, ``TE``, ``Trailer``,
  ``Transfer-Encoding``, ``Upgrade`` unless the request is an upgrade, ``Proxy-*``) are dropped;
- ``X-Forwarded-For`` gets the client address appended; ``Accept`` is replaced when the response will be
  filtered (JSON only);
- ``Host`` is set to the upstream authority (HTTP/1.1) — on HTTP/2 the caller passes it as
  ``:authority`` instead and ``host`` is dropped.

Response side (upstream → client): hop-by-hop headers dropped (an upgrade keeps ``Connection`` /
``Upgrade``), ``content-length`` dropped when the body will be rewritten, the request id added.
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.protocol.events import Headers

REQUEST_ID_HEADER = b"x-kubegate-request-id"

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"http2-settings",
    }
)
# Dropped from every request whatever the decision says: kubegate sets its own.
_CLIENT_CREDENTIALS = frozenset({b"authorization", b"cookie"})
# Connection values that name no other field (keep-alive and close are dropped as hop-by-hop anyway).
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})
_IDENTITY_PREFIXES = (b"impersonate-", b"x-remote-")


def is_client_identity_header(name: bytes) -> bool:
    """Whether a (lower-case) header name claims an identity upstream: never forwarded from a client."""
    if b"_" in name:
        name = name.replace(b"_", b"-")
    return name.startswith(_IDENTITY_PREFIXES) or name in _CLIENT_CREDENTIALS


def connection_tokens(headers: Headers) -> frozenset[bytes]:
    """Header names listed in ``Connection`` (lower case): hop-by-hop by declaration."""
    names: set[bytes] = set()
    for key, value in headers:
        if key == b"connection":
            for token in value.split(b","):
                token = token.strip().lower()
                if token:
                    names.add(token)
    return frozenset(names)


def _is_hop_by_hop(name: bytes) -> bool:
    return name in HOP_BY_HOP or name.startswith(b"proxy-")


# What each header name means to the rewrite, decided once per name: header names repeat from a small
# set, so a request or response costs one dict lookup per header instead of several checks.
_KEEP, _DROP, _XFF, _UPGRADE, _ACCEPT, _LENGTH = 0, 1, 2, 3, 4, 5
_NAMES_CACHED = 4096  # distinct names remembered per side (more are classified each time)


def _request_action(name: bytes) -> int:
    if is_client_identity_header(name) or name in (b"host", REQUEST_ID_HEADER, b"content-length"):
        return _DROP
    if name == b"x-forwarded-for":
        return _XFF
    if name == b"upgrade":
        return _UPGRADE
    if name == b"accept":
        return _ACCEPT
    return _DROP if _is_hop_by_hop(name) else _KEEP


def _response_action(name: bytes) -> int:
    if name in (b"connection", b"upgrade"):
        return _UPGRADE  # kept on an upgrade answer, hop-by-hop otherwise
    if name == b"content-length":
        return _LENGTH  # dropped when the body is rewritten
    return _DROP if name == REQUEST_ID_HEADER or _is_hop_by_hop(name) else _KEEP


_request_actions: dict[bytes, int] = {}
_response_actions: dict[bytes, int] = {}


def _classify(cache: dict[bytes, int], decide: Callable[[bytes], int], name: bytes) -> int:
    action = decide(name)
    if len(cache) < _NAMES_CACHED:
        cache[name] = action
    return action


def rewrite_request_headers(
    headers: Headers,
    *,
    user: str,
    groups: list[str] | tuple[str, ...],
    client_ip: str,
    upstream_authority: str,
    bearer_token: str | None = None,
    upgrade: bool = False,
    http2: bool = False,
    accept: bytes | None = None,
) -> Headers:
    """The headers to send upstream for one request (see the module docstring)."""
    out: Headers = []
    forwarded_for: bytes | None = None
    upgrade_value: bytes | None = None
    declared = False
    actions = _request_actions
    for key, value in headers:
        action = actions.get(key)
        if action is None:
            action = _classify(actions, _request_action, key)
        if action == _KEEP:
            out.append((key, value))
        elif action == _DROP:
            if key == b"connection" and value.lower() not in _PLAIN_CONNECTION:
                declared = True  # names other fields as hop-by-hop
        elif action == _XFF:
            forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
        elif action == _UPGRADE:
            upgrade_value = value
        elif accept is None:  # _ACCEPT: the client's, unless the decision replaces it
            out.append((key, value))
    if declared and not upgrade:  # names listed in Connection are hop-by-hop too
        tokens = connection_tokens(headers)
        out = [(key, value) for key, value in out if key not in tokens]
    if not http2:
        out.insert(0, (b"host", upstream_authority.encode("latin-1")))
    if upgrade:
        if upgrade_value is None:
            raise ValueError("an upgrade request without an Upgrade header")
        out.append((b"connection", b"Upgrade"))
        out.append((b"upgrade", upgrade_value))
    if accept is not None:
        out.append((b"accept", accept))
    if bearer_token:
        out.append((b"authorization", b"Bearer " + bearer_token.encode("latin-1")))
    out.append((b"impersonate-user", user.encode("utf-8")))
    for group in groups:
        out.append((b"impersonate-group", group.encode("utf-8")))
    client = client_ip.encode("latin-1")
    out.append((b"x-forwarded-for", client if forwarded_for is None else forwarded_for + b", " + client))
    return out


def rewrite_response_headers(
    headers: Headers,
    *,
    request_id: str,
    upgrade: bool = False,
    body_rewritten: bool = False,
) -> Headers:
    """The headers to send back to the client for one upstream response."""
    out: Headers = []
    declared = False
    actions = _response_actions
    for key, value in headers:
        action = actions.get(key)
        if action is None:
            action = _classify(actions, _response_action, key)
        if action == _KEEP:
            out.append((key, value))
        elif action == _UPGRADE:
            if upgrade:
                out.append((key, value))
            elif key == b"connection" and value.lower() not in _PLAIN_CONNECTION:
                declared = True  # names other fields as hop-by-hop
        elif action == _LENGTH:
            if not body_rewritten:
                out.append((key, value))
    if declared:
        tokens = connection_tokens(headers)
        out = [(key, value) for key, value in out if key not in tokens]
    out.append((REQUEST_ID_HEADER, request_id.encode("ascii")))
    return out


def content_length(headers: Headers) -> int | None:
    """The declared ``content-length`` of a header list, or None (absent or unparsable)."""
    for key, value in headers:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

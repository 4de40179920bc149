"""The seams between the sandbox's parts, so each is built and tested on its own.

    sandbox.server   (I/O: TLS, HTTP/1.1 + h2 via proxy.protocol codecs, authentication, impersonation)
        │ ApiRequest ─▶ sandbox.api.Api.handle() ─▶ ApiResponse           (resources, verbs, discovery)
        │                    └─ Authorizer (sandbox.authz: RBAC over the store's rbac objects)
        └ upgrade ─▶ sandbox.api.Api.resolve_stream() ─▶ StreamTarget ─▶ sandbox.streams.serve_stream()
                                                                   (exec / attach / portforward over
                                                                    SPDY/3.1 or WebSocket on a ByteStream)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class UserInfo:
    """The effective user of a request (after impersonation), as authorization sees it."""

    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestAttributes:
    """What RBAC authorizes: Kubernetes' authorizer.Attributes."""

    user: UserInfo
    verb: str  # get list watch create update patch delete deletecollection impersonate ...
    resource_request: bool
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""  # for non-resource requests


class Authorizer(Protocol):
    def authorize(self, attrs: RequestAttributes) -> tuple[bool, str]:
        """(allowed, reason). Reason is shown in Forbidden messages / review status."""
        ...


@dataclass(slots=True)
class ApiRequest:
    method: str  # upper case
    path: str  # decoded path, no query
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    user: UserInfo
    raw_target: str = ""


@dataclass(slots=True)
class ApiResponse:
    status: int
    headers: list[tuple[str, str]]  # e.g. [("content-type", "application/json")]
    body: bytes = b""
    # When set, the response is streamed: every chunk yielded is written and flushed at once (watch,
    # logs -f). The server closes the iterator (aclose) when the client goes away.
    stream: AsyncIterator[bytes] | None = None


@dataclass(slots=True)
class StreamTarget:
    """An authorized exec / attach / portforward request on one pod."""

    kind: str  # "exec" | "attach" | "portforward"
    namespace: str
    pod: dict[str, Any]  # the pod object as stored
    query: dict[str, list[str]]  # command=..., container=..., stdin=1, stdout=1, stderr=1, tty=1, ports=...
    user: UserInfo


class ByteStream(Protocol):
    """A raw, upgraded connection (after the HTTP/1.1 request head)."""

    async def read(self) -> bytes:
        """Next bytes from the peer; b"" at EOF."""
        ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None:
        """Wait while the write buffer is above its high-water mark."""
        ...

    def write_eof(self) -> None: ...

    def close(self) -> None: ...

    @property
    def closed(self) -> bool: ...

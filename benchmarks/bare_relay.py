"""The floor for a Python proxy of this job: a bare HTTP/1.1 relay on uvloop and httptools, no policy.

    python -m benchmarks.bare_relay PORT SERVER_CERT SERVER_KEY CLIENT_CA PREFIX UPSTREAM_PORT UPSTREAM_CA \
        UPSTREAM_CERT UPSTREAM_KEY

What ``benchmarks.instructions`` counts beside kubegate and nginx (the issue that set the CPU targets
measured one like it): mTLS in (a client certificate from ``CLIENT_CA`` required), the certificate's CN
and O sent as ``Impersonate-User`` / ``Impersonate-Group`` (client-sent ``Impersonate-*``,
``Authorization`` and ``Connection`` fields dropped), ``PREFIX`` cut from the target, one keep-alive TLS
connection to the upstream per client connection (with the upstream's client certificate), and the
answer relayed as the upstream's bytes, its end found by httptools. One request at a time per
connection. No roles, no routes, no audit, no metrics, no locks, no limits, no error answers: a
reference program for the benchmark only, never a part of kubegate. Prints ``ready`` once listening.
"""

from __future__ import annotations

import asyncio
import ssl
import sys

import httptools

_DROPPED = frozenset({b"authorization", b"impersonate-user", b"impersonate-group", b"impersonate-uid",
                      b"connection"})


class UpstreamSide(asyncio.Protocol):
    """The upstream connection of one client connection: answers go back as they arrive."""

    def __init__(self, client: ClientSide) -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        client = self.client.transport
        if client is not None:
            client.write(data)
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.upstream = None
        if self.client.transport is not None:
            self.client.transport.close()


class ClientSide(asyncio.Protocol):
    """One client connection: each request head is rewritten and sent upstream."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.upstream: UpstreamSide | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.identity = b""
        self.url = b""
        self.fields: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        subject = dict(rdn[0] for rdn in transport.get_extra_info("peercert")["subject"])
        self.identity = b"Impersonate-User: %s\r\nImpersonate-Group: %s\r\n\r\n" % (
            subject["commonName"].encode(), subject.get("organizationName", "").encode())

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.fields = []

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in _DROPPED:
            self.fields.append(b"%s: %s\r\n" % (name, value))

    def on_headers_complete(self) -> None:
        url = self.url
        prefix = self.relay.prefix
        if url.startswith(prefix):
            url = url[len(prefix):]
        head = b"%s %s HTTP/1.1\r\n%s%s" % (self.parser.get_method(), url, b"".join(self.fields), self.identity)
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.write(head)
        else:
            asyncio.get_running_loop().create_task(self._connect(head))

    async def _connect(self, head: bytes) -> None:
        relay = self.relay
        _, upstream = await asyncio.get_running_loop().create_connection(
            lambda: UpstreamSide(self), "127.0.0.1", relay.upstream_port, ssl=relay.upstream_tls,
            server_hostname="127.0.0.1")
        self.upstream = upstream
        assert upstream.transport is not None
        upstream.transport.write(head)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()


class Relay:
    def __init__(self, prefix: bytes, upstream_port: int, upstream_tls: ssl.SSLContext) -> None:
        self.prefix = prefix
        self.upstream_port = upstream_port
        self.upstream_tls = upstream_tls


async def serve(argv: list[str]) -> None:
    port, server_cert, server_key, client_ca, prefix, upstream_port, upstream_ca, upstream_cert, upstream_key = argv
    listener = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    listener.load_cert_chain(server_cert, server_key)
    listener.load_verify_locations(client_ca)
    listener.verify_mode = ssl.CERT_REQUIRED
    listener.set_alpn_protocols(["http/1.1"])
    upstream = ssl.create_default_context(cafile=upstream_ca)
    upstream.load_cert_chain(upstream_cert, upstream_key)
    upstream.check_hostname = False
    upstream.set_alpn_protocols(["http/1.1"])
    relay = Relay(prefix.encode(), int(upstream_port), upstream)
    server = await asyncio.get_running_loop().create_server(
        lambda: ClientSide(relay), "127.0.0.1", int(port), ssl=listener, backlog=4096)
    print("ready", flush=True)
    await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    import uvloop

    uvloop.run(serve(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()

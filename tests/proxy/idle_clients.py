"""Many idle connections to the proxy, held by their own process (the proxy under test runs in the
pytest process, so these sockets are not counted as the proxy's file descriptors).

    python idle_clients.py --port P --ca CA --cert CERT --key KEY --tls N --raw M

Opens ``N`` mutual-TLS connections that then send nothing (TLS 1.2 session resumption after the first,
so the handshakes are cheaper for both sides; from 4 threads) and ``M`` TCP connections that never start a handshake.
Prints one JSON line ``{"tls": opened, "raw": opened, "seconds": ...}`` once all are open, then holds
them until a line arrives on stdin (or stdin closes), closes them all and exits.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import ssl
import sys
import time
from concurrent.futures import ThreadPoolExecutor

THREADS = 4


RETRIES: list[str] = []  # why a handshake had to be tried again (list.append is atomic across threads)


def open_tls(ctx: ssl.SSLContext, port: int, session: ssl.SSLSession | None) -> ssl.SSLSocket:
    """A TLS connection; tried again (up to 5 times) when the proxy ends the handshake: on a loaded
    machine a handshake queued behind thousands may outlast the proxy's handshake timeout."""
    for attempt in range(5):
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        try:
            sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session)
            break
        except (OSError, ssl.SSLError) as exc:
            raw.close()
            if attempt == 4:
                raise
            RETRIES.append(type(exc).__name__)
    if session is None:
        # TLS tickets may arrive after the handshake: one read (that times out) takes them in.
        sock.settimeout(0.2)
        try:
            sock.recv(1)
        except (TimeoutError, ssl.SSLWantReadError):
            pass
    return sock


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--ca", "--cert", "--key"):
        parser.add_argument(name, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls", type=int, default=0)
    parser.add_argument("--raw", type=int, default=0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx = ssl.create_default_context(cafile=args.ca)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # resumption without a key exchange: cheap for both sides
    started = time.monotonic()
    first = open_tls(ctx, args.port, None)  # a full handshake; the others resume its session
    session = first.session
    per_thread = [args.tls // THREADS + (1 if i < args.tls % THREADS else 0) for i in range(THREADS)]
    per_thread[0] -= 1
    with ThreadPoolExecutor(THREADS) as pool:  # handshakes release the GIL: both CPUs work
        batches = list(pool.map(lambda n: [open_tls(ctx, args.port, session) for _ in range(n)], per_thread))
    held: list[socket.socket] = [first] + [sock for batch in batches for sock in batch]
    tls = len(held)
    for _ in range(args.raw):
        held.append(socket.create_connection(("127.0.0.1", args.port), timeout=30))
    resumed = tls > 1 and held[tls - 1].session_reused  # type: ignore[attr-defined]
    seconds = round(time.monotonic() - started, 3)
    report = {"tls": tls, "raw": len(held) - tls, "seconds": seconds, "resumed": resumed, "retries": len(RETRIES)}
    print(json.dumps(report), flush=True)
    sys.stdin.readline()
    for sock in held:
        sock.close()


if __name__ == "__main__":
    main()

"""``kubegate sandbox``: run the sandbox Kubernetes API server in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

WARNING = """\
!!! WARNING: --unsafe-listen-any-address: the sandbox listens on {host}, reachable from other machines.
!!! Anyone holding a sandbox client certificate or token can run `kubectl exec`, which starts REAL
!!! PROCESSES ON THIS MACHINE as the user running kubegate. Use only on an isolated, trusted network."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sandbox",
        help="run the sandbox Kubernetes API server (for demos and tests)",
        description=(
            "Run the sandbox cluster: a small in-memory Kubernetes API server that kubectl and the kubernetes "
            "Python client use as a real cluster (HTTPS with its own CA, ALPN h2/http1.1, client certificates "
            "and static tokens, impersonation, RBAC, watch, logs, exec/attach/port-forward). It writes an "
            "admin kubeconfig (user sandbox-admin, group system:masters) into the state directory and prints "
            "its path, then serves until SIGINT/SIGTERM. It listens on 127.0.0.1 only (see --unsafe-listen-any-address): `kubectl exec` runs "
            "real local processes. Bearer tokens are read from --token-auth-file (default <state>/tokens.csv) "
            '(token,user,uid,"group1,group2").'
        ),
    )
    parser.add_argument(
        "--port", type=int, default=0, metavar="N", help="port to listen on (default: a free port)"
    )
    parser.add_argument(
        "--state",
        metavar="DIR",
        default="./sandbox-state",
        help="state directory: CA and keys (0600), admin kubeconfig, tokens.csv (default: ./sandbox-state)",
    )
    parser.add_argument(
        "--seed",
        action="append",
        default=[],
        metavar="FILE",
        help="load Kubernetes objects from this YAML file (multi-document, kind: List); repeatable",
    )
    parser.add_argument(
        "--token-auth-file",
        metavar="FILE",
        help='static bearer tokens, CSV lines token,user,uid,"group1,group2" (default: <state>/tokens.csv)',
    )
    parser.add_argument(
        "--no-default-seed", action="store_true", help="start empty (no default namespaces/pods)"
    )
    parser.add_argument(
        "--unsafe-listen-any-address",
        metavar="HOST",
        nargs="?",
        const="0.0.0.0",
        default=None,
        help=(
            "DANGEROUS: listen on HOST (default 0.0.0.0) instead of 127.0.0.1. exec runs real local processes, "
            "so anyone able to authenticate gets a shell on this machine."
        ),
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvloop

    from sandbox.server import build_sandbox, write_admin_kubeconfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = "127.0.0.1"
    if args.unsafe_listen_any_address:
        host = args.unsafe_listen_any_address
        print(WARNING.format(host=host), file=sys.stderr, flush=True)
    state = Path(args.state).resolve()
    try:
        parts = build_sandbox(
            state,
            host=host,
            port=args.port,
            seed=not args.no_default_seed,
            seed_files=args.seed,
            token_file=args.token_auth_file,
        )
    except (OSError, ValueError) as exc:
        print(f"kubegate sandbox: {exc}", file=sys.stderr)
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await parts.server.start()
        kubeconfig = write_admin_kubeconfig(parts)
        print(f"sandbox cluster listening on {parts.server.url}", flush=True)
        print(f"admin kubeconfig: {kubeconfig}", flush=True)
        print(f"try: kubectl --kubeconfig {kubeconfig} get pods -A", flush=True)
        await stop.wait()
        print("stopping …", flush=True)
        await parts.server.stop(grace=5.0)

    try:
        uvloop.run(main())
    except OSError as exc:
        print(f"kubegate sandbox: cannot listen on {host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0

"""``kubegate bot``: machine identities (``bot start``) and their exec-credential plugin (``bot credentials``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

from certs.access import visible_clusters
from certs.bot import BotError, BotFiles, BotResult, bot_credentials, bot_user, run_bot
from certs.locks import format_time
from kubegate.commands.ca import (
    CommandError,
    add_config_argument,
    duration_argument,
    load_cfg,
    load_roles,
    open_ca,
    parse_traits,
    report_errors,
    roles_argument,
)
from kubegate.commands.kubeconfig import configured_clusters
from kubegate.commands.users import checked_ttl
from rbac.identity import Identity

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bot",
        help="machine identities: keep a short-lived certificate and kubeconfig fresh in a directory",
        description=(
            "A bot is a machine identity (certificate CN bot-<name>, kind bot) whose short-lived "
            "certificate `bot start` keeps renewed in a directory, with kubeconfigs that always use the "
            "newest one. Lock a bot with `kubegate users lock bot-<name>`."
        ),
    )
    sub = parser.add_subparsers(dest="bot_command", metavar="SUBCOMMAND")
    sub.required = True

    start = sub.add_parser(
        "start",
        help="issue and keep renewing a bot certificate in --dest",
        description=(
            "Keep DIR fresh: identity.pem (certificate + key, what the kubeconfigs use), tls.crt, tls.key, "
            "ca.crt, kubeconfig (client certificate files) and kubeconfig-exec (exec plugin calling "
            "`kubegate bot credentials --dest DIR`), every file replaced atomically with mode 0600. A "
            "new certificate is issued --renew after the last one (and at once if the one in DIR is "
            "missing, expired, from another CA or for other roles); a restart keeps a certificate that "
            "is not due. The kubeconfigs list the clusters the bot's roles can see, re-evaluated at each "
            "renewal. Runs until SIGINT/SIGTERM, or one step with --once."
        ),
    )
    add_config_argument(start)
    start.add_argument(
        "--proxy",
        metavar="HOST:PORT",
        help="join a remote kubegate with --token and --ca-pin (from `kubegate bots add`) and renew over its "
        "auth endpoint: no CA key on this machine. Without --proxy the bot issues its own certificates "
        "with the local CA (--name, --roles; operator mode)",
    )
    start.add_argument("--token", help="one-time join token (from `kubegate bots add`), or a file holding it "
                       "(keeps it out of the process list), with --proxy")
    start.add_argument("--ca-pin", metavar="sha256:HEX", help="the kubegate CA pin, with --proxy")
    start.add_argument("--name", help="bot name (certificate CN becomes bot-<name>); local CA mode")
    start.add_argument(
        "--roles", type=roles_argument, metavar="R1,R2", help="comma-separated kubegate roles; local CA mode"
    )
    start.add_argument(
        "--dest",
        metavar="DIR",
        help="output directory (default: <state_dir>/bots/<name>); created with mode 0700",
    )
    start.add_argument(
        "--ttl",
        type=duration_argument,
        default=timedelta(hours=1),
        metavar="DURATION",
        help="certificate lifetime (default 1h), capped by the roles' max_session_ttl",
    )
    start.add_argument(
        "--renew",
        type=duration_argument,
        default=timedelta(minutes=20),
        metavar="DURATION",
        help="renew this long after issuance (default 20m); must be shorter than --ttl",
    )
    start.add_argument(
        "--traits", action="append", metavar="NAME=V1,V2", help="a trait for role templates; repeatable"
    )
    start.add_argument(
        "--proxy-addr",
        metavar="HOST:PORT",
        help="proxy address for the kubeconfigs (default: proxy.public_addr)",
    )
    start.add_argument(
        "--once", action="store_true", help="make DIR fresh once and exit (e.g. from cron or CI)"
    )
    start.set_defaults(func=report_errors(run_start))

    credentials = sub.add_parser(
        "credentials",
        help="print an ExecCredential for the bot certificate in --dest (kubectl exec plugin)",
        description=(
            "Print the ExecCredential (apiVersion client.authentication.k8s.io/v1) holding the certificate "
            "and key currently in DIR and their expiry, as kubectl's exec plugin protocol wants. Exits 1 "
            "with a message when DIR has no certificate or it has expired. Used by DIR/kubeconfig-exec."
        ),
    )
    add_config_argument(credentials)
    credentials.add_argument(
        "--dest", required=True, metavar="DIR", help="the bot's directory (as given to bot start)"
    )
    credentials.set_defaults(func=report_errors(run_credentials))


def run_start(args: argparse.Namespace) -> int:
    if args.proxy:
        return run_remote(args)
    if not args.name or not args.roles:
        raise CommandError("give --proxy with --token and --ca-pin (join a kubegate), or --name and --roles "
                           "(issue with the local CA)")
    cfg = load_cfg(args)
    ca = open_ca(cfg)
    ttl = checked_ttl(cfg, args.roles, args.ttl)
    if args.renew >= ttl:
        raise CommandError(f"--renew ({args.renew}) must be shorter than the certificate ttl ({ttl})")
    dest = Path(args.dest) if args.dest else Path(cfg.bots_dir) / args.name
    traits = parse_traits(args.traits)

    def clusters_for(identity: Identity) -> list[str]:
        # Re-read roles and cluster sources at every renewal: edits apply without restarting the bot.
        clusters, problems = configured_clusters(cfg)
        for problem in problems:
            log.warning("%s", problem)
        return visible_clusters(identity, load_roles(cfg), clusters)

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    report = _reporter(bot_user(args.name))

    try:
        run_bot(
            args.name,
            args.roles,
            dest,
            ttl,
            args.renew,
            ca,
            clusters_for,
            server_url=args.proxy_addr or cfg.proxy.public_address,
            traits=traits,
            once=args.once,
            wait=stop.wait,
            on_result=report,
        )
    except (BotError, OSError) as exc:
        raise CommandError(f"bot {args.name}: {exc}") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    files = BotFiles(dest)
    if args.once:
        print(f"kubeconfig: {files.kubeconfig}  (exec-plugin variant: {files.kubeconfig_exec})")
    return 0


def _reporter(user: str) -> Callable[[BotResult], None]:
    def report(result: BotResult) -> None:
        state = f"issued ({result.reason})" if result.renewed else "kept"
        print(
            f"bot {user}: certificate {state}, serial {result.serial}, expires "
            f"{format_time(result.not_after)}, next renewal {format_time_unix(result.next_due)}; "
            f"contexts: {', '.join(result.clusters) or '(none)'}",
            flush=True,
        )

    return report


def run_remote(args: argparse.Namespace) -> int:
    from kubegate.client.bot import run_remote_bot

    if not args.dest:
        raise CommandError("--dest DIR is needed with --proxy")
    token = args.token
    if token and os.path.isfile(token):
        with open(token) as handle:
            token = handle.read().strip()
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        run_remote_bot(args.proxy, args.dest, token=token, ca_pin=args.ca_pin, wait=stop.wait,
                       once=args.once, on_result=_reporter(f"in {args.dest}"))
    except (BotError, OSError) as exc:
        raise CommandError(f"bot: {exc}") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if args.once:
        files = BotFiles(Path(args.dest))
        print(f"kubeconfig: {files.kubeconfig}  (exec-plugin variant: {files.kubeconfig_exec})")
    return 0


def format_time_unix(seconds: float) -> str:
    return format_time(datetime.fromtimestamp(seconds, tz=UTC))


def run_credentials(args: argparse.Namespace) -> int:
    try:
        credential = bot_credentials(args.dest)
    except BotError as exc:
        raise CommandError(str(exc)) from None
    sys.stdout.write(json.dumps(credential) + "\n")
    return 0

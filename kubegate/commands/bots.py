"""``kubegate bots add | ls | rm``: register machine identities that join over the auth endpoint.

``bots add NAME --roles R`` stores the bot and prints a one-time join token (``auth.join_token_ttl``,
single use) and the CA pin; on the bot's machine ``kubegate bot start --proxy HOST:PORT --token T
--ca-pin sha256:… --dest DIR`` joins and keeps renewing — no CA key there. ``bots rm NAME`` removes the
bot: the proxy refuses its next renewal (and its unused tokens). Needs the state directory, not the CA key.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import Any

from certs.access import unknown_roles
from certs.bot import bot_user
from certs.ca import load_certificate_file
from certs.issuance import ca_pin
from certs.paths import StatePaths
from certs.store import BotRecord, StoreError
from kubegate.commands.ca import (
    CommandError,
    add_config_argument,
    duration_argument,
    load_cfg,
    load_roles,
    parse_traits,
    report_errors,
    roles_argument,
)

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bots", help="machine identities that join with a one-time token",
                                   description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    sub = parser.add_subparsers(dest="bots_command", metavar="SUBCOMMAND")
    sub.required = True
    add = sub.add_parser("add", help="register a bot; print its one-time join token and the CA pin")
    add_config_argument(add)
    add.add_argument("name", help="bot name (its certificate CN becomes bot-<name>)")
    add.add_argument("--roles", required=True, type=roles_argument, metavar="R1,R2", help="kubegate roles")
    add.add_argument("--traits", action="append", metavar="NAME=V1,V2", help="a trait; repeatable")
    add.add_argument("--token-ttl", type=duration_argument, metavar="DURATION",
                     help="how long the join token stays valid (default: auth.join_token_ttl)")
    add.add_argument("--format", choices=("text", "json"), default="text")
    add.set_defaults(func=report_errors(run_add))
    ls = sub.add_parser("ls", help="list bots")
    add_config_argument(ls)
    ls.add_argument("--format", choices=("text", "json"), default="text")
    ls.set_defaults(func=report_errors(run_ls))
    rm = sub.add_parser("rm", help="remove a bot: its renewals are refused from now on")
    add_config_argument(rm)
    rm.add_argument("name")
    rm.set_defaults(func=report_errors(run_rm))


def _auth_store(cfg: Any) -> Any:
    """``<state_dir>/auth``, or the shared backend's store with ``backend.type: etcd`` (kubegate.app)."""
    from kubegate.app import auth_store

    return auth_store(cfg)


def run_add(args: argparse.Namespace) -> int:
    cfg = load_cfg(args)
    missing = unknown_roles(args.roles, load_roles(cfg))
    if missing:
        raise CommandError(f"unknown role(s): {', '.join(missing)}")
    store = _auth_store(cfg)
    now = time.time()
    ttl = args.token_ttl.total_seconds() if args.token_ttl else cfg.auth.join_token_ttl
    traits = {k: tuple(v) for k, v in parse_traits(args.traits).items()}
    try:
        store.put_bot(BotRecord(args.name, tuple(args.roles), traits, now))
        secret, token = store.add_join_token(args.name, ttl, now)
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    pin = ca_pin(load_certificate_file(StatePaths.of(cfg.state_dir).ca_cert))
    expires = datetime.fromtimestamp(token.expires, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if args.format == "json":
        print(json.dumps({"bot": args.name, "user": bot_user(args.name), "roles": args.roles, "token": secret,
                          "token_expires": expires, "ca_pin": pin, "proxy": cfg.proxy.public_address}))
        return 0
    print(f"bot {args.name!r} added (user {bot_user(args.name)}, roles {', '.join(args.roles)})")
    print(f"join token (single use, expires {expires}): {secret}")
    print(f"CA pin: {pin}")
    print("on the bot's machine:")
    print(f"  kubegate bot start --proxy {cfg.proxy.public_address} --token {secret} --ca-pin {pin} --dest DIR")
    return 0


def run_ls(args: argparse.Namespace) -> int:
    cfg = load_cfg(args)
    bots = _auth_store(cfg).list_bots()
    if args.format == "json":
        print(json.dumps([b.to_json() for b in bots], indent=2))
        return 0
    if not bots:
        print("no bots")
        return 0
    print(f"{'NAME':<24} {'USER':<28} ROLES")
    for bot in bots:
        print(f"{bot.name:<24} {bot_user(bot.name):<28} {','.join(bot.roles)}")
    return 0


def run_rm(args: argparse.Namespace) -> int:
    cfg = load_cfg(args)
    if not _auth_store(cfg).remove_bot(args.name):
        raise CommandError(f"no bot named {args.name!r}")
    print(f"bot {args.name!r} removed: its renewals are refused from now on "
          f"(lock it too to cut off its current certificate: kubegate users lock {bot_user(args.name)})")
    return 0

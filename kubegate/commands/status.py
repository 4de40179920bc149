"""``kubegate status``: who you are signed in as (from ``~/.kubegate``), until when."""

from __future__ import annotations

import argparse
import json

from kubegate.commands.ca import CommandError, report_errors

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="show the signed-in identity: user, roles, traits, expiry")
    parser.add_argument("--proxy", metavar="HOST:PORT", help="default: the last proxy signed in to")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(func=report_errors(run_status))


def run_status(args: argparse.Namespace) -> int:
    from kubegate.client.output import describe_profile
    from kubegate.client.profile import load_profile

    profile = load_profile(args.proxy)
    if profile is None:
        raise CommandError("not signed in: run kubegate login --proxy HOST:PORT")
    if args.format == "json":
        print(json.dumps({**profile.summary(), "expired": profile.expired()}, indent=2))
    else:
        print(describe_profile(profile))
    return 1 if profile.expired() else 0

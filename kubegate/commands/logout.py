"""``kubegate logout``: delete the signed-in identity (certificate and key) from ``~/.kubegate``."""

from __future__ import annotations

import argparse

from kubegate.commands.ca import report_errors

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("logout", help="delete the signed-in identity from ~/.kubegate")
    parser.add_argument("--proxy", metavar="HOST:PORT", help="default: the last proxy signed in to")
    parser.set_defaults(func=report_errors(run_logout))


def run_logout(args: argparse.Namespace) -> int:
    from kubegate.client.profile import remove_profile

    removed = remove_profile(args.proxy)
    print(f"logged out of {removed}" if removed else "not signed in")
    return 0

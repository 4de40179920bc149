"""``kubegate config check``: validate a config file and print the effective configuration."""

from __future__ import annotations

import argparse
import sys

from kubegate.config import config_to_yaml, load_config_or_report


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config",
        help="validate and print the configuration",
        description="Work with the kubegate configuration file (YAML, see examples/kubegate.yaml).",
    )
    sub = parser.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    sub.required = True
    check = sub.add_parser(
        "check",
        help="validate a config file; print the effective config or every error",
        description=(
            "Load and validate FILE. On success print the effective configuration as YAML (defaults "
            "filled in, units normalised, relative paths resolved against the file's directory, secrets "
            "redacted) and exit 0. On failure print every problem, each naming the file and the key, "
            "to stderr and exit 1. Without -c the built-in defaults are printed."
        ),
    )
    check.add_argument("-c", "--config", metavar="FILE", help="kubegate.yaml to check (default: none)")
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    cfg = load_config_or_report(args.config)
    if cfg is None:
        return 1
    sys.stdout.write(config_to_yaml(cfg))
    return 0

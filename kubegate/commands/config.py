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
            "redacted) and exit 0. The kubeconfig files are loaded as the proxy loads them: an unusable "
            "context or two contexts that map to one cluster name are problems too. On failure print every problem, each naming the file and the key, "
            "to stderr and exit 1. Without -c the built-in defaults are printed."
        ),
    )
    check.add_argument("-c", "--config", metavar="FILE", help="kubegate.yaml to check (default: none)")
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from kubegate.commands.clusters import load_kubeconfig_files

    cfg = load_config_or_report(args.config)
    if cfg is None:
        return 1
    _, problems = load_kubeconfig_files(cfg)  # unusable contexts and cluster name collisions
    for problem in problems:
        print(f"{cfg.source or '<defaults>'}: kubernetes_service.kubeconfig_files: {problem}", file=sys.stderr)
    if problems:
        return 1
    sys.stdout.write(config_to_yaml(cfg))
    return 0

"""``kubegate config check``: validate a config file and print the effective configuration."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from kubegate.config import config_to_yaml, load_config_or_report
from kubegate.preflight import preflight


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
            "Load and validate FILE, then check it against this machine as `kubegate start` would: every "
            "path it names (roles directory and role files, kubeconfig files, clusters directory, TLS "
            "files, state directory, audit log) and every port (proxy.listen, metrics.listen must be "
            "free). On success print the effective configuration as YAML (defaults filled in, units "
            "normalised, relative paths resolved against the file's directory, secrets redacted) and "
            "exit 0. On failure print every problem, each naming the file and the key, to stderr and "
            "exit 1. The kubeconfig files are loaded as the proxy loads them: an unusable context or two "
            "contexts that map to one cluster name are problems too. Without -c the built-in defaults are "
            "checked. Nothing is created."
        ),
    )
    check.add_argument("-c", "--config", metavar="FILE", help="kubegate.yaml to check (default: none)")
    check.add_argument("--skip-ports", action="store_true",
                       help="do not check that the listen ports are free (e.g. while the proxy runs)")
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from kubegate.commands.clusters import load_kubeconfig_files

    cfg = load_config_or_report(args.config)
    if cfg is None:
        return 1
    problems = preflight(cfg, ports=not args.skip_ports)
    for problem in problems:
        print(problem, file=sys.stderr)
    readable = tuple(e for e in cfg.kubernetes_service.kubeconfig_files if os.path.isfile(e.path))
    _, kubeconfig_problems = load_kubeconfig_files(dataclasses.replace(  # missing files: reported above
        cfg, kubernetes_service=dataclasses.replace(cfg.kubernetes_service, kubeconfig_files=readable)))
    for problem in kubeconfig_problems:  # unusable contexts and cluster name collisions
        print(f"{cfg.source or '<defaults>'}: kubernetes_service.kubeconfig_files: {problem}", file=sys.stderr)
    problems += kubeconfig_problems
    if problems:
        return 1
    sys.stdout.write(config_to_yaml(cfg))
    return 0

"""`kubegate` command line: one module per subcommand group under kubegate/commands/.

Each command module exposes ``register(subparsers: argparse._SubParsersAction) -> None`` which adds its
parser(s) and sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit
code). Add a module to ``COMMAND_MODULES`` to expose it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES: tuple[str, ...] = (
    "kubegate.commands.demo",
    "kubegate.commands.start",
    "kubegate.commands.config",
    "kubegate.commands.sandbox",
    "kubegate.commands.ca",
    "kubegate.commands.users",
    "kubegate.commands.kubeconfig",
    "kubegate.commands.bot",
    "kubegate.commands.clusters",
    "kubegate.commands.bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubegate",
        description=(
            "kubegate: a Kubernetes API access proxy. Users reach clusters through it with kubectl and a "
            "kubeconfig it wrote; it checks their client certificate and roles and forwards with "
            "impersonation."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    _fill_descriptions(parser)
    return parser


def _fill_descriptions(parser: argparse.ArgumentParser) -> None:
    """A subcommand registered with only a one-line ``help`` shows that line as its description too, so
    ``kubegate <command> --help`` always says what the command does."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {choice.dest: choice.help for choice in action._choices_actions}
            for name, subparser in action.choices.items():
                if not subparser.description and summaries.get(name):
                    subparser.description = summaries[name]
                _fill_descriptions(subparser)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

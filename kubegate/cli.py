"""`kubegate` command line: one module per subcommand group under kubegate/commands/.

Each command module exposes ``register(subparsers: argparse._SubParsersAction) -> None`` which adds its
parser(s) and sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit
code). Add a module to ``COMMAND_MODULES`` to expose it; a module registers one top-level command named
like the module.

Only the named command's module is imported when the command line names one (``kubegate bot credentials``
runs as a kubectl exec plugin on every kubectl call, so it must not pay for importing the proxy, discovery
and the benchmarks); ``kubegate --help`` and unknown commands import them all.
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
    "kubegate.commands.bots",
    "kubegate.commands.login",
    "kubegate.commands.status",
    "kubegate.commands.logout",
    "kubegate.commands.kube",
    "kubegate.commands.clusters",
    "kubegate.commands.roles",
    "kubegate.commands.bench",
    "kubegate.commands.sessions",
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for every command, or only for ``command`` when it names one of the modules."""
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
    modules = [m for m in COMMAND_MODULES if m.rsplit(".", 1)[1] == command] or COMMAND_MODULES
    for module_name in modules:
        importlib.import_module(module_name).register(sub)
    _fill_descriptions(parser)
    return parser


def _fill_descriptions(parser: argparse.ArgumentParser) -> None:
    """A subcommand registered with only a one-line ``help`` shows that line as its description too, so
    ``kubegate <command> --help`` always says what the command does; reStructuredText double backticks
    in descriptions (often taken from module docstrings) are shown as single ones."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {choice.dest: choice.help for choice in action._choices_actions}
            for name, subparser in action.choices.items():
                if not subparser.description and summaries.get(name):
                    subparser.description = summaries[name]
                if subparser.description:  # docstring-sourced text: ``code`` reads as `code` in a terminal
                    subparser.description = subparser.description.replace("``", "`")
                _fill_descriptions(subparser)


def _option_strings(parser: argparse.ArgumentParser) -> tuple[set[str], set[str]]:
    """(every option string, those that take one value) over ``parser`` and its subcommands."""
    known: set[str] = set()
    valued: set[str] = set()
    for action in parser._actions:
        known.update(action.option_strings)
        if action.option_strings and action.nargs is None:
            valued.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                k, v = _option_strings(sub)
                known |= k
                valued |= v
    return known, valued


def attach_dashed_values(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """``--ttl -5m`` → ``--ttl=-5m``: argparse takes a value starting with ``-`` for an option and then
    says "expected one argument"; attached, the value reaches the option's own check, which names the
    real problem. A following word that is itself an option is left alone."""
    known, valued = _option_strings(parser)
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        following = words[i + 1] if i + 1 < len(words) else ""
        if (word in valued and len(following) > 1 and following.startswith("-")
                and following.split("=", 1)[0] not in known):
            out.append(f"{word}={following}")
            i += 2
            continue
        out.append(word)
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(words[0] if words and not words[0].startswith("-") else None)
    args = parser.parse_args(attach_dashed_values(parser, list(words)))
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""`kubegate --help` and every subcommand's help are complete: each command has a summary and a
description, and `--help` exits 0 at every level."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from kubegate.cli import build_parser, main


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):  # noqa: ANN202
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield path + (name,), sub, helps.get(name)
                yield from _walk(sub, path + (name,))


COMMANDS = list(_walk(build_parser()))


def test_every_top_level_command_is_registered():
    names = {path[0] for path, _, _ in COMMANDS}
    assert {"demo", "start", "config", "bench"} <= names


@pytest.mark.parametrize(("path", "parser", "summary"), COMMANDS, ids=[" ".join(c[0]) for c in COMMANDS])
def test_subcommand_help_is_complete(path, parser, summary):
    assert summary, f"`kubegate {' '.join(path)}` has no one-line help in its parent's list"
    assert parser.description, f"`kubegate {' '.join(path)}` has no description"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: kubegate {' '.join(path)}" in out.getvalue()
    assert "``" not in out.getvalue(), "reStructuredText markup from a docstring leaked into --help"


def test_top_level_help():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    for name in ("demo", "start", "config", "bench"):
        assert name in out.getvalue()

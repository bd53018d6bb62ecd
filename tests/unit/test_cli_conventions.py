"""Conventions of every command-line tool, checked over every parser of every tool (issue 12 item 5).

- Every option and every subcommand has help text.
- A global option is accepted wherever ``--help`` shows it: ``edge-provision --json CMD`` as well as
  ``edge-provision CMD --json`` (round 1 silently ignored the first form).
- A broken stdout pipe (``... | head``) makes every tool exit 141 quietly (``tests/integration/
  test_cli_pipes.py`` runs the real processes).
"""

from __future__ import annotations

import argparse
import io
import os
from collections.abc import Iterator

import pytest

from provisioning.cliutil import EXIT_BROKEN_PIPE, run_main
from tests.support.cli import CLIS, every_leaf, every_parser, iter_parsers, leaf_parser, minimal_args

PARSERS = every_parser()
LEAVES = every_leaf()


def _id(tool: str, path: tuple[str, ...]) -> str:
    return " ".join((tool, *path))


@pytest.mark.parametrize(("tool", "path", "parser"), PARSERS, ids=[_id(t, p) for t, p, _ in PARSERS])
def test_every_option_and_subcommand_has_help(tool: str, path: tuple[str, ...],
                                              parser: argparse.ArgumentParser) -> None:
    missing = []
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            helped = {c.dest: c.help for c in a._choices_actions}
            missing += [f"subcommand {name}" for name in a.choices if not helped.get(name)]
        elif not a.help or a.help == argparse.SUPPRESS:
            missing.append("/".join(a.option_strings) or a.dest)
    assert not missing, f"{_id(tool, path)}: no help text for {missing}"
    assert parser.description or path, f"{tool} has no description"


def _global_flags() -> Iterator[tuple[str, tuple[str, ...], int, str, str]]:
    """(tool, leaf path, level, flag, dest): a flag shown by the parser at ``path[:level]`` and by the leaf."""
    for tool, build in CLIS.items():
        parsers = dict(iter_parsers(build()))
        for path in [p for t, p in LEAVES if t == tool]:
            leaf_flags = {s for a in parsers[path]._actions if a.nargs == 0 for s in a.option_strings}
            for level in range(len(path)):
                for a in parsers[path[:level]]._actions:
                    if a.nargs != 0 or isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
                        continue
                    for flag in a.option_strings:
                        if flag in leaf_flags:
                            yield tool, path, level, flag, a.dest


GLOBALS = list(_global_flags())


def test_the_table_is_not_empty() -> None:
    assert {(t, f) for t, _, _, f, _ in GLOBALS} >= {("edge-provision", "--json"), ("edge-provision", "-v")}


@pytest.mark.parametrize(("tool", "path", "level", "flag", "dest"), GLOBALS,
                         ids=[f"{_id(t, p[:lv])} {f} {' '.join(p[lv:])}" for t, p, lv, f, _ in GLOBALS])
def test_a_global_flag_works_at_every_level_its_help_shows_it(tool: str, path: tuple[str, ...], level: int,
                                                             flag: str, dest: str) -> None:
    rest = minimal_args(leaf_parser(tool, path))
    argv = [*path[:level], flag, *path[level:], *rest]
    args = CLIS[tool]().parse_args(argv)
    assert getattr(args, dest) is True, argv
    plain = CLIS[tool]().parse_args([*path, *rest])
    assert getattr(plain, dest, False) is False, [*path, *rest]


def test_run_main_turns_a_broken_pipe_into_141(monkeypatch: pytest.MonkeyPatch) -> None:
    r, w = os.pipe()
    os.close(r)
    out = io.TextIOWrapper(io.FileIO(w, "w"), write_through=True)
    monkeypatch.setattr("sys.stdout", out)

    def body() -> int:
        print("x" * 100)
        return 0

    assert run_main(body) == EXIT_BROKEN_PIPE
    out.close()


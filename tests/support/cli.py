"""The three command-line tools as parser trees, for tests that check a convention over every command."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator

from agent.cli import build_parser as agent_parser
from aggregator.cli import build_parser as aggregator_parser
from provisioning.cli import build_parser as provision_parser

CLIS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "edge-agent": agent_parser,
    "edge-aggregator": aggregator_parser,
    "edge-provision": provision_parser,
}
MODULES = {"edge-agent": "agent.cli", "edge-aggregator": "aggregator.cli", "edge-provision": "provisioning.cli"}


def iter_parsers(parser: argparse.ArgumentParser,
                 path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser of a command tree with the subcommand path that reaches it (the root first)."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from iter_parsers(sub, (*path, name))


def is_leaf(parser: argparse.ArgumentParser) -> bool:
    return not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)


def every_parser() -> list[tuple[str, tuple[str, ...], argparse.ArgumentParser]]:
    """(tool, path, parser) for every parser of every tool."""
    return [(tool, path, p) for tool, build in CLIS.items() for path, p in iter_parsers(build())]


def every_leaf() -> list[tuple[str, tuple[str, ...]]]:
    return [(tool, path) for tool, path, p in every_parser() if is_leaf(p)]


def _dummy(action: argparse.Action) -> str:
    if action.choices:
        return str(next(iter(action.choices)))
    return "1"


def minimal_args(parser: argparse.ArgumentParser) -> list[str]:
    """Arguments that satisfy a leaf parser's required options and positionals (values are placeholders)."""
    out: list[str] = []
    positionals: list[str] = []
    for a in parser._actions:
        if a.option_strings:
            if a.required:
                out += [a.option_strings[-1], _dummy(a)]
        elif not isinstance(a, argparse._SubParsersAction):
            if a.nargs in ("?", "*"):
                continue
            positionals.append(_dummy(a))
    return out + positionals


def leaf_parser(tool: str, path: tuple[str, ...]) -> argparse.ArgumentParser:
    for p_path, p in iter_parsers(CLIS[tool]()):
        if p_path == path:
            return p
    raise KeyError((tool, path))

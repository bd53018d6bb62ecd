"""``edge-demo`` (also ``edge-agent demo``): run broker, agent and aggregator on this machine and show it working.

An embedded broker (amqtt, MQTT 3.1.1) unless ``--broker`` names a real one, a throwaway fleet CA and device
key in a temp dir, the agent on the simulated source cycling through the four vibration classes, and an
aggregator on SQLite that verifies every record back to the CA. Exit 0 only if every published record
verified and was stored; 1 if not (or the demo could not start); 2 on a usage error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


HELP = "run broker, agent and aggregator on this machine and show it working"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The demo's options, shared by ``edge-demo`` and ``edge-agent demo``."""
    p.add_argument("--seconds", type=float, default=20.0, help="how long to run (default 20)")
    p.add_argument("--broker", default=None, help="use this broker (mqtt://host:port, MQTT 5) instead of the "
                                                  "embedded one")
    p.add_argument("--json", action="store_true", help="print only the summary, as one JSON object")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (keys, databases) for inspection")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging to stderr")


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo with parsed options; ``args.prog`` names the caller in error messages."""
    prog = getattr(args, "prog", "edge-demo")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.seconds <= 0:
        print(f"{prog}: --seconds must be > 0", file=sys.stderr)
        return EXIT_USAGE
    from agent.errors import AgentError  # noqa: PLC0415 - keep `--help` fast (the run imports both halves)
    from demo.run import run_demo  # noqa: PLC0415

    try:
        return run_demo(args.seconds, args.broker, args.json, keep=args.keep)
    except AgentError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return EXIT_FAILED


def add_subcommand(sub: Any) -> None:
    """The ``edge_agent.commands`` entry point: register ``edge-agent demo`` on edge-agent's subparsers.

    The agent's CLI finds this through package metadata, never by importing ``demo``: ``agent/`` must not
    depend on the one package that wires the aggregator in (tests/unit/test_layering.py)."""
    p = sub.add_parser("demo", help=HELP, description=HELP)
    add_arguments(p)
    p.set_defaults(func=cmd_demo, prog="edge-agent demo")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-demo", description=HELP)
    add_arguments(p)
    p.set_defaults(prog="edge-demo")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``edge-demo`` and ``python -m demo``."""
    from provisioning.cliutil import run_main  # noqa: PLC0415 - a leaf module: keeps `--help` light

    def body() -> int:
        return cmd_demo(build_parser().parse_args(argv))

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())

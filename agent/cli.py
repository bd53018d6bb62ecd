"""``edge-agent``: run the agent, validate a config, run the demo, show status, check a device (doctor)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from agent import __version__
from agent.errors import AgentError, ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2

log = logging.getLogger("agent")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _load(path: str) -> object:
    from agent.config import load_config  # noqa: PLC0415 - keep `--help` fast

    return load_config(path)


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate without starting anything; ``--offline``: the file alone (schema, values), no file it names."""
    from agent.config import load_config, read_config  # noqa: PLC0415 - keep `--help` fast

    try:
        cfg = read_config(args.config) if args.offline else load_config(args.config)
    except ConfigError as e:
        print(f"invalid config ({len(e.problems)} problem{'s' if len(e.problems) != 1 else ''}):", file=sys.stderr)
        print(str(e), file=sys.stderr)
        if not args.offline and not any(k.startswith("(") for k, _ in e.problems):
            print("(checking the file alone, not the files it names on this machine? add --offline)",
                  file=sys.stderr)
        return EXIT_CONFIG
    device = cfg.device_id or f"from {cfg.device_id_file}"
    print(f"{args.config}: valid ({'schema only (--offline)' if args.offline else 'files checked'}; device "
          f"{device}, {len(cfg.pipelines)} pipeline(s), delivery {cfg.outbox.delivery}, broker {cfg.mqtt.url})")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    try:
        cfg = _load(args.config)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return EXIT_CONFIG
    from agent.service import Agent  # noqa: PLC0415
    from agent.settings import AgentConfig  # noqa: PLC0415

    assert isinstance(cfg, AgentConfig)
    _setup_logging(args.log_level or cfg.log_level)
    try:
        return Agent(cfg).run()
    except AgentError as e:
        log.error("%s", e)
        return EXIT_FAILED
    except Exception as e:
        from provisioning import ProvisioningError  # noqa: PLC0415

        if isinstance(e, ProvisioningError):
            log.error("%s", e)
            return EXIT_FAILED
        raise


COMMANDS_GROUP = "edge_agent.commands"


def _add_plugin_commands(sub: Any) -> None:
    """Subcommands other packages of the distribution register (``edge-agent demo`` from ``demo``), found by
    entry point so that ``agent`` never imports what they wire in (the demo imports the aggregator). A
    plugin that fails to load is skipped with a warning: the agent's own commands must keep working."""
    from importlib.metadata import entry_points  # noqa: PLC0415 - keep `--help` fast

    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            register = ep.load()
        except Exception as e:  # a broken plugin must not take the agent CLI down
            print(f"edge-agent: command {ep.name!r} unavailable ({ep.value}: {e})", file=sys.stderr)
            continue
        register(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the agent until SIGTERM/SIGINT")
    p.add_argument("--config", required=True, help="agent TOML config")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None,
                   help="override the config's log_level")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate a config file without starting anything (exit 2 if invalid)")
    p.add_argument("config", help="agent TOML config")
    p.add_argument("--offline", action="store_true", help="check only the file (schema, values), not the files it "
                   "names (key, models, outbox directory, TLS): for a config written on another machine, or the "
                   "shipped example")
    p.set_defaults(func=cmd_check_config)

    _add_plugin_commands(sub)
    try:
        from agent.status import add_status_parser  # noqa: PLC0415
    except ImportError:
        pass
    else:
        add_status_parser(sub)
    from agent.doctor.cli import add_doctor_parser  # noqa: PLC0415

    add_doctor_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edge-agent`` console script (141, quietly, when stdout's reader went away)."""
    from provisioning.cliutil import run_main  # noqa: PLC0415 - a leaf module: keeps `--help` light

    def body() -> int:
        args = build_parser().parse_args(argv)
        from agent.platform_support import this_platform_problem  # noqa: PLC0415

        problem = this_platform_problem()
        if problem:  # before anything loads: a 32-bit image would fail later with a far less clear error
            print(f"edge-agent: {problem}", file=sys.stderr)
            return EXIT_CONFIG
        return int(args.func(args))

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())

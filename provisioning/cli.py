"""``edge-provision``: the operator's CA, the technician's device commands, fleet bulk signing, broker config.

Every command takes ``--json`` (one JSON object on stdout). Failures print one line
``edge-provision: error: ...`` on stderr (and ``{"ok": false, ...}`` with ``--json``), never a traceback.
Exit codes: 0 success, 1 failure of our own (missing state, key store, I/O), 2 bad input or usage,
3 ``fleet sign`` finished but rejected some CSRs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from provisioning.cliutil import run_main
from provisioning.errors import InvalidInput, ProvisioningError

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAIL, EXIT_INPUT, EXIT_REJECTS = 0, 1, 2, 3


class Output:
    """Collects a command's result; prints human lines or one JSON object."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.lines: list[str] = []
        self.warnings: list[str] = []
        self.exit_code = EXIT_OK

    def say(self, line: str) -> None:
        self.lines.append(line)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        print(f"edge-provision: warning: {message}", file=sys.stderr)

    def emit(self, result: dict[str, Any]) -> None:
        if self.as_json:
            doc = {"ok": self.exit_code == EXIT_OK, **result}
            if self.warnings:
                doc["warnings"] = self.warnings
            print(json.dumps(doc, indent=2, default=str))
        else:
            for line in self.lines:
                print(line)


Handler = Callable[[argparse.Namespace, Output], dict[str, Any]]


def _env_path(name: str, default: str) -> Path:
    return Path(os.environ.get(name) or default)


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree (handlers bound via ``set_defaults(func=...)``)."""
    from provisioning import (  # noqa: PLC0415 - keeps main cheap
        cli_aggregator,
        cli_ca,
        cli_device,
        cli_log,
        cli_models,
    )

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print one JSON object on stdout instead of text")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log progress")

    # The same option objects are shared by every level (parents copy references), and every level may see
    # them: their default stays SUPPRESS so a subcommand's parser never overwrites a value given before it
    # (``--json ca crl`` as well as ``ca crl --json``); ``parse`` fills in False afterwards.
    p = argparse.ArgumentParser(
        prog="edge-provision",
        description="Device keys, fleet CA, certificates, revocation, broker config (docs/provisioning.md) and the "
                    "signed model repository (docs/model-updates.md).",
        parents=[common],
    )
    top = p.add_subparsers(dest="group", required=True,
                           metavar="{ca,device,aggregator,log,fleet,models,broker-config}")

    ca_dir = argparse.ArgumentParser(add_help=False)
    ca_dir.add_argument("--ca-dir", type=Path, default=_env_path("EDGE_PROVISION_CA_DIR", "fleet-ca"),
                        help="fleet CA directory (default $EDGE_PROVISION_CA_DIR or ./fleet-ca)")
    state = argparse.ArgumentParser(add_help=False)
    state.add_argument("--state-dir", type=Path, default=_env_path("EDGE_AGENT_STATE_DIR", "/var/lib/edge-agent"),
                       help="device state directory (default $EDGE_AGENT_STATE_DIR or /var/lib/edge-agent)")

    ca = top.add_parser("ca", help="the offline fleet CA (operator)", parents=[common])
    cas = ca.add_subparsers(dest="cmd", required=True)
    cli_ca.add_ca_commands(cas, [common, ca_dir])

    dev = top.add_parser("device", help="key, CSR and certificate on the device (technician)", parents=[common])
    devs = dev.add_subparsers(dest="cmd", required=True)
    cli_device.add_device_commands(devs, [common, state])

    agg = top.add_parser("aggregator", help="the aggregator's receipt-signing identity (operator)", parents=[common])
    aggs = agg.add_subparsers(dest="cmd", required=True)
    cli_aggregator.add_aggregator_commands(aggs, [common])

    lg = top.add_parser("log", help="the transparency log's signing key (operator)", parents=[common])
    lgs = lg.add_subparsers(dest="cmd", required=True)
    cli_log.add_log_commands(lgs, [common])

    fleet = top.add_parser("fleet", help="bulk enrollment (fleet installer)", parents=[common])
    fleets = fleet.add_subparsers(dest="cmd", required=True)
    cli_ca.add_fleet_commands(fleets, [common, ca_dir])

    models = top.add_parser("models", help="the signed model repository (release operator)", parents=[common])
    modelss = models.add_subparsers(dest="cmd", required=True)
    cli_models.add_models_commands(modelss, [common])

    cli_ca.add_broker_command(top, [common, ca_dir])
    return p


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; the global flags are False unless given at any level."""
    args = build_parser().parse_args(argv)
    for flag in ("json", "verbose"):
        if not hasattr(args, flag):
            setattr(args, flag, False)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``edge-provision``; returns the exit code (141, quietly, when stdout's reader left)."""
    return run_main(lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    out = Output(args.json)
    func: Handler = args.func
    try:
        result = func(args, out)
    except BrokenPipeError:
        raise  # run_main: exit 141 quietly
    except (ProvisioningError, OSError) as e:
        code = EXIT_INPUT if isinstance(e, InvalidInput) else EXIT_FAIL
        msg = str(e) if isinstance(e, ProvisioningError) else f"{e.strerror or e}: {e.filename or ''}".rstrip(": ")
        print(f"edge-provision: error: {msg}", file=sys.stderr)
        if args.json:
            reason = getattr(e, "reason", None)
            print(json.dumps({"ok": False, "error": msg, "reason": reason, "type": type(e).__name__}))
        return code
    except KeyboardInterrupt:
        print("edge-provision: interrupted", file=sys.stderr)
        return 130
    out.emit(result)
    return out.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

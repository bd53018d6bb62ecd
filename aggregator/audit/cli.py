"""``edge-aggregator audit``: check a log from outside, trusting only its verifier key and the fleet CA.

Exit 0 when clean, 1 with a report of every discrepancy (or when the log cannot even be read or its
checkpoint does not verify), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from aggregator.errors import ConfigError


def add_parser(sub: Any) -> None:
    """Register ``audit`` on the ``edge-aggregator`` subcommand parser."""
    p = sub.add_parser("audit", help="audit a transparency log over HTTP (C2SP tlog-tiles): signatures, chains, "
                                     "tree, consistency with earlier checkpoints, ledgers")
    p.add_argument("--url", required=True, help="the log's tlog-tiles URL prefix, e.g. http://127.0.0.1:8080/log")
    p.add_argument("--log-vkey", required=True,
                   help="the log's signed-note verifier key (<name>+<id>+<key>), or @FILE holding it")
    p.add_argument("--ca", action="append", required=True, help="fleet CA certificate PEM (repeatable)")
    p.add_argument("--crl", action="append", default=[], help="CRL file (repeatable)")
    p.add_argument("--state", help="state file: checkpoints seen before, for consistency (created if missing)")
    p.add_argument("--ledger", action="append", default=[],
                   help="a published ledger JSON, or a folder of ledger-*.json (repeatable)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request (default 30)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="worker processes for signature checks (default: the number of CPUs)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_audit)


def _vkey(text: str) -> str:
    if text.startswith("@"):
        try:
            return Path(text[1:]).read_text().strip()
        except OSError as e:
            raise ConfigError("<command line>", [("--log-vkey", f"cannot read {text[1:]}: {e.strerror or e}")]) from e
    return text.strip()


def cmd_audit(args: argparse.Namespace) -> int:
    from aggregator.audit.run import load_ledgers, report_text, run_audit  # noqa: PLC0415 - numpy, eth-abi
    from aggregator.trust import load_certificates, load_crl  # noqa: PLC0415

    cas = [c for f in args.ca for c in load_certificates(f)]
    crls = [load_crl(f) for f in args.crl]
    report = run_audit(args.url, _vkey(args.log_vkey), cas, crls, Path(args.state) if args.state else None,
                       load_ledgers(args.ledger), args.timeout, max(1, args.jobs))
    print(json.dumps(report.as_json(), indent=2) if args.json else report_text(report))
    return 0 if report.clean else 1

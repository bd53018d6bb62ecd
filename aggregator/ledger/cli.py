"""``edge-aggregator ledger``: compute, sign and write one period's contribution ledger from the store.

The figures come from log entries only (``LedgerBuilder``). Until the store keeps the transparency log, the
entries are the stored records in commit order (``store.export``: received time, device, seq) and the note
says ``log <n> -``: not bound to a log root, so not auditable. The note is signed with the log's Ed25519 key
(``--log-key``, a key URI or PKCS#8 file; its key name is ``--origin``).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from typing import Any

import provisioning
from aggregator.config import load_config
from aggregator.errors import ConfigError
from aggregator.ledger.errors import LedgerError
from aggregator.ledger.params import DEFAULT_UPTIME_CREDIT_S, LedgerParams
from aggregator.ledger.period import Period
from aggregator.store import Store, open_store

log = logging.getLogger(__name__)


def store_entries(store: Store) -> Iterator[tuple[int, bytes]]:
    """The stored records as log entries, in commit order (interim, until the store keeps the log)."""
    for index, row in enumerate(store.export(0)):
        yield index, bytes(row["record"])


def add_parser(sub: Any) -> None:
    """Register ``ledger`` on the ``edge-aggregator`` subcommand parser."""
    p = sub.add_parser("ledger", help="write a period's contribution ledger (JSON with proofs, OpenZeppelin "
                                      "StandardMerkleTree dump, signed note)")
    p.add_argument("--period", required=True, help="YYYY-MM-DD (a UTC day), YYYY-MM, or <ISO start>/<ISO end>")
    p.add_argument("--out", default=".", help="folder for ledger-<period>.json, .oz.json and .note (default .)")
    p.add_argument("--config", help="aggregator config (for its store)")
    p.add_argument("--store", help="store URL or SQLite path (instead of --config)")
    p.add_argument("--schema", help="PostgreSQL schema")
    p.add_argument("--log-key", required=True, help="the log's Ed25519 signing key (file path or key URI)")
    p.add_argument("--origin", required=True, help="the log's origin (the note key name), e.g. <fleet>/log")
    p.add_argument("--uptime-credit-s", type=int, default=DEFAULT_UPTIME_CREDIT_S,
                   help=f"seconds of uptime each record credits (default {DEFAULT_UPTIME_CREDIT_S})")
    p.set_defaults(func=cmd_ledger)


def _store_url(args: argparse.Namespace) -> tuple[str, str | None]:
    if args.store:
        return args.store, args.schema
    if not args.config:
        raise ConfigError("<command line>", [("--config", "give --config FILE or --store URL")])
    cfg = load_config(args.config)
    return cfg.store.url, args.schema or cfg.store.schema


def cmd_ledger(args: argparse.Namespace) -> int:
    # numpy, eth-abi and eth-hash load here, not when the parser is built for every other command
    from aggregator.ledger import _note  # noqa: PLC0415
    from aggregator.ledger.compute import LedgerBuilder  # noqa: PLC0415
    from aggregator.ledger.export import LogBinding, ledger_root  # noqa: PLC0415
    from aggregator.ledger.files import write_ledger  # noqa: PLC0415

    try:
        period = Period.parse(args.period)
        params = LedgerParams(args.uptime_credit_s)
    except LedgerError as e:
        raise ConfigError("<command line>", [("--period / --uptime-credit-s", str(e))]) from e
    try:
        uri = args.log_key if args.log_key.startswith(("file:", "pkcs11:")) else f"file:{args.log_key}"
        key = provisioning.open_signer(uri)
    except provisioning.ProvisioningError as e:
        raise ConfigError("<command line>", [("--log-key", str(e))]) from e
    sign = _note.signer(args.origin, key)
    url, schema = _store_url(args)
    store = open_store(url, schema=schema)
    try:
        builder = LedgerBuilder(params).add_all(store_entries(store))
    finally:
        store.close()
    ledger = builder.ledger(period)
    files = write_ledger(args.out, ledger, LogBinding(args.origin, builder.size, None), sign)
    for a in builder.anomalies + builder.duplicates():
        log.warning("log entry %d: %s: %s", a.index, a.kind, a.detail)
    print(json.dumps({"period": period.label, "entries": len(ledger.entries), "log_size": builder.size,
                      "root": "0x" + ledger_root(ledger).hex(), "json": str(files.document),
                      "note": str(files.note), "dump": str(files.dump) if files.dump else None}, indent=2))
    return 0

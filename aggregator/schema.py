"""Table layout of the record store, one DDL text for SQLite and PostgreSQL (types chosen to mean the same).

records: primary key (device_id, seq), the record kept verbatim (``record``), decoded fields indexed.
devices: the sequence state the durable ack is computed from, plus per-device counters.
gaps: policy gaps announced by gap records. rejects: counts by (device, reason).
device_keys: keys learned from birth records, so a restarted worker knows devices whose birth it missed.
settled_rejects, device_marks: what settles besides stored records (permanent rejects, low-water marks).
equivocations: second versions of an already stored (device, seq), kept as evidence.
log_*: the transparency log (DESIGN §9): ``records.log_index`` is a record's leaf index (NULL until the
integrator reaches it); ``log_tiles`` the tree's perfect nodes in C2SP tiles (rows 0..7 of each tile, so a
proof reads O(log n) tiles and never re-hashes); ``log_state`` the integrated size and root (one row, the
integrators' lock); ``log_checkpoints`` the latest signed checkpoints; ``log_receipts`` the checkpoint size
last sent to each device.
"""

from __future__ import annotations

SCHEMA_VERSION = 3

# Stored records per clock state the device declared (envelope labels CLOCK_*), counted apart from clock skew
# (``skew_flagged``: signed too far from our receipt time), so an unsynchronised fleet shows as such.
CLOCK_NAMES: dict[int, str] = {0: "unsynced", 1: "ntp", 2: "gnss"}
CLOCK_COLUMNS: dict[int, str] = {state: f"clock_{name}" for state, name in CLOCK_NAMES.items()}

# PostgreSQL advisory lock taken (transaction-scoped) around schema creation and migrations, so workers started
# together on a fresh database serialise instead of racing in the catalog (concurrent ``CREATE ... IF NOT
# EXISTS`` is not atomic there). Any constant works; this is b"edgeagg1" as a signed 64-bit integer.
SCHEMA_LOCK_KEY = int.from_bytes(b"edgeagg1", "big", signed=True)

# Statements that bring a store at version ``v - 1`` to version ``v``, for changes that ``ddl()``'s
# ``CREATE ... IF NOT EXISTS`` cannot make on an existing table (new columns, changed keys). ``ddl()`` always
# describes the latest layout; a fresh store gets it and skips every migration. Each migration runs once, in
# the transaction that records the new version, under the lock above; an ``ADD COLUMN`` whose column exists
# (``ddl()`` just created the table in the latest layout) is skipped.
MIGRATIONS: dict[int, list[str]] = {
    2: ["ALTER TABLE records ADD COLUMN log_index BIGINT"],  # the transparency log's leaf index (DESIGN §9)
    3: [f"ALTER TABLE devices ADD COLUMN {c} BIGINT NOT NULL DEFAULT 0" for c in CLOCK_COLUMNS.values()],
}


class SchemaVersionError(ValueError):
    """The store's recorded schema version cannot be brought to ``SCHEMA_VERSION`` by this code."""


def migration_plan(current: int | None, target: int = SCHEMA_VERSION,
                   migrations: dict[int, list[str]] | None = None) -> list[int]:
    """The versions to apply, in order, to bring a store at ``current`` (``None``: fresh) to ``target``.

    Pure, so the rules are tested without a database: a fresh store needs nothing (``ddl()`` is the latest
    layout); a newer store than this code is refused (an older aggregator must not write a layout it does not
    know); every step in between must have its migration.
    """
    steps = MIGRATIONS if migrations is None else migrations
    if current is None or current == target:
        return []
    if current > target:
        raise SchemaVersionError(f"store schema version {current} is newer than this aggregator's ({target}): "
                                 "upgrade edge-aggregator")
    if current < 1:
        raise SchemaVersionError(f"store schema version {current} is not a version this aggregator wrote")
    missing = [v for v in range(current + 1, target + 1) if v not in steps]
    if missing:
        raise SchemaVersionError(f"no migration from schema version {current} to {target} (missing {missing})")
    return list(range(current + 1, target + 1))


def ddl(blob: str) -> list[str]:
    """CREATE statements; ``blob`` is the binary column type of the dialect (BLOB or BYTEA)."""
    clocks = ",\n            ".join(f"{c} BIGINT NOT NULL DEFAULT 0" for c in CLOCK_COLUMNS.values())
    return [
        f"""CREATE TABLE IF NOT EXISTS devices (
            device_id TEXT PRIMARY KEY,
            contiguous_seq BIGINT NOT NULL DEFAULT 0,
            contiguous_epoch BIGINT NOT NULL DEFAULT 0,
            max_seq BIGINT NOT NULL DEFAULT 0,
            max_epoch BIGINT NOT NULL DEFAULT 0,
            version BIGINT NOT NULL DEFAULT 0,
            kid TEXT,
            first_seen_ms BIGINT,
            last_seen_ms BIGINT,
            online SMALLINT,
            status_ms BIGINT,
            stored BIGINT NOT NULL DEFAULT 0,
            duplicates BIGINT NOT NULL DEFAULT 0,
            reorders BIGINT NOT NULL DEFAULT 0,
            gaps_opened BIGINT NOT NULL DEFAULT 0,
            gap_seqs BIGINT NOT NULL DEFAULT 0,
            policy_gap_seqs BIGINT NOT NULL DEFAULT 0,
            skew_flagged BIGINT NOT NULL DEFAULT 0,
            {clocks}
        )""",
        f"""CREATE TABLE IF NOT EXISTS records (
            device_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            epoch BIGINT NOT NULL,
            kind TEXT NOT NULL,
            stream TEXT NOT NULL,
            iat BIGINT NOT NULL,
            capture_ms BIGINT NOT NULL,
            clock_state SMALLINT NOT NULL,
            skew_flags SMALLINT NOT NULL,
            received_ms BIGINT NOT NULL,
            kid {blob} NOT NULL,
            model_sha256 {blob},
            input_sha256 {blob},
            record {blob} NOT NULL,
            log_index BIGINT,
            PRIMARY KEY (device_id, seq)
        )""",
        "CREATE INDEX IF NOT EXISTS records_received ON records (received_ms)",
        "CREATE INDEX IF NOT EXISTS records_kind_stream ON records (kind, stream, capture_ms)",
        """CREATE TABLE IF NOT EXISTS gaps (
            device_id TEXT NOT NULL,
            record_seq BIGINT NOT NULL,
            first_seq BIGINT NOT NULL,
            last_seq BIGINT NOT NULL,
            count BIGINT NOT NULL,
            bytes BIGINT NOT NULL,
            reason TEXT NOT NULL,
            epoch BIGINT NOT NULL,
            received_ms BIGINT NOT NULL,
            PRIMARY KEY (device_id, record_seq)
        )""",
        """CREATE TABLE IF NOT EXISTS rejects (
            device_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            count BIGINT NOT NULL,
            first_ms BIGINT NOT NULL,
            last_ms BIGINT NOT NULL,
            last_detail TEXT,
            PRIMARY KEY (device_id, reason)
        )""",
        f"""CREATE TABLE IF NOT EXISTS device_keys (
            kid TEXT PRIMARY KEY,
            device_id TEXT NOT NULL,
            chain {blob} NOT NULL,
            learned_ms BIGINT NOT NULL
        )""",
        # Receipts (DESIGN §8): seqs rejected for a permanent reason settle; reported once in a receipt.
        """CREATE TABLE IF NOT EXISTS settled_rejects (
            device_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            epoch BIGINT NOT NULL,
            reason TEXT NOT NULL,
            received_ms BIGINT NOT NULL,
            PRIMARY KEY (device_id, seq)
        )""",
        # The device's signed low-water mark (oldest seq its outbox holds): seqs below it are settled.
        """CREATE TABLE IF NOT EXISTS device_marks (
            device_id TEXT PRIMARY KEY,
            low_water BIGINT NOT NULL,
            epoch BIGINT NOT NULL,
            received_ms BIGINT NOT NULL
        )""",
        # Equivocation evidence: a second, different record signed for a (device, seq) already stored.
        f"""CREATE TABLE IF NOT EXISTS equivocations (
            device_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            epoch BIGINT NOT NULL,
            sha256 TEXT NOT NULL,
            received_ms BIGINT NOT NULL,
            record {blob} NOT NULL,
            PRIMARY KEY (device_id, seq, sha256)
        )""",
        f"""CREATE TABLE IF NOT EXISTS log_tiles (
            level SMALLINT NOT NULL,
            idx BIGINT NOT NULL,
            width SMALLINT NOT NULL,
            nodes {blob} NOT NULL,
            PRIMARY KEY (level, idx)
        )""",
        f"""CREATE TABLE IF NOT EXISTS log_state (
            id SMALLINT PRIMARY KEY,
            size BIGINT NOT NULL,
            root {blob} NOT NULL,
            updated_ms BIGINT NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS log_checkpoints (
            size BIGINT PRIMARY KEY,
            root {blob} NOT NULL,
            issued_ms BIGINT NOT NULL,
            issuer TEXT NOT NULL,
            note TEXT NOT NULL
        )""",
        # the checkpoint size in the last receipt each device was sent: where its next consistency proof starts
        """CREATE TABLE IF NOT EXISTS log_receipts (
            device_id TEXT PRIMARY KEY,
            size BIGINT NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS meta (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
    ]


def log_indexes() -> list[str]:
    """Indexes on ``records.log_index``, created after the column exists (older stores gain it by migration)."""
    return [
        "CREATE UNIQUE INDEX IF NOT EXISTS records_log_index ON records (log_index) WHERE log_index IS NOT NULL",
        # the integrator's queue and a device's not-yet-logged seqs: only unlogged rows are in it
        "CREATE INDEX IF NOT EXISTS records_unlogged ON records (device_id, seq) WHERE log_index IS NULL",
    ]

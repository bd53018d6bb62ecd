"""Three ``edge-aggregator run`` workers started at once on a fresh PostgreSQL database, ten times.

Round 1 raced on the schema (one worker exited with "duplicate key value violates unique constraint
pg_type_typname_nsp_index"): concurrent ``CREATE TABLE IF NOT EXISTS`` is not atomic in PostgreSQL. Schema
creation and migrations now run under an advisory lock and are idempotent. Each round gets its own database
(created here, dropped after), half of them with a ``[store] schema`` (``CREATE SCHEMA`` races the same way).
"""

from __future__ import annotations

import functools
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from aggregator import StoreError, StoreNotFound, open_store
from aggregator.schema import SCHEMA_VERSION
from tests.integration.test_agg_badinput import write_config
from tests.support.mosquitto import Mosquitto
from tests.support.pki import make_fleet
from tests.support.stores import fresh_store
from tests.support.wait import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
WORKERS = 3


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """A database nobody has used yet; dropped (with any leftover session) after the test."""
    name = "agg_race_" + uuid.uuid4().hex[:12]
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _started_or_exited(log: Path, proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is not None or "aggregator started" in log.read_text()


@pytest.mark.parametrize("round_no", range(10))
def test_workers_started_together_create_the_schema_once(
        tmp_path: Path, mosquitto: Mosquitto, fresh_database: str, round_no: int) -> None:
    fleet = make_fleet(tmp_path / "pki")
    schema = f"s{round_no}" if round_no % 2 else None
    configs = [write_config(tmp_path / f"agg{w}.toml", port=mosquitto.port, client_id=f"race-{round_no}-{w}",
                            store=fresh_database, schema=schema, ca=fleet.ca_cert, crl=fleet.crl, group="g")
               for w in range(WORKERS)]
    logs = [tmp_path / f"agg{w}.log" for w in range(WORKERS)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for cfg, log in zip(configs, logs, strict=True):
            procs.append(subprocess.Popen([sys.executable, "-m", "aggregator.cli", "run", "--config", str(cfg)],
                                          stdout=subprocess.DEVNULL, stderr=log.open("wb")))
        for proc, log in zip(procs, logs, strict=True):
            wait_for(functools.partial(_started_or_exited, log, proc), timeout=60, what=f"worker start ({log})")
        for proc, log in zip(procs, logs, strict=True):
            assert proc.poll() is None, f"worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        codes = [proc.wait(30) for proc in procs]
    assert codes == [0] * WORKERS, [log.read_text()[-2000:] for log in logs]
    store = open_store(fresh_database, schema=schema)  # a fourth opener finds the schema complete
    try:
        version = store._exec("SELECT value FROM meta WHERE name = 'schema_version'").fetchall()
        assert version == [(str(SCHEMA_VERSION),)]
        assert store.device_stats() == []
    finally:
        store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """A store location nobody has created: a SQLite path, or a PostgreSQL schema that does not exist."""
    with fresh_store(request.param, tmp_path, "agg_ro") as where:
        yield where


def _exists(url: str, schema: str | None) -> bool:
    if schema is None:
        return Path(url).exists() or Path(url).parent.exists()
    with psycopg.connect(ADMIN_URL) as conn:
        return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is not None


def test_read_only_open_creates_nothing(store_target: tuple[str, str | None]) -> None:
    url, schema = store_target
    with pytest.raises(StoreNotFound) as e:
        open_store(url, schema=schema, create=False)
    assert (schema or url) in str(e.value)
    assert not _exists(url, schema)
    open_store(url, schema=schema).close()  # a worker creates it; then the read-only open works
    store = open_store(url, schema=schema, create=False)
    try:
        assert store.device_stats() == []
    finally:
        store.close()


def test_a_store_newer_than_this_code_is_refused(store_target: tuple[str, str | None]) -> None:
    url, schema = store_target
    store = open_store(url, schema=schema)
    store._begin()
    store._exec("UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    store._commit()
    store.close()
    for create in (True, False):
        with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
            open_store(url, schema=schema, create=create)


def test_reopening_is_idempotent(store_target: tuple[str, str | None]) -> None:
    url, schema = store_target
    for _ in range(3):
        store = open_store(url, schema=schema)
        rows = store._exec("SELECT name, value FROM meta").fetchall()
        store.close()
        assert rows == [("schema_version", str(SCHEMA_VERSION))]

"""Store locations for tests that run on both dialects: a fresh SQLite path or a fresh PostgreSQL schema."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def fresh_store(dialect: str, tmp_path: Path, tag: str) -> Iterator[tuple[str, str | None]]:
    """(url, schema) of a store nobody created yet; a PostgreSQL schema is dropped afterwards."""
    if dialect == "sqlite":
        yield str(tmp_path / "sub" / "records.db"), None
        return
    import psycopg

    schema = f"{tag}_{uuid.uuid4().hex[:10]}"
    try:
        yield PG_URL, schema
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

"""The one place a job store is chosen: `MIPRO_DATABASE_URL` names SQLite or Postgres.

`make_store` builds the store a process uses; `upgrade_schema` and `schema_versions` are the
work of `mipro db upgrade` and `mipro db current`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiosqlite

from mipro._settings import Settings

from . import _store_postgres
from ._migrations import Migration, latest_version, pending, sqlite_version
from ._secrets import EnvKeyVault
from ._store import JobStore
from ._store_postgres import PostgresJobStore
from ._store_sqlite import SqliteJobStore


def make_store(settings: Settings, *, vault: EnvKeyVault | None = None) -> JobStore:
    """The job store `settings.database_url` names (default: the data directory's SQLite file);
    not yet open."""
    if settings.database_dialect == "postgres":
        return PostgresJobStore(settings.database_url, pool_size=settings.database_pool_size,
                                vault=vault)
    return SqliteJobStore(settings.database_path, busy_timeout_ms=settings.store_busy_timeout_ms,
                          vault=vault)


def describe_store(settings: Settings) -> str:
    """Where the job store is, for messages (a Postgres password is never shown)."""
    if settings.database_dialect == "postgres":
        return _store_postgres.redact_url(settings.database_url)
    return f"sqlite:///{settings.database_path}"


async def upgrade_schema(settings: Settings) -> tuple[int, list[Migration]]:
    """Applies the pending migrations; returns the version before and what was applied."""
    if settings.database_dialect == "postgres":
        return await _store_postgres.upgrade(settings.database_url)
    before = await _sqlite_current(settings.database_path)
    store = SqliteJobStore(settings.database_path,
                           busy_timeout_ms=settings.store_busy_timeout_ms)
    await store.open()  # the embedded store applies its migrations when it opens
    await store.close()
    return before, list(pending("sqlite", before))


async def schema_versions(settings: Settings) -> tuple[int, int]:
    """The database's schema version and the one this release writes."""
    dialect = settings.database_dialect
    if dialect == "postgres":
        return await _store_postgres.current(settings.database_url), latest_version(dialect)
    return await _sqlite_current(settings.database_path), latest_version(dialect)


async def _sqlite_current(path: Path) -> int:
    """The version of the SQLite file at `path`, read-only (0: no such file)."""
    try:
        async with aiosqlite.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return await sqlite_version(conn)
    except sqlite3.OperationalError:
        if await asyncio.to_thread(path.exists):
            raise
        return 0

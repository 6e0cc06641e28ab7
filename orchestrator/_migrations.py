"""Versioned schema migrations of the job store: numbered SQL files, one folder per dialect.

`orchestrator/migrations/<dialect>/NNNN_name.sql` is migration NNNN; a version means the same
tables on SQLite and on Postgres. Postgres joined at version 4, so its folder starts there
(one file creating that schema); SQLite's files 0001-0004 are the steps its earlier releases
took. A database records what it has in its `schema_version` table, one row per applied
migration, and each migration runs in one transaction with its row, so a migration is applied
completely or not at all.

SQLite files made before migrations existed (no `schema_version`) are recognised by their
tables (version 1: rollouts as JSON blobs; 2: one column each; 3: tenants; 4: sealed
environment keys) and continue from there. The embedded SQLite store upgrades itself when it
opens; a Postgres database is upgraded by `mipro db upgrade`.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Literal

import aiosqlite

Dialect = Literal["sqlite", "postgres"]

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class SchemaError(RuntimeError):
    """The database's schema is not one this code can use as it is; the message says why and
    what to run."""


@dataclass(frozen=True)
class Migration:
    """One numbered migration of one dialect."""

    version: int
    name: str
    sql: str


def migrations(dialect: Dialect) -> tuple[Migration, ...]:
    """The dialect's migrations, in order."""
    folder = resources.files("orchestrator").joinpath("migrations", dialect)
    found = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    if not found:
        raise SchemaError(f"no {dialect} migrations in {folder}: the package is installed "
                          "without its orchestrator/migrations files")
    found.sort(key=lambda m: m.version)
    if len({m.version for m in found}) != len(found):
        raise SchemaError(f"two {dialect} migrations share a number")
    return tuple(found)


def latest_version(dialect: Dialect) -> int:
    """The schema version this code writes."""
    return migrations(dialect)[-1].version


def pending(dialect: Dialect, current: int) -> tuple[Migration, ...]:
    """The migrations a database at `current` still needs; raises `SchemaError` when it is at
    a version this code does not know (a newer release wrote it)."""
    every = migrations(dialect)
    if current > every[-1].version:
        raise SchemaError(f"the database is at schema version {current}, newer than this "
                          f"release knows ({every[-1].version}); run a newer release")
    return tuple(m for m in every if m.version > current)


# -- SQLite ------------------------------------------------------------------------------------

_SQLITE_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"""


async def sqlite_version(conn: aiosqlite.Connection) -> int:
    """The schema version of an open SQLite file (0: empty)."""
    tables = await _sqlite_tables(conn)
    if "schema_version" in tables:
        async with conn.execute("SELECT MAX(version) FROM schema_version") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row is not None and row[0] is not None else 0
    return await _sqlite_legacy_version(conn, tables)


async def sqlite_upgrade(conn: aiosqlite.Connection) -> list[Migration]:
    """Applies every pending migration to an open SQLite file (autocommit mode), each in one
    `BEGIN IMMEDIATE` transaction; returns those applied. Safe against another process
    upgrading the same file at once: a migration it lost the race for is skipped."""
    tables = await _sqlite_tables(conn)
    current = await sqlite_version(conn)
    stamp = datetime.now(UTC).isoformat()
    if "schema_version" not in tables and current > 0:  # a file from before migrations
        rows = "".join(f"INSERT OR IGNORE INTO schema_version VALUES ({v}, 'before migrations',"
                       f" '{stamp}');\n" for v in range(1, current + 1))
        await _sqlite_script(conn, f"{_SQLITE_VERSION_TABLE};\n{rows}"
                                   f"PRAGMA user_version = {current};")
    applied: list[Migration] = []
    for migration in pending("sqlite", current):
        try:
            await _sqlite_script(conn, (
                f"{_SQLITE_VERSION_TABLE};\n{migration.sql}\n;\n"
                f"INSERT INTO schema_version VALUES ({migration.version}, '{migration.name}',"
                f" '{stamp}');\nPRAGMA user_version = {migration.version};"))
        except sqlite3.Error:
            if await sqlite_version(conn) >= migration.version:
                continue  # another process applied it first
            raise
        applied.append(migration)
    return applied


async def _sqlite_script(conn: aiosqlite.Connection, body: str) -> None:
    """Runs `body` as one transaction: all of it or, on an error, none."""
    try:
        await conn.executescript(f"BEGIN IMMEDIATE;\n{body}\nCOMMIT;")
    except BaseException:
        if conn.in_transaction:
            await conn.execute("ROLLBACK")
        raise


async def _sqlite_tables(conn: aiosqlite.Connection) -> set[str]:
    async with conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as cursor:
        return {row[0] for row in await cursor.fetchall()}


async def _sqlite_legacy_version(conn: aiosqlite.Connection, tables: set[str]) -> int:
    """The version of a file written before migrations existed, from its tables."""
    if "jobs" not in tables:
        return 0
    if "rollouts" in tables:
        return 1
    if "tenants" not in tables:
        return 2
    async with conn.execute("PRAGMA table_info(env_keys)") as cursor:
        columns = {row[1] for row in await cursor.fetchall()}
    return 4 if "key_id" in columns else 3

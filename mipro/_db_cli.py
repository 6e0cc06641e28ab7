"""`mipro db upgrade` and `mipro db current`: the job store's schema version (README "Job store").

Both act on the store `MIPRO_DATABASE_URL` names (default: the data directory's SQLite file).
The embedded SQLite store also upgrades itself when the orchestrator opens it; a Postgres
store is upgraded only by `mipro db upgrade`, run once per release before the replicas start.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from orchestrator._migrations import SchemaError
from orchestrator._store_factory import describe_store, schema_versions, upgrade_schema

from ._settings import Settings


def _print(*parts: object) -> None:
    print(*parts, flush=True)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Runs `mipro db upgrade` or `mipro db current`; 1 when the store cannot be used."""
    where = describe_store(settings)
    try:
        if args.action == "upgrade":
            before, applied = await upgrade_schema(settings)
            for migration in applied:
                _print(f"applied {migration.version:04d}_{migration.name}")
            after = applied[-1].version if applied else before
            _print(f"{where}: schema version {after}"
                   + (f" (was {before})" if applied else " (up to date)"))
            return 0
        version, latest = await schema_versions(settings)
    except SchemaError as exc:
        _print(f"error: {exc}")
        return 1
    state = ("up to date" if version == latest else
             f"behind: run `mipro db upgrade` to reach {latest}" if version < latest else
             f"newer than this release ({latest})")
    _print(f"{where}: schema version {version} ({state})")
    return 0 if version == latest else 1


def add_parsers(commands: Any, data_dir_flag: Callable[[argparse.ArgumentParser], None],
                handler: Callable[[argparse.Namespace], int]) -> None:
    """Adds `db` to the `mipro` command's subparsers."""
    db = commands.add_parser("db", help="the job store's schema: upgrade, current")
    actions = db.add_subparsers(dest="action", required=True)
    actions.add_parser("upgrade", help="apply the pending migrations (MIPRO_DATABASE_URL)")
    actions.add_parser("current", help="print the schema version; exit 1 unless up to date")
    for parser in actions.choices.values():
        data_dir_flag(parser)
    db.set_defaults(handler=handler)

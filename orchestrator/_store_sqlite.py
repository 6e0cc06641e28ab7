"""`JobStore` on SQLite (the embedded default), through aiosqlite so the event loop never blocks.

WAL mode with `synchronous=NORMAL` keeps every committed write across a process kill; each
write is one transaction. A rollout result is one row of `rollout_results`, written once (its
cost does not grow with the job); `open()` applies the numbered migrations of
`migrations/sqlite/` (`_migrations.py`), so an older file is upgraded in place without
losing a row.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from ._exchanges import Exchange
from ._json import dumps
from ._migrations import latest_version, sqlite_upgrade
from ._models import (
    ApiKeyRecord,
    JobEvent,
    JobRecord,
    JobStatus,
    RolloutResult,
    Tenant,
    TenantStatus,
)
from ._secrets import EnvKeyVault, SecretsError
from ._store import (
    Admission,
    JobStore,
    JobUsage,
    RolloutFilter,
    RolloutOpening,
    job_from_state,
    job_state,
)
from ._store import decode_page_token as _decode_token
from ._store import encode_page_token as _encode_token

log = structlog.get_logger(__name__)

#: The schema version this module writes: the last of `migrations/sqlite/` (`_migrations.py`).
SCHEMA_VERSION = latest_version("sqlite")


def _exchange_json(exchange: Exchange) -> str:
    return json.dumps(dataclasses.asdict(exchange))


def _exchange_from_json(text: str) -> Exchange:
    return Exchange(**json.loads(text))



#: Rollout rows in one INSERT at most: 11 values each, under SQLite's 32,766 variables.
_ROWS_PER_STATEMENT = 256
_ROW_MARKS = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse_ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _job_state(job: JobRecord) -> str:
    return json.dumps(job_state(job))


def _job_from_row(row: aiosqlite.Row) -> JobRecord:
    return job_from_state(row["job_id"], row["owner"], row["request_id"], JobStatus(row["status"]),
                          datetime.fromisoformat(row["created_at"]), json.loads(row["state_json"]))


class SqliteJobStore(JobStore):
    """The embedded job store: one SQLite file in WAL mode."""

    def __init__(self, path: Path | str, *, busy_timeout_ms: int = 5000,
                 vault: EnvKeyVault | None = None) -> None:
        self._path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._db: aiosqlite.Connection | None = None
        #: Seals environment keys at rest; without one the store refuses to hold them.
        self._vault = vault
        #: Rollout rows waiting for the statement in flight, and whether one is.
        self._rows: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self._writing_rows = False
        self._row_writer: asyncio.Task[None] | None = None

    @property
    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the job store is not open")
        return self._db

    async def _fetch(self, sql: str, params: Any = ()) -> list[aiosqlite.Row]:
        """Runs a statement and reads all its rows in one step on the connection's thread.
        A statement left open between two steps would hold a read transaction that another
        coroutine's write must upgrade, which SQLite refuses at once ("database is
        locked", no busy wait) when another process wrote meanwhile: several replicas."""
        return list(await self._conn.execute_fetchall(sql, params))

    async def _fetch_one(self, sql: str, params: Any = ()) -> aiosqlite.Row | None:
        rows = await self._fetch(sql, params)
        return rows[0] if rows else None

    async def open(self) -> None:
        _private_file(self._path)
        self._db = await aiosqlite.connect(self._path, isolation_level=None)
        self._db.row_factory = aiosqlite.Row
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        await sqlite_upgrade(self._db)
        await self._seal_env_keys()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def create_job(self, job: JobRecord) -> JobRecord:
        # One statement, so two creates with one request id racing (a client's retry while
        # the first is in flight) make one job: the loser finds the winner's.
        async with self._conn.execute(
            "INSERT INTO jobs (job_id, owner, request_id, status, created_at, state_json)"
            " VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (owner, request_id) WHERE request_id != '' DO NOTHING"
            " RETURNING job_id",
            (job.job_id, job.owner, job.request_id, job.status.value,
             job.created_at.isoformat(), _job_state(job)),
        ) as cursor:
            inserted = await cursor.fetchone()
        if inserted is not None:
            return job
        existing = await self._find_by_request_id(job.owner, job.request_id)
        assert existing is not None  # the row that conflicted; jobs are never deleted
        return existing

    async def _find_by_request_id(self, owner: str, request_id: str) -> JobRecord | None:
        async with self._conn.execute(
            "SELECT * FROM jobs WHERE owner = ? AND request_id = ?", (owner, request_id)
        ) as cursor:
            row = await cursor.fetchone()
        return _job_from_row(row) if row else None

    async def get_job(self, job_id: str, owner: str | None = None) -> JobRecord | None:
        row = await self._fetch_one("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        if row is None or (owner is not None and row["owner"] != owner):
            return None
        return _job_from_row(row)

    async def list_jobs(
        self, owner: str, *, status: JobStatus | None, limit: int, page_token: str
    ) -> tuple[list[JobRecord], str]:
        query = "SELECT * FROM jobs WHERE owner = ?"
        params: list[Any] = [owner]
        if status is not None:
            query += " AND status = ?"
            params.append(status.value)
        if page_token:
            created_at, job_id = _decode_token(page_token)
            query += " AND (created_at < ? OR (created_at = ? AND job_id < ?))"
            params += [created_at, created_at, job_id]
        query += " ORDER BY created_at DESC, job_id DESC LIMIT ?"
        params.append(limit + 1)
        async with self._conn.execute(query, params) as cursor:
            rows = list(await cursor.fetchall())
        next_token = ""
        if len(rows) > limit:
            last = rows[limit - 1]
            next_token = _encode_token(last["created_at"], last["job_id"])
            rows = rows[:limit]
        return [_job_from_row(r) for r in rows], next_token

    async def jobs_with_status(self, statuses: tuple[JobStatus, ...]) -> list[JobRecord]:
        marks = ",".join("?" for _ in statuses)
        async with self._conn.execute(
            f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY created_at, job_id",
            [s.value for s in statuses],
        ) as cursor:
            rows = await cursor.fetchall()
        return [_job_from_row(r) for r in rows]

    async def save_job(self, job: JobRecord) -> None:
        await self._conn.execute(
            "UPDATE jobs SET status = ?, state_json = ? WHERE job_id = ?"
            " AND status NOT IN ('succeeded', 'failed', 'cancelled')",
            (job.status.value, _job_state(job), job.job_id),
        )

    async def record_rollout(self, job_id: str, result: RolloutResult) -> None:
        await self._insert_rollout(job_id, result)

    async def _insert_rollout(self, job_id: str, result: RolloutResult) -> None:
        """Returns once the row is committed. Rows that arrive while a write is in flight
        go together in the next statement (a group commit: one statement and one commit for
        all of them, instead of one each, which cost most of the store's CPU per rollout)."""
        row = (job_id, result.rollout_id, result.phase, result.candidate_index, result.seed,
               result.reward, result.failure_cause, result.failure_detail,
               result.prompt_tokens, result.completion_tokens,
               dumps(result.trace).decode() if result.trace is not None else None)
        done = asyncio.get_running_loop().create_future()
        self._rows.append((row, done))
        if not self._writing_rows:
            self._writing_rows = True
            self._row_writer = asyncio.create_task(self._write_rows())
        await done

    async def _write_rows(self) -> None:
        try:
            while self._rows:
                batch, self._rows = self._rows[:_ROWS_PER_STATEMENT], \
                    self._rows[_ROWS_PER_STATEMENT:]
                try:
                    await self._conn.execute(
                        "INSERT OR IGNORE INTO rollout_results (job_id, rollout_id, phase,"
                        " candidate, seed, reward, failure_cause, failure_detail,"
                        " prompt_tokens, completion_tokens, trace_json) VALUES "
                        + ", ".join([_ROW_MARKS] * len(batch)),
                        [value for row, _ in batch for value in row])
                except Exception as error:  # every waiter of this statement sees it
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(error)
                else:
                    for _, done in batch:
                        if not done.done():
                            done.set_result(None)
        finally:
            self._writing_rows = False

    async def list_rollouts(self, job_id: str) -> list[RolloutResult]:
        return await self.list_rollouts_from(job_id, 0)

    async def list_rollouts_from(self, job_id: str, start: int) -> list[RolloutResult]:
        rows = await self._fetch(
            "SELECT rollout_id, phase, candidate, seed, reward, failure_cause, failure_detail,"
            " prompt_tokens, completion_tokens, trace_json FROM rollout_results"
            " WHERE job_id = ? ORDER BY position LIMIT -1 OFFSET ?", (job_id, max(0, start))
        )
        return [
            RolloutResult(
                rollout_id=r[0], phase=r[1], candidate_index=r[2], seed=r[3], reward=r[4],
                failure_cause=r[5], failure_detail=r[6], prompt_tokens=r[7],
                completion_tokens=r[8], tokens=r[7] + r[8],
                trace=json.loads(r[9]) if r[9] is not None else None)
            for r in rows
        ]

    async def list_rollouts_page(self, job_id: str, *, after: int, limit: int,
                                 where: RolloutFilter | None = None,
                                 ) -> list[tuple[int, RolloutResult]]:
        keep = where or RolloutFilter()
        query = ("SELECT position, rollout_id, phase, candidate, seed, reward, failure_cause,"
                 " failure_detail, prompt_tokens, completion_tokens FROM rollout_results"
                 " WHERE job_id = ? AND position > ?")
        params: list[Any] = [job_id, after]
        for column, value in (("phase", keep.phase), ("seed", keep.seed),
                              ("candidate", keep.candidate)):
            if value is not None:
                query += f" AND {column} = ?"
                params.append(value)
        if keep.ok is not None:
            query += " AND reward IS NOT NULL" if keep.ok else " AND reward IS NULL"
        rows = await self._fetch(query + " ORDER BY position LIMIT ?", (*params, limit))
        return [(r[0], RolloutResult(
            rollout_id=r[1], phase=r[2], candidate_index=r[3], seed=r[4], reward=r[5],
            failure_cause=r[6], failure_detail=r[7], prompt_tokens=r[8],
            completion_tokens=r[9], tokens=r[8] + r[9])) for r in rows]

    async def append_event(
        self, job_id: str, type: str, message: str, data: dict[str, Any], *, terminal: bool
    ) -> JobEvent:
        created_at = datetime.now(UTC)
        row = await self._fetch_one(
            "INSERT INTO events (job_id, seq, type, message, data_json, terminal, created_at)"
            " SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ?, ? FROM events WHERE job_id = ?"
            " RETURNING seq",
            (job_id, type, message, json.dumps(data), int(terminal), created_at.isoformat(),
             job_id),
        )
        assert row is not None
        return JobEvent(seq=row["seq"], type=type, message=message, data=data,
                        created_at=created_at, terminal=terminal)

    async def list_events(self, job_id: str, *, since_seq: int, limit: int) -> list[JobEvent]:
        rows = await self._fetch(
            "SELECT * FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, since_seq, limit),
        )
        return [
            JobEvent(seq=r["seq"], type=r["type"], message=r["message"],
                     data=json.loads(r["data_json"]), terminal=bool(r["terminal"]),
                     created_at=datetime.fromisoformat(r["created_at"]))
            for r in rows
        ]

    # -- environment keys: sealed with the vault's current key, `key_id` naming it -----------

    def _require_vault(self) -> EnvKeyVault:
        if self._vault is None:
            raise RuntimeError("this job store has no vault: environment keys are not stored "
                               "in plain text (pass vault=EnvKeyVault(...))")
        return self._vault

    async def put_env_key(self, owner: str, name: str, value: str) -> None:
        key_id, sealed = self._require_vault().seal(name, value)
        await self._conn.execute(
            "INSERT INTO env_keys (owner, name, value, updated_at, key_id) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (owner, name) DO UPDATE SET value = excluded.value,"
            " updated_at = excluded.updated_at, key_id = excluded.key_id",
            (owner, name, sealed, datetime.now(UTC).isoformat(), key_id),
        )

    async def get_env_key(self, owner: str, name: str) -> str | None:
        vault = self._require_vault()
        row = await self._fetch_one(
            "SELECT value, key_id FROM env_keys WHERE owner = ? AND name = ?", (owner, name))
        if row is None:
            return None
        try:
            return vault.open(name, row["key_id"] or "", row["value"])
        except SecretsError as error:  # the owner is told to register the key again
            log.warning("stored environment key unreadable", name=name, reason=str(error))
            return None

    async def _seal_env_keys(self) -> None:
        """Seals every env-key row under the vault's current key, in one transaction: rows
        from before encryption (`key_id` NULL: plain text) and rows an earlier server key
        sealed (rotation). Idempotent: the marker is the `key_id` column (migration 4)."""
        conn = self._conn
        if self._vault is None:
            return
        vault = self._vault
        async with conn.execute(
                "SELECT owner, name, value, key_id FROM env_keys"
                " WHERE key_id IS NULL OR key_id != ?", (vault.current_key_id,)) as cursor:
            rows = list(await cursor.fetchall())
        if not rows:
            return
        await conn.execute("PRAGMA secure_delete = ON")  # zero the plain text it replaces
        await conn.execute("BEGIN IMMEDIATE")
        try:
            resealed = unreadable = 0
            for row in rows:
                try:
                    value = row["value"] if row["key_id"] is None else vault.open(
                        row["name"], row["key_id"], row["value"])
                except SecretsError:
                    unreadable += 1
                    continue
                key_id, sealed = vault.seal(row["name"], value)
                await conn.execute(
                    "UPDATE env_keys SET value = ?, key_id = ? WHERE owner = ? AND name = ?",
                    (sealed, key_id, row["owner"], row["name"]))
                resealed += 1
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        finally:
            await conn.execute("PRAGMA secure_delete = OFF")
        if resealed:
            log.info("environment keys sealed under the current server key", count=resealed)
        if unreadable:
            log.warning("environment keys sealed with a server key that is not configured; "
                        "add it to MIPRO_SECRETS_KEY_PREVIOUS or register them again",
                        count=unreadable)


    # -- tenants and API keys ----------------------------------------------------------------

    async def create_tenant(self, tenant: Tenant) -> Tenant:
        await self._conn.execute(
            "INSERT OR IGNORE INTO tenants (tenant_id, name, status, created_at)"
            " VALUES (?, ?, ?, ?)",
            (tenant.tenant_id, tenant.name, tenant.status.value, tenant.created_at.isoformat()))
        stored = await self.get_tenant(tenant.tenant_id)
        assert stored is not None
        return stored

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        async with self._conn.execute(
                "SELECT * FROM tenants WHERE tenant_id = ?", (tenant_id,)) as cursor:
            row = await cursor.fetchone()
        return _tenant_from_row(row) if row else None

    async def list_tenants(self) -> list[Tenant]:
        async with self._conn.execute(
                "SELECT * FROM tenants ORDER BY created_at, tenant_id") as cursor:
            rows = await cursor.fetchall()
        return [_tenant_from_row(r) for r in rows]

    async def set_tenant_status(self, tenant_id: str, status: TenantStatus) -> bool:
        async with self._conn.execute(
                "UPDATE tenants SET status = ? WHERE tenant_id = ?",
                (status.value, tenant_id)) as cursor:
            return cursor.rowcount > 0

    async def create_api_key(self, key: ApiKeyRecord) -> None:
        await self._conn.execute(
            "INSERT INTO api_keys (key_id, tenant_id, name, prefix, secret_hash, created_at,"
            " revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key.key_id, key.tenant_id, key.name, key.prefix, key.secret_hash,
             key.created_at.isoformat(), _ts(key.revoked_at)))

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        async with self._conn.execute(
                "SELECT * FROM api_keys ORDER BY created_at, key_id") as cursor:
            rows = await cursor.fetchall()
        return [_api_key_from_row(r) for r in rows]

    async def revoke_api_key(self, key_id: str, revoked_at: datetime) -> ApiKeyRecord | None:
        await self._conn.execute(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE key_id = ?",
            (revoked_at.isoformat(), key_id))
        async with self._conn.execute(
                "SELECT * FROM api_keys WHERE key_id = ?", (key_id,)) as cursor:
            row = await cursor.fetchone()
        return _api_key_from_row(row) if row else None

    # -- open rollouts and their exchanges ---------------------------------------------------

    # One statement each, no explicit transaction: the connection is shared by concurrent
    # coroutines. Exchanges are keyed by (rollout id, nonce), so a state between two
    # statements is never wrong: an opening's exchanges are reachable only while it is open.

    async def open_rollout(self, opening: RolloutOpening) -> None:
        await self._conn.execute(
            "INSERT OR REPLACE INTO open_rollouts (rollout_id, job_id, nonce, candidate, calls)"
            " VALUES (?, ?, ?, ?, 0)",
            (opening.rollout_id, opening.job_id, opening.nonce, opening.candidate))
        await self._conn.execute(
            "DELETE FROM rollout_exchanges WHERE rollout_id = ? AND nonce != ?",
            (opening.rollout_id, opening.nonce))

    async def admit_call(self, opening: RolloutOpening, max_calls: int) -> Admission:
        if await self._fetch_one(
                "UPDATE open_rollouts SET calls = calls + 1 WHERE rollout_id = ? AND job_id = ?"
                " AND nonce = ? AND candidate = ? AND calls < ? RETURNING calls",
                (opening.rollout_id, opening.job_id, opening.nonce, opening.candidate,
                 max_calls)) is not None:
            return Admission.ADMITTED
        exists = await self._fetch_one(
            "SELECT 1 FROM open_rollouts WHERE rollout_id = ? AND job_id = ? AND nonce = ?"
            " AND candidate = ?",
            (opening.rollout_id, opening.job_id, opening.nonce, opening.candidate)) is not None
        return Admission.OVER_LIMIT if exists else Admission.UNKNOWN

    async def record_exchange(self, rollout_id: str, nonce: str, exchange: Exchange) -> bool:
        return bool(await self._fetch(
            "INSERT INTO rollout_exchanges (rollout_id, nonce, exchange_json)"
            " SELECT rollout_id, nonce, ? FROM open_rollouts"
            " WHERE rollout_id = ? AND nonce = ? RETURNING 1",
            (_exchange_json(exchange), rollout_id, nonce)))

    async def rollout_exchanges(self, rollout_id: str, nonce: str) -> list[Exchange]:
        rows = await self._fetch(
            "SELECT exchange_json FROM rollout_exchanges WHERE rollout_id = ? AND nonce = ?"
            " ORDER BY position", (rollout_id, nonce))
        return [_exchange_from_json(r[0]) for r in rows]

    async def close_rollout(self, rollout_id: str, nonce: str) -> list[Exchange]:
        was_open = bool(await self._fetch(
            "DELETE FROM open_rollouts WHERE rollout_id = ? AND nonce = ? RETURNING 1",
            (rollout_id, nonce)))
        rows = sorted(await self._fetch(
            "DELETE FROM rollout_exchanges WHERE rollout_id = ? AND nonce = ?"
            " RETURNING position, exchange_json", (rollout_id, nonce)), key=lambda r: int(r[0]))
        return [_exchange_from_json(r[1]) for r in rows] if was_open else []

    async def drop_open_rollouts(self, job_id: str) -> int:
        await self._conn.execute(
            "DELETE FROM rollout_exchanges WHERE rollout_id IN"
            " (SELECT rollout_id FROM open_rollouts WHERE job_id = ?)", (job_id,))
        return len(await self._fetch(
            "DELETE FROM open_rollouts WHERE job_id = ? RETURNING 1", (job_id,)))

    # -- usage -------------------------------------------------------------------------------

    async def add_usage(self, job_id: str, delta: JobUsage) -> JobUsage:
        row = await self._fetch_one(
                "INSERT INTO job_usage (job_id, rollouts, policy_prompt_tokens,"
                " policy_completion_tokens, proposer_tokens, proposer_cost_usd)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET"
                " rollouts = rollouts + excluded.rollouts,"
                " policy_prompt_tokens = policy_prompt_tokens + excluded.policy_prompt_tokens,"
                " policy_completion_tokens ="
                " policy_completion_tokens + excluded.policy_completion_tokens,"
                " proposer_tokens = proposer_tokens + excluded.proposer_tokens,"
                " proposer_cost_usd = proposer_cost_usd + excluded.proposer_cost_usd"
                " RETURNING rollouts, policy_prompt_tokens, policy_completion_tokens,"
                " proposer_tokens, proposer_cost_usd",
                (job_id, delta.rollouts, delta.policy_prompt_tokens,
                 delta.policy_completion_tokens, delta.proposer_tokens,
                 delta.proposer_cost_usd))
        assert row is not None
        return JobUsage(int(row[0]), int(row[1]), int(row[2]), int(row[3]), float(row[4]))

    async def get_usage(self, job_id: str) -> JobUsage:
        row = await self._fetch_one(
            "SELECT rollouts, policy_prompt_tokens, policy_completion_tokens,"
            " proposer_tokens, proposer_cost_usd FROM job_usage WHERE job_id = ?", (job_id,))
        if row is None:
            return JobUsage()
        return JobUsage(int(row[0]), int(row[1]), int(row[2]), int(row[3]), float(row[4]))

    # -- tenant limits across replicas -------------------------------------------------------

    async def tenant_job_counts(self, owner: str) -> tuple[int, int]:
        rows = await self._fetch(
            "SELECT status, count(*) FROM jobs WHERE owner = ?"
            " AND status IN ('queued', 'running') GROUP BY status", (owner,))
        counts = {r[0]: int(r[1]) for r in rows}
        return counts.get("queued", 0), counts.get("running", 0)

    async def admit_job(self, job_id: str, owner: str, max_running: int) -> bool:
        # One write statement: SQLite takes the write lock before it counts, so two
        # processes never count the same free slot.
        if await self._fetch(
                "UPDATE jobs SET status = 'running' WHERE job_id = ? AND owner = ?"
                " AND status = 'queued' AND (SELECT count(*) FROM jobs AS o"
                " WHERE o.owner = jobs.owner AND (o.status = 'running' OR (o.status = 'queued'"
                " AND (o.created_at < jobs.created_at OR (o.created_at = jobs.created_at"
                " AND o.job_id < jobs.job_id))))) < ? RETURNING job_id",
                (job_id, owner, max_running)):
            return True
        row = await self._fetch_one("SELECT status FROM jobs WHERE job_id = ?", (job_id,))
        return row is not None and row[0] == "running"

    # -- candidate prompts -------------------------------------------------------------------

    async def put_candidate_prompt(self, job_id: str, candidate: int,
                                   prompt: dict[str, Any] | None) -> None:
        await self._conn.execute(
            "INSERT OR IGNORE INTO candidate_prompts (job_id, candidate, prompt_json)"
            " VALUES (?, ?, ?)",
            (job_id, candidate, json.dumps(prompt) if prompt is not None else None))

    async def get_candidate_prompt(self, job_id: str,
                                   candidate: int) -> tuple[bool, dict[str, Any] | None]:
        row = await self._fetch_one(
            "SELECT prompt_json FROM candidate_prompts WHERE job_id = ? AND candidate = ?",
            (job_id, candidate))
        if row is None:
            return False, None
        return True, json.loads(row[0]) if row[0] is not None else None


def _tenant_from_row(row: aiosqlite.Row) -> Tenant:
    return Tenant(tenant_id=row["tenant_id"], name=row["name"],
                  status=TenantStatus(row["status"]),
                  created_at=datetime.fromisoformat(row["created_at"]))


def _api_key_from_row(row: aiosqlite.Row) -> ApiKeyRecord:
    return ApiKeyRecord(key_id=row["key_id"], tenant_id=row["tenant_id"], name=row["name"],
                        prefix=row["prefix"], secret_hash=row["secret_hash"],
                        created_at=datetime.fromisoformat(row["created_at"]),
                        revoked_at=_parse_ts(row["revoked_at"]))


def _private_file(path: Path) -> None:
    """Creates `path`'s directory 0700 and the file 0600 (tightening existing ones), so
    other local users read neither the database nor its WAL (SQLite gives the -wal and
    -shm files the database file's mode)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists():
            file.chmod(0o600)

"""`JobStore` on Postgres, for several orchestrator replicas sharing one database (psycopg 3).

Every method borrows a connection from a pool (`psycopg_pool`, autocommit); a write of more
than one statement is one transaction. Event numbers stay gap-free however many processes
append to a job: each append is one statement that bumps the job's row of `event_counters`
(`INSERT ... ON CONFLICT DO UPDATE ... RETURNING`) and inserts the event with that number, so
the row lock serializes a job's writers until commit, and a failed insert rolls the number
back. The schema is versioned (`_migrations.py`, `migrations/postgres/`); `open()` refuses a
database `mipro db upgrade` has not brought to this release's version, and `upgrade()` is that
command's work, under an advisory lock so two replicas never migrate at once.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import psycopg
import structlog
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Json
from psycopg_pool import AsyncConnectionPool

from ._exchanges import Exchange
from ._migrations import Migration, SchemaError, latest_version, pending
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
    RolloutOpening,
    decode_page_token,
    encode_page_token,
    job_from_state,
    job_state,
)

log = structlog.get_logger(__name__)

#: The advisory lock `upgrade()` holds (any constant; "mipro" in ASCII).
_MIGRATION_LOCK = 0x6D6970726F
#: The first key of the advisory locks that serialize one tenant's admissions ("mipt").
_TENANT_LOCK = 0x6D697074

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"""

Connection = psycopg.AsyncConnection[DictRow]


def redact_url(url: str) -> str:
    """`url` with its password replaced by `***`, for logs and messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable URL)"
    host = info.get("host", "") or "(socket)"
    return f"postgresql://{info.get('user', '')}{':***' if 'password' in info else ''}" \
           f"@{host}:{info.get('port', 5432)}/{info.get('dbname', '')}"


async def schema_version(conn: Connection) -> int:
    """The database's schema version (0: no `schema_version` table yet)."""
    cursor = await conn.execute("SELECT to_regclass('schema_version') IS NOT NULL AS present")
    row = await cursor.fetchone()
    if row is None or not row["present"]:
        return 0
    cursor = await conn.execute("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
    row = await cursor.fetchone()
    return int(row["v"]) if row is not None else 0


async def _connect(url: str) -> Connection:
    try:
        return await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)
    except psycopg.OperationalError as error:
        raise SchemaError(f"cannot connect to the job store {redact_url(url)}: "
                          f"{_first_line(error)}") from None


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


async def upgrade(url: str) -> tuple[int, list[Migration]]:
    """Applies the pending migrations and their `schema_version` rows in one transaction,
    holding an advisory lock (a second caller waits, then finds nothing to do); returns the
    version before and the migrations applied."""
    conn = await _connect(url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute(_VERSION_TABLE)
            before = await schema_version(conn)
            todo = pending("postgres", before)
            for migration in todo:
                await conn.execute(migration.sql.encode())
                await conn.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, datetime.now(UTC)))
        return before, list(todo)
    finally:
        await conn.close()


async def current(url: str) -> int:
    """The schema version of the database at `url`."""
    conn = await _connect(url)
    try:
        return await schema_version(conn)
    finally:
        await conn.close()


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _job_from_row(row: DictRow) -> JobRecord:
    return job_from_state(row["job_id"], row["owner"], row["request_id"],
                          JobStatus(row["status"]), _utc(row["created_at"]), row["state_json"])


def _tenant_from_row(row: DictRow) -> Tenant:
    return Tenant(tenant_id=row["tenant_id"], name=row["name"],
                  status=TenantStatus(row["status"]), created_at=_utc(row["created_at"]))


def _api_key_from_row(row: DictRow) -> ApiKeyRecord:
    revoked = row["revoked_at"]
    return ApiKeyRecord(key_id=row["key_id"], tenant_id=row["tenant_id"], name=row["name"],
                        prefix=row["prefix"], secret_hash=row["secret_hash"],
                        created_at=_utc(row["created_at"]),
                        revoked_at=_utc(revoked) if revoked is not None else None)


class PostgresJobStore(JobStore):
    """The job store of replicas: one Postgres database, a pool of connections per process."""

    def __init__(self, url: str, *, pool_size: int = 10,
                 vault: EnvKeyVault | None = None) -> None:
        self._url = url
        self._pool_size = pool_size
        self._pool: AsyncConnectionPool[Connection] | None = None
        #: Seals environment keys at rest; without one the store refuses to hold them.
        self._vault = vault

    @property
    def _connections(self) -> AsyncConnectionPool[Connection]:
        if self._pool is None:
            raise RuntimeError("the job store is not open")
        return self._pool

    async def open(self) -> None:
        """Connects and checks the schema; raises `SchemaError` naming `mipro db upgrade`
        when the database is behind this release (or ahead of it)."""
        version = await current(self._url)
        if pending("postgres", version):
            raise SchemaError(
                f"the job store {redact_url(self._url)} is at schema version {version}, this "
                f"release needs {latest_version('postgres')}: run `mipro db upgrade` (with the "
                "same MIPRO_DATABASE_URL) first")
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            self._url, min_size=1, max_size=self._pool_size, open=False,
            connection_class=psycopg.AsyncConnection[DictRow],
            kwargs={"autocommit": True, "row_factory": dict_row})
        await pool.open(wait=True)
        self._pool = pool
        await self._seal_env_keys()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _one(self, query: str, params: tuple[Any, ...] = ()) -> DictRow | None:
        async with self._connections.connection() as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchone()

    async def _all(self, query: str, params: tuple[Any, ...] | list[Any] = ()) -> list[DictRow]:
        async with self._connections.connection() as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall()

    async def _run(self, query: str, params: tuple[Any, ...] = ()) -> int:
        async with self._connections.connection() as conn:
            cursor = await conn.execute(query, params)
            return cursor.rowcount

    # -- jobs --------------------------------------------------------------------------------

    async def create_job(self, job: JobRecord) -> JobRecord:
        inserted = await self._one(
            "INSERT INTO jobs (job_id, owner, request_id, status, created_at, state_json)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (owner, request_id) WHERE request_id <> '' DO NOTHING"
            " RETURNING job_id",
            (job.job_id, job.owner, job.request_id, job.status.value, job.created_at,
             Json(job_state(job))))
        if inserted is not None:
            return job
        row = await self._one("SELECT * FROM jobs WHERE owner = %s AND request_id = %s",
                              (job.owner, job.request_id))
        assert row is not None  # the conflicting row; jobs are never deleted
        return _job_from_row(row)

    async def get_job(self, job_id: str, owner: str | None = None) -> JobRecord | None:
        row = await self._one("SELECT * FROM jobs WHERE job_id = %s", (job_id,))
        if row is None or (owner is not None and row["owner"] != owner):
            return None
        return _job_from_row(row)

    async def list_jobs(
        self, owner: str, *, status: JobStatus | None, limit: int, page_token: str
    ) -> tuple[list[JobRecord], str]:
        query = "SELECT * FROM jobs WHERE owner = %s"
        params: list[Any] = [owner]
        if status is not None:
            query += " AND status = %s"
            params.append(status.value)
        if page_token:
            created_text, job_id = decode_page_token(page_token)
            try:
                created_at = datetime.fromisoformat(created_text)
            except ValueError:
                raise ValueError("page_token is not a token this server issued") from None
            query += " AND (created_at, job_id) < (%s, %s)"
            params += [created_at, job_id]
        query += " ORDER BY created_at DESC, job_id DESC LIMIT %s"
        params.append(limit + 1)
        rows = await self._all(query, params)
        next_token = ""
        if len(rows) > limit:
            last = rows[limit - 1]
            next_token = encode_page_token(_utc(last["created_at"]).isoformat(), last["job_id"])
            rows = rows[:limit]
        return [_job_from_row(r) for r in rows], next_token

    async def jobs_with_status(self, statuses: tuple[JobStatus, ...]) -> list[JobRecord]:
        rows = await self._all(
            "SELECT * FROM jobs WHERE status = ANY(%s) ORDER BY created_at, job_id",
            ([s.value for s in statuses],))
        return [_job_from_row(r) for r in rows]

    async def save_job(self, job: JobRecord) -> None:
        await self._run("UPDATE jobs SET status = %s, state_json = %s WHERE job_id = %s"
                        " AND status NOT IN ('succeeded', 'failed', 'cancelled')",
                        (job.status.value, Json(job_state(job)), job.job_id))

    async def record_rollout(self, job_id: str, result: RolloutResult) -> None:
        await self._run(
            "INSERT INTO rollout_results (job_id, rollout_id, phase, candidate, seed, reward,"
            " failure_cause, failure_detail, prompt_tokens, completion_tokens, trace_json)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (job_id, rollout_id) DO NOTHING",
            (job_id, result.rollout_id, result.phase, result.candidate_index, result.seed,
             result.reward, result.failure_cause, result.failure_detail, result.prompt_tokens,
             result.completion_tokens,
             Json(result.trace) if result.trace is not None else None))

    async def list_rollouts(self, job_id: str) -> list[RolloutResult]:
        rows = await self._all(
            "SELECT rollout_id, phase, candidate, seed, reward, failure_cause, failure_detail,"
            " prompt_tokens, completion_tokens, trace_json FROM rollout_results"
            " WHERE job_id = %s ORDER BY position", (job_id,))
        return [_rollout_from_row(r) for r in rows]

    # -- events: numbered by the job's counter row, in the same statement ---------------------

    async def append_event(
        self, job_id: str, type: str, message: str, data: dict[str, Any], *, terminal: bool
    ) -> JobEvent:
        created_at = datetime.now(UTC)
        row = await self._one(
            "WITH counter AS (INSERT INTO event_counters (job_id, last_seq) VALUES (%s, 1)"
            " ON CONFLICT (job_id) DO UPDATE SET last_seq = event_counters.last_seq + 1"
            " RETURNING last_seq)"
            " INSERT INTO events (job_id, seq, type, message, data_json, terminal, created_at)"
            " SELECT %s, last_seq, %s, %s, %s, %s, %s FROM counter RETURNING seq",
            (job_id, job_id, type, message, Json(data), terminal, created_at))
        assert row is not None
        return JobEvent(seq=row["seq"], type=type, message=message, data=data,
                        created_at=created_at, terminal=terminal)

    async def list_events(self, job_id: str, *, since_seq: int, limit: int) -> list[JobEvent]:
        rows = await self._all(
            "SELECT * FROM events WHERE job_id = %s AND seq > %s ORDER BY seq LIMIT %s",
            (job_id, since_seq, limit))
        return [JobEvent(seq=r["seq"], type=r["type"], message=r["message"],
                         data=r["data_json"], terminal=r["terminal"],
                         created_at=_utc(r["created_at"]))
                for r in rows]

    # -- environment keys: sealed with the vault's current key, `key_id` naming it -----------

    def _require_vault(self) -> EnvKeyVault:
        if self._vault is None:
            raise RuntimeError("this job store has no vault: environment keys are not stored "
                               "in plain text (pass vault=EnvKeyVault(...))")
        return self._vault

    async def put_env_key(self, owner: str, name: str, value: str) -> None:
        key_id, sealed = self._require_vault().seal(name, value)
        await self._run(
            "INSERT INTO env_keys (owner, name, value, updated_at, key_id)"
            " VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (owner, name) DO UPDATE SET value = excluded.value,"
            " updated_at = excluded.updated_at, key_id = excluded.key_id",
            (owner, name, sealed, datetime.now(UTC), key_id))

    async def get_env_key(self, owner: str, name: str) -> str | None:
        vault = self._require_vault()
        row = await self._one("SELECT value, key_id FROM env_keys WHERE owner = %s AND name = %s",
                              (owner, name))
        if row is None:
            return None
        try:
            return vault.open(name, row["key_id"] or "", row["value"])
        except SecretsError as error:  # the owner is told to register the key again
            log.warning("stored environment key unreadable", name=name, reason=str(error))
            return None

    async def _seal_env_keys(self) -> None:
        """Seals every env-key row that another server key sealed (rotation) under the
        current one, in one transaction; rows are locked so two replicas do not both."""
        if self._vault is None:
            return
        vault = self._vault
        resealed = unreadable = 0
        async with self._connections.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                "SELECT owner, name, value, key_id FROM env_keys"
                " WHERE key_id IS NULL OR key_id <> %s FOR UPDATE", (vault.current_key_id,))
            for row in await cursor.fetchall():
                try:
                    value = row["value"] if row["key_id"] is None else vault.open(
                        row["name"], row["key_id"], row["value"])
                except SecretsError:
                    unreadable += 1
                    continue
                key_id, sealed = vault.seal(row["name"], value)
                await conn.execute(
                    "UPDATE env_keys SET value = %s, key_id = %s WHERE owner = %s AND name = %s",
                    (sealed, key_id, row["owner"], row["name"]))
                resealed += 1
        if resealed:
            log.info("environment keys sealed under the current server key", count=resealed)
        if unreadable:
            log.warning("environment keys sealed with a server key that is not configured; "
                        "add it to MIPRO_SECRETS_KEY_PREVIOUS or register them again",
                        count=unreadable)

    # -- tenants and API keys ----------------------------------------------------------------

    async def create_tenant(self, tenant: Tenant) -> Tenant:
        await self._run(
            "INSERT INTO tenants (tenant_id, name, status, created_at) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (tenant_id) DO NOTHING",
            (tenant.tenant_id, tenant.name, tenant.status.value, tenant.created_at))
        stored = await self.get_tenant(tenant.tenant_id)
        assert stored is not None
        return stored

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        row = await self._one("SELECT * FROM tenants WHERE tenant_id = %s", (tenant_id,))
        return _tenant_from_row(row) if row else None

    async def list_tenants(self) -> list[Tenant]:
        rows = await self._all("SELECT * FROM tenants ORDER BY created_at, tenant_id")
        return [_tenant_from_row(r) for r in rows]

    async def set_tenant_status(self, tenant_id: str, status: TenantStatus) -> bool:
        return await self._run("UPDATE tenants SET status = %s WHERE tenant_id = %s",
                               (status.value, tenant_id)) > 0

    async def create_api_key(self, key: ApiKeyRecord) -> None:
        await self._run(
            "INSERT INTO api_keys (key_id, tenant_id, name, prefix, secret_hash, created_at,"
            " revoked_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (key.key_id, key.tenant_id, key.name, key.prefix, key.secret_hash, key.created_at,
             key.revoked_at))

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        rows = await self._all("SELECT * FROM api_keys ORDER BY created_at, key_id")
        return [_api_key_from_row(r) for r in rows]

    async def revoke_api_key(self, key_id: str, revoked_at: datetime) -> ApiKeyRecord | None:
        row = await self._one(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, %s) WHERE key_id = %s"
            " RETURNING *", (revoked_at, key_id))
        return _api_key_from_row(row) if row else None

    # -- open rollouts and their exchanges, for interceptor replicas -------------------------

    async def open_rollout(self, opening: RolloutOpening) -> None:
        async with self._connections.connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM rollout_exchanges WHERE rollout_id = %s",
                               (opening.rollout_id,))
            await conn.execute(
                "INSERT INTO open_rollouts (rollout_id, job_id, nonce, candidate, calls)"
                " VALUES (%s, %s, %s, %s, 0) ON CONFLICT (rollout_id) DO UPDATE SET"
                " job_id = excluded.job_id, nonce = excluded.nonce,"
                " candidate = excluded.candidate, calls = 0",
                (opening.rollout_id, opening.job_id, opening.nonce, opening.candidate))

    async def admit_call(self, opening: RolloutOpening, max_calls: int) -> Admission:
        key = (opening.rollout_id, opening.job_id, opening.nonce, opening.candidate)
        if await self._one(
                "UPDATE open_rollouts SET calls = calls + 1 WHERE rollout_id = %s"
                " AND job_id = %s AND nonce = %s AND candidate = %s AND calls < %s"
                " RETURNING calls", (*key, max_calls)) is not None:
            return Admission.ADMITTED
        exists = await self._one(
            "SELECT 1 AS open FROM open_rollouts WHERE rollout_id = %s AND job_id = %s"
            " AND nonce = %s AND candidate = %s", key)
        return Admission.OVER_LIMIT if exists is not None else Admission.UNKNOWN

    async def record_exchange(self, rollout_id: str, nonce: str, exchange: Exchange) -> bool:
        # FOR SHARE holds the opening until this insert commits, so a concurrent close
        # either sees the exchange or makes this insert find nothing open.
        return await self._run(
            "INSERT INTO rollout_exchanges (rollout_id, nonce, exchange_json)"
            " SELECT rollout_id, nonce, %s FROM open_rollouts"
            " WHERE rollout_id = %s AND nonce = %s FOR SHARE",
            (Json(dataclasses.asdict(exchange)), rollout_id, nonce)) > 0

    async def rollout_exchanges(self, rollout_id: str, nonce: str) -> list[Exchange]:
        rows = await self._all(
            "SELECT exchange_json FROM rollout_exchanges WHERE rollout_id = %s AND nonce = %s"
            " ORDER BY position", (rollout_id, nonce))
        return [Exchange(**r["exchange_json"]) for r in rows]

    async def close_rollout(self, rollout_id: str, nonce: str) -> list[Exchange]:
        async with self._connections.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                "DELETE FROM open_rollouts WHERE rollout_id = %s AND nonce = %s"
                " RETURNING rollout_id", (rollout_id, nonce))
            if await cursor.fetchone() is None:
                return []
            cursor = await conn.execute(
                "DELETE FROM rollout_exchanges WHERE rollout_id = %s AND nonce = %s"
                " RETURNING position, exchange_json", (rollout_id, nonce))
            rows = sorted(await cursor.fetchall(), key=lambda r: int(r["position"]))
        return [Exchange(**r["exchange_json"]) for r in rows]

    async def drop_open_rollouts(self, job_id: str) -> int:
        async with self._connections.connection() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM rollout_exchanges WHERE rollout_id IN"
                " (SELECT rollout_id FROM open_rollouts WHERE job_id = %s)", (job_id,))
            cursor = await conn.execute("DELETE FROM open_rollouts WHERE job_id = %s",
                                        (job_id,))
            return max(0, cursor.rowcount)

    async def list_rollouts_from(self, job_id: str, start: int) -> list[RolloutResult]:
        rows = await self._all(
            "SELECT rollout_id, phase, candidate, seed, reward, failure_cause, failure_detail,"
            " prompt_tokens, completion_tokens, trace_json FROM rollout_results"
            " WHERE job_id = %s ORDER BY position OFFSET %s", (job_id, max(0, start)))
        return [_rollout_from_row(r) for r in rows]

    # -- budgets metered across replicas -----------------------------------------------------

    async def add_usage(self, job_id: str, delta: JobUsage) -> JobUsage:
        row = await self._one(
            "INSERT INTO job_usage AS u (job_id, rollouts, policy_prompt_tokens,"
            " policy_completion_tokens, proposer_tokens, proposer_cost_usd)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (job_id) DO UPDATE SET"
            " rollouts = u.rollouts + excluded.rollouts,"
            " policy_prompt_tokens = u.policy_prompt_tokens + excluded.policy_prompt_tokens,"
            " policy_completion_tokens ="
            " u.policy_completion_tokens + excluded.policy_completion_tokens,"
            " proposer_tokens = u.proposer_tokens + excluded.proposer_tokens,"
            " proposer_cost_usd = u.proposer_cost_usd + excluded.proposer_cost_usd"
            " RETURNING rollouts, policy_prompt_tokens, policy_completion_tokens,"
            " proposer_tokens, proposer_cost_usd",
            (job_id, delta.rollouts, delta.policy_prompt_tokens, delta.policy_completion_tokens,
             delta.proposer_tokens, delta.proposer_cost_usd))
        assert row is not None
        return _usage_from_row(row)

    async def get_usage(self, job_id: str) -> JobUsage:
        row = await self._one(
            "SELECT rollouts, policy_prompt_tokens, policy_completion_tokens, proposer_tokens,"
            " proposer_cost_usd FROM job_usage WHERE job_id = %s", (job_id,))
        return _usage_from_row(row) if row is not None else JobUsage()

    # -- tenant limits across replicas -------------------------------------------------------

    async def tenant_job_counts(self, owner: str) -> tuple[int, int]:
        rows = await self._all(
            "SELECT status, count(*) AS n FROM jobs WHERE owner = %s"
            " AND status IN ('queued', 'running') GROUP BY status", (owner,))
        counts = {r["status"]: int(r["n"]) for r in rows}
        return counts.get("queued", 0), counts.get("running", 0)

    async def admit_job(self, job_id: str, owner: str, max_running: int) -> bool:
        # Read committed alone would let two replicas count the same free slot: the
        # tenant's advisory lock makes its admissions take turns until each commits.
        async with self._connections.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                               (_TENANT_LOCK, owner))
            cursor = await conn.execute(
                "UPDATE jobs AS j SET status = 'running' WHERE j.job_id = %s AND j.owner = %s"
                " AND j.status = 'queued' AND (SELECT count(*) FROM jobs AS o"
                " WHERE o.owner = j.owner AND (o.status = 'running' OR (o.status = 'queued'"
                " AND (o.created_at, o.job_id) < (j.created_at, j.job_id)))) < %s"
                " RETURNING j.job_id", (job_id, owner, max_running))
            if await cursor.fetchone() is not None:
                return True
            cursor = await conn.execute("SELECT status FROM jobs WHERE job_id = %s", (job_id,))
            row = await cursor.fetchone()
        return row is not None and row["status"] == "running"

    # -- candidate prompts -------------------------------------------------------------------

    async def put_candidate_prompt(self, job_id: str, candidate: int,
                                   prompt: dict[str, Any] | None) -> None:
        await self._run(
            "INSERT INTO candidate_prompts (job_id, candidate, prompt_json) VALUES (%s, %s, %s)"
            " ON CONFLICT (job_id, candidate) DO NOTHING",
            (job_id, candidate, Json(prompt) if prompt is not None else None))

    async def get_candidate_prompt(self, job_id: str,
                                   candidate: int) -> tuple[bool, dict[str, Any] | None]:
        row = await self._one(
            "SELECT prompt_json FROM candidate_prompts WHERE job_id = %s AND candidate = %s",
            (job_id, candidate))
        return (row is not None, row["prompt_json"] if row is not None else None)


def _usage_from_row(row: DictRow) -> JobUsage:
    return JobUsage(int(row["rollouts"]), int(row["policy_prompt_tokens"]),
                    int(row["policy_completion_tokens"]), int(row["proposer_tokens"]),
                    float(row["proposer_cost_usd"]))


def _rollout_from_row(r: DictRow) -> RolloutResult:
    return RolloutResult(
        rollout_id=r["rollout_id"], phase=r["phase"], candidate_index=r["candidate"],
        seed=r["seed"], reward=r["reward"], failure_cause=r["failure_cause"],
        failure_detail=r["failure_detail"], prompt_tokens=r["prompt_tokens"],
        completion_tokens=r["completion_tokens"],
        tokens=r["prompt_tokens"] + r["completion_tokens"], trace=r["trace_json"])

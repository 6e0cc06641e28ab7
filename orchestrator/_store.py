"""The job store interface: everything the orchestrator keeps durably goes through it.

`SqliteJobStore` (`_store_sqlite.py`) is the embedded default; nothing else in the
orchestrator touches SQL. Each rollout result and event is written as it happens, so a later
resume can continue a job from what is stored.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from datetime import datetime
from typing import Any

from ._exchanges import Exchange
from ._models import (
    ApiKeyRecord,
    CandidateRecord,
    JobEvent,
    JobRecord,
    JobSpec,
    JobStatus,
    PolicySpec,
    ProposerSpec,
    RolloutResult,
    Tenant,
    TenantStatus,
)


class Admission(enum.StrEnum):
    """What `JobStore.admit_call` decided about one model call of a rollout."""

    #: The opening is current and under its number of calls; the call was counted.
    ADMITTED = "admitted"
    #: No such open rollout, or one opened for another job, candidate or nonce.
    UNKNOWN = "unknown"
    #: The rollout already made its most calls; nothing was counted.
    OVER_LIMIT = "over_limit"


@dataclasses.dataclass(frozen=True)
class RolloutOpening:
    """One opening of a rollout, as its token names it: what lets any interceptor replica
    serve the rollout's model calls (the rest it reads from the job's record)."""

    job_id: str
    rollout_id: str
    #: The random nonce of this opening (`_tokens.RolloutClaims.nonce`).
    nonce: str
    candidate: int


@dataclasses.dataclass(frozen=True)
class JobUsage:
    """What a job has spent, metered in the store so its budgets hold across replicas; as an
    argument of `add_usage`, the amounts to add."""

    rollouts: int = 0
    policy_prompt_tokens: int = 0
    policy_completion_tokens: int = 0
    proposer_tokens: int = 0
    proposer_cost_usd: float = 0.0


class JobStore(abc.ABC):
    """Durable storage of jobs, their rollouts, events and owners' environment keys."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connects and creates the schema if needed."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flushes and disconnects."""

    @abc.abstractmethod
    async def create_job(self, job: JobRecord) -> JobRecord:
        """Stores a new job; if the owner already made one with the same non-empty
        `request_id`, returns that job instead (idempotent create)."""

    @abc.abstractmethod
    async def get_job(self, job_id: str, owner: str | None = None) -> JobRecord | None:
        """The job, or None when it does not exist or belongs to another owner."""

    @abc.abstractmethod
    async def list_jobs(
        self, owner: str, *, status: JobStatus | None, limit: int, page_token: str
    ) -> tuple[list[JobRecord], str]:
        """The owner's jobs, newest first, and the next page's token ('' on the last)."""

    @abc.abstractmethod
    async def jobs_with_status(self, statuses: tuple[JobStatus, ...]) -> list[JobRecord]:
        """Every job (any owner) in one of `statuses`, oldest first."""

    @abc.abstractmethod
    async def save_job(self, job: JobRecord) -> None:
        """Writes the job's state, results and candidates; a job stored terminal is never
        changed again (a late write of a replica whose batch was cancelled loses)."""

    @abc.abstractmethod
    async def record_rollout(self, job_id: str, result: RolloutResult) -> None:
        """Stores one finished rollout; a rollout id is stored at most once."""

    @abc.abstractmethod
    async def list_rollouts(self, job_id: str) -> list[RolloutResult]:
        """Every stored rollout of the job, in the order they finished."""

    @abc.abstractmethod
    async def append_event(
        self, job_id: str, type: str, message: str, data: dict[str, Any], *, terminal: bool
    ) -> JobEvent:
        """Appends an event with the next sequence number and returns it."""

    @abc.abstractmethod
    async def list_events(self, job_id: str, *, since_seq: int, limit: int) -> list[JobEvent]:
        """Events with `seq > since_seq`, in order, at most `limit`."""

    @abc.abstractmethod
    async def put_env_key(self, owner: str, name: str, value: str) -> None:
        """Stores (or replaces) an owner's named environment key, never in plain text."""

    @abc.abstractmethod
    async def get_env_key(self, owner: str, name: str) -> str | None:
        """The owner's named environment key, or None."""

    # -- tenants and API keys (`_tenants.py` holds the rules) ---------------------------------

    @abc.abstractmethod
    async def create_tenant(self, tenant: Tenant) -> Tenant:
        """Stores a new tenant; when its id exists already, returns the stored one unchanged."""

    @abc.abstractmethod
    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        """The tenant, or None."""

    @abc.abstractmethod
    async def list_tenants(self) -> list[Tenant]:
        """Every tenant, oldest first."""

    @abc.abstractmethod
    async def set_tenant_status(self, tenant_id: str, status: TenantStatus) -> bool:
        """Sets the tenant's status; False when there is no such tenant."""

    @abc.abstractmethod
    async def create_api_key(self, key: ApiKeyRecord) -> None:
        """Stores a new API key (its tenant must exist)."""

    @abc.abstractmethod
    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every stored API key, revoked ones included, oldest first."""

    @abc.abstractmethod
    async def revoke_api_key(self, key_id: str, revoked_at: datetime) -> ApiKeyRecord | None:
        """Marks the key revoked (once: a second revoke keeps the first time); None when
        there is no such key."""

    # -- open rollouts and their exchanges, for interceptor replicas (issue 12) --------------
    # A rollout is opened by the worker that runs it, its model calls are admitted and its
    # exchanges recorded by whichever interceptor replica the task app reaches, and it is
    # closed by the worker when the task app answers. Rollout ids are unique across jobs.

    @abc.abstractmethod
    async def open_rollout(self, opening: RolloutOpening) -> None:
        """Records an opening of a rollout, replacing an earlier opening of the same rollout
        id together with its exchanges and call count."""

    @abc.abstractmethod
    async def admit_call(self, opening: RolloutOpening, max_calls: int) -> Admission:
        """Counts one model call of the opening when it is current (same job, candidate and
        nonce) and has made fewer than `max_calls`; atomic across writers."""

    @abc.abstractmethod
    async def record_exchange(self, rollout_id: str, nonce: str, exchange: Exchange) -> bool:
        """Appends an exchange to the open rollout; False (nothing kept) when that opening
        is no longer open."""

    @abc.abstractmethod
    async def rollout_exchanges(self, rollout_id: str, nonce: str) -> list[Exchange]:
        """The open rollout's exchanges so far, in the order recorded ([] when not open)."""

    @abc.abstractmethod
    async def close_rollout(self, rollout_id: str, nonce: str) -> list[Exchange]:
        """Ends the opening and returns its exchanges in the order recorded ([] when it was
        not open, or another opening replaced it)."""

    @abc.abstractmethod
    async def drop_open_rollouts(self, job_id: str) -> int:
        """Ends every opening of the job (left by a worker that died, or a job that ended)
        and returns how many there were."""

    @abc.abstractmethod
    async def list_rollouts_from(self, job_id: str, start: int) -> list[RolloutResult]:
        """The job's stored rollouts from the `start`-th on (0-based), in the order
        `list_rollouts` gives them: what a worker replica reads to catch up with rollouts
        that another replica stored since it last looked."""

    # -- budgets metered across replicas -----------------------------------------------------

    @abc.abstractmethod
    async def add_usage(self, job_id: str, delta: JobUsage) -> JobUsage:
        """Adds `delta` to the job's usage in one atomic step and returns the new totals."""

    @abc.abstractmethod
    async def get_usage(self, job_id: str) -> JobUsage:
        """The job's usage totals (all zero when nothing was metered)."""


def spec_to_dict(spec: JobSpec) -> dict[str, Any]:
    """A JSON-ready form of `spec`, for storage."""
    return dataclasses.asdict(spec)


def spec_from_dict(data: dict[str, Any]) -> JobSpec:
    """The inverse of `spec_to_dict`."""
    fields = dict(data)
    fields["policy"] = PolicySpec(**fields["policy"])
    fields["proposer"] = ProposerSpec(**fields["proposer"])
    for name in ("bootstrap_train_seeds", "val_seeds", "test_seeds"):
        fields[name] = tuple(fields[name])
    return JobSpec(**fields)


def candidates_to_list(candidates: list[CandidateRecord]) -> list[dict[str, Any]]:
    """A JSON-ready form of a job's candidates."""
    return [dataclasses.asdict(c) for c in candidates]


def candidates_from_list(data: list[dict[str, Any]]) -> list[CandidateRecord]:
    """The inverse of `candidates_to_list`."""
    return [CandidateRecord(**c) for c in data]

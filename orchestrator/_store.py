"""The job store interface: everything the orchestrator keeps durably goes through it.

`SqliteJobStore` (`_store_sqlite.py`) is the embedded default; nothing else in the
orchestrator touches SQL. Each rollout result and event is written as it happens, so a later
resume can continue a job from what is stored.
"""

from __future__ import annotations

import abc
import dataclasses
from datetime import datetime
from typing import Any

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
    StageSpec,
    Tenant,
    TenantStatus,
)


@dataclasses.dataclass(frozen=True)
class RolloutFilter:
    """Which stored rollouts a page keeps; `None` keeps any value."""

    phase: str | None = None
    seed: int | None = None
    #: True: only those that returned a reward; False: only failures.
    ok: bool | None = None
    candidate: int | None = None

    def keeps(self, result: RolloutResult) -> bool:
        return ((self.phase is None or result.phase == self.phase)
                and (self.seed is None or result.seed == self.seed)
                and (self.ok is None or result.ok == self.ok)
                and (self.candidate is None or result.candidate_index == self.candidate))


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
        """Writes the job's state, results and candidates."""

    @abc.abstractmethod
    async def record_rollout(self, job_id: str, result: RolloutResult) -> None:
        """Stores one finished rollout; a rollout id is stored at most once."""

    @abc.abstractmethod
    async def list_rollouts(self, job_id: str) -> list[RolloutResult]:
        """Every stored rollout of the job, in the order they finished."""

    async def list_rollouts_page(self, job_id: str, *, after: int, limit: int,
                                 where: RolloutFilter | None = None,
                                 ) -> list[tuple[int, RolloutResult]]:
        """Stored rollouts of the job in the order they finished, after position `after` (0:
        from the first), that `where` keeps, at most `limit`, each with its position; pass the
        last position as `after` for the next page. Positions only grow, so a page never
        skips or repeats a row while the job runs. Traces are left out.

        This default reads every row (O(rollouts) per page); a store overrides it with an
        indexed query."""
        rows = await self.list_rollouts(job_id)
        keep = where or RolloutFilter()
        found = [(n, dataclasses.replace(r, trace=None)) for n, r in enumerate(rows, 1)
                 if n > after and keep.keeps(r)]
        return found[:limit]

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
    fields["stages"] = tuple(StageSpec(**s) for s in fields.get("stages") or ())
    return JobSpec(**fields)


def candidates_to_list(candidates: list[CandidateRecord]) -> list[dict[str, Any]]:
    """A JSON-ready form of a job's candidates."""
    return [dataclasses.asdict(c) for c in candidates]


def candidates_from_list(data: list[dict[str, Any]]) -> list[CandidateRecord]:
    """The inverse of `candidates_to_list`."""
    return [CandidateRecord(**c) for c in data]

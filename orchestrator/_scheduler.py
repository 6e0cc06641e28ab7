"""Fair sharing of the running slots across tenants.

At most `max_running` jobs run at once, and at most `per_tenant` of one tenant (a job's
`owner`). A job that cannot start waits; when a slot frees, it goes to the tenant after the
one served last, round-robin over the tenants with waiting jobs, each tenant's jobs in the
order they came. So one tenant with 50 queued jobs delays another tenant's job by at most one
slot's turn, not by 50 jobs.

The bookkeeping is synchronous (no await between a decision and its record), so the answer of
`submit` is exact; `wait` is the one coroutine.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field


@dataclass
class _Tenant:
    running: int = 0
    waiting: deque[str] = field(default_factory=deque)
    #: When it last got a slot (a counter); a tenant new to the queue has -1, so goes first.
    served: int = -1


class FairScheduler:
    """Grants running slots to jobs, round-robin by tenant."""

    def __init__(self, max_running: int, per_tenant: int) -> None:
        self._max_running = max_running
        self._per_tenant = per_tenant
        self._running = 0
        self._tenants: dict[str, _Tenant] = {}
        self._grants = 0
        self._owner_of: dict[str, str] = {}
        self._granted: dict[str, asyncio.Event] = {}
        self._is_running: set[str] = set()

    def can_start_now(self, owner: str) -> bool:
        """Whether a job of `owner` submitted now would start at once."""
        tenant = self._tenants.get(owner)
        running = tenant.running if tenant else 0
        return self._running < self._max_running and running < self._per_tenant and not (
            tenant and tenant.waiting)

    def waiting(self, owner: str) -> int:
        """How many of `owner`'s jobs wait for a slot."""
        tenant = self._tenants.get(owner)
        return len(tenant.waiting) if tenant else 0

    def running(self, owner: str) -> int:
        tenant = self._tenants.get(owner)
        return tenant.running if tenant else 0

    def running_total(self) -> int:
        """Jobs holding a slot, all tenants."""
        return self._running

    def waiting_total(self) -> int:
        """Jobs waiting for a slot, all tenants (safe to call from the metrics thread)."""
        return sum(len(t.waiting) for t in list(self._tenants.values()))

    def submit(self, job_id: str, owner: str) -> bool:
        """Records the job; True when it holds a slot now, else it waits (see `wait`)."""
        start_now = self.can_start_now(owner)
        tenant = self._tenants.setdefault(owner, _Tenant())
        self._owner_of[job_id] = owner
        if start_now:
            self._start(job_id, tenant)
        else:
            tenant.waiting.append(job_id)
            self._granted[job_id] = asyncio.Event()
        return start_now

    async def wait(self, job_id: str) -> None:
        """Returns once the waiting job `job_id` holds a slot."""
        granted = self._granted.get(job_id)
        if granted is not None:
            await granted.wait()

    def done(self, job_id: str) -> list[str]:
        """The job ended or was cancelled, running or waiting: frees what it held. Returns
        the jobs that start now. Calling it again does nothing."""
        owner = self._owner_of.pop(job_id, None)
        if owner is None:
            return []
        tenant = self._tenants[owner]
        self._granted.pop(job_id, None)
        if job_id in self._is_running:
            self._is_running.discard(job_id)
            tenant.running -= 1
            self._running -= 1
        elif job_id in tenant.waiting:
            tenant.waiting.remove(job_id)
        if not tenant.running and not tenant.waiting:
            del self._tenants[owner]
        return self._grant()

    def _start(self, job_id: str, tenant: _Tenant) -> None:
        tenant.running += 1
        self._running += 1
        self._is_running.add(job_id)
        tenant.served = self._grants
        self._grants += 1

    def _grant(self) -> list[str]:
        started: list[str] = []
        while self._running < self._max_running:
            # The eligible tenant served longest ago goes first.
            eligible = [t for t in self._tenants.values()
                        if t.waiting and t.running < self._per_tenant]
            if not eligible:
                break
            tenant = min(eligible, key=lambda t: t.served)
            job_id = tenant.waiting.popleft()
            self._start(job_id, tenant)
            self._granted.pop(job_id).set()
            started.append(job_id)
        return started

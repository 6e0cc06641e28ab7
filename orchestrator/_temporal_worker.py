"""The Temporal host's worker side: the activities of `_temporal_workflow.JobWorkflow`.

Each activity works on the job's `JobRunner` in this worker process, the same runner the
embedded host uses, built from the store the first time this worker sees the job and brought
up to date (`JobRunner.catch_up`) before every later activity, since another replica may
have run some of the job's batches in between. So:

- a batch retried here after its worker died answers what the dead one stored from the
  store and runs only the rest (what was in flight runs again; nothing stored does);
- the job's live summary (what `GetJob` on any API replica reads) is written from a
  scoreboard folded from everything stored;
- a plan error (`JobFailure`, `BudgetExhausted`) travels as a non-retryable
  `ApplicationError` of that type, and the workflow raises it back into the plan.

Tenant limits hold across replicas through the store: `admit` makes a queued job running
only by the store's conditional update (`JobStore.admit_job`, counting the tenant's running
jobs), and a worker that frees a slot (a job ended or paused) signals `admit` to the
tenant's oldest queued workflows, which ask again at once.

Long activities (`preflight`, `run_rollouts`, `propose`: those `POLICIES` gives a heartbeat
timeout) heartbeat at a third of it, so a worker that dies in one is noticed within that
timeout; cancelling the workflow (or pausing it) cancels the batch in flight through the
heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import structlog
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from ._activities import Proposals
from ._budget import BudgetExhausted
from ._errors import JobFailure
from ._jobs import JobManager
from ._models import JobStatus, RolloutResult
from ._rollout_book import RolloutBook
from ._runner import JobRunner
from ._scoreboard import Phase
from ._store import JobStore, candidates_to_list, spec_to_dict
from ._temporal_workflow import (
    BUDGET_EXHAUSTED,
    JOB_ENDED,
    JOB_FAILURE,
    AdmitInput,
    CandidatesInput,
    EmitInput,
    FinishInput,
    JobRef,
    JobStart,
    JobWorkflow,
    PauseInput,
    PhaseInput,
    ProposeInput,
    RolloutsInput,
    RolloutsOutput,
    StoredPage,
    StoredRollouts,
    Write,
    WritesInput,
)

log = structlog.get_logger(__name__)

#: Stored rollouts one activity answer carries at most (a few hundred bytes each, against
#: Temporal's 2 MB payload limit).
STORED_PAGE = 2000


async def stored_page(store: JobStore, job_id: str, start: int,
                      size: int = STORED_PAGE) -> StoredRollouts:
    """The job's stored rollouts from the `start`-th on, in store order, at most `size`, as
    payloads carry them; read from the store, so every replica pages the same list."""
    rows = await store.list_rollouts_from(job_id, start)
    return StoredRollouts([as_payload(r) for r in rows[:size]], more=len(rows) > size)


def as_payload(result: RolloutResult) -> RolloutResult:
    """`result` as workflow payloads carry it: no trace but a bootstrap one, and in that one
    each call's demo turns (up to `MAX_DEMO_CHARS` each) reduced to whether it has them; the
    plan needs only that, and the prompts built from the turns are the worker's
    (`_learn_prompts`), read from the store."""
    if result.phase != Phase.BOOTSTRAP or not result.trace:
        return dataclasses.replace(result, trace=None) if result.trace else result
    calls = result.trace.get("calls")
    if not isinstance(calls, list):
        return result
    slim = [{**c, "turns": bool(c.get("turns"))} if isinstance(c, dict) else c for c in calls]
    return dataclasses.replace(result, trace={**result.trace, "calls": slim})

_A = TypeVar("_A")
_R = TypeVar("_R")


def _job_activity(fn: Callable[[Any, _A], Awaitable[_R]]) -> Callable[[Any, _A], Awaitable[_R]]:
    """Every job activity's wrapper: it heartbeats while it runs when the workflow gave it a
    heartbeat timeout (`POLICIES` alone says which do), and raises the plan's errors as
    non-retryable `ApplicationError`s of their type."""

    @functools.wraps(fn)
    async def run(self: Any, arg: _A) -> _R:
        try:
            async with _heartbeating():
                return await fn(self, arg)
        except JobFailure as failure:
            raise ApplicationError(str(failure), type=JOB_FAILURE, non_retryable=True) from None
        except BudgetExhausted as exhausted:
            raise ApplicationError(exhausted.reason, type=BUDGET_EXHAUSTED,
                                   non_retryable=True) from None

    return run


@contextlib.asynccontextmanager
async def _heartbeating() -> AsyncIterator[None]:
    """Heartbeats every third of the activity's heartbeat timeout while the body runs; an
    activity without one does not heartbeat."""
    timeout = activity.info().heartbeat_timeout
    if not timeout:
        yield
        return
    every = timeout.total_seconds() / 3

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()


class WorkerActivities:
    """The job activities of one worker replica, over its job manager's runners."""

    def __init__(self, manager: JobManager, store: JobStore, book: RolloutBook, *,
                 max_cached_jobs: int = 64, client: Client | None = None) -> None:
        self._manager = manager
        self._store = store
        self._book = book
        #: Signals `admit` to queued workflows when a slot frees (None: they poll).
        self._client = client
        #: A tenant's jobs running at once, at most (`MIPRO_TENANT_MAX_RUNNING_JOBS`).
        self._per_tenant = manager.tenant_limits.max_running_jobs
        self._max_cached = max_cached_jobs
        self._runs: OrderedDict[str, tuple[JobRunner, aiohttp.ClientSession]] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    def all(self) -> list[Callable[..., Any]]:
        """The activities to register with a worker."""
        return [self.admit, self.job_start, self.stored_rollouts, self.preflight,
                self.run_rollouts, self.propose, self.enter_phase, self.emit,
                self.candidates_added, self.batch_done, self.pause_changed, self.job_finish,
                self.writes]

    async def close(self) -> None:
        for _, http in self._runs.values():
            await http.close()
        self._runs.clear()

    @contextlib.asynccontextmanager
    async def _runner(self, job_id: str) -> AsyncIterator[JobRunner]:
        """The job's runner, up to date with the store; one activity of a job at a time."""
        lock = self._locks.setdefault(job_id, asyncio.Lock())
        async with lock:
            cached = self._runs.get(job_id)
            if cached is not None:
                self._runs.move_to_end(job_id)
                await cached[0].catch_up()
                runner = cached[0]
            else:
                runner = await self._open(job_id)
            structlog.contextvars.bind_contextvars(job_id=job_id)
            try:
                yield runner
            finally:
                structlog.contextvars.unbind_contextvars("job_id")

    async def _open(self, job_id: str) -> JobRunner:
        job = await self._store.get_job(job_id)
        if job is None or job.status.is_terminal:
            raise ApplicationError(f"job {job_id} has ended", type=JOB_ENDED, non_retryable=True)
        opened = await self._manager.open_runner(job)
        if opened is None:  # its task app is now refused: the job was failed
            raise ApplicationError(f"job {job_id} has ended", type=JOB_ENDED, non_retryable=True)
        runner = opened[0]
        await runner.load()
        self._runs[job_id] = opened
        while len(self._runs) > self._max_cached:
            _, (_, http) = self._runs.popitem(last=False)
            await http.close()
        return runner

    async def _learn_prompts(self, runner: JobRunner) -> None:
        """Gives the runner the candidates' prompts (per-stage instructions, demos), rebuilt
        from the stored bootstrap rollouts as the workflow's plan saw them (in the bootstrap
        seeds' order): the rollout's grant carries its prompt into the store, where any
        interceptor replica reads it. A candidate exists only once bootstrap has ended, so
        every bootstrap rollout is stored by then."""
        spec = runner.job.spec
        order = {seed: n for n, seed in enumerate(spec.bootstrap_train_seeds)}
        bootstrap = [r for r in await self._store.list_rollouts(runner.job.job_id)
                     if r.phase == Phase.BOOTSTRAP and r.candidate_index == 0]
        bootstrap.sort(key=lambda r: order.get(r.seed, len(order)))
        runner.learn_prompts(bootstrap)

    async def _forget(self, job_id: str) -> None:
        opened = self._runs.pop(job_id, None)
        self._locks.pop(job_id, None)
        if opened is not None:
            await opened[1].close()

    # -- the activities ----------------------------------------------------------------------

    @activity.defn(name="admit")
    @_job_activity
    async def admit(self, call: AdmitInput) -> bool:
        async with self._runner(call.job_id) as runner:
            job = runner.job
            stored = await self._store.get_job(job.job_id)
            if stored is not None and stored.status is JobStatus.PAUSED:  # resumed: it queues
                job.status = JobStatus.QUEUED
                await self._store.save_job(runner.snapshot())
            if not await self._store.admit_job(job.job_id, job.owner, self._per_tenant):
                job.status = JobStatus.QUEUED
                return False
            job.status = JobStatus.RUNNING
            if call.resuming:
                await runner.pause_changed(False)
            return True

    async def _free_slot(self, owner: str) -> None:
        """A job of `owner` stopped holding a slot: its oldest queued jobs, as many as there
        are free slots, are told to ask for one now (best effort: they poll anyway)."""
        if self._client is None:
            return
        queued, running = await self._store.tenant_job_counts(owner)
        free = min(queued, self._per_tenant - running)
        if free <= 0:
            return
        jobs, _ = await self._store.list_jobs(owner, status=JobStatus.QUEUED, limit=100,
                                              page_token="")
        for job in sorted(jobs, key=lambda j: (j.created_at, j.job_id))[:free]:
            try:
                await self._client.get_workflow_handle(job.job_id).signal("admit")
            except RPCError as error:  # closed meanwhile, or Temporal busy: it polls
                log.info("admit signal not delivered", job_id=job.job_id, error=str(error))

    @activity.defn(name="job_start")
    @_job_activity
    async def job_start(self, ref: JobRef) -> JobStart:
        async with self._runner(ref.job_id) as runner:
            if not ref.continued:
                await runner.mark_started()
            job = runner.job
            page = await self._stored_page(job.job_id, 0)
            return JobStart(spec=spec_to_dict(job.spec),
                            candidates=candidates_to_list(job.candidates),
                            stored=page.results, more=page.more)

    @activity.defn(name="stored_rollouts")
    @_job_activity
    async def stored_rollouts(self, page: StoredPage) -> StoredRollouts:
        return await self._stored_page(page.job_id, page.start)

    async def _stored_page(self, job_id: str, start: int) -> StoredRollouts:
        return await stored_page(self._store, job_id, start)

    @activity.defn(name="preflight")
    @_job_activity
    async def preflight(self, ref: JobRef) -> bool:
        async with self._runner(ref.job_id) as runner:
            return await runner.preflight()

    @activity.defn(name="run_rollouts")
    @_job_activity
    async def run_rollouts(self, batch: RolloutsInput) -> RolloutsOutput:
        async with self._runner(batch.job_id) as runner:
            if any(item.candidate for item in batch.items) and not runner.knows_prompts:
                await self._learn_prompts(runner)
            outcome = await runner.run_rollouts(batch.items)
            return RolloutsOutput([as_payload(r) for r in outcome.results], outcome.exhausted)

    @activity.defn(name="propose")
    @_job_activity
    async def propose(self, call: ProposeInput) -> Proposals:
        async with self._runner(call.job_id) as runner:
            await runner.ensure_task_info()
            return await runner.propose(call.request)

    @activity.defn(name="enter_phase")
    @_job_activity
    async def enter_phase(self, call: PhaseInput) -> None:
        async with self._runner(call.job_id) as runner:
            await runner.enter_phase(call.phase)

    @activity.defn(name="emit")
    @_job_activity
    async def emit(self, call: EmitInput) -> None:
        async with self._runner(call.job_id) as runner:
            await runner.emit(call.type, call.message, call.data, level=call.level)

    @activity.defn(name="candidates_added")
    @_job_activity
    async def candidates_added(self, call: CandidatesInput) -> None:
        async with self._runner(call.job_id) as runner:
            await _apply(runner, [Write("candidates_added", candidates=call.candidates)])

    @activity.defn(name="writes")
    @_job_activity
    async def writes(self, call: WritesInput) -> None:
        async with self._runner(call.job_id) as runner:
            await _apply(runner, call.writes)

    @activity.defn(name="batch_done")
    @_job_activity
    async def batch_done(self, ref: JobRef) -> None:
        async with self._runner(ref.job_id) as runner:
            await runner.batch_done()

    @activity.defn(name="pause_changed")
    @_job_activity
    async def pause_changed(self, call: PauseInput) -> None:
        async with self._runner(call.job_id) as runner:
            await runner.pause_changed(call.paused, call.reason)
            owner = runner.job.owner
        if call.paused:
            await self._free_slot(owner)

    @activity.defn(name="job_finish")
    @_job_activity
    async def job_finish(self, call: FinishInput) -> None:
        owner = ""
        try:
            async with self._runner(call.job_id) as runner:
                owner = runner.job.owner
                await _apply(runner, call.writes)
                await runner.finish(JobStatus(call.status), call.reason, call.error)
        except ApplicationError as error:
            if error.type != JOB_ENDED:  # ended already (a retried finish): nothing to do
                raise
        finally:
            await self._book.end_job(call.job_id)
            await self._forget(call.job_id)
        if owner:
            await self._free_slot(owner)


async def _apply(runner: JobRunner, writes: list[Write]) -> None:
    """The plan's store writes, in order, on the job's runner."""
    for write in writes:
        if write.kind == "enter_phase":
            await runner.enter_phase(write.phase)
        elif write.kind == "emit" and write.emit is not None:
            emit = write.emit
            await runner.emit(emit.type, emit.message, emit.data, level=emit.level)
        elif write.kind == "candidates_added":
            known = len(runner.job.candidates)  # a retry after a stored write adds nothing
            await runner.candidates_added([c for c in write.candidates if c.index >= known])
        elif write.kind == "batch_done":
            await runner.batch_done()
        else:
            raise ValueError(f"unknown store write {write.kind!r}")


def make_worker(client: Client, task_queue: str, activities: WorkerActivities, *,
                max_concurrent_activities: int) -> Worker:
    """A Temporal worker for the job workflow and its activities (run it with `run()`, stop
    it with `shutdown()`)."""
    # The project's own packages are passed through the sandbox, not re-imported per run:
    # the workflow uses only their deterministic parts (the plan, the scoreboard, payload
    # types), and importing the orchestrator package inside the sandbox would run the import
    # side effects of its servers' libraries (rich, grpc) under the sandbox's restrictions.
    runner = SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("orchestrator",
                                                                          "mipro"))
    return Worker(client, task_queue=task_queue, workflows=[JobWorkflow],
                  activities=activities.all(), workflow_runner=runner,
                  max_concurrent_activities=max_concurrent_activities)

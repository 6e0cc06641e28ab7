"""A job as a Temporal workflow: the plan (`_plan.JobPlan`) over activities.

The workflow only decides: it runs the same deterministic plan as the embedded host, and each
of the plan host's calls is an activity on a worker replica (`_temporal_worker.py`):

    admit            makes the queued job running when its tenant has a free slot (the store
                     counts; `MIPRO_TENANT_MAX_RUNNING_JOBS`), else the workflow waits for
                     the `admit` signal or a timer and asks again
    job_start        the job's spec, candidates and first page of stored rollouts; marks it
                     started (`stored_rollouts` answers the other pages)
    preflight        the task app's /health and /task_info (heartbeating)
    run_rollouts     one batch of rollouts (heartbeating; retried elsewhere if its worker dies)
    propose          one round of proposals
    writes           the plan's store writes (`enter_phase`, `emit`, `candidates_added`,
                     `batch_done`), queued and sent together before its next activity
    pause_changed    the job's `paused` state and its event
    job_finish       the writes still queued, then the one ending (`_runner.end_job`),
                     whatever ended the job

- The workflow id is the job id, so a job never runs twice at once.
- Payloads carry ids and small summaries: rollout results without their traces (bootstrap
  ones keep their clipped trace, which the proposer is shown), proposals, candidates.
- Cancelling the workflow cancels the job; the signals `pause` and `resume` pause it (the
  batch in flight is cancelled, what it stored is kept) and resume it.
- After `batches_per_run` batches it continues as new: the new run starts from what is
  stored, answering stored rollouts without an activity, so the plan replays exactly; up to
  the `batch_done` the run before ended in, the replay makes no store write, event or
  preflight again (they were made), so a continued job's events are not repeated. A job
  waiting for a slot continues as new after `ADMIT_WAITS_PER_RUN` waits, to bound its history.
- A job runs only once admitted: at start, and again on resume after a pause (a paused job
  holds no slot, as on the embedded host).

The sandbox re-imports this module per run; the orchestrator modules it uses are passed
through (they are deterministic and free of side effects at import).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from ._activities import BatchOutcome, ProposalRequest, Proposals, RolloutItem
    from ._budget import BudgetExhausted
    from ._errors import JobFailure
    from ._models import CandidateRecord, JobSpec, RolloutResult
    from ._plan import JobPlan
    from ._scoreboard import Scoreboard
    from ._store import candidates_from_list, spec_from_dict

WORKFLOW_NAME = "MiproJob"
#: Error types an activity raises for the plan (`ApplicationError.type`): never retried.
JOB_FAILURE, BUDGET_EXHAUSTED, JOB_ENDED = "JobFailure", "BudgetExhausted", "JobEnded"
_FINAL = [JOB_FAILURE, BUDGET_EXHAUSTED, JOB_ENDED]


# -- payloads: ids and small summaries --------------------------------------------------------


@dataclass(frozen=True)
class JobArgs:
    """The workflow's input (also of each continued run)."""

    job_id: str
    continued: bool = False
    heartbeat_seconds: float = 15.0
    batches_per_run: int = 20
    #: A continued run that must be admitted again first (it was resumed after a pause).
    resuming: bool = False
    #: The plan's `batch_done` calls the runs before this one made: the replay up to the
    #: last of them has no side effects (no `enter_phase`, `emit`, `preflight`, `batch_done`).
    batches_done: int = 0


@dataclass(frozen=True)
class JobRef:
    job_id: str
    continued: bool = False


@dataclass(frozen=True)
class AdmitInput:
    job_id: str
    #: Resumed after a pause: stored `queued` while it waits, `job.resumed` once admitted.
    resuming: bool = False


@dataclass(frozen=True)
class JobStart:
    """What a run starts from: the job as stored."""

    spec: dict[str, Any]
    candidates: list[dict[str, Any]]
    #: The first page of the stored rollouts (traces only on bootstrap ones, their demo
    #: turns reduced to a flag), answered without an activity.
    stored: list[RolloutResult] = field(default_factory=list)
    #: Whether more pages follow (`stored_rollouts`).
    more: bool = False


@dataclass(frozen=True)
class StoredPage:
    job_id: str
    #: How many stored rollouts the run has read so far.
    start: int


@dataclass(frozen=True)
class StoredRollouts:
    results: list[RolloutResult]
    more: bool = False


@dataclass(frozen=True)
class RolloutsInput:
    job_id: str
    items: list[RolloutItem]


@dataclass(frozen=True)
class RolloutsOutput:
    results: list[RolloutResult]
    exhausted: str | None = None


@dataclass(frozen=True)
class ProposeInput:
    job_id: str
    request: ProposalRequest


@dataclass(frozen=True)
class EmitInput:
    job_id: str
    type: str
    message: str
    data: dict[str, Any]
    level: str = "info"


@dataclass(frozen=True)
class PhaseInput:
    job_id: str
    phase: str


@dataclass(frozen=True)
class CandidatesInput:
    job_id: str
    candidates: list[CandidateRecord]


@dataclass(frozen=True)
class PauseInput:
    job_id: str
    paused: bool
    reason: str = ""


@dataclass(frozen=True)
class Write:
    """One store write the plan asked for: `kind` is `enter_phase` (`phase`), `emit`
    (`emit`), `candidates_added` (`candidates`) or `batch_done`."""

    kind: str
    phase: str = ""
    emit: EmitInput | None = None
    candidates: list[CandidateRecord] = field(default_factory=list)


@dataclass(frozen=True)
class WritesInput:
    job_id: str
    writes: list[Write]


@dataclass(frozen=True)
class FinishInput:
    job_id: str
    status: str
    reason: str
    error: str = ""
    #: The plan's writes not yet sent, made before the ending.
    writes: list[Write] = field(default_factory=list)


# -- timeouts and retries, as data -------------------------------------------------------------


@dataclass(frozen=True)
class ActivityPolicy:
    """How long an activity may take, how often it must heartbeat, how it is retried."""

    start_to_close: timedelta
    retry: RetryPolicy
    #: Whether it must heartbeat (every `JobArgs.heartbeat_seconds`).
    heartbeats: bool = False


_STORE_WRITE = ActivityPolicy(timedelta(seconds=30), RetryPolicy(
    initial_interval=timedelta(milliseconds=200), backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10), maximum_attempts=20,
    non_retryable_error_types=_FINAL))

POLICIES: dict[str, ActivityPolicy] = {
    "admit": _STORE_WRITE,
    "job_start": _STORE_WRITE,
    "stored_rollouts": _STORE_WRITE,
    "enter_phase": _STORE_WRITE,
    "emit": _STORE_WRITE,
    "candidates_added": _STORE_WRITE,
    "batch_done": _STORE_WRITE,
    "pause_changed": _STORE_WRITE,
    "writes": _STORE_WRITE,
    "job_finish": _STORE_WRITE,
    # The task app's own retries run inside; a failure here is an unreachable task app.
    # It heartbeats: a slow task app can hold it for minutes, and without a heartbeat a
    # worker that died meanwhile would be noticed only when those minutes are up.
    "preflight": ActivityPolicy(timedelta(minutes=5), RetryPolicy(
        initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
        maximum_attempts=3, non_retryable_error_types=_FINAL), heartbeats=True),
    # A batch can be long; the heartbeat is what notices a dead worker. Retries run the
    # batch again elsewhere, answering what the dead one stored from the store.
    "run_rollouts": ActivityPolicy(timedelta(hours=12), RetryPolicy(
        initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
        maximum_attempts=10, non_retryable_error_types=_FINAL), heartbeats=True),
    # The proposer client retries its own calls (its one retry layer); this retries only
    # a lost worker.
    "propose": ActivityPolicy(timedelta(minutes=10), RetryPolicy(
        initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
        maximum_attempts=3, non_retryable_error_types=_FINAL), heartbeats=True),
}


#: How long a job waiting for a slot waits, at most, before it asks the store again (a
#: worker that frees a slot signals `admit` to the tenant's oldest queued jobs at once).
ADMIT_RECHECK = timedelta(seconds=10)
#: Waits for a slot in one workflow run before it continues as new.
ADMIT_WAITS_PER_RUN = 100


class _JobEnded(Exception):
    """The job ended before this run could start it (e.g. its task app is now refused)."""


def _plan_error(error: ActivityError) -> Exception:
    """The plan's own error for an activity's final failure, else `error` itself."""
    cause = error.cause
    if isinstance(cause, ApplicationError):
        if cause.type == JOB_FAILURE:
            return JobFailure(cause.message)
        if cause.type == BUDGET_EXHAUSTED:
            return BudgetExhausted(cause.message)
        if cause.type == JOB_ENDED:
            return _JobEnded(cause.message)
    return error


@workflow.defn(name=WORKFLOW_NAME)
class JobWorkflow:
    """One job's plan; `pause` / `resume` signals, cancellation ends it cancelled."""

    def __init__(self) -> None:
        self._paused = False
        self._pause_reason = ""
        self._nudged = False
        self._waits = 0
        #: `job_start` answered in this run (so a run continued from here is continued).
        self._started = False
        self._host: _WorkflowHost | None = None

    @workflow.signal(name="pause")
    def pause(self, reason: str = "") -> None:
        self._paused = True
        self._pause_reason = reason

    @workflow.signal(name="resume")
    def resume(self) -> None:
        self._paused = False

    @workflow.signal(name="admit")
    def admit(self) -> None:
        """A slot of the job's tenant may have freed: ask the store again now."""
        self._nudged = True

    @workflow.query(name="paused")
    def is_paused(self) -> bool:
        return self._paused

    @workflow.run
    async def run(self, args: JobArgs) -> str:
        self._args = args
        status, reason, error_text = "succeeded", "completed", ""
        try:
            if not args.continued or args.resuming:
                await self.admitted(args.job_id, resuming=args.resuming)
            start = await self.call("job_start", JobRef(args.job_id, args.continued),
                                    result_type=JobStart)
            self._started = True
            stored, more = list(start.stored), start.more
            while more:  # a long job's stored rollouts, a page per answer
                page = await self.call("stored_rollouts", StoredPage(args.job_id, len(stored)),
                                       result_type=StoredRollouts)
                stored.extend(page.results)
                more = page.more
            spec = spec_from_dict(start.spec)
            candidates = candidates_from_list(start.candidates)
            host = self._host = _WorkflowHost(self, args, spec, stored, candidates)
            await JobPlan(spec, Scoreboard(spec.val_seeds), candidates, host).run()
        except BudgetExhausted as exhausted:
            reason = exhausted.reason
        except JobFailure as failure:
            status, reason, error_text = "failed", "failed", str(failure)
        except _JobEnded:
            return "ended"
        except asyncio.CancelledError:
            await self.call("job_finish", FinishInput(args.job_id, "cancelled", "cancelled",
                                                      writes=self._queued()))
            raise
        except workflow.ContinueAsNewError:
            raise
        except Exception as failure:  # a lost activity or a bug still ends the job, with a cause
            cause = failure.cause if isinstance(failure, ActivityError) else None
            status, reason, error_text = "failed", "failed", (
                f"internal error: {type(failure).__name__}: {cause or failure}")
        await self.call("job_finish", FinishInput(args.job_id, status, reason, error_text,
                                                  writes=self._queued()))
        return status

    def _queued(self) -> list[Write]:
        return self._host.take_writes() if self._host is not None else []

    async def call(self, name: str, arg: Any, *, result_type: type[Any] | None = None) -> Any:
        """Runs activity `name` with its policy; the plan's errors come back as themselves."""
        policy = POLICIES[name]
        try:
            return await workflow.execute_activity(
                name, arg, result_type=result_type, start_to_close_timeout=policy.start_to_close,
                heartbeat_timeout=(timedelta(seconds=self._args.heartbeat_seconds)
                                   if policy.heartbeats else None),
                retry_policy=policy.retry,
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED)
        except ActivityError as error:
            raise _plan_error(error) from None

    async def admitted(self, job_id: str, *, resuming: bool) -> None:
        """Returns once the store made the job `running`; paused meanwhile, it waits for
        the resume first. Cancelling the workflow while it waits cancels the job."""
        while True:
            if self._paused:
                await self.call("pause_changed", PauseInput(job_id, True, self._pause_reason))
                await workflow.wait_condition(lambda: not self._paused)
                resuming = True
            self._nudged = False
            if await self.call("admit", AdmitInput(job_id, resuming), result_type=bool):
                return
            self._waits += 1
            if self._waits >= ADMIT_WAITS_PER_RUN:
                workflow.continue_as_new(JobArgs(
                    job_id, continued=self._args.continued or self._started,
                    heartbeat_seconds=self._args.heartbeat_seconds,
                    batches_per_run=self._args.batches_per_run, resuming=resuming,
                    batches_done=(self._host.batches_done if self._host is not None
                                  else self._args.batches_done)))
            try:
                await workflow.wait_condition(lambda: self._nudged or self._paused,
                                              timeout=ADMIT_RECHECK)
            except TimeoutError:
                pass

    def _done_or_paused(self, task: asyncio.Future[Any]) -> Callable[[], bool]:
        return lambda: task.done() or self._paused

    async def run_batch(self, job_id: str, items: list[RolloutItem]) -> RolloutsOutput:
        """One batch, paused around: a pause cancels the batch in flight (what it stored
        stays stored) and runs it again, from the store, once resumed."""
        while True:
            if self._paused:
                await self.call("pause_changed", PauseInput(job_id, True, self._pause_reason))
                await workflow.wait_condition(lambda: not self._paused)
                await self.admitted(job_id, resuming=True)
            policy = POLICIES["run_rollouts"]
            # A cancelled batch is waited for until it has stopped (or its worker is known
            # dead), so the batch run again after a resume never overlaps it.
            task = asyncio.ensure_future(workflow.execute_activity(
                "run_rollouts", RolloutsInput(job_id, items), result_type=RolloutsOutput,
                start_to_close_timeout=policy.start_to_close,
                heartbeat_timeout=timedelta(seconds=self._args.heartbeat_seconds),
                retry_policy=policy.retry,
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED))
            try:
                await workflow.wait_condition(self._done_or_paused(task))
            except asyncio.CancelledError:
                # The workflow is cancelled: the batch is a task of its own, so it is
                # cancelled here and waited for, before the job ends.
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise
            if not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, ActivityError):
                    pass
                else:
                    return cast(RolloutsOutput, task.result())  # done before the cancel landed
                continue
            try:
                return cast(RolloutsOutput, task.result())
            except ActivityError as error:
                raise _plan_error(error) from None


class _WorkflowHost:
    """The plan's host inside the workflow: every call an activity, stored rollouts answered
    from what `job_start` read."""

    def __init__(self, workflow_: JobWorkflow, args: JobArgs, spec: JobSpec,
                 stored: Sequence[RolloutResult], candidates: list[CandidateRecord]) -> None:
        self._wf = workflow_
        #: The plan's own list of candidates: the host extends it, as the embedded one does.
        self._candidates = candidates
        self._args = args
        self._job_id = args.job_id
        self._spec = spec
        self._stored = {(r.phase, r.candidate_index, r.seed): r for r in stored}
        self._answered = 0
        self._batches = 0
        self._exhausted: str | None = None
        #: `batch_done` calls so far, of this run and (replayed) of the runs before it.
        self.batches_done = 0
        #: Store writes not yet sent: they go in one activity before the next other one.
        self._writes: list[Write] = []

    def take_writes(self) -> list[Write]:
        writes, self._writes = self._writes, []
        return writes

    async def _flush(self) -> None:
        """Sends the queued writes, in order, so what the plan wrote is stored before its
        next activity runs (new candidates before their rollouts, a phase before its work)."""
        if self._writes:
            await self._wf.call("writes", WritesInput(self._job_id, self.take_writes()))

    @property
    def _replaying(self) -> bool:
        """Whether the plan is still where an earlier run has been (its side effects made)."""
        return self.batches_done < self._args.batches_done

    async def preflight(self) -> bool:
        if self._replaying:  # it passed; its answer only fills the event not sent again
            return True
        await self._flush()
        return bool(await self._wf.call("preflight", JobRef(self._job_id), result_type=bool))

    async def run_rollouts(self, items: Sequence[RolloutItem]) -> BatchOutcome:
        answered: dict[tuple[str, int, int], RolloutResult] = {}
        fresh: list[RolloutItem] = []
        for item in items:
            result = self._stored.pop((item.phase.value, item.candidate, item.seed), None)
            if result is None:
                fresh.append(item)
            else:
                answered[(result.phase, result.candidate_index, result.seed)] = result
        exhausted = None
        if fresh:
            self._batches += 1
            await self._flush()
            out = await self._wf.run_batch(self._job_id, fresh)
            exhausted = self._exhausted = out.exhausted
            for result in out.results:
                answered[(result.phase, result.candidate_index, result.seed)] = result
        results = tuple(answered[key] for item in items
                        if (key := (item.phase.value, item.candidate, item.seed)) in answered)
        self._answered += len(results)
        return BatchOutcome(results, exhausted)

    async def propose(self, request: ProposalRequest) -> Proposals:
        await self._flush()
        return cast(Proposals, await self._wf.call("propose", ProposeInput(self._job_id, request),
                                                   result_type=Proposals))

    async def enter_phase(self, phase: str) -> None:
        if not self._replaying:
            self._writes.append(Write("enter_phase", phase=phase))

    async def emit(self, type_: str, message: str, data: dict[str, object], *,
                   level: str = "info") -> None:
        if not self._replaying:
            self._writes.append(Write("emit", emit=EmitInput(
                self._job_id, type_, message, dict(data), level)))

    async def candidates_added(self, candidates: Sequence[CandidateRecord]) -> None:
        if candidates:
            self._writes.append(Write("candidates_added", candidates=list(candidates)))
        self._candidates.extend(candidates)

    async def batch_done(self) -> None:
        self.batches_done += 1
        if self.batches_done <= self._args.batches_done:
            return  # the run before made it (and continued as new there)
        self._writes.append(Write("batch_done"))
        if self._batches >= self._args.batches_per_run:
            await self._flush()
            workflow.continue_as_new(JobArgs(
                self._job_id, continued=True, heartbeat_seconds=self._args.heartbeat_seconds,
                batches_per_run=self._args.batches_per_run, batches_done=self.batches_done))

    def check_budget(self) -> None:
        if self._exhausted is not None:
            raise BudgetExhausted(self._exhausted)

    def rollouts_left(self, reserve: int) -> int | None:
        if self._spec.max_rollouts is None:
            return None
        return max(0, self._spec.max_rollouts - self._answered - reserve)

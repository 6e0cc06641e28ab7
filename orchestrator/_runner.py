"""The in-process host of a job's plan: runs it over the activities, keeps its live snapshot,
writes its summary and ends it.

- Stored rollouts are loaded once at start; when the plan asks for them again (a resume) they
  are answered from there, so nothing stored runs twice and the plan replays exactly.
- Fresh results are folded into the scoreboard as they arrive, so a GetJob of a running job
  (answered from `snapshot()`, never from the store) shows progress; the plan itself decides
  only at batch boundaries.
- The job's summary row is written at batch boundaries and at most every `flush_interval`
  seconds in between, not per rollout: a rollout result is its own row, written once.
- `end_job` is the one place a job becomes terminal, whether it succeeded, failed or was
  cancelled (also when a queued job is cancelled before it ever ran).
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from mipro import _metrics, _tracing
from mipro._pricing import PriceTable

from ._activities import (
    BatchOutcome,
    JobActivities,
    ProposalRequest,
    Proposals,
    RolloutItem,
)
from ._budget import Budget, BudgetExhausted, Meter
from ._candidate_prompt import CandidatePrompt
from ._errors import JobFailure
from ._exchanges import ExchangeLedger
from ._job_trace import JobTrace
from ._models import CandidateRecord, JobRecord, JobStatus, RolloutResult
from ._plan import JobPlan
from ._proposer_client import ProposerClient
from ._rollout_book import RolloutBook, as_book
from ._scoreboard import Phase, Scoreboard
from ._store import JobStore
from ._task_app import TaskAppClient
from ._tokens import RolloutTokens

log = structlog.get_logger(__name__)

#: emit(type, message, data, terminal)
EventSink = Callable[[str, str, dict[str, Any], bool], Awaitable[None]]
#: The longest a running job's published snapshot lags its rollouts (`JobRunner.published`).
PUBLISH_SECONDS = 0.05


def published_copy(job: JobRecord) -> JobRecord:
    """A copy of `job` that the runner's later updates never touch: what readers on other
    threads see (the gRPC API's loop, `_api_loop.py`). The spec and the strings are shared,
    being immutable; what the snapshot rewrites is copied. O(candidates)."""
    return replace(job, failures_by_cause=dict(job.failures_by_cause),
                   candidates=[copy.copy(c) for c in job.candidates], history=list(job.history))


@dataclass(frozen=True)
class Ending:
    """A job's terminal event, made by `end_job`."""

    type: str
    message: str
    data: dict[str, Any]


def end_job(job: JobRecord, status: JobStatus, reason: str, error: str = "") -> Ending:
    """Makes `job` terminal and returns the event that says so; the one place jobs end."""
    job.status = status
    job.termination_reason = reason
    job.error = error
    job.finished_at = datetime.now(UTC)
    job.phase = "done"
    _metrics.JOBS_ENDED.labels(status.value).inc()
    message = {
        JobStatus.SUCCEEDED: "job succeeded",
        JobStatus.FAILED: f"job failed: {error}",
        JobStatus.CANCELLED: "job cancelled",
    }[status]
    data = {"status": status.value, "best_score": job.best_score,
            "baseline_score": job.baseline_score, "best_instruction": job.best_instruction,
            "rollouts_completed": job.rollouts_completed,
            "rollouts_failed": job.rollouts_failed,
            "termination_reason": reason, "error": error}
    return Ending(f"job.{status.value}", message, data)


def _key(phase: str, candidate: int, seed: int) -> tuple[str, int, int]:
    return (phase, candidate, seed)


class JobRunner:
    """Runs (or resumes) one job; `run()` returns when it is terminal or interrupted."""

    def __init__(self, job: JobRecord, *, environment_key: str, task_app: TaskAppClient,
                 proposer: ProposerClient, store: JobStore,
                 ledger: ExchangeLedger | RolloutBook,
                 prices: PriceTable, public_base_url: str, emit: EventSink,
                 flush_interval: float = 0.25, tokens: RolloutTokens | None = None) -> None:
        self.job = job
        spec = job.spec
        self._store = store
        self._prices = prices
        self._emit_event = emit
        self._flush_interval = flush_interval
        self._last_flush = 0.0
        self._announced: dict[int, tuple[int, int]] = {}
        self._stored: dict[tuple[str, int, int], RolloutResult] = {}
        self._book = as_book(ledger)
        #: Stored rollouts read so far (`list_rollouts_from` continues from here).
        self._seen = 0
        self.board = Scoreboard(spec.val_seeds)
        self.meter = Meter(Budget.of(spec), started_at=job.started_at or datetime.now(UTC),
                           prices=prices, policy_model=spec.policy.model,
                           proposer_model=spec.proposer.model)
        self.trace = JobTrace(job.job_id)
        self._activities = JobActivities(
            job_id=job.job_id, spec=spec, environment_key=environment_key, task_app=task_app,
            proposer=proposer, store=store, ledger=ledger, meter=self.meter,
            public_base_url=public_base_url, instruction_of=self._instruction_of,
            on_result=self._on_result, tokens=tokens or RolloutTokens(), trace=self.trace,
            prompt_of=self._prompt_of)
        self._plan: JobPlan | None = None
        #: The job as of its last snapshot, never modified after: replaced whole, so a reader
        #: on another thread sees one consistent state, at most `PUBLISH_SECONDS` behind.
        self.published = published_copy(job)
        self._published_at = 0.0
        #: Set when the process shuts down: the job is left unfinished instead of cancelled.
        self.interrupted = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        job = self.job
        structlog.contextvars.bind_contextvars(job_id=job.job_id)
        root = self.trace.start(job.resumes)
        try:
            with _tracing.current(root):
                await self._run_plan()
        finally:
            self.trace.finish(job)
            structlog.contextvars.unbind_contextvars("job_id")

    async def _run_plan(self) -> None:
        job = self.job
        try:
            await self._start()
            self._plan = JobPlan(job.spec, self.board, job.candidates, self)
            await self._plan.run()
            await self._finish(JobStatus.SUCCEEDED, "completed")
        except BudgetExhausted as exc:
            await self._finish(JobStatus.SUCCEEDED, exc.reason)
        except JobFailure as exc:
            await self._finish(JobStatus.FAILED, "failed", str(exc))
        except asyncio.CancelledError:
            if not self.interrupted:
                await asyncio.shield(self._finish(JobStatus.CANCELLED, "cancelled"))
            raise
        except Exception as exc:  # a bug must still end the job with a cause, not hang it
            log.exception("job crashed")
            await self._finish(JobStatus.FAILED, "failed",
                               f"internal error: {type(exc).__name__}: {exc}")

    async def load(self) -> None:
        """Reads the job's stored rollouts (answered, not run, when the plan asks for them)
        and its spend so far."""
        job = self.job
        self._remember(await self._store.list_rollouts(job.job_id))
        self.meter.proposer_tokens = job.proposer_tokens
        self.meter.proposer_cost_usd = job.proposer_cost_usd
        await self._book.refresh_meter(job.job_id, self.meter)

    def _remember(self, results: Sequence[RolloutResult]) -> None:
        for result in results:
            self._seen += 1
            if self._book.shared:  # a worker replica's snapshot shows what any replica ran
                self.board.fold(result)
            if result.phase != Phase.BOOTSTRAP:
                result = replace(result, trace=None)
            self._stored[_key(result.phase, result.candidate_index, result.seed)] = result

    async def catch_up(self) -> None:
        """Reads what other worker replicas stored since this runner last looked: the job's
        candidates, phase and history, its new rollouts and its metered spend."""
        job = self.job
        stored = await self._store.get_job(job.job_id)
        if stored is not None:
            job.candidates[:] = stored.candidates  # in place: `learn_prompts`'s plan reads it
            job.baseline_instruction = stored.baseline_instruction
            job.phase, job.history = stored.phase, stored.history
        self._remember(await self._store.list_rollouts_from(job.job_id, self._seen))
        await self._book.refresh_meter(job.job_id, self.meter)

    def learn_prompts(self, bootstrap: Sequence[RolloutResult]) -> None:
        """For a host whose plan runs elsewhere (a Temporal worker replica): the candidates'
        prompts (`JobPlan.prompt_of`), rebuilt from the job's stored bootstrap rollouts."""
        plan = JobPlan(self.job.spec, self.board, self.job.candidates, self)
        plan.learn(bootstrap)
        self._plan = plan

    @property
    def knows_prompts(self) -> bool:
        """Whether this runner can tell the candidates' prompts (it runs the plan, or
        `learn_prompts` ran)."""
        return self._plan is not None

    async def _start(self) -> None:
        await self.load()
        await self.mark_started()

    async def mark_started(self) -> None:
        """Makes the job `running`, counts a resume, and says so in an event."""
        job = self.job
        resumed = job.started_at is not None
        job.status = JobStatus.RUNNING
        if resumed:
            job.resumes += 1
        else:
            job.started_at = datetime.now(UTC)
        await self._save()
        if resumed:
            await self.emit("job.resumed",
                            f"job resumed with {len(self._stored)} rollouts already stored",
                            {"stored_rollouts": len(self._stored), "resumes": job.resumes})
        else:
            await self.emit("job.started", "job started",
                            {"task_app_url": job.spec.task_app_url})

    async def finish(self, status: JobStatus, reason: str, error: str = "") -> None:
        """Ends the job (through `end_job`) for a host that decides the ending elsewhere."""
        await self._finish(status, reason, error)

    async def pause_changed(self, paused: bool, reason: str = "") -> None:
        """Records that a host paused (or resumed) the job: its state and an event."""
        try:
            status = JobStatus("paused") if paused else JobStatus.RUNNING
        except ValueError:  # a store without the paused state: it stays running
            status = JobStatus.RUNNING
        self.job.status = status
        await self._save()
        if paused:
            await self.emit("job.paused", "job paused", {"reason": reason[:500]})
        else:
            await self.emit("job.resumed", "job resumed after a pause",
                            {"stored_rollouts": self._seen, "resumes": self.job.resumes})

    async def ensure_task_info(self) -> None:
        await self._activities.ensure_task_info()

    async def _finish(self, status: JobStatus, reason: str, error: str = "") -> None:
        self.snapshot()
        if status is JobStatus.SUCCEEDED and self.job.best_score is None:
            status, error = JobStatus.FAILED, (
                f"budget {reason} ran out before any candidate was scored")
            reason = "failed"
        ending = end_job(self.job, status, reason, error)
        await self._save()
        level = "error" if status is JobStatus.FAILED else "info"
        getattr(log, level)(ending.message, event_type=ending.type)
        await self._emit_event(ending.type, ending.message, ending.data, True)

    # -- the snapshot ------------------------------------------------------------------------

    def snapshot(self) -> JobRecord:
        """Brings the job record up to date from the scoreboard and the meter; O(candidates)."""
        job, board, meter, model = self.job, self.board, self.meter, self.job.spec.policy.model
        job.rollouts_completed = board.completed
        job.rollouts_failed = board.failed
        job.failures_by_cause = dict(board.failures_by_cause)
        job.policy_tokens = meter.policy_tokens
        job.proposer_tokens = meter.proposer_tokens
        job.proposer_cost_usd = meter.proposer_cost_usd
        job.cost_usd = meter.cost_usd
        if not job.candidates:
            return self._publish(job)
        for candidate in job.candidates:
            standing = board.standing(candidate.index)
            usage = board.candidate_usage(candidate.index)
            candidate.mean_score = standing.mean
            candidate.seeds_scored = standing.seeds_scored
            candidate.failures = standing.failures
            candidate.fully_evaluated = standing.fully_evaluated
            candidate.excluded_reason = standing.excluded_reason
            candidate.policy_tokens = usage.total
            candidate.cost_usd = round(self._prices.cost_usd(
                model, usage.prompt_tokens, usage.completion_tokens), 6)
        job.baseline_score = job.candidates[0].mean_score
        winner = board.winner(len(job.candidates))
        if winner is not None:
            job.best_score = job.candidates[winner].mean_score
            job.best_instruction = job.candidates[winner].instruction
            if job.spec.test_seeds and board.tally(Phase.TEST, 0).attempted:
                job.baseline_test_score = board.tally(Phase.TEST, 0).mean
                job.best_test_score = board.tally(Phase.TEST, winner).mean
        return self._publish(job)

    def _publish(self, job: JobRecord) -> JobRecord:
        self.published = published_copy(job)
        self._published_at = time.monotonic()
        return job

    async def _save(self) -> None:
        self.snapshot()
        self._last_flush = time.monotonic()
        await self._store.save_job(self.job)

    # -- the plan's host ---------------------------------------------------------------------

    async def preflight(self) -> bool:
        return await self._activities.preflight()

    async def run_rollouts(self, items: Sequence[RolloutItem]) -> BatchOutcome:
        stored: list[RolloutResult] = []
        fresh: list[RolloutItem] = []
        for item in items:
            result = self._stored.pop(_key(item.phase, item.candidate, item.seed), None)
            if result is None:
                fresh.append(item)
            else:
                stored.append(result)
                if not self._book.shared:  # a shared book metered them when they ran
                    self.meter.rollouts += 1
                    self.meter.add_policy_usage(result.prompt_tokens, result.completion_tokens)
        if not fresh:
            return BatchOutcome(tuple(stored))
        outcome = await self._activities.run_rollouts(fresh)
        if not stored:
            return outcome  # already in the items' order
        order = {_key(i.phase, i.candidate, i.seed): n for n, i in enumerate(items)}
        merged = sorted((*stored, *outcome.results),
                        key=lambda r: order[_key(r.phase, r.candidate_index, r.seed)])
        return BatchOutcome(tuple(merged), outcome.exhausted)

    async def propose(self, request: ProposalRequest) -> Proposals:
        self.meter.check()
        # The dataset summary is written once, in the first round, and kept in the job
        # record, so a resumed job shows later rounds the same summary without asking again.
        request = replace(request, dataset_summary=self.job.dataset_summary,
                          summarize_dataset=request.round == 1 and not self.job.dataset_summary)
        proposals = await self._activities.propose(request)
        if proposals.dataset_summary:
            self.job.dataset_summary = proposals.dataset_summary
        return proposals

    async def enter_phase(self, phase: str) -> None:
        self.trace.phase(phase)
        if self.job.phase == phase:
            return
        self.job.phase = phase
        await self._save()
        await self.emit("phase.started", f"{phase} started", {"phase": phase})

    async def emit(self, type_: str, message: str, data: dict[str, Any], *,
                   level: str = "info") -> None:
        getattr(log, level)(message, event_type=type_)
        self.snapshot()  # a reader who saw the event finds the job at least this far
        await self._emit_event(type_, message, data, False)

    async def candidates_added(self, candidates: Sequence[CandidateRecord]) -> None:
        job = self.job
        job.candidates.extend(candidates)
        if job.candidates and not job.baseline_instruction:
            job.baseline_instruction = job.candidates[0].instruction
        await self._save()

    async def batch_done(self) -> None:
        job = self.snapshot()
        for candidate in job.candidates:
            current = (candidate.seeds_scored, candidate.failures)
            if current != self._announced.get(candidate.index) and any(current):
                self._announced[candidate.index] = current
                score = "n/a" if candidate.mean_score is None else f"{candidate.mean_score:.3f}"
                await self.emit(
                    "candidate.scored",
                    f"candidate {candidate.index} scored {score} on {candidate.seeds_scored} seeds",
                    {"candidate": candidate.index, "mean_score": candidate.mean_score,
                     "seeds_scored": candidate.seeds_scored, "failures": candidate.failures,
                     "fully_evaluated": candidate.fully_evaluated})
        winner = self.board.winner(len(job.candidates))
        if winner is not None and job.best_score is not None:
            point = (len(self.board.val_results), job.best_score, winner)
            last = job.history[-1] if job.history else None
            if last is None or (last[1], last[2]) != (point[1], point[2]):
                job.history.append(point)
                await self.emit("best.updated",
                                f"best so far: candidate {winner} at {job.best_score:.3f}",
                                {"candidate": winner, "mean_score": job.best_score,
                                 "rollouts": point[0]})
        await self._save()

    def check_budget(self) -> None:
        self.meter.check()

    def rollouts_left(self, reserve: int) -> int | None:
        return self.meter.rollouts_left(reserve)

    # -- activity callbacks ------------------------------------------------------------------

    def _instruction_of(self, index: int) -> str | None:
        return self.job.candidates[index].instruction if index < len(self.job.candidates) \
            else None

    def _prompt_of(self, index: int) -> CandidatePrompt | None:
        return self._plan.prompt_of(index) if self._plan is not None else None

    async def _on_result(self, result: RolloutResult, done: int, planned: int) -> None:
        """A fresh result: folded at once (for the live snapshot), its events, a summary
        write when the last one is older than the flush interval."""
        self.board.fold(result)
        data = {"rollout_id": result.rollout_id, "candidate": result.candidate_index,
                "seed": result.seed, "phase": result.phase, "reward": result.reward}
        if result.phase == Phase.BOOTSTRAP:
            total = len(self.job.spec.bootstrap_train_seeds)
            attempted = self.board.tally(Phase.BOOTSTRAP, 0).attempted
            await self.emit("bootstrap.progress", f"bootstrap rollout {attempted}/{total}", data)
        if not result.ok:
            data.update(failure_cause=result.failure_cause, failure_detail=result.failure_detail)
            await self.emit("rollout.failed", f"rollout failed: {result.failure_cause}", data,
                            level="warning")
        step = max(1, planned // 10)
        if result.phase != Phase.BOOTSTRAP and (done % step == 0 or done == planned):
            await self.emit(f"{result.phase}.progress", f"{result.phase} rollouts {done}/{planned}",
                            {"done": done, "planned": planned})
        now = time.monotonic()
        if now - self._last_flush >= self._flush_interval:
            await self._save()
        elif now - self._published_at >= PUBLISH_SECONDS:
            self.snapshot()

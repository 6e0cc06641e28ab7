"""The side effects of a job, as activities with narrow typed inputs and outputs.

The plan (`_plan.py`) only decides; everything that talks to the outside runs here:

- `preflight()`: the task app's `/health` and `/task_info`;
- `run_rollouts(items) -> BatchOutcome`: rollouts on the task app, at most `max_concurrent`
  at once, each started only while the budget allows, each result stored as one row;
- `propose(request) -> Proposals`: one call to the proposer service.

The same signatures are what a Temporal worker would register as activities.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from mipro import _metrics, _tracing
from mipro.v1 import proposer_pb2

from . import _defaults as defaults
from ._budget import Meter
from ._candidate_prompt import CandidatePrompt
from ._errors import JobFailure, TaskAppUnavailable
from ._exchanges import ExchangeLedger, RolloutGrant, provider_failure, trace_of
from ._job_trace import JobTrace
from ._models import JobSpec, RolloutResult, rollout_id
from ._proposer_client import ProposerClient
from ._rollout_book import RolloutBook, as_book
from ._scoreboard import Phase
from ._store import JobStore, JobUsage
from ._task_app import FailureCause, RolloutCall, RolloutOutcome, TaskAppClient
from ._tokens import RolloutTokens

log = structlog.get_logger(__name__)

#: Failures in a row, by unreachable or overloaded task app, after which its health is checked.
OUTAGE_STREAK = 5
_OUTAGE_CAUSES = frozenset({"connect_error", "timeout", "http_502", "http_503", "http_504"})
_SEED_MODULUS = 2**31


@dataclass(frozen=True)
class RolloutItem:
    """One rollout the plan asks for: what it measures."""

    phase: Phase
    candidate: int
    seed: int


@dataclass(frozen=True)
class BatchOutcome:
    """The results of the items that ran, and the budget that stopped the rest, if any."""

    results: tuple[RolloutResult, ...]
    exhausted: str | None = None


@dataclass(frozen=True)
class Example:
    """A scored bootstrap trace shown to the proposer."""

    input: str
    output: str
    reward: float


@dataclass(frozen=True)
class ScoredInstruction:
    instruction: str
    score: float
    seeds_scored: int


@dataclass(frozen=True)
class ProposalRequest:
    """What one proposal round asks the proposer for."""

    round: int
    size: int
    seed: int
    baseline_instruction: str
    examples: tuple[Example, ...]
    previous: tuple[ScoredInstruction, ...]
    #: The job's dataset summary, once written; shown to every proposal call.
    dataset_summary: str = ""
    #: Ask the proposer to write the dataset summary first (the job's first round only).
    summarize_dataset: bool = False


@dataclass(frozen=True)
class Proposal:
    instruction: str
    tip: str


@dataclass(frozen=True)
class Proposals:
    """What the proposer returned, with its token usage."""

    proposals: tuple[Proposal, ...]
    prompt_tokens: int
    completion_tokens: int
    duplicates_dropped: int
    #: Replies not used, by reason (`question`, `echo`, `near_duplicate_of_baseline`, ...).
    rejected: dict[str, int] = dataclasses.field(default_factory=dict)
    #: The dataset summary the proposer wrote for this request ("" when none).
    dataset_summary: str = ""


ResultSink = Callable[[RolloutResult, int, int], Awaitable[None]]


class JobActivities:
    """The activities of one job, bound to its task app, proposer, store and meter."""

    def __init__(self, *, job_id: str, spec: JobSpec, environment_key: str,
                 task_app: TaskAppClient, proposer: ProposerClient, store: JobStore,
                 ledger: ExchangeLedger | RolloutBook, meter: Meter, public_base_url: str,
                 instruction_of: Callable[[int], str | None], on_result: ResultSink,
                 tokens: RolloutTokens, trace: JobTrace | None = None,
                 prompt_of: Callable[[int], CandidatePrompt | None] | None = None) -> None:
        self._job_id = job_id
        self._spec = spec
        self._env_key = environment_key
        self._task_app = task_app
        self._proposer = proposer
        self._store = store
        self._book = as_book(ledger)
        self._meter = meter
        self._public_base_url = public_base_url
        self._instruction_of = instruction_of
        self._on_result = on_result
        self._tokens = tokens
        self._trace = trace or JobTrace(job_id)
        self._prompt_of = prompt_of
        self._task_info: dict[str, Any] | None = None
        self._outage_streak = 0
        self._last_outage = ""

    # -- preflight ---------------------------------------------------------------------------

    async def preflight(self) -> bool:
        """Checks the task app's health (raising `JobFailure` with the cause) and reads its
        `/task_info`; True when it gave one."""
        await self._task_app.check_health()
        self._task_info = await self._task_app.task_info()
        return self._task_info is not None

    async def ensure_task_info(self) -> None:
        """Reads `/task_info` when this process has not (the preflight ran on another
        worker replica), so the proposer is shown the same task description."""
        if self._task_info is None:
            self._task_info = await self._task_app.task_info()

    # -- rollouts ----------------------------------------------------------------------------

    async def run_rollouts(self, items: Sequence[RolloutItem]) -> BatchOutcome:
        """Runs `items`, started in their order, at most `max_concurrent` at once; stops
        starting new ones when a budget runs out. The results come back in the items' order,
        whatever order they finished in. Raises `JobFailure` when the task app stays down."""
        results: list[RolloutResult] = []
        exhausted: str | None = None
        position = 0

        async def worker() -> None:
            nonlocal position, exhausted
            while position < len(items) and exhausted is None:
                await self._book.refresh_meter(self._job_id, self._meter)
                if position >= len(items):  # another worker took the last item meanwhile
                    return
                reason = self._meter.exhausted()
                if reason is not None or exhausted is not None:
                    exhausted = exhausted or reason
                    return
                item = items[position]
                position += 1
                self._meter.rollouts += 1
                rid = rollout_id(self._job_id, item.phase, item.candidate, item.seed)
                # This worker's log lines name its rollout (the worker is a task of its own,
                # so the binding ends with it; cheaper than `bound_contextvars` per item).
                structlog.contextvars.bind_contextvars(rollout_id=rid)
                started = time.perf_counter()
                _metrics.ROLLOUTS_IN_FLIGHT.inc()
                await self._book.add_usage(self._job_id, JobUsage(rollouts=1), self._meter)
                try:
                    result = await self._rollout(item, rid)
                finally:
                    _metrics.ROLLOUTS_IN_FLIGHT.dec()
                _metrics.count_rollout(result.phase, result.failure_cause,
                                       time.perf_counter() - started)
                await self._store.record_rollout(self._job_id, result)
                if item.phase is not Phase.BOOTSTRAP:
                    result = dataclasses.replace(result, trace=None)  # stored, not kept
                results.append(result)
                await self._on_result(result, len(results), len(items))
                await self._watch_for_outage(result)

        workers = min(self._spec.max_concurrent, len(items))
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(worker())
        except BaseExceptionGroup as failed:
            # Raised as itself, with its own traceback: a JobFailure ends the job with its
            # cause, and anything else (a bug) is logged and named by the job's crash path
            # rather than as "unhandled errors in a TaskGroup".
            first = next((e for e in failed.exceptions if isinstance(e, JobFailure)),
                         failed.exceptions[0])
            raise first from None
        order = {(i.phase.value, i.candidate, i.seed): n for n, i in enumerate(items)}
        results.sort(key=lambda r: order[(r.phase, r.candidate_index, r.seed)])
        return BatchOutcome(tuple(results), exhausted)

    async def _rollout(self, item: RolloutItem, rid: str) -> RolloutResult:
        spec, policy = self._spec, self._spec.policy
        instruction = self._instruction_of(item.candidate) if item.candidate else None
        # The token lives as long as the rollout can (every attempt and back-off), plus a
        # minute of grace; closing the rollout ends it sooner.
        ttl = self._task_app.rollout_deadline(spec.rollout_timeout_seconds) + 60
        token, claims = self._tokens.mint(job_id=self._job_id, candidate=item.candidate,
                                          rollout_id=rid, ttl_seconds=ttl)
        await self._book.open(RolloutGrant(
            job_id=self._job_id, rollout_id=rid, nonce=claims.nonce,
            candidate_index=item.candidate, instruction=instruction, policy=policy,
            environment_key=self._env_key, on_usage=self._meter.add_policy_usage,
            spent=self._meter.spent, max_concurrent=spec.max_concurrent,
            prompt=self._prompt_of(item.candidate) if self._prompt_of else None))
        span = self._trace.rollout(rid, claims.nonce, phase=item.phase.value,
                                   candidate=item.candidate, seed=item.seed)
        base = f"{self._public_base_url}/v1/{token}"
        call = RolloutCall(
            rollout_id=rid, seed=item.seed, candidate_index=item.candidate,
            inference_url=f"{self._public_base_url}/v1/{token}?cid={rid}",
            model=policy.model, provider=policy.provider,
            timeout_seconds=spec.rollout_timeout_seconds, temperature=policy.temperature,
            max_completion_tokens=policy.max_completion_tokens, instruction=instruction,
            env_name=spec.env_name, env_config=spec.env_config,
            traceparent=_tracing.traceparent(span),
            stage_inference_urls={s.stage_id: f"{base}/{s.stage_id}?cid={rid}"
                                  for s in spec.stages})

        async def may_retry() -> bool:
            return not await self._book.provider_error(rid, claims.nonce)

        try:
            outcome = await self._task_app.rollout(call, may_retry=may_retry)
        except BaseException:
            if span is not None:
                span.end()
            raise
        finally:
            exchanges = await self._book.close(rid, claims.nonce)
        model_error = provider_failure(exchanges)
        if outcome.reward is None and model_error:
            outcome = RolloutOutcome(None, FailureCause.POLICY_MODEL, model_error)
        prompt = sum(e.prompt_tokens for e in exchanges)
        completion = sum(e.completion_tokens for e in exchanges)
        result = RolloutResult(
            rollout_id=rid, candidate_index=item.candidate, seed=item.seed,
            phase=item.phase.value, reward=outcome.reward, failure_cause=outcome.failure_cause,
            failure_detail=outcome.failure_detail, tokens=prompt + completion,
            # Only bootstrap traces ground proposals, stages and demos: the others stay small.
            trace=trace_of(exchanges, with_calls=item.phase is Phase.BOOTSTRAP),
            prompt_tokens=prompt, completion_tokens=completion)
        self._trace.rollout_done(span, result)
        return result

    async def _watch_for_outage(self, result: RolloutResult) -> None:
        """Fails the job when the task app stays down: a streak of connection failures
        followed by a failed health check."""
        if result.ok or result.failure_cause not in _OUTAGE_CAUSES:
            self._outage_streak = 0
            return
        self._outage_streak += 1
        self._last_outage = f"{result.failure_cause}: {result.failure_detail}"
        if self._outage_streak < OUTAGE_STREAK:
            return
        self._outage_streak = 0
        try:
            await self._task_app.check_health()
        except TaskAppUnavailable as exc:
            raise JobFailure(f"{exc}; last rollout error: {self._last_outage}") from None

    # -- proposals ---------------------------------------------------------------------------

    async def propose(self, request: ProposalRequest) -> Proposals:
        """One round of proposals from the proposer service (raises `JobFailure` naming it
        when it cannot answer)."""
        spec = self._spec.proposer
        message = proposer_pb2.ProposeInstructionsRequest(
            job_id=self._job_id,
            model=proposer_pb2.ProposerModel(
                provider=spec.provider, model=spec.model, temperature=spec.temperature,
                max_tokens=spec.max_tokens),
            # The proposer writes instructions in every mode; demos are the orchestrator's.
            mode=defaults.PROPOSER_MODE,
            num_candidates=request.size,
            task_info_json=(json.dumps(self._task_info, sort_keys=True)
                            if self._task_info else ""),
            baseline_instruction=request.baseline_instruction,
            examples=[proposer_pb2.ScoredExample(input=e.input, output=e.output,
                                                 reward=e.reward) for e in request.examples],
            previous_candidates=[
                proposer_pb2.ScoredInstruction(instruction=p.instruction, score=p.score,
                                               seeds_scored=p.seeds_scored)
                for p in request.previous],
            seed=request.seed % _SEED_MODULUS,
            dataset_summary=request.dataset_summary,
            summarize_dataset=request.summarize_dataset,
        )
        started = time.perf_counter()
        with _tracing.span("propose", parent=self._trace.parent, kind=_tracing.SpanKind.CLIENT,
                           attributes={"mipro.round": request.round,
                                       "mipro.candidates_asked": request.size}) as span:
            try:
                response = await self._proposer.propose(
                    message, traceparent=_tracing.traceparent(span))
            except JobFailure:
                _metrics.PROPOSER_REQUEST_SECONDS.labels("error").observe(
                    time.perf_counter() - started)
                raise
            _metrics.PROPOSER_REQUEST_SECONDS.labels("ok").observe(time.perf_counter() - started)
            if span is not None:
                span.set_attribute("mipro.proposals", len(response.instructions))
        usage = response.usage
        cost_before = self._meter.proposer_cost_usd
        self._meter.add_proposer_usage(usage.prompt_tokens, usage.completion_tokens)
        await self._book.add_usage(self._job_id, JobUsage(
            proposer_tokens=usage.prompt_tokens + usage.completion_tokens,
            proposer_cost_usd=self._meter.proposer_cost_usd - cost_before), self._meter)
        return Proposals(
            proposals=tuple(Proposal(p.instruction, p.tip) for p in response.instructions),
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            duplicates_dropped=response.duplicates_dropped,
            rejected=dict(sorted(response.rejected.items())),
            dataset_summary=response.dataset_summary)

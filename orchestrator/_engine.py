"""The MIPRO offline engine: runs one job from preflight to result, resumably.

Phases, each announced by events (see `mipro.md` and the README):

1. preflight: the task app's `/health` (with the environment key) and `/task_info`;
2. bootstrap: the baseline on every `bootstrap_train_seeds` seed, through the interceptor,
   capturing the baseline instruction, the inputs, the answers and the rewards;
3. rounds of proposals: each round the proposer writes part of `num_candidates`, grounded in
   the bootstrap traces and in every earlier candidate's score; between rounds the new
   candidates are screened on the first `minibatch_size` validation seeds;
4. search: `_search.next_batch` decides which (candidate, seed) pairs to run next within the
   budget, and the winner is evaluated on the full validation set whenever it can be;
5. test: the winner and the baseline on `test_seeds`, when given.

The engine is a deterministic function of the job's spec and its stored rollout results:
each step asks for the rollouts it needs and only the ones not stored yet are run, in
batches whose contents never depend on completion order. So a resumed job repeats no
completed rollout, and the same job with the same seed plans the same rollouts.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from mipro._pricing import PriceTable
from mipro.v1 import proposer_pb2

from . import _search
from ._errors import JobFailure, TaskAppUnavailable
from ._interceptor import Exchange, Trial, TrialRegistry
from ._models import CandidateRecord, JobRecord, JobStatus, RolloutResult
from ._proposer_client import ProposerClient
from ._store import JobStore
from ._task_app import TaskAppClient

log = structlog.get_logger(__name__)

#: A candidate failing more than this share of its validation rollouts cannot win.
MAX_FAILURE_RATE = 0.5
#: Failures in a row, by unreachable or overloaded task app, after which its health is checked.
_OUTAGE_STREAK = 5
_OUTAGE_CAUSES = frozenset({"connect_error", "timeout", "http_502", "http_503", "http_504"})
_MAX_TRACE_TEXT = 2000
_SEED_MODULUS = 2**31

EventSink = Callable[[str, str, dict[str, Any], bool], Awaitable[None]]
RolloutKey = tuple[str, int, int]


class BudgetExhausted(Exception):
    """A termination budget ran out; the job ends with the best result so far."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class EngineContext:
    """What the engine needs from the process around it."""

    store: JobStore
    registry: TrialRegistry
    proposer: ProposerClient
    public_base_url: str
    prices: PriceTable
    emit: EventSink


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TRACE_TEXT else text[:_MAX_TRACE_TEXT] + "…"


def _trace(exchanges: Sequence[Exchange]) -> dict[str, Any] | None:
    """The first successful exchange as a compact trace: instruction, input, output."""
    for exchange in exchanges:
        if exchange.response is None:
            continue
        system = next(
            (_text(m.get("content")) for m in exchange.messages
             if m.get("role") in ("system", "developer")), "")
        user = next(
            (_text(m.get("content")) for m in reversed(exchange.messages)
             if m.get("role") == "user"), "")
        message = ((exchange.response.get("choices") or [{}])[0] or {}).get("message") or {}
        calls = message.get("tool_calls") or []
        if len(calls) > 1:
            output = json.dumps([c.get("function", {}).get("arguments") for c in calls])
        elif calls:
            output = calls[0].get("function", {}).get("arguments", "")
        else:
            output = _text(message.get("content"))
        return {"instruction": _clip(system), "input": _clip(user), "output": _clip(output or ""),
                "latency_ms": round(exchange.latency_ms, 1), "tool_calls": len(calls)}
    return None


def _round_sizes(total: int, rounds: int) -> list[int]:
    """`total` candidates split over `rounds`, earlier rounds taking the remainder."""
    base, extra = divmod(total, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


class JobRun:
    """Runs (or resumes) one job; `run()` returns when the job is terminal or interrupted."""

    def __init__(self, job: JobRecord, environment_key: str, task_app: TaskAppClient,
                 context: EngineContext) -> None:
        self.job = job
        self._spec = job.spec
        self._env_key = environment_key
        self._task_app = task_app
        self._ctx = context
        self._exchanges: dict[str, list[Exchange]] = {}
        #: Every stored result of the job, loaded at start (a resume) and added as rollouts end.
        self._results: dict[RolloutKey, RolloutResult] = {}
        #: The results the plan has reached so far. Decisions (search batches, scores shown to
        #: the proposer, budgets) read only these, so a resumed job replays the same plan.
        self._visible: dict[RolloutKey, RolloutResult] = {}
        self._issued = 0  # rollout ids handed out, in plan order, replayed ones included
        self._in_flight = 0
        self._semaphore = asyncio.Semaphore(job.spec.max_concurrent)
        self._trial_ids: dict[int, str] = {}
        self._outage_streak = 0
        self._last_outage = ""
        self._announced: dict[int, tuple[int, int]] = {}
        #: Set when the process shuts down: the job is left unfinished instead of cancelled.
        self.interrupted = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        job = self.job
        structlog.contextvars.bind_contextvars(job_id=job.job_id)
        try:
            await self._start()
            await self._run_phases()
        except BudgetExhausted as exc:
            await self._finish_succeeded(exc.reason)
        except JobFailure as exc:
            await self._finish_failed(str(exc))
        except asyncio.CancelledError:
            if not self.interrupted:
                await asyncio.shield(self._finish(JobStatus.CANCELLED, "cancelled"))
            raise
        except Exception as exc:  # a bug must still end the job with a cause, not hang it
            log.exception("job crashed")
            await self._finish_failed(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self._ctx.registry.remove_job(job.job_id)
            structlog.contextvars.unbind_contextvars("job_id")

    async def _start(self) -> None:
        job = self.job
        for result in await self._ctx.store.list_rollouts(job.job_id):
            self._results[result.key] = result
        self._recount()
        resumed = job.started_at is not None
        job.status = JobStatus.RUNNING
        if resumed:
            job.resumes += 1
        else:
            job.started_at = datetime.now(UTC)
        await self._save()
        if resumed:
            await self._emit("job.resumed", f"job resumed with {len(self._results)} rollouts "
                             "already stored", {"stored_rollouts": len(self._results),
                                                "resumes": job.resumes})
        else:
            await self._emit("job.started", "job started",
                             {"task_app_url": self._spec.task_app_url})

    async def _run_phases(self) -> None:
        task_info = await self._preflight()
        traces = await self._bootstrap()
        sizes = _round_sizes(self._spec.num_candidates, self._spec.num_iterations)
        for round_number, size in enumerate(sizes, start=1):
            await self._propose(round_number, size, task_info, traces)
            if round_number < len(sizes):
                await self._screen(round_number)
        await self._search()
        await self._test()
        await self._finish_succeeded("completed")

    # -- phases ------------------------------------------------------------------------------

    async def _preflight(self) -> dict[str, Any] | None:
        await self._set_phase("preflight")
        await self._task_app.check_health()
        task_info = await self._task_app.task_info()
        await self._emit("preflight.passed", "task app is healthy",
                         {"task_info": task_info is not None})
        return task_info

    async def _bootstrap(self) -> list[RolloutResult]:
        await self._set_phase("bootstrap")
        seeds = self._spec.bootstrap_train_seeds
        results = await self._ensure("bootstrap", [(0, s) for s in seeds])
        ok = [r for r in results if r.ok]
        if not ok:
            raise JobFailure("the baseline could not be scored on any bootstrap seed: "
                             + self._causes_summary(results))
        instructions = Counter(r.trace["instruction"] for r in ok if r.trace)
        job = self.job
        if not job.candidates:
            job.baseline_instruction = instructions.most_common(1)[0][0] if instructions else ""
            job.candidates = [CandidateRecord(0, job.baseline_instruction, "baseline")]
            await self._save()
            mean = sum(r.reward or 0.0 for r in ok) / len(ok)
            await self._emit(
                "bootstrap.completed", f"baseline scored {mean:.3f} on {len(ok)} bootstrap seeds",
                {"mean_reward": mean, "seeds_scored": len(ok), "failures": len(results) - len(ok),
                 "captured_instruction": bool(instructions)})
            if not instructions:
                await self._emit(
                    "bootstrap.warning",
                    "no model call reached the interceptor: the task app may ignore inference_url",
                    {}, level="warning")
        return ok

    async def _propose(self, round_number: int, size: int, task_info: dict[str, Any] | None,
                       traces: list[RolloutResult]) -> None:
        job = self.job
        if any(c.round == round_number for c in job.candidates):
            return  # proposed before a restart: never ask (or pay) twice
        await self._set_phase("propose")
        self._check_budget()
        spec = self._spec
        scored = sorted((c for c in job.candidates if c.mean_score is not None),
                        key=lambda c: (-(c.mean_score or 0.0), c.index))
        request = proposer_pb2.ProposeInstructionsRequest(
            job_id=job.job_id,
            model=proposer_pb2.ProposerModel(
                provider=spec.proposer.provider, model=spec.proposer.model,
                temperature=spec.proposer.temperature, max_tokens=spec.proposer.max_tokens),
            mode=spec.proposer.mode,
            num_candidates=size,
            task_info_json=json.dumps(task_info, sort_keys=True) if task_info else "",
            baseline_instruction=job.baseline_instruction,
            examples=[
                proposer_pb2.ScoredExample(input=r.trace["input"], output=r.trace["output"],
                                           reward=r.reward or 0.0)
                for r in traces if r.trace
            ],
            previous_candidates=[
                proposer_pb2.ScoredInstruction(instruction=c.instruction,
                                               score=c.mean_score or 0.0,
                                               seeds_scored=c.seeds_scored)
                for c in scored
            ],
            seed=(spec.seed + 104_729 * round_number) % _SEED_MODULUS,
        )
        response = await self._ctx.proposer.propose(request)
        usage = response.usage
        job.proposer_tokens += usage.prompt_tokens + usage.completion_tokens
        job.proposer_cost_usd += self._ctx.prices.cost_usd(
            spec.proposer.model, usage.prompt_tokens, usage.completion_tokens)
        known = {c.instruction for c in job.candidates}
        added = []
        for proposal in response.instructions:
            text = proposal.instruction.strip()
            if text and text not in known:
                known.add(text)
                added.append(CandidateRecord(len(job.candidates), text, proposal.tip,
                                             round=round_number))
                job.candidates.append(added[-1])
        if len(job.candidates) == 1 and round_number == spec.num_iterations:
            raise JobFailure("the proposer returned no usable candidate instruction")
        self._recount()
        await self._save()
        await self._emit(
            "proposals.received",
            f"round {round_number}: {len(added)} candidate instructions proposed",
            {"round": round_number,
             "candidates": [{"index": c.index, "tip": c.tip, "instruction": c.instruction}
                            for c in added],
             "duplicates_dropped": response.duplicates_dropped,
             "earlier_candidates_shown": len(scored)})

    async def _screen(self, round_number: int) -> None:
        """Scores the round's new candidates (and the baseline) on the first minibatch seeds,
        so the next round's proposals see how they did."""
        await self._set_phase("evaluate")
        seeds = self._spec.val_seeds[: self._spec.minibatch_size]
        indices = [0] + [c.index for c in self.job.candidates if c.round == round_number]
        await self._ensure("val", [(i, s) for s in seeds for i in indices])
        await self._after_batch()

    async def _search(self) -> None:
        await self._set_phase("evaluate")
        while True:
            batch = _search.next_batch(self._search_state())
            if not batch:
                break
            await self._ensure("val", batch)
            await self._after_batch()
        await self._after_batch()
        if self.job.baseline_score is None:
            raise JobFailure(
                "the baseline could not be scored on the validation seeds: "
                + self._causes_summary([r for k, r in self._visible.items()
                                        if k[0] == "val" and k[1] == 0]))

    async def _test(self) -> None:
        seeds = self._spec.test_seeds
        winner = self._winner()
        if not seeds or winner is None:
            return
        await self._set_phase("test")
        indices = [0] if winner == 0 else [0, winner]
        results = await self._ensure("test", [(i, s) for s in seeds for i in indices])
        scores = {i: self._mean([r for r in results if r.candidate_index == i]) for i in indices}
        self.job.baseline_test_score = scores[0]
        self.job.best_test_score = scores[winner]
        await self._save()
        await self._emit("test.completed", "held-out test seeds scored",
                         {"baseline_test_score": scores[0], "best_test_score": scores[winner],
                          "candidate": winner})

    # -- rollouts ----------------------------------------------------------------------------

    def _trial_id(self, index: int) -> str:
        if index not in self._trial_ids:
            instruction = None if index == 0 else self.job.candidates[index].instruction
            self._trial_ids[index] = self._ctx.registry.register(Trial(
                job_id=self.job.job_id, candidate_index=index, instruction=instruction,
                policy=self._spec.policy, environment_key=self._env_key,
                on_exchange=lambda cid, e: self._exchanges.setdefault(cid, []).append(e)))
        return self._trial_ids[index]

    def _used(self) -> int:
        return len(self._visible) + self._in_flight

    def _total_tokens(self) -> int:
        return self.job.policy_tokens + self.job.proposer_tokens

    def _check_budget(self) -> None:
        spec, job = self._spec, self.job
        if spec.max_rollouts is not None and self._used() >= spec.max_rollouts:
            raise BudgetExhausted("max_rollouts")
        if spec.max_time_seconds is not None and job.started_at is not None and (
                (datetime.now(UTC) - job.started_at).total_seconds() >= spec.max_time_seconds):
            raise BudgetExhausted("max_time_seconds")
        if spec.max_cost_usd is not None and job.cost_usd >= spec.max_cost_usd:
            raise BudgetExhausted("max_cost_usd")
        if spec.max_tokens is not None and self._total_tokens() >= spec.max_tokens:
            raise BudgetExhausted("max_tokens")

    async def _ensure(self, phase: str, pairs: Sequence[tuple[int, int]]) -> list[RolloutResult]:
        """The results of `pairs` in `phase`, running those not stored yet, concurrently.

        Rollout ids are handed out in plan order, stored pairs included, so a resumed job
        gives each rollout the id it had before. Stops scheduling when a budget runs out.
        """
        todo: list[tuple[int, int, str]] = []
        for index, seed in pairs:
            rollout_id = f"{self.job.job_id}_r{self._issued:06d}"
            self._issued += 1
            if (phase, index, seed) not in self._results:
                todo.append((index, seed, rollout_id))
        exhausted: BudgetExhausted | None = None
        progress_every = max(1, len(todo) // 10)
        done = 0

        async def one(index: int, seed: int, rollout_id: str) -> None:
            nonlocal done
            try:
                async with self._semaphore:
                    result = await self._rollout(phase, index, seed, rollout_id)
            finally:
                self._in_flight -= 1
            await self._record(result)
            done += 1
            if phase != "bootstrap" and (done % progress_every == 0 or done == len(todo)):
                await self._emit(f"{phase}.progress", f"{phase} rollouts {done}/{len(todo)}",
                                 {"done": done, "planned": len(todo)})

        try:
            async with asyncio.TaskGroup() as group:
                for index, seed, rollout_id in todo:
                    try:
                        self._check_budget()
                    except BudgetExhausted as exc:
                        exhausted = exc
                        break
                    self._in_flight += 1
                    group.create_task(one(index, seed, rollout_id))
                    await asyncio.sleep(0)  # let started rollouts take slots in plan order
        except* JobFailure as failures:
            raise failures.exceptions[0] from None
        reached = [self._results[(phase, i, s)] for i, s in pairs if (phase, i, s) in self._results]
        for result in reached:
            self._visible[result.key] = result
        if exhausted is not None:
            raise exhausted
        return reached

    def _rollout_payload(self, index: int, seed: int, rollout_id: str) -> dict[str, Any]:
        spec = self._spec
        config: dict[str, Any] = {
            "model": spec.policy.model,
            "provider": spec.policy.provider,
            "inference_url": (f"{self._ctx.public_base_url}/v1/{self._trial_id(index)}"
                              f"?cid={rollout_id}"),
            "trace_correlation_id": rollout_id,
        }
        if spec.policy.temperature is not None:
            config["temperature"] = spec.policy.temperature
        if spec.policy.max_completion_tokens is not None:
            config["max_completion_tokens"] = spec.policy.max_completion_tokens
        if index != 0:
            config["prompt_template"] = {"system": self.job.candidates[index].instruction}
        env: dict[str, Any] = {"config": spec.env_config, "seed": seed}
        if spec.env_name:
            env["env_name"] = spec.env_name
        return {
            "run_id": rollout_id,
            "trace_correlation_id": rollout_id,
            "env": env,
            "policy": {"policy_id": f"cand_{index:03d}", "policy_name": "mipro",
                       "config": config},
            "ops": ["agent", "env"],
            "record": {"trajectories": True, "return_trace": False, "trace_format": "compact"},
            "on_done": "reset",
            "safety": {"max_ops": 100000, "max_time_s": spec.rollout_timeout_seconds},
            "mode": "eval",
        }

    async def _rollout(self, phase: str, index: int, seed: int,
                       rollout_id: str) -> RolloutResult:
        payload = self._rollout_payload(index, seed, rollout_id)
        try:
            outcome = await self._task_app.rollout(
                payload, timeout=self._spec.rollout_timeout_seconds)
        finally:
            exchanges = self._exchanges.pop(rollout_id, [])
        prompt = sum(e.prompt_tokens for e in exchanges)
        completion = sum(e.completion_tokens for e in exchanges)
        return RolloutResult(
            rollout_id=rollout_id, candidate_index=index, seed=seed, phase=phase,
            reward=outcome.reward, failure_cause=outcome.failure_cause,
            failure_detail=outcome.failure_detail, tokens=prompt + completion,
            trace=_trace(exchanges), prompt_tokens=prompt, completion_tokens=completion)

    async def _record(self, result: RolloutResult) -> None:
        """Stores a finished rollout at once and folds it into the job's figures."""
        await self._ctx.store.record_rollout(self.job.job_id, result)
        self._results[result.key] = result
        self._visible[result.key] = result
        self._recount()
        await self._save()
        data = {"rollout_id": result.rollout_id, "candidate": result.candidate_index,
                "seed": result.seed, "phase": result.phase, "reward": result.reward}
        if result.phase == "bootstrap":
            done = sum(1 for k in self._results if k[0] == "bootstrap")
            await self._emit("bootstrap.progress",
                             f"bootstrap rollout {done}/{len(self._spec.bootstrap_train_seeds)}",
                             data)
        if not result.ok:
            data.update(failure_cause=result.failure_cause, failure_detail=result.failure_detail)
            await self._emit("rollout.failed", f"rollout failed: {result.failure_cause}", data,
                             level="warning")
        await self._watch_for_outage(result)

    async def _watch_for_outage(self, result: RolloutResult) -> None:
        """Fails the job when the task app stays down: a streak of connection failures
        followed by a failed health check."""
        if result.ok or result.failure_cause not in _OUTAGE_CAUSES:
            self._outage_streak = 0
            return
        self._outage_streak += 1
        self._last_outage = f"{result.failure_cause}: {result.failure_detail}"
        if self._outage_streak < _OUTAGE_STREAK:
            return
        self._outage_streak = 0
        try:
            await self._task_app.check_health(timeout=10.0)
        except TaskAppUnavailable as exc:
            raise JobFailure(f"{exc}; last rollout error: {self._last_outage}") from None

    # -- scores ------------------------------------------------------------------------------

    @staticmethod
    def _mean(results: Sequence[RolloutResult]) -> float | None:
        rewards = [r.reward for r in results if r.reward is not None]
        return sum(rewards) / len(rewards) if rewards else None

    def _search_state(self) -> _search.SearchState:
        spec = self._spec
        budget = None
        if spec.max_rollouts is not None:
            reserve = 2 * len(spec.test_seeds)
            budget = max(0, spec.max_rollouts - self._used() - reserve)
        return _search.SearchState(
            num_candidates=len(self.job.candidates),
            val_seeds=spec.val_seeds,
            results={(k[1], k[2]): r.reward for k, r in self._visible.items() if k[0] == "val"},
            budget=budget,
            max_failure_rate=MAX_FAILURE_RATE,
            seed=spec.seed,
            max_concurrent=spec.max_concurrent,
        )

    def _winner(self) -> int | None:
        if len(self.job.candidates) == 0:
            return None
        return _search.choose_winner(self._search_state())

    def _recount(self) -> None:
        """Recomputes every figure from the stored results, so a resume starts exact."""
        job, prices, model = self.job, self._ctx.prices, self._spec.policy.model
        results = list(self._results.values())
        job.rollouts_completed = sum(1 for r in results if r.ok)
        job.rollouts_failed = len(results) - job.rollouts_completed
        job.failures_by_cause = dict(Counter(r.failure_cause for r in results if not r.ok))
        prompt = sum(r.prompt_tokens for r in results)
        completion = sum(r.completion_tokens for r in results)
        job.policy_tokens = prompt + completion
        job.cost_usd = round(job.proposer_cost_usd + prices.cost_usd(model, prompt, completion), 6)
        if not job.candidates:
            return
        state = self._search_state()
        standings = {s.index: s for s in _search.leaderboard(state)}
        for candidate in job.candidates:
            standing = standings.get(candidate.index)
            mine = [r for r in results if r.candidate_index == candidate.index]
            candidate.policy_tokens = sum(r.tokens for r in mine)
            candidate.cost_usd = round(prices.cost_usd(
                model, sum(r.prompt_tokens for r in mine),
                sum(r.completion_tokens for r in mine)), 6)
            if standing is None:
                continue
            candidate.mean_score = standing.mean
            candidate.seeds_scored = standing.seeds_scored
            candidate.failures = standing.failures
            candidate.fully_evaluated = standing.fully_evaluated
            attempted = standing.seeds_scored + standing.failures
            candidate.excluded_reason = (
                "failure_rate" if attempted and standing.failures > MAX_FAILURE_RATE * attempted
                else "")
        job.baseline_score = job.candidates[0].mean_score
        winner = _search.choose_winner(state)
        if winner is not None:
            job.best_score = job.candidates[winner].mean_score
            job.best_instruction = job.candidates[winner].instruction

    async def _after_batch(self) -> None:
        """After a whole batch: scores, the history of the best, and the events about them.
        Run at batch boundaries only, so what it reports never depends on completion order."""
        self._recount()
        job = self.job
        winner = self._winner()
        for candidate in job.candidates:
            current = (candidate.seeds_scored, candidate.failures)
            if current != self._announced.get(candidate.index) and any(current):
                self._announced[candidate.index] = current
                score = "n/a" if candidate.mean_score is None else f"{candidate.mean_score:.3f}"
                await self._emit(
                    "candidate.scored",
                    f"candidate {candidate.index} scored {score} on {candidate.seeds_scored} seeds",
                    {"candidate": candidate.index, "mean_score": candidate.mean_score,
                     "seeds_scored": candidate.seeds_scored, "failures": candidate.failures,
                     "fully_evaluated": candidate.fully_evaluated})
        if winner is not None and job.best_score is not None:
            point = (len(self._visible), job.best_score, winner)
            last = job.history[-1] if job.history else None
            if last is None or (last[1], last[2]) != (point[1], point[2]):
                job.history.append(point)
                await self._emit(
                    "best.updated",
                    f"best so far: candidate {winner} at {job.best_score:.3f}",
                    {"candidate": winner, "mean_score": job.best_score,
                     "rollouts": point[0]})
        await self._save()

    @staticmethod
    def _causes_summary(results: Sequence[RolloutResult]) -> str:
        failures = [r for r in results if not r.ok]
        if not failures:
            return "no rollout ran"
        counts = Counter(r.failure_cause for r in failures)
        first = failures[0]
        causes = ", ".join(f"{cause} x{n}" for cause, n in counts.most_common())
        return f"{causes}; first: {first.failure_detail or first.failure_cause}"

    # -- state and events --------------------------------------------------------------------

    async def _save(self) -> None:
        await self._ctx.store.save_job(self.job)

    async def _set_phase(self, phase: str) -> None:
        if self.job.phase == phase:
            return
        self.job.phase = phase
        await self._save()
        await self._emit("phase.started", f"{phase} started", {"phase": phase})

    async def _emit(self, type_: str, message: str, data: dict[str, Any], *,
                    terminal: bool = False, level: str = "info") -> None:
        getattr(log, level)(message, event_type=type_)
        await self._ctx.emit(type_, message, data, terminal)

    async def _finish(self, status: JobStatus, reason: str, error: str = "") -> None:
        job = self.job
        self._recount()
        job.status = status
        job.termination_reason = reason
        job.error = error
        job.finished_at = datetime.now(UTC)
        job.phase = "done"
        await self._save()
        message = {
            JobStatus.SUCCEEDED: "job succeeded",
            JobStatus.FAILED: f"job failed: {error}",
            JobStatus.CANCELLED: "job cancelled",
        }[status]
        data = {"status": job.status.value, "best_score": job.best_score,
                "baseline_score": job.baseline_score, "best_instruction": job.best_instruction,
                "rollouts_completed": job.rollouts_completed,
                "rollouts_failed": job.rollouts_failed,
                "termination_reason": job.termination_reason, "error": job.error}
        await self._emit(f"job.{status.value}", message, data, terminal=True,
                         level="error" if status is JobStatus.FAILED else "info")

    async def _finish_succeeded(self, reason: str) -> None:
        if self.job.best_score is None:
            self._recount()
        if self.job.best_score is None:
            await self._finish(JobStatus.FAILED, "failed",
                               f"budget {reason} ran out before any candidate was scored")
            return
        await self._finish(JobStatus.SUCCEEDED, reason)

    async def _finish_failed(self, error: str) -> None:
        await self._finish(JobStatus.FAILED, "failed", error)


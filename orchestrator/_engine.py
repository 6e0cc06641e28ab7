"""The MIPRO offline engine: runs one job from preflight to result.

Phases, each announced by events (see `mipro.md`):

1. preflight: the task app's `/health` (with the environment key) and `/task_info`;
2. bootstrap: the baseline on every `bootstrap_train_seeds` seed, through the interceptor,
   capturing the baseline instruction, the inputs, the answers and the rewards;
3. propose: the proposer service writes candidates grounded in those traces; the baseline
   is always candidate 0;
4. evaluate: every candidate on the validation seeds, rollouts of all candidates concurrent
   up to `max_concurrent`, within the job's budgets;
5. test: the winner and the baseline on `test_seeds`, when given.

Winner rule: among candidates whose validation failure rate is at most `MAX_FAILURE_RATE`,
the highest mean reward over the seeds that returned a reward; ties go to the candidate scored
on more seeds, then to the lower index, so the baseline wins a tie. Failed rollouts are
recorded with their cause and excluded from means, never scored as 0.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from mipro._pricing import estimate_cost_usd
from mipro.v1 import proposer_pb2

from ._errors import JobFailure
from ._interceptor import Exchange, Trial, TrialRegistry
from ._models import CandidateRecord, JobRecord, JobStatus, RolloutResult
from ._proposer_client import ProposerClient
from ._store import JobStore
from ._task_app import TaskAppClient

log = structlog.get_logger(__name__)

#: A candidate failing more than this share of its validation rollouts cannot win.
MAX_FAILURE_RATE = 0.5
_MAX_TRACE_TEXT = 2000

EventSink = Callable[[str, str, dict[str, Any], bool], Awaitable[None]]


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
        output = (
            json.dumps([c.get("function", {}).get("arguments") for c in calls])
            if len(calls) > 1 else
            (calls[0].get("function", {}).get("arguments", "") if calls else
             _text(message.get("content")))
        )
        return {"instruction": _clip(system), "input": _clip(user), "output": _clip(output or "")}
    return None


class JobRun:
    """Runs one job; `run()` returns when the job has reached a terminal status."""

    def __init__(self, job: JobRecord, environment_key: str, task_app: TaskAppClient,
                 context: EngineContext) -> None:
        self.job = job
        self._spec = job.spec
        self._env_key = environment_key
        self._task_app = task_app
        self._ctx = context
        self._rng = random.Random(job.spec.seed)
        self._exchanges: dict[str, list[Exchange]] = defaultdict(list)
        self._results: list[RolloutResult] = []
        self._next_rollout = 0
        self._semaphore = asyncio.Semaphore(job.spec.max_concurrent)
        self._started_monotonic = time.monotonic()
        self._policy_prompt_tokens = 0
        self._policy_completion_tokens = 0
        self._proposer_cost = 0.0
        self._best_announced: tuple[int, float] | None = None
        #: Set when the process shuts down: the job is left unfinished instead of cancelled.
        self.interrupted = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        job = self.job
        structlog.contextvars.bind_contextvars(job_id=job.job_id)
        job.status = JobStatus.RUNNING
        job.started_at = datetime.now(UTC)
        await self._save()
        await self._emit("job.started", "job started", {"task_app_url": self._spec.task_app_url})
        try:
            await self._run_phases()
        except BudgetExhausted as exc:
            await self._finish_succeeded(exc.reason)
        except JobFailure as exc:
            await self._finish_failed(str(exc))
        except asyncio.CancelledError:
            if not self.interrupted:
                await asyncio.shield(self._finish_cancelled())
            raise
        except Exception as exc:  # a bug must still end the job with a cause, not hang it
            log.exception("job crashed")
            await self._finish_failed(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self._ctx.registry.remove_job(job.job_id)
            structlog.contextvars.unbind_contextvars("job_id")

    async def _run_phases(self) -> None:
        task_info = await self._preflight()
        baseline_traces = await self._bootstrap()
        await self._propose(task_info, baseline_traces)
        await self._evaluate()
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
        trial_id = self._register_trial(0, None)
        plan = [(0, seed) for seed in seeds]
        results = await self._run_rollouts(plan, {0: trial_id}, "bootstrap")
        ok = [r for r in results if r.ok]
        if not ok:
            raise JobFailure(
                "the baseline could not be scored on any bootstrap seed: "
                + self._causes_summary(results)
            )
        instructions = Counter(r.trace["instruction"] for r in ok if r.trace)
        job = self.job
        job.baseline_instruction = instructions.most_common(1)[0][0] if instructions else ""
        await self._save()
        mean = sum(r.reward for r in ok if r.reward is not None) / len(ok)
        await self._emit(
            "bootstrap.completed",
            f"baseline scored {mean:.3f} on {len(ok)} bootstrap seeds",
            {"mean_reward": mean, "seeds_scored": len(ok), "failures": len(results) - len(ok),
             "captured_instruction": bool(instructions)},
        )
        if not instructions:
            await self._emit(
                "bootstrap.warning",
                "no model call reached the interceptor: the task app may ignore inference_url",
                {}, level="warning")
        return ok

    async def _propose(self, task_info: dict[str, Any] | None,
                       traces: list[RolloutResult]) -> None:
        await self._set_phase("propose")
        spec = self._spec
        examples = [
            proposer_pb2.ScoredExample(
                input=r.trace["input"], output=r.trace["output"], reward=r.reward or 0.0)
            for r in traces if r.trace
        ]
        request = proposer_pb2.ProposeInstructionsRequest(
            job_id=self.job.job_id,
            model=proposer_pb2.ProposerModel(
                provider=spec.proposer.provider, model=spec.proposer.model,
                temperature=spec.proposer.temperature, max_tokens=spec.proposer.max_tokens),
            mode=spec.proposer.mode,
            num_candidates=spec.num_candidates,
            task_info_json=json.dumps(task_info) if task_info else "",
            baseline_instruction=self.job.baseline_instruction,
            examples=examples,
            seed=spec.seed,
        )
        response = await self._ctx.proposer.propose(request, self._rng)
        usage = response.usage
        self.job.proposer_tokens += usage.prompt_tokens + usage.completion_tokens
        self._proposer_cost += estimate_cost_usd(
            spec.proposer.model, usage.prompt_tokens, usage.completion_tokens)
        candidates = [CandidateRecord(0, self.job.baseline_instruction, "baseline")]
        for proposal in response.instructions:
            if proposal.instruction.strip() and proposal.instruction != candidates[0].instruction:
                candidates.append(
                    CandidateRecord(len(candidates), proposal.instruction, proposal.tip))
        if len(candidates) == 1:
            raise JobFailure("the proposer returned no usable candidate instruction")
        self.job.candidates = candidates
        self._update_spend()
        await self._save()
        await self._emit(
            "proposals.received", f"{len(candidates) - 1} candidate instructions proposed",
            {"candidates": [{"index": c.index, "tip": c.tip, "instruction": c.instruction}
                            for c in candidates[1:]],
             "duplicates_dropped": response.duplicates_dropped},
        )

    async def _evaluate(self) -> None:
        await self._set_phase("evaluate")
        candidates = self.job.candidates
        trial_ids = {
            c.index: self._register_trial(c.index, None if c.index == 0 else c.instruction)
            for c in candidates
        }
        # Seed-major order, so a budget cut leaves every candidate with equal coverage.
        plan = [(c.index, seed) for seed in self._spec.val_seeds for c in candidates]
        await self._run_rollouts(plan, trial_ids, "val")
        if self.job.baseline_score is None:
            raise JobFailure(
                "the baseline could not be scored on the validation seeds: "
                + self._causes_summary([r for r in self._results if r.phase == "val"
                                        and r.candidate_index == 0])
            )

    async def _test(self) -> None:
        seeds = self._spec.test_seeds
        if not seeds:
            return
        await self._set_phase("test")
        winner = self._winner()
        indices = [0] if winner is None or winner.index == 0 else [0, winner.index]
        trial_ids = {
            i: self._register_trial(i, None if i == 0 else self.job.candidates[i].instruction)
            for i in indices
        }
        plan = [(i, seed) for seed in seeds for i in indices]
        results = await self._run_rollouts(plan, trial_ids, "test")
        scores = {i: self._mean([r for r in results if r.candidate_index == i]) for i in indices}
        self.job.baseline_test_score = scores[0]
        self.job.best_test_score = scores[indices[-1]]
        await self._save()
        await self._emit("test.completed", "held-out test seeds scored",
                         {"baseline_test_score": scores[0],
                          "best_test_score": scores[indices[-1]]})

    # -- rollouts ----------------------------------------------------------------------------

    def _register_trial(self, index: int, instruction: str | None) -> str:
        return self._ctx.registry.register(Trial(
            job_id=self.job.job_id, candidate_index=index, instruction=instruction,
            policy=self._spec.policy, environment_key=self._env_key,
            on_exchange=lambda cid, exchange: self._exchanges[cid].append(exchange),
        ))

    def _check_budget(self) -> None:
        spec = self._spec
        if spec.max_rollouts is not None and self._next_rollout >= spec.max_rollouts:
            raise BudgetExhausted("max_rollouts")
        if (spec.max_time_seconds is not None
                and time.monotonic() - self._started_monotonic >= spec.max_time_seconds):
            raise BudgetExhausted("max_time_seconds")

    async def _run_rollouts(self, plan: list[tuple[int, int]], trial_ids: dict[int, str],
                            phase: str) -> list[RolloutResult]:
        """Runs `plan` (candidate, seed) concurrently; stops scheduling when a budget ends."""
        results: list[RolloutResult] = []
        exhausted: BudgetExhausted | None = None

        async def one(index: int, seed: int, rollout_id: str) -> None:
            async with self._semaphore:
                result = await self._rollout(index, seed, rollout_id, trial_ids[index], phase)
            results.append(result)
            await self._record(result)

        async with asyncio.TaskGroup() as group:
            for index, seed in plan:
                try:
                    self._check_budget()
                except BudgetExhausted as exc:
                    exhausted = exc
                    break
                rollout_id = f"{self.job.job_id}_r{self._next_rollout:06d}"
                self._next_rollout += 1
                group.create_task(one(index, seed, rollout_id))
                # Let started rollouts take semaphore slots in plan order.
                await asyncio.sleep(0)
        if exhausted is not None:
            raise exhausted
        return results

    def _rollout_payload(self, index: int, seed: int, rollout_id: str,
                         trial_id: str) -> dict[str, Any]:
        spec = self._spec
        config: dict[str, Any] = {
            "model": spec.policy.model,
            "provider": spec.policy.provider,
            "inference_url": f"{self._ctx.public_base_url}/v1/{trial_id}?cid={rollout_id}",
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

    async def _rollout(self, index: int, seed: int, rollout_id: str, trial_id: str,
                       phase: str) -> RolloutResult:
        payload = self._rollout_payload(index, seed, rollout_id, trial_id)
        outcome = await self._task_app.rollout(
            payload, timeout=self._spec.rollout_timeout_seconds)
        exchanges = self._exchanges.pop(rollout_id, [])
        prompt = sum(e.prompt_tokens for e in exchanges)
        completion = sum(e.completion_tokens for e in exchanges)
        self._policy_prompt_tokens += prompt
        self._policy_completion_tokens += completion
        return RolloutResult(
            rollout_id=rollout_id, candidate_index=index, seed=seed, phase=phase,
            reward=outcome.reward, failure_cause=outcome.failure_cause,
            failure_detail=outcome.failure_detail, tokens=prompt + completion,
            trace=_trace(exchanges),
        )

    async def _record(self, result: RolloutResult) -> None:
        """Stores a finished rollout at once and folds it into the job's figures."""
        await self._ctx.store.record_rollout(self.job.job_id, result)
        self._results.append(result)
        job = self.job
        if result.ok:
            job.rollouts_completed += 1
        else:
            job.rollouts_failed += 1
            job.failures_by_cause[result.failure_cause] = (
                job.failures_by_cause.get(result.failure_cause, 0) + 1)
        self._update_spend()
        if result.phase == "val":
            self._update_scores()
        await self._save()
        data = {"rollout_id": result.rollout_id, "candidate": result.candidate_index,
                "seed": result.seed, "phase": result.phase, "reward": result.reward}
        if not result.ok:
            data.update(failure_cause=result.failure_cause, failure_detail=result.failure_detail)
        if result.phase == "bootstrap":
            done = sum(1 for r in self._results if r.phase == "bootstrap")
            await self._emit("bootstrap.progress",
                             f"bootstrap rollout {done}/{len(self._spec.bootstrap_train_seeds)}",
                             data)
        elif not result.ok:
            await self._emit("rollout.failed", f"rollout failed: {result.failure_cause}", data,
                             level="warning")
        if result.phase == "val":
            await self._announce_scores(result.candidate_index)

    # -- scores ------------------------------------------------------------------------------

    @staticmethod
    def _mean(results: Sequence[RolloutResult]) -> float | None:
        rewards = [r.reward for r in results if r.reward is not None]
        return sum(rewards) / len(rewards) if rewards else None

    def _update_scores(self) -> None:
        by_candidate: dict[int, list[RolloutResult]] = defaultdict(list)
        for r in self._results:
            if r.phase == "val":
                by_candidate[r.candidate_index].append(r)
        for candidate in self.job.candidates:
            results = by_candidate.get(candidate.index, [])
            candidate.mean_score = self._mean(results)
            candidate.seeds_scored = sum(1 for r in results if r.ok)
            candidate.failures = sum(1 for r in results if not r.ok)
        self.job.baseline_score = self.job.candidates[0].mean_score
        winner = self._winner()
        if winner is not None:
            self.job.best_score = winner.mean_score
            self.job.best_instruction = winner.instruction

    def _winner(self) -> CandidateRecord | None:
        eligible = [
            c for c in self.job.candidates
            if c.mean_score is not None
            and c.failures <= MAX_FAILURE_RATE * (c.failures + c.seeds_scored)
        ]
        if not eligible:
            return None
        return max(eligible, key=lambda c: (c.mean_score, c.seeds_scored, -c.index))

    async def _announce_scores(self, index: int) -> None:
        candidate = self.job.candidates[index]
        if candidate.seeds_scored + candidate.failures == len(self._spec.val_seeds):
            score = "n/a" if candidate.mean_score is None else f"{candidate.mean_score:.3f}"
            await self._emit(
                "candidate.scored", f"candidate {index} scored {score}",
                {"candidate": index, "mean_score": candidate.mean_score,
                 "seeds_scored": candidate.seeds_scored, "failures": candidate.failures})
        winner = self._winner()
        if winner is None or winner.mean_score is None:
            return
        current = (winner.index, winner.mean_score)
        if current != self._best_announced:
            self._best_announced = current
            await self._emit(
                "best.updated", f"best so far: candidate {winner.index} at {winner.mean_score:.3f}",
                {"candidate": winner.index, "mean_score": winner.mean_score,
                 "seeds_scored": winner.seeds_scored,
                 "rollouts": self.job.rollouts_completed + self.job.rollouts_failed})

    def _update_spend(self) -> None:
        job = self.job
        job.policy_tokens = self._policy_prompt_tokens + self._policy_completion_tokens
        job.cost_usd = round(self._proposer_cost + estimate_cost_usd(
            self._spec.policy.model, self._policy_prompt_tokens,
            self._policy_completion_tokens), 6)

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
        self.job.phase = phase
        await self._save()
        await self._emit("phase.started", f"{phase} started", {"phase": phase})

    async def _emit(self, type_: str, message: str, data: dict[str, Any], *,
                    terminal: bool = False, level: str = "info") -> None:
        getattr(log, level)(message, event_type=type_)
        await self._ctx.emit(type_, message, data, terminal)

    def _result_data(self) -> dict[str, Any]:
        job = self.job
        return {"status": job.status.value, "best_score": job.best_score,
                "baseline_score": job.baseline_score, "best_instruction": job.best_instruction,
                "rollouts_completed": job.rollouts_completed,
                "rollouts_failed": job.rollouts_failed,
                "termination_reason": job.termination_reason, "error": job.error}

    async def _finish(self, status: JobStatus, reason: str, error: str = "") -> None:
        job = self.job
        if job.candidates:
            self._update_scores()
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
        await self._emit(f"job.{status.value}", message, self._result_data(), terminal=True,
                         level="error" if status is JobStatus.FAILED else "info")

    async def _finish_succeeded(self, reason: str) -> None:
        if self.job.best_score is None:
            await self._finish(JobStatus.FAILED, "failed",
                               f"budget {reason} ran out before any candidate was scored")
            return
        await self._finish(JobStatus.SUCCEEDED, reason)

    async def _finish_failed(self, error: str) -> None:
        await self._finish(JobStatus.FAILED, "failed", error)

    async def _finish_cancelled(self) -> None:
        await self._finish(JobStatus.CANCELLED, "cancelled", "")

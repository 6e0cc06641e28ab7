"""The MIPRO offline plan: what to run next, decided from what is known, in five phases.

    preflight  the task app is healthy (its /health and /task_info)
    bootstrap  the baseline on every bootstrap seed: its instruction, inputs, answers, rewards
    propose    rounds of candidate instructions, each round screened on the first minibatch
               seeds so the next round sees how earlier candidates did
    search     `_search.next_batch` until it has nothing left to ask within the budget
    test       the winner and the baseline on the held-out test seeds

The plan never does I/O, reads no clock and no randomness: it asks its host to run
activities (`run_rollouts`, `propose`, `preflight`) and to record progress, and folds every
result into the `Scoreboard`. Given the same results, it asks for the same work, so a resumed
job (whose host answers stored rollouts from the store) replays it exactly and repeats no
completed rollout. The same plan can be hosted in-process (`_runner.py`) or as a workflow.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from . import _search
from ._activities import (
    BatchOutcome,
    Example,
    ProposalRequest,
    Proposals,
    RolloutItem,
    ScoredInstruction,
)
from ._budget import BudgetExhausted
from ._errors import JobFailure
from ._models import CandidateRecord, JobSpec, RolloutResult
from ._scoreboard import Phase, Scoreboard

_ROUND_SEED_STRIDE = 104_729


class PlanHost(Protocol):
    """What the plan needs from whoever runs it."""

    async def preflight(self) -> bool: ...
    async def run_rollouts(self, items: Sequence[RolloutItem]) -> BatchOutcome: ...
    async def propose(self, request: ProposalRequest) -> Proposals: ...
    async def enter_phase(self, phase: str) -> None: ...
    async def emit(self, type_: str, message: str, data: dict[str, object], *,
                   level: str = "info") -> None: ...
    async def candidates_added(self, candidates: Sequence[CandidateRecord]) -> None:
        """Makes new candidates durable before anything else runs."""
    async def batch_done(self) -> None:
        """A batch ended: report scores and the best so far."""
    def check_budget(self) -> None:
        """Raises `BudgetExhausted` when a budget ran out."""
    def rollouts_left(self, reserve: int) -> int | None: ...


def round_sizes(total: int, rounds: int) -> list[int]:
    """`total` candidates split over `rounds`, earlier rounds taking the remainder."""
    base, extra = divmod(total, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


def causes_summary(results: Sequence[RolloutResult]) -> str:
    """"timeout x3, http_500 x1; first: ..." for failed results."""
    failures = [r for r in results if not r.ok]
    if not failures:
        return "no rollout ran"
    counts = Counter(r.failure_cause for r in failures)
    causes = ", ".join(f"{cause} x{n}" for cause, n in counts.most_common())
    first = failures[0]
    return f"{causes}; first: {first.failure_detail or first.failure_cause}"


class JobPlan:
    """One job's plan over its scoreboard and candidates (index 0 is the baseline)."""

    def __init__(self, spec: JobSpec, board: Scoreboard, candidates: list[CandidateRecord],
                 host: PlanHost) -> None:
        self.spec = spec
        self.board = board
        self.candidates = candidates
        self.host = host
        self._bootstrap: list[RolloutResult] = []
        self._val_failures: list[RolloutResult] = []

    async def run(self) -> None:
        """Runs every phase; raises `BudgetExhausted` or `JobFailure` to end early."""
        await self.preflight()
        await self.bootstrap()
        sizes = round_sizes(self.spec.num_candidates, self.spec.num_iterations)
        for number, size in enumerate(sizes, start=1):
            await self.propose(number, size)
            if number < len(sizes):
                await self.screen(number)
        await self.search()
        await self.test()

    # -- the phases --------------------------------------------------------------------------

    async def preflight(self) -> None:
        await self.host.enter_phase("preflight")
        has_info = await self.host.preflight()
        await self.host.emit("preflight.passed", "task app is healthy", {"task_info": has_info})

    async def bootstrap(self) -> None:
        await self.host.enter_phase("bootstrap")
        seeds = self.spec.bootstrap_train_seeds
        self._bootstrap = await self._run(Phase.BOOTSTRAP, [(0, s) for s in seeds])
        ok = [r for r in self._bootstrap if r.ok]
        if not ok:
            raise JobFailure("the baseline could not be scored on any bootstrap seed: "
                             + causes_summary(self._bootstrap))
        if self.candidates:
            return  # captured before a restart
        instructions = Counter(r.trace["instruction"] for r in ok if r.trace)
        baseline = instructions.most_common(1)[0][0] if instructions else ""
        await self.host.candidates_added([CandidateRecord(0, baseline, "baseline")])
        mean = self.board.tally(Phase.BOOTSTRAP, 0).mean or 0.0
        await self.host.emit(
            "bootstrap.completed", f"baseline scored {mean:.3f} on {len(ok)} bootstrap seeds",
            {"mean_reward": mean, "seeds_scored": len(ok),
             "failures": len(self._bootstrap) - len(ok),
             "captured_instruction": bool(instructions)})
        if not instructions:
            await self.host.emit(
                "bootstrap.warning",
                "no model call reached the interceptor: the task app may ignore inference_url",
                {}, level="warning")

    async def propose(self, number: int, size: int) -> None:
        if any(c.round == number for c in self.candidates):
            return  # proposed before a restart: never ask (or pay) twice
        await self.host.enter_phase("propose")
        self.host.check_budget()
        scored = [(c, self.board.standing(c.index)) for c in self.candidates]
        shown = sorted(((c, s) for c, s in scored if s.mean is not None),
                       key=lambda cs: (-(cs[1].mean or 0.0), cs[0].index))
        request = ProposalRequest(
            round=number, size=size,
            seed=self.spec.seed + _ROUND_SEED_STRIDE * number,
            baseline_instruction=self.candidates[0].instruction,
            examples=tuple(Example(r.trace["input"], r.trace["output"], r.reward or 0.0)
                           for r in self._bootstrap if r.ok and r.trace),
            previous=tuple(ScoredInstruction(c.instruction, s.mean or 0.0, s.seeds_scored)
                           for c, s in shown))
        proposals = await self.host.propose(request)
        known = {c.instruction for c in self.candidates}
        added: list[CandidateRecord] = []
        for proposal in proposals.proposals:
            text = proposal.instruction.strip()
            if text and text not in known:
                known.add(text)
                added.append(CandidateRecord(len(self.candidates) + len(added), text,
                                             proposal.tip, round=number))
        if not added and len(self.candidates) == 1 and number == self.spec.num_iterations:
            raise JobFailure("the proposer returned no usable candidate instruction")
        await self.host.candidates_added(added)
        await self.host.emit(
            "proposals.received", f"round {number}: {len(added)} candidate instructions proposed",
            {"round": number,
             "candidates": [{"index": c.index, "tip": c.tip, "instruction": c.instruction}
                            for c in added],
             "duplicates_dropped": proposals.duplicates_dropped,
             "earlier_candidates_shown": len(shown)})

    async def screen(self, number: int) -> None:
        """The round's new candidates (and the baseline) on up to `minibatch_size` seeds, those
        the search's first round scores anyway (`_search.screening_seeds`)."""
        indices = [0] + [c.index for c in self.candidates if c.round == number]
        state = self._search_state()
        expected = max(len(self.candidates), 1 + self.spec.num_candidates)
        seeds = _search.screening_seeds(
            _search.SearchState(expected, state.val_seeds, state.results, state.budget,
                                state.max_failure_rate, state.seed, state.max_concurrent),
            len(indices), self.spec.minibatch_size)
        if not seeds:
            return
        await self.host.enter_phase("evaluate")
        await self._run(Phase.VAL, [(i, s) for s in seeds for i in indices])
        await self.host.batch_done()

    async def search(self) -> None:
        await self.host.enter_phase("evaluate")
        while batch := _search.next_batch(self._search_state()):
            await self._run(Phase.VAL, batch)
            await self.host.batch_done()
        await self.host.batch_done()
        if self.board.standing(0).mean is None:
            raise JobFailure("the baseline could not be scored on the validation seeds: "
                             + causes_summary([r for r in self._val_failures
                                               if r.candidate_index == 0]))

    async def test(self) -> None:
        winner = self.board.winner(len(self.candidates))
        if not self.spec.test_seeds or winner is None:
            return
        await self.host.enter_phase("test")
        indices = [0] if winner == 0 else [0, winner]
        await self._run(Phase.TEST, [(i, s) for s in self.spec.test_seeds for i in indices])
        baseline = self.board.tally(Phase.TEST, 0).mean
        best = self.board.tally(Phase.TEST, winner).mean
        await self.host.emit("test.completed", "held-out test seeds scored",
                             {"baseline_test_score": baseline, "best_test_score": best,
                              "candidate": winner})

    # -- helpers -----------------------------------------------------------------------------

    async def _run(self, phase: Phase, pairs: Sequence[tuple[int, int]]) -> list[RolloutResult]:
        """Runs the (candidate, seed) pairs of `phase` and folds the results in; raises
        `BudgetExhausted` when a budget stopped the batch."""
        items = [RolloutItem(phase, c, s) for c, s in pairs]
        outcome = await self.host.run_rollouts(items)
        for r in outcome.results:
            self.board.fold(r)
            if phase is Phase.VAL and not r.ok and len(self._val_failures) < 100:
                self._val_failures.append(r)
        if outcome.exhausted is not None:
            raise BudgetExhausted(outcome.exhausted)
        return list(outcome.results)

    def _search_state(self) -> _search.SearchState:
        return _search.SearchState(
            num_candidates=len(self.candidates),
            val_seeds=self.spec.val_seeds,
            results=self.board.val_results,
            budget=self.host.rollouts_left(reserve=2 * len(self.spec.test_seeds)),
            max_failure_rate=self.board.max_failure_rate,
            seed=self.spec.seed,
            max_concurrent=self.spec.max_concurrent,
        )

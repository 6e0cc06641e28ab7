"""The plan and the scoreboard in-process, with a fake host: no processes, milliseconds each.

The fake host answers rollouts from a reward table and proposals from a counter, records what
the plan asked for, and can stop ("crash") after a number of rollouts, so resume, budgets and
the winner rule are checked on the plan itself.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from orchestrator._activities import (
    BatchOutcome,
    Proposal,
    ProposalRequest,
    Proposals,
    RolloutItem,
)
from orchestrator._budget import BudgetExhausted
from orchestrator._errors import JobFailure
from orchestrator._models import CandidateRecord, JobSpec, PolicySpec, ProposerSpec, RolloutResult
from orchestrator._plan import JobPlan, round_sizes
from orchestrator._scoreboard import Phase, Scoreboard

Reward = Callable[[Phase, int, int], float | None]


class Crash(Exception):
    """The fake host's process died."""


@dataclass
class FakeHost:
    reward: Reward
    stored: dict[tuple[Phase, int, int], RolloutResult] = field(default_factory=dict)
    max_rollouts: int | None = None
    crash_after: int | None = None
    candidates: list[CandidateRecord] = field(default_factory=list)
    ran: list[tuple[Phase, int, int]] = field(default_factory=list)
    proposals_asked: list[ProposalRequest] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    spent: int = 0

    async def preflight(self) -> bool:
        return True

    async def run_rollouts(self, items: Sequence[RolloutItem]) -> BatchOutcome:
        results = []
        for item in items:
            key = (item.phase, item.candidate, item.seed)
            if key in self.stored:
                results.append(self.stored[key])
                self.spent += 1
                continue
            if self.max_rollouts is not None and self.spent >= self.max_rollouts:
                return BatchOutcome(tuple(results), "max_rollouts")
            if self.crash_after is not None and len(self.ran) >= self.crash_after:
                raise Crash
            reward = self.reward(*key)
            result = RolloutResult(
                rollout_id=f"r{len(self.ran)}", candidate_index=item.candidate, seed=item.seed,
                phase=item.phase.value, reward=reward,
                failure_cause="" if reward is not None else "http_500",
                trace={"instruction": "the baseline", "input": f"in {item.seed}",
                       "output": "out"})
            self.ran.append(key)
            self.stored[key] = result
            self.spent += 1
            results.append(result)
        return BatchOutcome(tuple(results))

    async def propose(self, request: ProposalRequest) -> Proposals:
        self.proposals_asked.append(request)
        made = tuple(Proposal(f"instruction {request.round}.{i}", "tip") for i in
                     range(request.size))
        return Proposals(made, 10, 5, 0)

    async def enter_phase(self, phase: str) -> None:
        if not self.phases or self.phases[-1] != phase:
            self.phases.append(phase)

    async def emit(self, type_: str, message: str, data: dict[str, object], *,
                   level: str = "info") -> None:
        self.events.append(type_)

    async def candidates_added(self, candidates: Sequence[CandidateRecord]) -> None:
        self.candidates.extend(candidates)

    async def batch_done(self) -> None:
        pass

    def check_budget(self) -> None:
        if self.max_rollouts is not None and self.spent >= self.max_rollouts:
            raise BudgetExhausted("max_rollouts")

    def rollouts_left(self, reserve: int) -> int | None:
        if self.max_rollouts is None:
            return None
        return max(0, self.max_rollouts - self.spent - reserve)


def _spec(**overrides: object) -> JobSpec:
    fields: dict[str, object] = dict(
        task_app_url="http://127.0.0.1:1", policy=PolicySpec("m", "local"),
        proposer=ProposerSpec("m", "local"), bootstrap_train_seeds=(0, 1, 2),
        val_seeds=tuple(range(100, 120)), test_seeds=(), num_candidates=4,
        num_iterations=2, minibatch_size=5, max_concurrent=4)
    fields.update(overrides)
    return JobSpec(**fields)  # type: ignore[arg-type]


def _table(seed: int = 0, failure_rate: float = 0.0) -> Reward:
    """A fixed reward per (phase, candidate, seed), whatever order they are asked in."""

    def reward(phase: Phase, candidate: int, s: int) -> float | None:
        rng = random.Random(f"{seed}/{phase}/{candidate}/{s}")
        if rng.random() < failure_rate:
            return None
        return float(rng.random() < 0.3 + 0.1 * candidate)

    return reward


async def _run(spec: JobSpec, host: FakeHost, board: Scoreboard | None = None) -> Scoreboard:
    board = board or Scoreboard(spec.val_seeds)
    await JobPlan(spec, board, host.candidates, host).run()
    return board


def _argmax(host: FakeHost, spec: JobSpec) -> int:
    """The winner rule, by hand, over what the host actually returned."""
    def mean(c: int) -> float:
        rewards = [host.stored[(Phase.VAL, c, s)].reward for s in spec.val_seeds]
        scored = [r for r in rewards if r is not None]
        return sum(scored) / len(scored)
    return max(range(len(host.candidates)), key=lambda c: (mean(c), -c))


async def test_runs_five_phases_and_the_winner_is_the_argmax_of_the_rewards() -> None:
    spec = _spec(test_seeds=(500, 501, 502))
    host = FakeHost(_table())
    board = await _run(spec, host)
    assert host.phases == ["preflight", "bootstrap", "propose", "evaluate", "propose",
                           "evaluate", "test"]
    assert [c.index for c in host.candidates] == list(range(5))
    assert host.candidates[0].instruction == "the baseline"
    assert board.winner() == _argmax(host, spec)
    assert len(host.ran) == len(set(host.ran))  # nothing asked twice
    assert all(board.standing(c).fully_evaluated for c in range(5))
    winner = board.winner()
    assert {(p, c) for p, c, _ in host.ran if p is Phase.TEST} == {(Phase.TEST, 0),
                                                                   (Phase.TEST, winner)}


async def test_later_rounds_see_the_screened_scores_of_earlier_candidates() -> None:
    host = FakeHost(_table())
    await _run(_spec(), host)
    first, second = host.proposals_asked
    assert [p.seeds_scored for p in first.previous] == [] or first.previous == ()
    assert len(second.previous) == 3  # the baseline and round 1's two candidates
    assert all(p.seeds_scored == 5 for p in second.previous)
    assert [e.input for e in first.examples] == ["in 0", "in 1", "in 2"]


async def test_a_crashed_plan_resumes_repeating_nothing_and_ends_the_same() -> None:
    spec = _spec()
    reference = FakeHost(_table(7))
    expected = await _run(spec, reference)
    for crash_after in (2, 10, 40, 70):
        host = FakeHost(_table(7), crash_after=crash_after)
        with pytest.raises(Crash):
            await _run(spec, host)
        before = list(host.ran)
        resumed = FakeHost(_table(7), stored=dict(host.stored), candidates=host.candidates)
        board = await _run(spec, resumed)
        assert not set(resumed.ran) & set(before), "a stored rollout ran again"
        assert sorted(before + resumed.ran, key=str) == sorted(reference.ran, key=str)
        assert board.winner() == expected.winner()
        assert [c.instruction for c in resumed.candidates] == \
            [c.instruction for c in reference.candidates]
        asked = len(host.proposals_asked) + len(resumed.proposals_asked)
        assert asked == 2, "a round was proposed twice"


async def test_max_rollouts_bounds_the_search_and_stops_an_early_phase() -> None:
    spec = _spec()
    host = FakeHost(_table(), max_rollouts=40)
    board = Scoreboard(spec.val_seeds)
    with pytest.raises(BudgetExhausted) as ended:  # the search plans within what is left,
        await _run(spec, host, board)  # then the job ends on its budget, winner tested
    assert ended.value.reason == "max_rollouts"
    assert 30 <= host.spent <= 40
    winner = board.winner()
    assert winner is not None and board.standing(winner).seeds_scored > 0
    host = FakeHost(_table(), max_rollouts=2)
    with pytest.raises(BudgetExhausted):
        await _run(spec, host)
    assert host.spent == 2


async def test_failures_are_never_zeros_and_a_baseline_that_always_fails_fails_the_job() -> None:
    spec = _spec()
    host = FakeHost(_table(3, failure_rate=0.2))
    board = await _run(spec, host)
    for c in range(len(host.candidates)):
        rewards = [host.stored[(Phase.VAL, c, s)].reward for s in spec.val_seeds]
        scored = [r for r in rewards if r is not None]
        assert board.standing(c).mean == pytest.approx(sum(scored) / len(scored))
        assert board.standing(c).failures == rewards.count(None)

    def baseline_fails(phase: Phase, c: int, s: int) -> float | None:
        return None if c == 0 else 1.0

    with pytest.raises(JobFailure, match="bootstrap seed: http_500 x3"):
        await _run(spec, FakeHost(baseline_fails))


def test_scoreboard_rules() -> None:
    seeds = (1, 2, 3, 4)
    board = Scoreboard(seeds)
    assert board.record(Phase.VAL, 0, 1, 0.5)
    assert not board.record(Phase.VAL, 0, 1, 0.9), "a result is folded once"
    for s in seeds[1:]:
        board.record(Phase.VAL, 0, s, 0.5)
    for s in seeds:  # candidate 1 ties the baseline: the baseline wins
        board.record(Phase.VAL, 1, s, 0.5)
    assert board.winner() == 0
    for s in seeds:  # candidate 2 is better but fails 3 of 4: excluded
        board.record(Phase.VAL, 2, s, 1.0 if s == 1 else None, cause="timeout")
    assert board.standing(2).excluded_reason == "failure_rate"
    assert board.winner() == 0
    board.record(Phase.VAL, 3, 1, 1.0)  # candidate 3: perfect on one seed, not complete
    assert board.winner() == 0
    assert [s.index for s in board.ranked()] == [0, 1, 3, 2]
    assert board.failed == 3 and board.failures_by_cause == {"timeout": 3}
    with pytest.raises(ValueError, match="not a validation seed"):
        board.record(Phase.VAL, 0, 99, 1.0)


def test_round_sizes() -> None:
    assert round_sizes(6, 2) == [3, 3]
    assert round_sizes(7, 3) == [3, 2, 2]
    assert round_sizes(1, 1) == [1]

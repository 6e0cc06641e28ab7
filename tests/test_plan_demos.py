"""Demo bootstrapping, (instruction, demo set) combinations and stages on the plan itself,
in-process with `test_plan.py`'s fake host, whose traces here carry per-call stages and demo
turns as the interceptor records them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from orchestrator._activities import (
    BatchOutcome,
    Proposal,
    ProposalRequest,
    Proposals,
    RolloutItem,
)
from orchestrator._budget import BudgetExhausted
from orchestrator._candidate_prompt import DEFAULT_STAGE, fingerprint
from orchestrator._errors import JobFailure
from orchestrator._models import StageSpec
from orchestrator._plan import JobPlan
from orchestrator._scoreboard import Phase, Scoreboard

from .test_plan import Crash, FakeHost, _spec, _table

Calls = Callable[[int], list[tuple[str, str]]]


def _one_call(seed: int) -> list[tuple[str, str]]:
    return [("sys:single", "the baseline")]


def _call(stage: str, instruction: str, seed: int) -> dict[str, Any]:
    user = {"role": "user", "content": f"{stage} input {seed}"}
    answer = {"role": "assistant", "content": None, "tool_calls": [
        {"id": f"c{seed}", "type": "function",
         "function": {"name": "f", "arguments": f'{{"x": "{stage}{seed}"}}'}}]}
    return {"stage": stage, "instruction": instruction, "input": user["content"],
            "output": f"{stage} out {seed}",
            "turns": [user, answer, {"role": "tool", "tool_call_id": f"c{seed}", "content": ""}]}


@dataclass
class TracingHost(FakeHost):
    """`FakeHost` whose rollouts made the calls `calls(seed)`: (stage key, system text)."""

    calls: Calls = _one_call
    plans: list[JobPlan] = field(default_factory=list)

    async def run_rollouts(self, items: Sequence[RolloutItem]) -> BatchOutcome:
        outcome = await super().run_rollouts(items)
        results = []
        for r in outcome.results:
            made = [_call(stage, text, r.seed) for stage, text in self.calls(r.seed)]
            traced = dataclasses.replace(r, trace={
                "instruction": made[0]["instruction"], "input": made[0]["input"],
                "output": made[0]["output"], "calls": made})
            self.stored[(Phase(r.phase), r.candidate_index, r.seed)] = traced
            results.append(traced)
        return BatchOutcome(tuple(results), outcome.exhausted)

    async def propose(self, request: ProposalRequest) -> Proposals:
        """Proposals that name the instruction they were asked to improve."""
        self.proposals_asked.append(request)
        return Proposals(tuple(Proposal(f"{request.baseline_instruction} v{request.round}.{i}",
                                        "tip") for i in range(request.size)), 10, 5, 0)


def _bootstrap_reward(good: set[int]) -> Callable[[Phase, int, int], float | None]:
    """Bootstrap seeds in `good` score 1, others 0; other phases from `_table`."""
    table = _table()

    def reward(phase: Phase, candidate: int, seed: int) -> float | None:
        if phase is Phase.BOOTSTRAP:
            return 1.0 if seed in good else 0.0
        return table(phase, candidate, seed)

    return reward


async def _plan(host: TracingHost, **spec: Any) -> JobPlan:
    job = _spec(**spec)
    plan = JobPlan(job, Scoreboard(job.val_seeds), host.candidates, host)
    await plan.run()
    return plan


async def test_demos_only_asks_no_proposer_and_draws_sets_from_good_bootstrap_seeds() -> None:
    host = TracingHost(_bootstrap_reward({0, 2, 3, 5}))
    plan = await _plan(host, proposer=_proposer("demos_only"),
                       bootstrap_train_seeds=tuple(range(6)), max_demo_set_size=2,
                       max_demo_sets=3, few_shot_score_threshold=0.5)
    assert host.proposals_asked == []
    sets = [c.demo_set for c in host.candidates]
    assert sets == ["d0", "d1", "d2", "d3"]  # the empty set is the baseline's
    for c in host.candidates[1:]:
        assert len(c.demo_seeds) == 2 and set(c.demo_seeds) <= {0, 2, 3, 5}
        assert c.instruction == "the baseline"
        prompt = plan.prompt_of(c.index)
        assert prompt is not None
        ((key, stage),) = prompt.stages
        assert key == DEFAULT_STAGE and stage.instruction is None  # the app's own instruction
        assert [d[0]["content"] for d in stage.demos] == \
            [f"sys:single input {s}" for s in c.demo_seeds]
        assert stage.demos[0][1]["tool_calls"][0]["function"]["name"] == "f"
    assert len({tuple(c.demo_seeds) for c in host.candidates[1:]}) == 3
    assert plan.prompt_of(0) is None
    assert "demos.bootstrapped" in host.events and "candidates.combined" in host.events


async def test_demos_never_come_from_validation_or_test_seeds() -> None:
    # Bootstrap seeds 100 and 101 are also validation seeds, 7 a test seed: never demos.
    host = TracingHost(_bootstrap_reward({0, 1, 7, 100, 101}))
    await _plan(host, proposer=_proposer("demos_only"),
                bootstrap_train_seeds=(0, 1, 7, 100, 101), test_seeds=(7,),
                max_demo_set_size=2, max_demo_sets=4, few_shot_score_threshold=1.0)
    seeds = {s for c in host.candidates for s in c.demo_seeds}
    assert seeds == {0, 1}


async def test_too_few_qualified_demos_fails_the_job_naming_the_setting() -> None:
    host = TracingHost(_bootstrap_reward({0}))
    with pytest.raises(JobFailure, match="min_bootstrap_demos is 2"):
        await _plan(host, proposer=_proposer("demos_only"), min_bootstrap_demos=2)


async def test_joint_mode_pairs_every_instruction_with_every_demo_set() -> None:
    host = TracingHost(_bootstrap_reward({0, 1, 2}))
    plan = await _plan(host, proposer=_proposer("instruction_and_demos"),
                       max_demo_set_size=2, max_demo_sets=2, few_shot_score_threshold=1.0)
    instructions = [c for c in host.candidates if c.demo_set == "d0"]
    joint = [c for c in host.candidates if c.demo_set not in ("d0", "")]
    assert len(instructions) == 5  # the baseline and num_candidates=4 proposed
    pairs = {(c.instruction, c.demo_set) for c in joint}
    assert pairs == {(i.instruction, d) for i in instructions for d in ("d1", "d2")}
    assert all(c.round == 3 for c in joint)  # after the two proposal rounds
    # the budget was unlimited: every candidate is evaluated on every validation seed
    board = Scoreboard.from_results(plan.spec.val_seeds, plan.board.val_results)
    assert all(board.standing(c.index).fully_evaluated for c in host.candidates)
    proposed = next(c for c in joint if c.instruction != "the baseline")
    prompt = plan.prompt_of(proposed.index)
    assert prompt is not None
    stage = prompt.stages[0][1]
    assert stage.instruction == proposed.instruction and len(stage.demos) == 2


async def test_a_budget_limits_the_combinations_and_the_pick_is_fully_evaluated() -> None:
    host = TracingHost(_bootstrap_reward({0, 1, 2}), max_rollouts=80)
    job = _spec(proposer=_proposer("instruction_and_demos"), max_demo_set_size=2,
                max_demo_sets=3, few_shot_score_threshold=1.0)
    plan = JobPlan(job, Scoreboard(job.val_seeds), host.candidates, host)
    with pytest.raises(BudgetExhausted) as ended:  # the job ends on its budget
        await plan.run()
    assert ended.value.reason == "max_rollouts"
    joint = [c for c in host.candidates if c.demo_set not in ("d0", "")]
    assert 0 < len(joint) < 5 * 3
    winner = plan.board.winner(len(host.candidates))
    assert winner is not None and plan.board.standing(winner).fully_evaluated


async def test_instruction_only_is_unchanged_no_demo_sets_and_plain_prompts() -> None:
    host = TracingHost(_bootstrap_reward({0, 1, 2}))
    plan = await _plan(host)
    assert host.candidates[1].instruction == "the baseline v1.0"
    assert {c.demo_set for c in host.candidates} == {""}
    assert "demos.bootstrapped" not in host.events
    prompt = plan.prompt_of(1)
    assert prompt is not None and prompt.stages == (
        (DEFAULT_STAGE, prompt.stages[0][1]),) and prompt.stages[0][1].demos == ()
    assert prompt.stages[0][1].instruction == host.candidates[1].instruction


def _two_stages(seed: int) -> list[tuple[str, str]]:
    return [("router", "Route it."), ("answerer", "Answer it.")]


async def test_each_declared_stage_gets_its_own_proposals_instruction_and_demos() -> None:
    host = TracingHost(_bootstrap_reward({0, 1, 2}), calls=_two_stages)
    stages = (StageSpec("router", "m"), StageSpec("answerer", "m", max_demo_slots=1))
    plan = await _plan(host, proposer=_proposer("instruction_and_demos"), stages=stages,
                       max_demo_set_size=2, max_demo_sets=1, few_shot_score_threshold=1.0)
    asked = {r.baseline_instruction for r in host.proposals_asked}
    assert asked == {"Route it.", "Answer it."}  # one request per stage and round
    assert all(r.examples[0].input.split()[0] in ("router", "answerer")
               for r in host.proposals_asked)
    assert host.candidates[0].stage_instructions == {"router": "Route it.",
                                                     "answerer": "Answer it."}
    proposed = next(c for c in host.candidates if c.round == 1 and c.demo_set == "d0")
    assert proposed.stage_instructions == {"router": "Route it. v1.0",
                                           "answerer": "Answer it. v1.0"}
    with_demos = next(c for c in host.candidates
                      if c.demo_set == "d1" and c.stage_instructions["router"] != "Route it.")
    prompt = plan.prompt_of(with_demos.index)
    assert prompt is not None
    table = dict(prompt.stages)
    router, answerer = table["router"].instruction, table["answerer"].instruction
    assert router == with_demos.stage_instructions["router"] and router is not None
    assert answerer == with_demos.stage_instructions["answerer"] and answerer is not None
    assert router.startswith("Route it. v") and answerer.startswith("Answer it. v")
    assert len(table["router"].demos) == 2 and len(table["answerer"].demos) == 1
    assert table["router"].demos[0][0]["content"].startswith("router input")
    assert table["answerer"].demos[0][0]["content"].startswith("answerer input")
    assert "stages.detected" in host.events


async def test_stages_fall_back_to_stable_system_message_fingerprints() -> None:
    route, answer = fingerprint("Route it."), fingerprint("Answer it.")
    host = TracingHost(_bootstrap_reward({0, 1, 2}),
                       calls=lambda s: [(route, "Route it."), (answer, "Answer it.")])
    plan = await _plan(host)
    assert set(host.candidates[1].stage_instructions) == {route, answer}
    assert plan.prompt_of(1) is not None
    # A system message that changes with every seed (it embeds the input) is no stage.
    varying = TracingHost(_bootstrap_reward({0, 1, 2}),
                          calls=lambda s: [(fingerprint(f"About {s}"), f"About {s}")])
    await _plan(varying)
    assert varying.candidates[1].stage_instructions == {}


async def test_a_resumed_joint_job_rebuilds_the_same_candidates_and_prompts() -> None:
    spec: dict[str, Any] = dict(proposer=_proposer("instruction_and_demos"),
                                max_demo_set_size=2, max_demo_sets=2,
                                few_shot_score_threshold=1.0)
    reference = TracingHost(_bootstrap_reward({0, 1, 2}))
    done = await _plan(reference, **spec)
    crashing = TracingHost(_bootstrap_reward({0, 1, 2}), crash_after=60)
    with pytest.raises(Crash):
        await _plan(crashing, **spec)
    resumed = TracingHost(_bootstrap_reward({0, 1, 2}), stored=crashing.stored,
                          candidates=crashing.candidates)
    again = await _plan(resumed, **spec)
    assert [(c.instruction, c.demo_set, c.demo_seeds) for c in resumed.candidates] == \
        [(c.instruction, c.demo_set, c.demo_seeds) for c in reference.candidates]
    assert all(again.prompt_of(i) == done.prompt_of(i) for i in range(len(resumed.candidates)))


def _proposer(mode: str) -> Any:
    from orchestrator._models import ProposerSpec
    return ProposerSpec("m", "local", mode=mode)

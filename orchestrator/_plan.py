"""The MIPRO offline plan: what to run next, decided from what is known, in five phases.

    preflight  the task app is healthy (its /health and /task_info)
    bootstrap  the baseline on every bootstrap seed: its instruction, inputs, answers, rewards,
               its stages (`_stages.py`) and, in a demo mode, the demo sets (`_demos.py`)
    propose    rounds of candidate instructions (per stage), each round screened on the first
               minibatch seeds so the next round sees how earlier candidates did
    combine    in a demo mode, (instruction, demo set) candidates, within the budget
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

from . import _defaults as defaults
from . import _search, _stages
from ._activities import (
    BatchOutcome,
    Example,
    ProposalRequest,
    Proposals,
    RolloutItem,
    ScoredInstruction,
)
from ._budget import BudgetExhausted
from ._candidate_prompt import CandidatePrompt, StagePrompt
from ._demos import DemoSet, demo_sets, qualified, stage_demos
from ._errors import JobFailure
from ._models import CandidateRecord, JobSpec, RolloutResult
from ._scoreboard import Phase, Scoreboard

_ROUND_SEED_STRIDE = 104_729
_STAGE_SEED_STRIDE = 7_919


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
        self._stages: tuple[_stages.Stage, ...] = ()
        self._demo_sets: dict[str, DemoSet] = {}
        self._by_seed: dict[int, RolloutResult] = {}
        self._prompts: dict[int, CandidatePrompt | None] = {}

    @property
    def _mode(self) -> str:
        return self.spec.proposer.mode

    @property
    def _multi(self) -> bool:
        return _stages.is_multi_stage(self._stages)

    async def run(self) -> None:
        """Runs every phase; raises `BudgetExhausted` or `JobFailure` to end early."""
        await self.preflight()
        await self.bootstrap()
        if self._mode in defaults.INSTRUCTION_MODES:
            sizes = round_sizes(self.spec.num_candidates, self.spec.num_iterations)
            for number, size in enumerate(sizes, start=1):
                await self.propose(number, size)
                if number < len(sizes):
                    await self.screen(number)
        await self.combine()
        await self.search()
        await self.test()
        if self._search_cut_short():  # the job ends on its budget, its winner tested
            raise BudgetExhausted("max_rollouts")

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
        instructions = Counter(r.trace["instruction"] for r in ok if r.trace)
        baseline, pool = self.learn(self._bootstrap)
        if self._mode in defaults.DEMO_MODES and len(pool) < self.spec.min_bootstrap_demos:
            raise JobFailure(
                f"{len(pool)} bootstrap rollouts reached few_shot_score_threshold "
                f"{self.spec.few_shot_score_threshold:g}; min_bootstrap_demos is "
                f"{self.spec.min_bootstrap_demos}")
        if self.candidates:
            return  # captured before a restart
        first = self._stages[0].baseline_instruction if self._multi else baseline
        await self.host.candidates_added([CandidateRecord(
            0, first, "baseline", demo_set="d0" if self._demo_sets else "",
            stage_instructions=({s.key: s.baseline_instruction for s in self._stages}
                                if self._multi else {}))])
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
        if self._multi:
            await self.host.emit(
                "stages.detected", f"{len(self._stages)} stages in the task app's calls",
                {"stages": [{"stage_id": s.key, "baseline_instruction": s.baseline_instruction,
                             "optimize_instruction": s.optimize_instruction,
                             "max_demos": s.max_demos} for s in self._stages]})
        if self._mode in defaults.DEMO_MODES:
            sets = list(self._demo_sets.values())
            await self.host.emit(
                "demos.bootstrapped",
                f"{len(pool)} bootstrap rollouts qualify as demos; {len(sets) - 1} demo sets",
                {"qualified_seeds": [r.seed for r in pool],
                 "few_shot_score_threshold": self.spec.few_shot_score_threshold,
                 "demo_sets": [{"demo_set_id": d.id, "seeds": list(d.seeds)} for d in sets]},
                level="info" if len(sets) > 1 else "warning")

    def learn(self, bootstrap: Sequence[RolloutResult]) -> tuple[str, list[RolloutResult]]:
        """What the baseline's bootstrap rollouts (in the bootstrap seeds' order) tell: the
        stages and, in a demo mode, the demo sets. Returns the single-stage baseline
        instruction and the demo pool. Pure, so a host that runs only the rollouts (a
        Temporal worker replica) rebuilds from the stored ones the prompts `prompt_of` gives
        the plan's own host."""
        self._bootstrap = list(bootstrap)
        instructions = Counter(r.trace["instruction"] for r in self._bootstrap
                               if r.ok and r.trace)
        baseline = instructions.most_common(1)[0][0] if instructions else ""
        self._stages = _stages.discover(self.spec, self._bootstrap, baseline)
        self._by_seed = {r.seed: r for r in self._bootstrap}
        pool: list[RolloutResult] = []
        if self._mode in defaults.DEMO_MODES:
            pool = qualified(self.spec, self._bootstrap)
            self._demo_sets = {d.id: d for d in demo_sets(self.spec, pool)}
        return baseline, pool

    async def propose(self, number: int, size: int) -> None:
        if any(c.round == number for c in self.candidates):
            return  # proposed before a restart: never ask (or pay) twice
        await self.host.enter_phase("propose")
        self.host.check_budget()
        if self._multi:
            await self._propose_stages(number, size)
            return
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
                                             proposal.tip, round=number,
                                             demo_set="d0" if self._demo_sets else ""))
        if not added and len(self.candidates) == 1 and number == self.spec.num_iterations:
            rejected = ", ".join(f"{reason} x{n}" for reason, n in proposals.rejected.items())
            raise JobFailure("the proposer returned no usable candidate instruction"
                             + (f" (rejected: {rejected})" if rejected else ""))
        await self.host.candidates_added(added)
        await self.host.emit(
            "proposals.received", f"round {number}: {len(added)} candidate instructions proposed",
            {"round": number,
             "candidates": [{"index": c.index, "tip": c.tip, "instruction": c.instruction}
                            for c in added],
             "duplicates_dropped": proposals.duplicates_dropped,
             "rejected": proposals.rejected,
             "earlier_candidates_shown": len(shown),
             **({"dataset_summary": proposals.dataset_summary}
                if proposals.dataset_summary else {})})

    async def _propose_stages(self, number: int, size: int) -> None:
        """A round for a multi-stage task app: one proposal request per stage whose
        instruction is optimized; the k-th candidate takes each stage's k-th new proposal
        (the stage's baseline instruction where the stage has fewer)."""
        optimized = [s for s in self._stages if s.optimize_instruction]
        proposed: dict[str, list[tuple[str, str]]] = {}
        duplicates = 0
        for position, stage in enumerate(optimized):
            scored = [(c, self.board.standing(c.index)) for c in self.candidates]
            shown = sorted(((c, st) for c, st in scored if st.mean is not None),
                           key=lambda cs: (-(cs[1].mean or 0.0), cs[0].index))
            request = ProposalRequest(
                round=number, size=size,
                seed=(self.spec.seed + _ROUND_SEED_STRIDE * number
                      + _STAGE_SEED_STRIDE * position),
                baseline_instruction=stage.baseline_instruction,
                examples=self._stage_examples(stage),
                previous=tuple(ScoredInstruction(
                    c.stage_instructions.get(stage.key, stage.baseline_instruction),
                    st.mean or 0.0, st.seeds_scored) for c, st in shown))
            proposals = await self.host.propose(request)
            duplicates += proposals.duplicates_dropped
            known = {c.stage_instructions.get(stage.key, "") for c in self.candidates}
            fresh: list[tuple[str, str]] = []
            for proposal in proposals.proposals:
                text = proposal.instruction.strip()
                if text and text not in known:
                    known.add(text)
                    fresh.append((text, proposal.tip))
            proposed[stage.key] = fresh
        added: list[CandidateRecord] = []
        mappings = [dict(c.stage_instructions) for c in self.candidates]
        for k in range(size):
            mapping = {s.key: (proposed[s.key][k][0] if len(proposed.get(s.key, ())) > k
                               else s.baseline_instruction) for s in self._stages}
            if mapping in mappings:
                continue
            mappings.append(mapping)
            tip = next((proposed[s.key][k][1] for s in optimized
                        if len(proposed[s.key]) > k), "")
            added.append(CandidateRecord(
                len(self.candidates) + len(added), mapping[self._stages[0].key], tip,
                round=number, demo_set="d0" if self._demo_sets else "",
                stage_instructions=mapping))
        if (not added and optimized and len(self.candidates) == 1
                and number == self.spec.num_iterations):
            raise JobFailure("the proposer returned no usable candidate instruction")
        await self.host.candidates_added(added)
        await self.host.emit(
            "proposals.received", f"round {number}: {len(added)} candidates proposed "
            f"over {len(optimized)} stages",
            {"round": number, "candidates": [self._described(c) for c in added],
             "duplicates_dropped": duplicates,
             "earlier_candidates_shown": sum(
                 1 for c in self.candidates if self.board.standing(c.index).mean is not None)})

    def _stage_examples(self, stage: _stages.Stage) -> tuple[Example, ...]:
        """Per scored bootstrap rollout, its first call of `stage` as a scored example."""
        examples = []
        for r in self._bootstrap:
            calls = _stages.calls_in(r, stage.key) if r.ok else []
            if calls:
                examples.append(Example(str(calls[0].get("input", "")),
                                        str(calls[0].get("output", "")), r.reward or 0.0))
        return tuple(examples)

    async def combine(self) -> None:
        """In a demo mode: the (instruction, demo set) candidates. Every candidate so far
        (the baseline and the proposed instructions, all with the empty set `d0`) is paired
        with every non-empty demo set, best-screened instructions first (then by index) and
        the pairs in order of rank sum, as many as `MAX_TOTAL_CANDIDATES` and the budget
        allow: the budget must cover `minibatch_size` validation seeds per candidate."""
        if self._mode not in defaults.DEMO_MODES:
            return
        number = (self.spec.num_iterations if self._mode in defaults.INSTRUCTION_MODES
                  else 0) + 1
        if any(c.round == number for c in self.candidates):
            return  # combined before a restart
        sets = [d for d in self._demo_sets.values() if d.seeds]
        if not sets:
            return
        def rank(c: CandidateRecord) -> tuple[bool, float, int]:
            mean = self.board.standing(c.index).mean
            return (mean is None, -(mean or 0.0), c.index)

        instructions = sorted(self.candidates, key=rank)
        pairs = sorted(((i, j) for i in range(len(instructions)) for j in range(len(sets))),
                       key=lambda p: (p[0] + p[1], p[0], p[1]))
        room = defaults.MAX_TOTAL_CANDIDATES - len(self.candidates)
        left = self.host.rollouts_left(reserve=2 * len(self.spec.test_seeds))
        if left is not None:
            per = max(1, min(self.spec.minibatch_size, len(self.spec.val_seeds)))
            room = min(room, max(0, left // per - len(self.candidates)))
        added: list[CandidateRecord] = []
        for i, j in pairs[:max(0, room)]:
            base, demo_set = instructions[i], sets[j]
            added.append(CandidateRecord(
                len(self.candidates) + len(added), base.instruction,
                "demos" if base.index == 0 else base.tip, round=number, demo_set=demo_set.id,
                demo_seeds=list(demo_set.seeds),
                stage_instructions=dict(base.stage_instructions)))
        await self.host.candidates_added(added)
        await self.host.emit(
            "candidates.combined",
            f"{len(added)} (instruction, demo set) candidates of {len(pairs)} combinations",
            {"round": number, "candidates": [self._described(c) for c in added],
             "combinations": len(pairs), "left_out": len(pairs) - len(added)})

    def _described(self, c: CandidateRecord) -> dict[str, object]:
        """A candidate as events show it: its instruction, demo set and stage prompts."""
        data: dict[str, object] = {"index": c.index, "tip": c.tip,
                                   "instruction": c.instruction}
        if c.demo_set:
            data.update(demo_set_id=c.demo_set, demo_seeds=list(c.demo_seeds))
        if c.stage_instructions:
            data["stage_prompts"] = [{"stage_id": k, "instruction": v}
                                     for k, v in c.stage_instructions.items()]
        return data

    def prompt_of(self, index: int) -> CandidatePrompt | None:
        """What candidate `index` does to the task app's calls (None: nothing, the
        baseline). Its instruction replaces a stage's own only where it differs from the
        baseline's; its demo set's demos come from `_demos.stage_demos`."""
        if index >= len(self.candidates):
            return None
        if index not in self._prompts:
            self._prompts[index] = self._prompt(index)
        return self._prompts[index]

    def _prompt(self, index: int) -> CandidatePrompt | None:
        c, baseline = self.candidates[index], self.candidates[0]
        demo_set = self._demo_sets.get(c.demo_set)
        if not self._multi:
            instruction = (None if index == 0 or c.instruction == baseline.instruction
                           else c.instruction)
            demos = (stage_demos(self._stages[0], demo_set, self._by_seed)
                     if demo_set is not None and self._stages else ())
            return CandidatePrompt.single(instruction, demos)
        stages: list[tuple[str, StagePrompt]] = []
        for stage in self._stages:
            text = c.stage_instructions.get(stage.key)
            own = None if text is None or text == stage.baseline_instruction else text
            demos = stage_demos(stage, demo_set, self._by_seed) if demo_set else ()
            if own is not None or demos:
                stages.append((stage.key, StagePrompt(own, demos)))
        return CandidatePrompt(tuple(stages)) if stages else None

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

    def _search_cut_short(self) -> bool:
        """Whether `max_rollouts` ended the search: under it, the search leaves pairs unscored
        only when the budget cannot pay for them."""
        if self.host.rollouts_left(reserve=0) is None:
            return False
        scored = self.board.val_results
        return any((c, s) not in scored for c in range(len(self.candidates))
                   for s in self.spec.val_seeds)

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

"""The budget-aware search: pure functions of a state, so no network and no engine here."""

from __future__ import annotations

import random
import statistics

import pytest

from bench.search_efficiency import instance_rng, make_instance, run_all, run_ours
from orchestrator import _search
from orchestrator._scoreboard import Scoreboard, Standing
from orchestrator._search import SearchState, next_batch, screening_seeds, seed_order

SEEDS = tuple(range(100, 140))  # 40 validation seeds, not starting at 0


def _state(k: int, results: dict, budget: int | None, seeds=SEEDS, **kw) -> SearchState:
    return SearchState(num_candidates=k, val_seeds=seeds, results=results, budget=budget, **kw)


def _board(state: SearchState) -> Scoreboard:
    return Scoreboard.from_results(state.val_seeds, state.results,
                                   max_failure_rate=state.max_failure_rate)


def choose_winner(state: SearchState) -> int | None:
    """The scoreboard's winner over the search's results."""
    return _board(state).winner(state.num_candidates)


def leaderboard(state: SearchState) -> list[Standing]:
    """Every candidate's standing, by index."""
    board = _board(state)
    return [board.standing(c) for c in range(state.num_candidates)]


def _drive(k: int, budget: int | None, reward, results: dict | None = None, seeds=SEEDS,
           seed: int = 0) -> tuple[dict, list[list[tuple[int, int]]]]:
    """Runs the search to the end the way the engine does: batch, record all, ask again."""
    results = dict(results or {})
    batches = []
    spent = 0
    while True:
        left = None if budget is None else budget - spent
        batch = next_batch(_state(k, results, left, seeds, seed=seed))
        if not batch:
            return results, batches
        assert len(set(batch)) == len(batch), "a pair twice in one batch"
        for pair in batch:
            assert pair not in results, f"{pair} asked again"
            assert pair[0] in range(k) and pair[1] in seeds
            results[pair] = reward(*pair)
        spent += len(batch)
        batches.append(batch)


def _bernoulli(k: int, seed: int = 1):
    rng = random.Random(seed)
    rates = [0.5 + 0.02 * c for c in range(k)]
    table = {(c, s): float(rng.random() < rates[c]) for c in range(k) for s in SEEDS}
    return lambda c, s: table[(c, s)]


def test_evaluates_everything_in_one_seed_major_batch_when_the_budget_allows():
    k = 5
    everything = [(c, s) for s in SEEDS for c in range(k)]
    assert next_batch(_state(k, {}, None)) == everything
    assert next_batch(_state(k, {}, k * len(SEEDS))) == everything
    assert next_batch(_state(k, {}, 10 * k * len(SEEDS))) == everything


def test_nothing_to_do():
    assert next_batch(_state(0, {}, 100)) == []
    assert next_batch(_state(3, {}, 100, seeds=())) == []
    assert next_batch(_state(3, {}, 0)) == []
    done = {(c, s): 1.0 for c in range(3) for s in SEEDS}
    assert next_batch(_state(3, done, 1000)) == []


@pytest.mark.parametrize("k", [2, 6, 9, 16])
@pytest.mark.parametrize("share", [0.02, 0.1, 0.3, 0.5, 0.75, 0.97])
def test_never_exceeds_the_budget_nor_repeats_a_pair(k, share):
    budget = max(1, int(share * k * len(SEEDS)))
    results, batches = _drive(k, budget, _bernoulli(k))
    assert sum(map(len, batches)) == len(results) <= budget
    # the budget is used, not left idle (a few rollouts may not fit the last step)
    assert len(results) >= budget - max(k, len(SEEDS))


@pytest.mark.parametrize("k", [8, 16])
@pytest.mark.parametrize("share", [0.5, 0.75])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_winner_is_evaluated_on_the_whole_validation_set_when_affordable(k, share, seed):
    budget = int(share * k * len(SEEDS))
    results, _ = _drive(k, budget, _bernoulli(k, seed=k + seed), seed=seed)
    state = _state(k, results, budget - len(results))
    winner = choose_winner(state)
    assert winner is not None
    board = leaderboard(state)
    assert board[winner].fully_evaluated
    # the last choice was made on (nearly) the whole set: the runner-up got that far too
    runner_up = max(s.seeds_scored for s in board if s.index != winner)
    assert runner_up >= 0.9 * len(SEEDS)


def test_the_plain_schedule_cuts_gently_and_completes_a_pick_chosen_near_the_full_set():
    """Eight candidates, 50 seeds, four full passes: rounds of the plain schedule keep about
    1/1.6 of the candidates (8, 5, 4, 3, 2), so the best is rarely cut on the first few
    seeds; the last choice, on more than 90 % of the seeds, is made a little earlier so that
    the pick's full pass fits the budget."""
    plan = _search._plan(8, 0, 200, 50)
    assert [keep for keep, _ in plan] == [5, 4, 3, 2, 1, 1]
    assert plan[-1] == (1, 50)
    last = plan[-2][1]
    assert 0.9 * 50 <= last < 50
    cost, m, n = 0, 8, 0
    for keep, at in plan:
        cost, m, n = cost + m * (at - n), keep, at
    assert cost <= 200
    # below that share the pick is not completed: its last choice stays as deep as it goes
    quarter = _search._plan(8, 0, 100, 50)
    assert quarter[-1][0] == 1 and quarter[-1][1] < 0.9 * 50
    assert all(keep >= 1 for keep, _ in quarter)


@pytest.mark.parametrize("k, budget", [(8, 30), (8, 80), (16, 160)])
def test_a_budget_too_small_for_a_full_pass_that_pays_goes_as_deep_as_it_can(k, budget):
    """Below about two full passes, completing the pick would leave too little to choose
    it with: the plain halving runs, and the winner is the best of the deepest."""
    results, _ = _drive(k, budget, _bernoulli(k))
    assert budget - k < len(results) <= budget
    state = _state(k, results, budget - len(results))
    winner = choose_winner(state)
    board = leaderboard(state)
    assert winner is not None
    deepest = max(s.seeds_scored for s in board)
    assert board[winner].seeds_scored == deepest
    # its last choice was between two candidates on the same prefix
    assert sum(s.seeds_scored == deepest for s in board) >= 2 or deepest == len(SEEDS)


@pytest.mark.parametrize("concurrency", [8, 32])
def test_racing_batches_keep_the_workers_busy(concurrency):
    k = 16
    results: dict = {}
    budget = k * len(SEEDS) // 2
    sizes = []
    while batch := next_batch(_state(k, results, budget - len(results),
                                     max_concurrent=concurrency)):
        sizes.append(len(batch))
        results.update((p, 1.0 if (p[0] * 7 + p[1]) % 3 else 0.0) for p in batch)
    assert len(results) <= budget
    # nearly every rollout runs in a batch that fills the workers (a short one can end a
    # round: a cut needs its results), and a batch is a round or a step of one
    assert sum(n for n in sizes if n >= concurrency) >= 0.85 * len(results)
    assert len(sizes) <= 25


def test_same_state_same_batch():
    k, budget = 8, 120
    reward = _bernoulli(k)
    results = {(c, s): reward(c, s) for c in range(k) for s in SEEDS[:6]}
    first = next_batch(_state(k, results, budget))
    shuffled = list(results.items())
    random.Random(3).shuffle(shuffled)
    assert next_batch(_state(k, dict(shuffled), budget)) == first
    # and the whole search replays identically
    assert _drive(k, 200, reward, seed=5) == _drive(k, 200, reward, seed=5)


def test_reuses_partial_results():
    k = 6
    reward = _bernoulli(k)
    # earlier proposal rounds screened candidates 0-3 on the first 10 seeds
    screened = {(c, s): reward(c, s) for c in range(4) for s in SEEDS[:10]}
    missing = [(c, s) for s in SEEDS for c in range(k) if (c, s) not in screened]
    assert next_batch(_state(k, screened, len(missing))) == missing
    budget = k * len(SEEDS) // 2
    results, batches = _drive(k, budget, reward, results=screened)
    assert not set(screened) & {p for b in batches for p in b}
    state = _state(k, results, budget - (len(results) - len(screened)))
    winner = choose_winner(state)
    assert leaderboard(state)[winner].fully_evaluated
    # the screened seeds are the first the race uses: unscreened candidates start there
    first = batches[0]
    assert {s for c, s in first if c >= 4} <= set(SEEDS[:10])


def test_a_resumed_search_repeats_nothing():
    k, budget = 8, 160
    reward = _bernoulli(k)
    full, batches = _drive(k, budget, reward)
    # stop after two batches, then resume with what was stored
    stored = {p: full[p] for b in batches[:2] for p in b}
    spent = len(stored)
    rest, more = _drive(k, budget - spent, reward, results=stored)
    assert rest == full
    assert more == batches[2:]


def test_failures_are_left_out_of_means_not_scored_zero():
    k = 2
    results = {(0, s): 0.5 for s in SEEDS}
    results.update({(1, s): (None if i % 4 == 0 else 0.6) for i, s in enumerate(SEEDS)})
    state = _state(k, results, 0)
    board = leaderboard(state)
    assert board[1].mean == pytest.approx(0.6)
    assert board[1].failures == 10 and board[1].seeds_scored == 30
    assert board[1].fully_evaluated
    assert choose_winner(state) == 1


def test_a_candidate_failing_too_often_cannot_win():
    results = {(0, s): 0.5 for s in SEEDS}
    results.update({(1, s): (None if i % 3 else 1.0) for i, s in enumerate(SEEDS)})
    assert choose_winner(_state(2, results, 0)) == 0
    assert choose_winner(_state(2, results, 0, max_failure_rate=0.7)) == 1
    # nobody eligible
    only_failures = {(0, s): None for s in SEEDS}
    assert choose_winner(_state(1, only_failures, 0)) is None
    assert leaderboard(_state(1, only_failures, 0))[0].mean is None


def test_ties_go_to_more_seeds_then_to_the_baseline():
    tie = {(c, s): float(i % 2) for c in range(3) for i, s in enumerate(SEEDS)}
    assert choose_winner(_state(3, tie, 0)) == 0
    # fully evaluated candidates beat partial ones, whatever their partial means
    partial = dict(tie)
    partial[(1, SEEDS[0])] = 1.0
    partial.update({(3, s): 1.0 for s in SEEDS[:5]})
    assert choose_winner(_state(4, partial, 0)) == 1
    # none complete: only those attempted on the most seeds compete
    few = {(0, s): 0.4 for s in SEEDS[:20]}
    few.update({(1, s): 0.9 for s in SEEDS[:3]})
    assert choose_winner(_state(2, few, 0)) == 0


def test_beats_the_naive_allocation_at_half_budget():
    """Paired: same instances, same outcomes; half of K*V rollouts each."""
    k, v, n = 8, 50, 300
    ours, naive = [], []
    for i in range(n):
        instance = make_instance(instance_rng(11, k, v, i), k, v)
        ours.append(instance.regret(run_ours(instance, k * v // 2, seed=i).pick))
        naive.append(instance.regret(run_all(instance, k * v // 2).pick))
    assert statistics.fmean(ours) < statistics.fmean(naive)


def test_screening_outside_the_plan_never_costs_the_full_evaluation():
    k = 8
    reward = _bernoulli(k)
    # a heavy screening of candidates 1-7 on half the seeds, then little budget left
    screened = {(c, s): reward(c, s) for c in range(1, k) for s in SEEDS[:20]}
    for budget in (60, 100, 140):
        results, batches = _drive(k, budget, reward, results=screened)
        spent = len(results) - len(screened)
        assert spent <= budget
        state = _state(k, results, budget - spent)
        winner = choose_winner(state)
        assert winner is not None
        assert leaderboard(state)[winner].fully_evaluated, budget


def test_screening_runs_only_inside_the_first_round():
    k = 8
    order = seed_order(_state(k, {}, None))
    assert sorted(order) == sorted(SEEDS)
    assert screening_seeds(_state(k, {}, None), 4, 10) == order[:10]  # unlimited: minibatch
    assert screening_seeds(_state(k, {}, None), 4, 100) == order
    assert screening_seeds(_state(k, {}, k * len(SEEDS)), 4, 10) == order[:10]
    assert screening_seeds(_state(k, {}, 0), 4, 10) == ()
    assert screening_seeds(_state(k, {}, None), 0, 10) == ()  # nobody to screen
    # a budget whose first round is too short to tell anything: no screening at all
    assert screening_seeds(_state(16, {}, 80), 8, 10) == ()
    reward = _bernoulli(k)
    for budget in (80, 160, 240):
        seeds = screening_seeds(_state(k, {}, budget), 4, 10)
        assert 0 < len(seeds) <= 10
        # the screening is free: the search with it runs exactly what it runs without it
        screened = {(c, s): reward(c, s) for c in range(4) for s in seeds}
        with_screening, _ = _drive(k, budget - len(screened), reward, results=screened)
        without, _ = _drive(k, budget, reward)
        assert with_screening == without


def test_screening_is_replayed_the_same():
    """The second proposal round, or a resumed job, asks after the first screening: with its
    results counted in the budget already spent, the answer does not move."""
    before = screening_seeds(_state(8, {}, 200), 4, 10)
    reward = _bernoulli(8)
    screened = {(c, s): reward(c, s) for c in range(4) for s in before}
    assert screening_seeds(_state(8, screened, 200 - len(screened)), 4, 10) == before


@pytest.mark.parametrize("budget", [1, 2, 3, 5, 7])
def test_a_budget_too_small_for_every_candidate_still_scores_the_baseline(budget: int) -> None:
    """The job reports the baseline's score and falls back to it: however tight the budget,
    the search's first batch scores it, and never asks for more than the budget."""
    state = SearchState(7, (100, 101, 102), {}, budget)
    batch = next_batch(state)
    assert 0 < len(batch) <= budget
    assert any(c == 0 for c, _ in batch)

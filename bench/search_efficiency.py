"""How well the search picks the best candidate for a given rollout budget.

    python -m bench.search_efficiency              # the full run of BENCHMARKS.md
    python -m bench.search_efficiency --quick      # a smoke run, 200 instances per cell
    python -m bench.search_efficiency --grid 8x50 --no-ref --instances 500   # one (K, V)

A synthetic task with K candidates (0 is the baseline) and V validation seeds:

* each candidate has a hidden true success rate p_k. The baseline's is uniform in
  [0.25, 0.75]; every other candidate shifts it on the probit scale by a draw from a mixture:
  75 % "a little better or worse" N(0, 0.10), 10 % "much better" N(+0.30, 0.10) and 15 %
  "much worse" N(-0.40, 0.20). Around p = 0.5 a probit shift of 0.1 is about 4 percentage
  points, so most candidates are within a few points of the baseline and a few are 10-15
  points better or worse;
* each seed has a difficulty d_v ~ N(0, 1.5^2) shared by every candidate, and candidate k
  succeeds on seed v with probability Phi(a_k - d_v), where a_k = Phi^-1(p_k) sqrt(1 + 1.5^2)
  makes the success rate over seeds exactly p_k. About 40 % of the seeds are nearly always
  solved or nearly never solved whatever the prompt, the rest separate the candidates;
* the rewards of one instance (a 0/1 outcome for every candidate on every seed) are drawn
  once, and every strategy reads the same table: the comparison is paired.

Strategies, each capped by the cell's budget B (a quarter, half, three quarters or all of
K*V rollouts):

* ``ours``: the default job's evaluation as the orchestrator runs it, at the job's default
  concurrency (`_defaults.MAX_CONCURRENT`): the screening round first (the baseline and the
  first proposal round's candidates on the seeds `_search.screening_seeds` allows, possibly
  none), then `orchestrator._search.next_batch` until it returns [], then the scoreboard's
  winner: the very code the orchestrator runs;
* ``ours-ns``: the same without the screening round, to show what the screening costs;
* ``sh``: plain successive halving (`run_halving`) on the same seed order;
* ``all@B``: every candidate on the first B/K seeds, the best mean wins (``all`` at B=K*V is
  every candidate on every seed);
* ``ref``: a re-creation of DSPy MIPROv2's schedule: the baseline on the full set first
  (and entered into the study as a trial); then Optuna TPE (``TPESampler(seed,
  multivariate=True)``) over the candidate index, each trial on a fresh random minibatch of
  35 seeds; after every 5 trials (and after the last one) the candidate with the best mean
  minibatch score not yet fully evaluated is evaluated on the full set and entered into the
  study; the winner is the best full-set score, the baseline keeping ties. Every rollout it
  runs counts against B (nothing is reused), and it gets the largest number of trials whose
  schedule fits in B.

Reported per cell: P(best), the share of instances where the pick is the truly best
candidate, and the mean regret, true rate of the best minus that of the pick, in percentage
points, with its standard error and the paired differences of regret (same instances, same
outcomes) with two standard errors. Even ``all`` misses the best often: V seeds of
Bernoulli rewards cannot separate candidates a point or two apart.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from statistics import NormalDist

from orchestrator import _defaults as defaults
from orchestrator import _search
from orchestrator._plan import round_sizes
from orchestrator._scoreboard import Scoreboard

SEED_DIFFICULTY_SD = 1.5
BASELINE_RANGE = (0.25, 0.75)
#: (share, mean, sd) of a candidate's probit shift from the baseline.
SHIFT_MIXTURE = ((0.75, 0.0, 0.10), (0.10, 0.30, 0.10), (0.15, -0.40, 0.20))
GRID = ((8, 50), (8, 100), (8, 200), (16, 50), (16, 100), (16, 200))
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
REF_MINIBATCH = 35
REF_FULL_EVAL_STEPS = 5

_NORMAL = NormalDist()


@dataclass(frozen=True)
class Instance:
    """One synthetic task: true success rates and the outcome table all strategies read."""

    quality: tuple[float, ...]
    outcomes: tuple[tuple[int, ...], ...]  # outcomes[candidate][seed], 0 or 1

    @property
    def num_candidates(self) -> int:
        return len(self.quality)

    @property
    def num_seeds(self) -> int:
        return len(self.outcomes[0])

    def regret(self, pick: int | None) -> float:
        """True rate of the best minus that of `pick`, in percentage points."""
        best = max(self.quality)
        return 100.0 * (best - (self.quality[pick] if pick is not None else self.quality[0]))

    def is_best(self, pick: int | None) -> bool:
        return pick is not None and self.quality[pick] == max(self.quality)


def make_instance(rng: random.Random, num_candidates: int, num_seeds: int) -> Instance:
    """Draws true rates, seed difficulties and the 0/1 outcome of every pair."""
    z0 = _NORMAL.inv_cdf(rng.uniform(*BASELINE_RANGE))
    latent = [z0]
    for _ in range(num_candidates - 1):
        u, acc, component = rng.random(), 0.0, SHIFT_MIXTURE[-1]
        for option in SHIFT_MIXTURE:
            acc += option[0]
            if u < acc:
                component = option
                break
        latent.append(z0 + rng.gauss(component[1], component[2]))
    scale = math.sqrt(1.0 + SEED_DIFFICULTY_SD**2)
    difficulty = [rng.gauss(0.0, SEED_DIFFICULTY_SD) for _ in range(num_seeds)]
    outcomes = tuple(
        tuple(1 if z * scale - d - rng.gauss(0.0, 1.0) > 0 else 0 for d in difficulty)
        for z in latent)
    return Instance(tuple(_NORMAL.cdf(z) for z in latent), outcomes)


def instance_rng(seed: int, num_candidates: int, num_seeds: int, index: int) -> random.Random:
    return random.Random(f"{seed}:{num_candidates}:{num_seeds}:{index}")


# -- strategies ------------------------------------------------------------------------------


@dataclass
class Outcome:
    pick: int | None
    rollouts: int


def screened_candidates(num_candidates: int) -> list[int]:
    """The baseline and the first proposal round's candidates: what the default job screens
    (the rounds split `num_candidates - 1` proposals as `_plan.round_sizes` does)."""
    rounds = defaults.NUM_ITERATIONS.default
    first = round_sizes(num_candidates - 1, rounds)[0] if rounds > 1 else 0
    return list(range(first + 1)) if first else []


def run_ours(instance: Instance, budget: int, seed: int = 0, screen: bool = True,
             max_concurrent: int = defaults.MAX_CONCURRENT.default) -> Outcome:
    """The orchestrator's search, batch after batch, on the instance's outcome table.

    With `screen`, the default job's screening round comes first: the baseline and the
    first round's candidates on the first validation seeds, as many as
    `_search.screening_seeds` allows (it may allow none), counted in the budget."""
    seeds = tuple(range(instance.num_seeds))
    results: dict[tuple[int, int], float | None] = {}
    spent = 0
    if screen and (screened := screened_candidates(instance.num_candidates)):
        state = _search.SearchState(instance.num_candidates, seeds, results, budget,
                                    seed=seed, max_concurrent=max_concurrent)
        for s in _search.screening_seeds(state, len(screened), defaults.MINIBATCH_SIZE.default):
            for c in screened:
                results[(c, s)] = float(instance.outcomes[c][s])
        spent = len(results)
    while True:
        state = _search.SearchState(instance.num_candidates, seeds, results, budget - spent,
                                    seed=seed, max_concurrent=max_concurrent)
        batch = _search.next_batch(state)
        if not batch:
            break
        for c, s in batch:
            if (c, s) in results:
                raise AssertionError(f"pair {(c, s)} asked twice")
            results[(c, s)] = float(instance.outcomes[c][s])
        spent += len(batch)
        if spent > budget:
            raise AssertionError(f"spent {spent} > budget {budget}")
    board = Scoreboard.from_results(seeds, results)
    return Outcome(board.winner(instance.num_candidates), spent)


def run_all(instance: Instance, budget: int) -> Outcome:
    """Every candidate on the first budget/K seeds; the best mean (baseline on ties) wins."""
    k = instance.num_candidates
    n = min(instance.num_seeds, budget // k)
    means = [sum(row[:n]) for row in instance.outcomes]
    best = max(range(k), key=lambda c: (means[c], -c))
    return Outcome(best if n else 0, k * n)


def run_halving(instance: Instance, budget: int, seed: int = 0) -> Outcome:
    """Plain successive halving (Karnin et al. 2013) on one shared seed prefix: of the seed
    order our search would use, so the two read the same seeds and pair up tightly.

    ceil(log2 K) rounds; each round spends an equal share of the rollouts still left (what
    an earlier round could not use, because the prefix reached V, carries over), extending
    every candidate still in to the same prefix; the better half by mean on that prefix
    (the lower index on ties) goes on. The last candidate standing is the pick, whether or
    not it reached every seed."""
    k, v = instance.num_candidates, instance.num_seeds
    order = _search.seed_order(_search.SearchState(k, tuple(range(v)), {}, budget, seed=seed))
    alive, n, left = list(range(k)), 0, budget
    rounds = max(1, math.ceil(math.log2(k)))
    for r in range(rounds):
        m = len(alive)
        to = min(v, n + (left // (rounds - r)) // m)
        left -= m * (to - n)
        n = to
        sums = {c: sum(instance.outcomes[c][s] for s in order[:n]) for c in alive}
        alive = sorted(alive, key=lambda c: (-sums[c], c))[: math.ceil(m / 2)]
    return Outcome(alive[0], budget - left)


def _reference_cost(num_trials: int, num_seeds: int) -> int:
    """Rollouts of DSPy's schedule with `num_trials` minibatch trials."""
    steps = REF_FULL_EVAL_STEPS
    adjusted = num_trials + num_trials // steps + 1 + (1 if num_trials % steps else 0)
    cost, number = num_seeds, 1  # the default program's full evaluation is trial 0
    for _ in range(num_trials):
        trial_num = number + 1
        cost += REF_MINIBATCH
        number += 1
        if trial_num % (steps + 1) == 0 or trial_num == adjusted - 1:
            cost += num_seeds
            number += 1  # the full evaluation is added to the study as a trial
    return cost


def reference_trials(budget: int, num_seeds: int, limit: int = 500) -> int:
    """The largest number of trials whose whole schedule fits in `budget` (0 if none)."""
    trials = 0
    while trials < limit and _reference_cost(trials + 1, num_seeds) <= budget:
        trials += 1
    return trials


def run_reference(instance: Instance, budget: int, seed: int) -> Outcome:
    """DSPy MIPROv2's minibatch schedule with Optuna TPE (see the module's docstring)."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    k, v = instance.num_candidates, instance.num_seeds
    rows = instance.outcomes
    name = "0_predictor_instruction"
    space = {name: CategoricalDistribution(range(k))}
    rng = random.Random(f"ref:{seed}")
    default_score = sum(rows[0]) / v
    best_score, best = default_score, 0
    spent = v
    num_trials = reference_trials(budget, v)
    if num_trials == 0:
        return Outcome(0, spent)
    steps = REF_FULL_EVAL_STEPS
    adjusted = num_trials + num_trials // steps + 1 + (1 if num_trials % steps else 0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampler = optuna.samplers.TPESampler(seed=seed % 2**31, multivariate=True)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.add_trial(optuna.trial.create_trial(params={name: 0}, distributions=space,
                                                  value=default_score))
        scores: dict[int, list[float]] = {}
        fully: set[int] = set()
        for _ in range(num_trials):
            trial = study.ask(space)
            trial_num = trial.number + 1
            c = int(trial.params[name])
            batch = rng.sample(range(v), REF_MINIBATCH)
            score = sum(rows[c][s] for s in batch) / REF_MINIBATCH
            spent += REF_MINIBATCH
            scores.setdefault(c, []).append(score)
            if trial_num % (steps + 1) == 0 or trial_num == adjusted - 1:
                ranked = sorted(scores, key=lambda x: statistics.fmean(scores[x]), reverse=True)
                pick = next((x for x in ranked if x not in fully), ranked[0])
                full_score = sum(rows[pick]) / v
                spent += v
                study.add_trial(optuna.trial.create_trial(params={name: pick},
                                                          distributions=space,
                                                          value=full_score))
                fully.add(pick)
                if full_score > best_score:
                    best_score, best = full_score, pick
            study.tell(trial, score)
    return Outcome(best, spent)


# -- the run ---------------------------------------------------------------------------------

#: "ours" runs as the default job does (screening included); "ours-ns" skips the screening,
#: to show what the screening costs.
STRATEGIES = ("ours", "ours-ns", "sh", "all@B", "ref")


@dataclass
class Tally:
    hits: int = 0
    rollouts: int = 0
    #: Per instance, in instance order (so two strategies' lists pair up).
    regrets: list[float] = field(default_factory=list)

    def add(self, instance: Instance, outcome: Outcome) -> None:
        self.hits += instance.is_best(outcome.pick)
        self.regrets.append(instance.regret(outcome.pick))
        self.rollouts += outcome.rollouts

    def merge(self, other: Tally) -> None:
        self.hits += other.hits
        self.rollouts += other.rollouts
        self.regrets += other.regrets

    @property
    def count(self) -> int:
        return len(self.regrets)

    @property
    def p_best(self) -> float:
        return self.hits / self.count

    @property
    def regret(self) -> float:
        return statistics.fmean(self.regrets)

    @property
    def regret_se(self) -> float:
        return _se(self.regrets)


def _se(values: list[float]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def paired(a: Tally, b: Tally) -> tuple[float, float]:
    """Mean of a's regret minus b's over the same instances, and its standard error."""
    diffs = [x - y for x, y in zip(a.regrets, b.regrets, strict=True)]
    return statistics.fmean(diffs), _se(diffs)


def ratio_of_hits(a: Tally, b: Tally) -> tuple[float, float]:
    """a's P(best) over b's on the same instances, and its standard error (the delta method
    on the paired hits: the SE of mean(x - R y) over mean(y))."""
    x = [1.0 if r == 0 else 0.0 for r in a.regrets]  # regret 0 exactly when the pick is best
    y = [1.0 if r == 0 else 0.0 for r in b.regrets]
    ratio = a.p_best / b.p_best
    return ratio, _se([xi - ratio * yi for xi, yi in zip(x, y, strict=True)]) / b.p_best


@dataclass
class Cell:
    k: int
    v: int
    budget: int
    strategies: tuple[str, ...] = STRATEGIES
    tallies: dict[str, Tally] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.strategies:
            self.tallies.setdefault(name, Tally())


def _work(args: tuple[int, int, int, int, int, tuple[float, ...], tuple[str, ...]]
          ) -> list[Cell]:
    seed, k, v, start, stop, fractions, strategies = args
    cells = [Cell(k, v, round(f * k * v), strategies) for f in fractions]
    for i in range(start, stop):
        instance = make_instance(instance_rng(seed, k, v, i), k, v)
        for cell in cells:
            b, t = cell.budget, cell.tallies
            for name in strategies:
                if name == "ours":
                    outcome = run_ours(instance, b, seed=i)
                elif name == "ours-ns":
                    outcome = run_ours(instance, b, seed=i, screen=False)
                elif name == "sh":
                    outcome = run_halving(instance, b, seed=i)
                elif name == "all@B":
                    outcome = run_all(instance, b)
                else:
                    outcome = run_reference(instance, b, seed=seed * 1_000_003 + i)
                t[name].add(instance, outcome)
    return cells


def run(instances: int, seed: int, jobs: int, grid: Iterable[tuple[int, int]] = GRID,
        fractions: tuple[float, ...] = FRACTIONS, strategies: tuple[str, ...] = STRATEGIES,
        progress: Callable[[str], None] | None = None) -> list[Cell]:
    """Every cell of the grid over `instances` paired instances, on `jobs` processes."""
    chunk = max(1, math.ceil(instances / (4 * max(1, jobs))))
    tasks = [(seed, k, v, a, min(instances, a + chunk), fractions, strategies)
             for k, v in grid for a in range(0, instances, chunk)]
    merged: dict[tuple[int, int, int], Cell] = {}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        # pool.map yields in task order, so every tally's regrets stay in instance order
        for n, cells in enumerate(pool.map(_work, tasks), start=1):
            for cell in cells:
                into = merged.setdefault((cell.k, cell.v, cell.budget),
                                         Cell(cell.k, cell.v, cell.budget, strategies))
                for name, t in cell.tallies.items():
                    into.tallies[name].merge(t)
            if progress:
                progress(f"{n}/{len(tasks)} chunks")
    return [merged[key] for key in sorted(merged)]


def _diff(cell: Cell, a: str, b: str) -> str:
    if a not in cell.tallies or b not in cell.tallies:
        return "-"
    mean, se = paired(cell.tallies[a], cell.tallies[b])
    return f"{mean:+.2f} ± {2 * se:.2f}"


def report(cells: list[Cell]) -> str:
    """The markdown tables and the checks of issue #11."""
    names = [n for n in STRATEGIES if n in cells[0].tallies]
    head = ["K", "V", "budget", "ours P(best)", "ours rollouts",
            *(f"{n} regret" for n in names), "ours − sh (±2 SE)", "ours − ref (±2 SE)",
            "screening cost (±2 SE)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    worse, better, total = [], 0, 0
    for c in cells:
        t = c.tallies
        frac = c.budget / (c.k * c.v)
        ours = t["ours"]
        lines.append(
            f"| {c.k} | {c.v} | {frac:.2f} ({c.budget}) | {ours.p_best:.3f} "
            f"| {ours.rollouts / ours.count:.0f} | "
            + " | ".join(f"{t[n].regret:.2f} ± {t[n].regret_se:.2f}" for n in names)
            + f" | {_diff(c, 'ours', 'sh')} | {_diff(c, 'ours', 'ref')} "
            f"| {_diff(c, 'ours', 'ours-ns')} |")
        if "sh" in t:
            total += 1
            mean, se = paired(ours, t["sh"])
            if mean > 2 * se:
                worse.append(f"K={c.k}, V={c.v}, {frac:.2f}")
            better += mean < -2 * se
    lines += ["", f"Ours against plain successive halving: worse by more than 2 SE in "
              f"{len(worse)} of {total} cells{': ' + '; '.join(worse) if worse else ''}; "
              f"better by more than 2 SE in {better}.", "",
              "P(best) at half of K·V rollouts versus every candidate on every seed:", "",
              "| K | V | ours at ½·K·V | all at K·V | ratio (± 1 SE) |", "|---|---|---|---|---|"]
    full = {(c.k, c.v): c.tallies["all@B"] for c in cells
            if c.budget == c.k * c.v and "all@B" in c.tallies}
    for c in cells:
        if abs(c.budget / (c.k * c.v) - 0.5) < 1e-9 and (c.k, c.v) in full:
            p_all, p_ours = full[(c.k, c.v)].p_best, c.tallies["ours"].p_best
            ratio, ratio_se = ratio_of_hits(c.tallies["ours"], full[(c.k, c.v)])
            lines.append(f"| {c.k} | {c.v} | {p_ours:.3f} | {p_all:.3f} "
                         f"| {ratio:.3f} ± {ratio_se:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search_efficiency",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1000,
                        help="paired instances per (K, V) (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the instances (default 0)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="worker processes (default 2)")
    parser.add_argument("--quick", action="store_true", help="200 instances, a smoke run")
    parser.add_argument("--grid", default="",
                        help="only these (K, V), e.g. 8x50,16x200 (default: all six)")
    parser.add_argument("--no-ref", action="store_true",
                        help="leave out the Optuna reference (the slowest strategy)")
    args = parser.parse_args(argv)
    instances = 200 if args.quick else args.instances
    grid = tuple(tuple(int(x) for x in kv.split("x")) for kv in args.grid.split(",")
                 if kv) or GRID
    strategies = tuple(s for s in STRATEGIES if not (args.no_ref and s == "ref"))
    started = time.perf_counter()
    cells = run(instances, args.seed, args.jobs, grid,  # type: ignore[arg-type]
                strategies=strategies,
                progress=lambda s: print(s, file=sys.stderr, flush=True))
    elapsed = time.perf_counter() - started
    print(f"{instances} paired instances per cell, seed {args.seed}, {args.jobs} processes, "
          f"concurrency {defaults.MAX_CONCURRENT.default}, {elapsed:.0f} s\n")
    print(report(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

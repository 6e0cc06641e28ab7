"""Searching (instruction, demo set) pairs: the racing over the pairs vs. TPE over the two
categorical choices, on the simulator of `bench.search_efficiency`.

    python -m bench.joint_search              # the run of BENCHMARKS.md
    python -m bench.joint_search --quick      # a smoke run, 30 instances per cell

A synthetic joint task with I instructions (0 is the baseline's) and D demo sets (0 is the
empty set), so K = I * D candidates, the pair (i, j) being candidate i * D + j:

* the pair's latent quality on the probit scale is z0 + a_i + b_j + e_ij: z0 the baseline's
  (its rate uniform in [0.25, 0.75]), a_i and b_j drawn from `search_efficiency`'s shift
  mixture (a_0 = b_0 = 0), and e_ij ~ N(0, INTERACTION_SD^2) a small interaction, so the
  effects of an instruction and of a demo set mostly add up, as TPE's factored model assumes;
* seeds have a shared difficulty and every pair's 0/1 outcome on every seed is drawn once, as
  in `search_efficiency`, and both strategies read the same table.

Strategies, each capped by the cell's budget B (a quarter, half or all of K*V rollouts):

* ``race``: `orchestrator._search.next_batch` over the K pairs as plain candidates, which is
  what the plan does with them (`_plan.JobPlan.combine`);
* ``tpe``: DSPy MIPROv2's schedule over the pairs: Optuna TPE (``multivariate=True``) with
  one categorical parameter per choice (instruction, demo set), each trial on a fresh random
  minibatch of 35 seeds, and after every 5 trials the best-mean pair not yet fully evaluated
  on the full set; the baseline pair starts the study, scored on the full set; the best
  full-set score wins.

Reported per cell: P(best), the share of instances where the pick is the truly best pair, and
the mean regret in percentage points, with the paired difference race - tpe (± 2 SE).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from statistics import NormalDist

from bench.search_efficiency import (
    BASELINE_RANGE,
    REF_FULL_EVAL_STEPS,
    REF_MINIBATCH,
    SEED_DIFFICULTY_SD,
    SHIFT_MIXTURE,
    Instance,
    Outcome,
    reference_trials,
    run_ours,
)

#: The interaction of an instruction and a demo set, on the probit scale.
INTERACTION_SD = 0.05
#: (instructions, demo sets, validation seeds): the job's defaults (6 proposals and the
#: baseline, 4 demo sets and the empty one), and a smaller job.
GRID = ((7, 5, 50), (4, 3, 50))
FRACTIONS = (0.25, 0.5, 1.0)
STRATEGIES = ("race", "tpe")

_NORMAL = NormalDist()


def _shift(rng: random.Random) -> float:
    u, acc = rng.random(), 0.0
    for share, mean, sd in SHIFT_MIXTURE:
        acc += share
        if u < acc:
            return rng.gauss(mean, sd)
    _, mean, sd = SHIFT_MIXTURE[-1]
    return rng.gauss(mean, sd)


def make_joint_instance(rng: random.Random, instructions: int, demo_sets: int,
                        num_seeds: int) -> Instance:
    """The pairs' true rates and 0/1 outcomes (see the module's docstring)."""
    z0 = _NORMAL.inv_cdf(rng.uniform(*BASELINE_RANGE))
    a = [0.0] + [_shift(rng) for _ in range(instructions - 1)]
    b = [0.0] + [_shift(rng) for _ in range(demo_sets - 1)]
    latent = [z0 + a[i] + b[j] + (rng.gauss(0.0, INTERACTION_SD) if i or j else 0.0)
              for i in range(instructions) for j in range(demo_sets)]
    scale = math.sqrt(1.0 + SEED_DIFFICULTY_SD**2)
    difficulty = [rng.gauss(0.0, SEED_DIFFICULTY_SD) for _ in range(num_seeds)]
    table = tuple(tuple(int(z * scale - d > rng.gauss(0.0, 1.0)) for d in difficulty)
                  for z in latent)
    return Instance(tuple(_NORMAL.cdf(z) for z in latent), table)


def run_tpe(instance: Instance, demo_sets: int, budget: int, seed: int) -> Outcome:
    """MIPROv2's minibatch schedule with TPE over (instruction, demo set)."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    k, v = instance.num_candidates, instance.num_seeds
    space = {"instruction": CategoricalDistribution(range(k // demo_sets)),
             "demos": CategoricalDistribution(range(demo_sets))}
    rows = instance.outcomes
    spent, best, best_score = v, 0, sum(rows[0]) / v
    trials = reference_trials(budget, v)
    if not trials:
        return Outcome(0, spent)
    every = REF_FULL_EVAL_STEPS
    last = trials + trials // every + 1 + (1 if trials % every else 0) - 1
    rng = random.Random(f"tpe:{seed}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(
            seed=seed % 2**31, multivariate=True))
        study.add_trial(optuna.trial.create_trial(
            params={"instruction": 0, "demos": 0}, distributions=space, value=best_score))
        means: dict[int, list[float]] = {}
        done: set[int] = set()
        for _ in range(trials):
            trial = study.ask(space)
            pair = int(trial.params["instruction"]) * demo_sets + int(trial.params["demos"])
            score = statistics.fmean(rows[pair][s] for s in rng.sample(range(v), REF_MINIBATCH))
            spent += REF_MINIBATCH
            means.setdefault(pair, []).append(score)
            if (trial.number + 1) % (every + 1) == 0 or trial.number + 1 == last:
                order = sorted(means, key=lambda p: statistics.fmean(means[p]), reverse=True)
                pick = next((p for p in order if p not in done), order[0])
                full = sum(rows[pick]) / v
                spent += v
                done.add(pick)
                study.add_trial(optuna.trial.create_trial(
                    params={"instruction": pick // demo_sets, "demos": pick % demo_sets},
                    distributions=space, value=full))
                if full > best_score:
                    best, best_score = pick, full
            study.tell(trial, score)
    return Outcome(best, spent)


@dataclass
class Cell:
    instructions: int
    demo_sets: int
    v: int
    budget: int
    hits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STRATEGIES, 0))
    regret: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STRATEGIES, 0.0))
    rollouts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STRATEGIES, 0))
    diffs: list[float] = field(default_factory=list)


def _work(args: tuple[int, int, int, int, int]) -> list[Cell]:
    seed, instructions, demo_sets, v, count = args
    k = instructions * demo_sets
    cells = [Cell(instructions, demo_sets, v, round(f * k * v)) for f in FRACTIONS]
    for n in range(count):
        rng = random.Random(f"joint:{seed}:{instructions}:{demo_sets}:{v}:{n}")
        instance = make_joint_instance(rng, instructions, demo_sets, v)
        for cell in cells:
            outcomes = {"race": run_ours(instance, cell.budget, seed=n),
                        "tpe": run_tpe(instance, demo_sets, cell.budget, seed * 7919 + n)}
            for name, outcome in outcomes.items():
                cell.hits[name] += instance.is_best(outcome.pick)
                cell.regret[name] += instance.regret(outcome.pick)
                cell.rollouts[name] += outcome.rollouts
            cell.diffs.append(instance.regret(outcomes["race"].pick)
                              - instance.regret(outcomes["tpe"].pick))
    return cells


def report(cells: list[Cell]) -> str:
    lines = ["| I x D | V | budget | race P(best) | race regret | tpe P(best) | tpe regret "
             "| tpe rollouts | race - tpe regret (±2 SE) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        n = len(c.diffs)
        se = statistics.stdev(c.diffs) / math.sqrt(n) if n > 1 else 0.0
        frac = c.budget / (c.instructions * c.demo_sets * c.v)
        lines.append(
            f"| {c.instructions} x {c.demo_sets} | {c.v} | {frac:.2f} ({c.budget}) "
            f"| {c.hits['race'] / n:.3f} | {c.regret['race'] / n:.2f} "
            f"| {c.hits['tpe'] / n:.3f} | {c.regret['tpe'] / n:.2f} "
            f"| {c.rollouts['tpe'] / n:.0f} | {statistics.fmean(c.diffs):+.2f} ± {2 * se:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.joint_search",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=300, help="per cell (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--quick", action="store_true", help="30 instances per cell")
    args = parser.parse_args(argv)
    count = 30 if args.quick else args.instances
    per_task = max(1, math.ceil(count / (2 * args.jobs)))
    tasks = [(args.seed, i, d, v, min(per_task, count - start))
             for i, d, v in GRID for start in range(0, count, per_task)]
    started = time.perf_counter()
    merged: dict[tuple[int, int, int, int], Cell] = {}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for done, cells in enumerate(pool.map(_work, tasks), start=1):
            for cell in cells:
                key = (cell.instructions, cell.demo_sets, cell.v, cell.budget)
                into = merged.setdefault(key, Cell(*key))
                for name in STRATEGIES:
                    into.hits[name] += cell.hits[name]
                    into.regret[name] += cell.regret[name]
                    into.rollouts[name] += cell.rollouts[name]
                into.diffs += cell.diffs
            print(f"{done}/{len(tasks)} tasks", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    print(f"{count} paired instances per cell, seed {args.seed}, {args.jobs} processes, "
          f"{elapsed:.0f} s\n")
    print(report([merged[k] for k in sorted(merged, reverse=True)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
